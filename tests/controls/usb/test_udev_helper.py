"""The boot-time udev helper (systemd/floorguard-usb-guard) against umockdev device trees:
keyboards, mice and hubs work while the agent is not running, everything else stays
blocked, and a running agent is left to decide."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.rigs.processes import REPO
from tests.rigs.usb_devices import DEVICES, FLASH_DRIVE, KEYBOARD, umockdev_text

from .conftest import SYS, attr

pytestmark = pytest.mark.umockdev

HELPER = REPO / "systemd" / "floorguard-usb-guard"
RULES = REPO / "systemd" / "70-floorguard-usb.rules"
HID_OR_HUB = {"keyboard", "receiver", "hub"}


def guard(tb: Any, path: str, run_dir: Path,
          cmdline: str = "BOOT_IMAGE=/vmlinuz root=/dev/sda1 usbcore.authorized_default=0"
          ) -> subprocess.CompletedProcess[str]:
    import os

    (run_dir / "cmdline").write_text(cmdline + "\n")
    env = {**os.environ, "UMOCKDEV_DIR": tb.get_root_dir(),
           "FLOORGUARD_RUNTIME_DIR": str(run_dir), "PATH": "/usr/bin:/bin",
           "FLOORGUARD_CMDLINE": str(run_dir / "cmdline")}
    res = subprocess.run(["sh", str(HELPER), path], env=env, capture_output=True, text=True,
                         timeout=20, check=False)
    assert res.returncode == 0, res.stderr
    return res


@pytest.mark.parametrize("name", sorted(DEVICES))
def test_helper_authorizes_only_hid_and_hubs(testbed: Any, run_dir: Path, name: str) -> None:
    dev = DEVICES[name]
    testbed.add_from_string(umockdev_text(dev, "1-1"))
    guard(testbed, f"{SYS}/1-1", run_dir)
    want = "1" if name in HID_OR_HUB else "0"
    assert attr(f"{SYS}/1-1") == want
    for cfg, num, *_ in dev.interfaces:
        assert attr(f"{SYS}/1-1/1-1:{cfg}.{num}") == want


def test_helper_deauthorizes_a_storage_device_that_got_through(testbed: Any,
                                                                run_dir: Path) -> None:
    testbed.add_from_string(umockdev_text(FLASH_DRIVE, "1-1", authorized="1"))
    guard(testbed, f"{SYS}/1-1", run_dir)
    assert attr(f"{SYS}/1-1") == "0"


def test_recovery_option_on_the_kernel_command_line_opens_usb(testbed: Any,
                                                               run_dir: Path) -> None:
    testbed.add_from_string(umockdev_text(FLASH_DRIVE, "1-1"))
    guard(testbed, f"{SYS}/1-1", run_dir,
          cmdline="root=/dev/sda1 systemd.unit=rescue.target floorguard.usb=open")
    assert attr(f"{SYS}/1-1") == "1" and attr(f"{SYS}/1-1/1-1:1.0") == "1"


def test_helper_sets_root_hubs_to_deny(testbed: Any, run_dir: Path) -> None:
    assert attr(SYS, "authorized_default") == "1"
    guard(testbed, SYS, run_dir)
    assert attr(SYS, "authorized_default") == "0"
    assert attr(SYS, "interface_authorized_default") == "0"


def test_helper_authorizes_a_hid_interface_appearing_later(testbed: Any,
                                                           run_dir: Path) -> None:
    testbed.add_from_string(umockdev_text(KEYBOARD, "1-1", authorized="1"))
    with open(f"{SYS}/1-1/1-1:1.1/authorized", "w") as f:
        f.write("0")
    guard(testbed, f"{SYS}/1-1/1-1:1.1", run_dir)
    assert attr(f"{SYS}/1-1/1-1:1.1") == "1"


def test_helper_leaves_devices_to_a_running_agent(testbed: Any, run_dir: Path) -> None:
    # A live process whose command line names floorguard holds the pid file.
    stand_in = subprocess.Popen(["sh", "-c", "sleep 30", "floorguard-agent"])
    try:
        (run_dir / "usb-agent.pid").write_text(f"{stand_in.pid}\n")
        testbed.add_from_string(umockdev_text(KEYBOARD, "1-1"))
        guard(testbed, f"{SYS}/1-1", run_dir)
        assert attr(f"{SYS}/1-1") == "0", "the agent decides while it runs"
        guard(testbed, SYS, run_dir)
        assert attr(SYS, "authorized_default") == "0", "root hubs deny in any case"
    finally:
        stand_in.kill()
        stand_in.wait()
    # The agent died and left its pid file: the helper takes over again.
    guard(testbed, f"{SYS}/1-1", run_dir)
    assert attr(f"{SYS}/1-1") == "1"


def test_rules_run_the_helper_for_devices_and_interfaces() -> None:
    text = RULES.read_text()
    runs = re.findall(r'RUN\+="([^"]+)"', text)
    assert runs and all(r.startswith("/usr/lib/floorguard/floorguard-usb-guard ") for r in runs)
    assert 'ENV{DEVTYPE}=="usb_device", RUN+=' in text
    assert 'ENV{DEVTYPE}=="usb_interface", RUN+=' in text
    assert 'ATTR{authorized_default}="0"' in text
    assert 'ATTR{interface_authorized_default}="0"' in text
    assert "1" not in re.findall(r'ATTR\{\w+\}="(\d)"', text)
    assert HELPER.stat().st_mode & 0o111, "the helper must be executable"
