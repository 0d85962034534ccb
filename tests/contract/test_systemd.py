"""The shipped systemd units: ``systemd-analyze verify`` accepts them without a warning,
and they keep the sandboxing the agent and console are meant to run in."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rigs.processes import REPO

UNITS = ("floorguard-agent.service", "floorguard-console.service")


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file; a key may repeat (SystemCallFilter=...)."""
    out: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = out.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return out


def service(name: str) -> dict[str, list[str]]:
    return parse_unit((REPO / "systemd" / name).read_text())["Service"]


def one(svc: dict[str, list[str]], key: str) -> str:
    assert key in svc, f"{key}= missing"
    return svc[key][-1]


def test_systemd_analyze_verify_accepts_both_units(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: apt-get install systemd"
    exe = Path(sys.executable).with_name("floorguard")
    assert exe.exists(), f"{exe} is missing: install floorguard into the venv (pip install -e .)"
    for name in UNITS:
        text = (REPO / "systemd" / name).read_text()
        assert "ExecStart=/opt/floorguard/.venv/bin/floorguard " in text
        # /opt/floorguard does not exist here: point at this venv's floorguard instead
        (tmp_path / name).write_text(text.replace("/opt/floorguard/.venv/bin/floorguard",
                                                  str(exe)))
    res = subprocess.run([tool, "verify", *(str(tmp_path / n) for n in UNITS)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == "" and res.stdout.strip() == "", (
        "systemd-analyze warned:\n" + res.stderr + res.stdout)


def test_systemd_analyze_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is reported."""
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: apt-get install systemd"
    text = (REPO / "systemd" / UNITS[0]).read_text().replace(
        "/opt/floorguard/.venv/bin/floorguard", str(Path(sys.executable).with_name("floorguard")))
    bad = tmp_path / UNITS[0]
    bad.write_text(text.replace("ProtectSystem=strict", "ProtectSytem=strict"))
    res = subprocess.run([tool, "verify", str(bad)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert "Unknown key 'ProtectSytem'" in res.stderr


def test_agent_unit_is_a_notify_service_with_a_watchdog() -> None:
    svc = service("floorguard-agent.service")
    assert one(svc, "Type") == "notify"
    assert one(svc, "NotifyAccess") == "main"
    assert one(svc, "Restart") == "always"
    assert one(svc, "WatchdogSec").endswith("s") and int(one(svc, "WatchdogSec")[:-1]) > 0
    assert one(svc, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(svc, "ExecStart").endswith("floorguard agent --config /etc/floorguard/agent.toml")


@pytest.mark.parametrize(("key", "value"), [
    ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes"),
    ("ProtectHome", "read-only"), ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"), ("ProtectControlGroups", "yes"), ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"), ("RestrictNamespaces", "yes"), ("RestrictRealtime", "yes"),
    ("RestrictSUIDSGID", "yes"), ("LockPersonality", "yes"),
    ("SystemCallArchitectures", "native"), ("StateDirectory", "floorguard"),
    ("StateDirectoryMode", "0700"), ("UMask", "0077"), ("DevicePolicy", "closed"),
])
def test_agent_unit_is_sandboxed(key: str, value: str) -> None:
    assert one(service("floorguard-agent.service"), key) == value


def test_agent_unit_keeps_only_what_the_agent_needs() -> None:
    svc = service("floorguard-agent.service")
    assert set(one(svc, "RestrictAddressFamilies").split()) == {
        "AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6"}
    writable = one(svc, "ReadWritePaths").split()
    assert "/sys/bus/usb/devices" in writable
    caps = set(one(svc, "CapabilityBoundingSet").split())
    assert caps and not caps & {"CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_MODULE",
                                "CAP_NET_RAW", "CAP_SYS_RAWIO", "CAP_BPF"}
    assert svc["SystemCallFilter"][0] == "@system-service"
    assert svc["SystemCallFilter"][1].startswith("~") and "@mount" in svc["SystemCallFilter"][1]


def test_console_unit_is_tighter_still() -> None:
    agent = service("floorguard-agent.service")
    svc = service("floorguard-console.service")
    assert one(svc, "DynamicUser") == "yes" and one(svc, "User") != "root"
    assert one(svc, "CapabilityBoundingSet") == ""
    for key, value in (("PrivateDevices", "yes"), ("ProtectHome", "yes"),
                       ("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"),
                       ("ProtectKernelTunables", "yes"), ("ProtectProc", "invisible"),
                       ("StateDirectory", "floorguard-console")):
        assert one(svc, key) == value, key
    families = set(one(svc, "RestrictAddressFamilies").split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert families < set(one(agent, "RestrictAddressFamilies").split())
    assert "ReadWritePaths" not in svc
