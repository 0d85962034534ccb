"""The three leak controls inside the real agent process, in private namespaces: mounts
made by the test (tmpfs, FUSE, a loop device) and interfaces and connections in a
network namespace of their own. Nothing here touches the machine's mounts or network."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.controls.leaks.conftest import ns_run, unique_program
from tests.rigs.agent import AgentProcess
from tests.rigs.processes import need, wait_until


@contextlib.contextmanager
def _agent(tmp: Path, policy: str, wrapper: tuple[str, ...]) -> Iterator[AgentProcess]:
    need("unshare", "util-linux")
    path = tmp / "policy.toml"
    path.write_text(policy)
    agent = AgentProcess(tmp / "agent", path, seat="T-09", wrapper=wrapper)
    agent.start()
    try:
        agent.wait_for("agent.started")
        wait_until(lambda: "agent ready" in agent.log.read_text(), 15, 0.05,
                   "the agent to start its controls")
        yield agent
    finally:
        assert agent.stop() == 0, agent.log.read_text()[-3000:]


def _kill_leftovers(marker: str) -> None:
    """FUSE daemons started inside the private namespace end with it; make sure."""
    for p in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in (p.info["cmdline"] or [])):
            with contextlib.suppress(psutil.Error):
                p.kill()


def test_new_mounts_are_violations_and_files_written_to_them_are_copies(
        tmp_path: Path) -> None:
    need("bindfs", "bindfs")
    need("mkfs.ext2", "e2fsprogs")
    for d in ("media/stick", "media/approved", "share-src", "share", "present-src",
              "present", "disk"):
        (tmp_path / d).mkdir(parents=True)
    policy = textwrap.dedent(f"""\
        [files]
        removable = ["{tmp_path}/media"]
        approved_mounts = ["{tmp_path}/media/appr*"]
        """)
    image = tmp_path / "disk.img"
    subprocess.run(["truncate", "-s", "8M", str(image)], check=True)
    subprocess.run(["mkfs.ext2", "-q", str(image)], check=True)
    # a FUSE mount that is already there when the agent starts, in its namespace only
    wrapper = ("unshare", "-m", "--propagation", "private", "sh", "-c",
               f'bindfs "{tmp_path}/present-src" "{tmp_path}/present" && exec "$@"', "sh")
    try:
        with _agent(tmp_path, policy, wrapper) as agent:
            assert agent.proc is not None
            pid = agent.proc.pid
            present = agent.wait_for("files.mounted", mount_point=f"{tmp_path}/present")[0]
            assert present["severity"] == "violation"
            assert present["details"]["class"] == "fuse"
            assert present["details"]["present_at_start"] is True

            ns_run(pid, "-m", "mount", "-t", "tmpfs", "fgapproved", f"{tmp_path}/media/approved")
            ns_run(pid, "-m", "sh", "-c", f"echo ok > {tmp_path}/media/approved/allowed.txt")
            ns_run(pid, "-m", "mount", "-t", "tmpfs", "fgstick", f"{tmp_path}/media/stick")
            stick = agent.wait_for("files.mounted", mount_point=f"{tmp_path}/media/stick")[0]
            assert stick["details"]["class"] == "removable-root"
            assert stick["details"]["fstype"] == "tmpfs"
            assert stick["details"]["present_at_start"] is False
            assert stick["seat"] == "T-09"
            ns_run(pid, "-m", "sh", "-c",
                   f"printf 'customer list' > {tmp_path}/media/stick/list.txt")
            copied = agent.wait_for("files.copied", path=f"{tmp_path}/media/stick/list.txt")[0]
            assert copied["details"]["exit"] == f"{tmp_path}/media/stick"
            assert copied["details"]["size"] == len("customer list")

            ns_run(pid, "-m", "bindfs", f"{tmp_path}/share-src", f"{tmp_path}/share")
            fuse = agent.wait_for("files.mounted", mount_point=f"{tmp_path}/share")[0]
            assert fuse["details"]["class"] == "fuse"
            ns_run(pid, "-m", "sh", "-c", f"echo data > {tmp_path}/share/out.txt")
            out = agent.wait_for("files.copied", path=f"{tmp_path}/share/out.txt")[0]
            assert out["details"]["class"] == "fuse"

            ns_run(pid, "-m", "mount", "-o", "loop", str(image), f"{tmp_path}/disk")
            disk = agent.wait_for("files.mounted", mount_point=f"{tmp_path}/disk")[0]
            assert disk["details"]["class"] == "block"
            assert disk["details"]["source"].startswith("/dev/loop")

            events = agent.events()
            assert not [e for e in events if "approved" in str(e["details"].get("path", ""))
                        or "approved" in str(e["details"].get("mount_point", ""))]
            for point in ("disk", "share", "media/stick", "media/approved", "present"):
                ns_run(pid, "-m", "umount", f"{tmp_path}/{point}")
        # nothing of it leaked into this namespace
        assert f"{tmp_path}/" not in Path("/proc/self/mountinfo").read_text()
    finally:
        _kill_leftovers(str(tmp_path))


def _script(tmp: Path, name: str, body: str) -> Path:
    path = tmp / name
    path.write_text(textwrap.dedent(body))
    return path


SERVER = """\
    import socket, sys
    socks = []
    for port in sys.argv[1:]:
        s = socket.socket()
        s.bind(("127.0.0.1", int(port)))
        s.listen(8)
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks), flush=True)
    held = []
    import selectors
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    sel.register(sys.stdin, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj is sys.stdin:
                raise SystemExit(0)
            held.append(key.fileobj.accept()[0])
"""

CLIENT = """\
    import os, socket, sys
    print(os.getpid(), flush=True)
    held = []
    for line in sys.stdin:
        port = int(line)
        held.append(socket.create_connection(("127.0.0.1", port)))
        print("connected", port, flush=True)
"""


def _spawn(pid: int, script: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["nsenter", "-t", str(pid), "-n", sys.executable, str(script),
                             *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _connect(client: subprocess.Popen[str], port: int) -> None:
    assert client.stdin is not None and client.stdout is not None
    client.stdin.write(f"{port}\n")
    client.stdin.flush()
    assert client.stdout.readline().split() == ["connected", str(port)]


def test_new_interfaces_and_connections_outside_the_allow_list_are_flagged(
        tmp_path: Path) -> None:
    need("ip", "iproute2")
    # the namespace is private, so fixed ports cannot collide with anything
    allowed, denied = 8443, 9999
    policy = textwrap.dedent(f"""\
        [network]
        interfaces = ["lo"]
        check_interval = "100ms"
        [[network.egress]]
        net = "10.0.0.0/8"
        ports = [443]
        note = "the CRM"
        [[network.egress]]
        net = "127.0.0.1"
        ports = [{allowed}]
        """)
    children: list[subprocess.Popen[Any]] = []
    with _agent(tmp_path, policy, ("unshare", "-n")) as agent:
        assert agent.proc is not None
        pid = agent.proc.pid
        ns_run(pid, "-n", "ip", "link", "set", "lo", "up")
        ns_run(pid, "-n", "ip", "link", "add", "fgtest0", "type", "veth", "peer", "name",
               "fgtest1")
        ev = agent.wait_for("network.interface", interface="fgtest0")[0]
        assert ev["severity"] == "violation"
        assert ev["control"] == "network"
        assert ev["seat"] == "T-09"
        assert ev["details"]["present_at_start"] is False
        assert ev["details"]["mac"]
        agent.wait_for("network.interface", interface="fgtest1")
        # gone and back: judged again
        ns_run(pid, "-n", "ip", "link", "del", "fgtest0")
        ns_run(pid, "-n", "ip", "link", "add", "fgtest0", "type", "veth", "peer", "name",
               "fgtest1")
        agent.wait_for("network.interface", count=2, interface="fgtest0")
        assert not [e for e in agent.events() if e["kind"] == "network.interface"
                    and e["details"]["interface"] == "lo"]  # allowed by the policy
        try:
            server = _spawn(pid, _script(tmp_path, "server.py", SERVER), str(allowed),
                            str(denied), "7000")
            children.append(server)
            assert server.stdout is not None
            port_a, port_b = denied, 7000
            assert server.stdout.readline().split() == [str(allowed), str(port_a), str(port_b)]
            client = _spawn(pid, _script(tmp_path, "client.py", CLIENT))
            children.append(client)
            assert client.stdout is not None
            client_pid = int(client.stdout.readline())
            _connect(client, allowed)
            _connect(client, port_a)
            flagged = agent.wait_for("network.flagged", pid=client_pid, port=port_a)[0]
            assert flagged["details"]["remote"] == "127.0.0.1"
            assert flagged["details"]["exe"] == str(Path(sys.executable).resolve())
            assert flagged["details"]["cmdline"][-1].endswith("client.py")
            assert flagged["user"] == "root"
            assert flagged["severity"] == "warning"
            # the same program to the same place again: still one event; another program: its own
            _connect(client, port_a)
            other = _spawn(pid, _script(tmp_path, "client2.py", CLIENT))
            children.append(other)
            assert other.stdout is not None
            other_pid = int(other.stdout.readline())
            _connect(other, port_a)
            agent.wait_for("network.flagged", pid=other_pid, port=port_a)
            _connect(client, port_b)
            agent.wait_for("network.flagged", pid=client_pid, port=port_b)
            flagged_all = [e["details"] for e in agent.events() if e["kind"] == "network.flagged"]
            assert len([d for d in flagged_all
                        if d["pid"] == client_pid and d["port"] == port_a]) == 1
            # the accepted (inbound) ends are not egress; the allowed destination is fine
            assert not [d for d in flagged_all if d["pid"] == server.pid]
            assert not [d for d in flagged_all if d["port"] == allowed]
        finally:
            for child in children:
                if child.stdin:
                    child.stdin.close()
                try:
                    child.wait(5)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait(5)


def test_a_forbidden_program_is_killed_by_the_running_agent(tmp_path: Path) -> None:
    prog = unique_program(tmp_path, "fgrec" + tmp_path.name[-6:].replace("_", ""))
    policy = (f'[processes]\nforbid = ["{prog.name}"]\naction = "kill"\n'
              'check_interval = "100ms"\n')
    with _agent(tmp_path, policy, ()) as agent:
        p = subprocess.Popen([str(prog), "300"])
        try:
            assert p.wait(15) == -9
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        ev = agent.wait_for("processes.killed", pid=p.pid)[0]
        assert ev["details"]["exe"] == str(prog)
        assert ev["seat"] == "T-09"


@pytest.fixture(autouse=True)
def _nothing_left(tmp_path: Path) -> Iterator[None]:
    yield
    left = [p.pid for p in psutil.process_iter(["cmdline"])
            if any(str(tmp_path) in part for part in (p.info["cmdline"] or []))]
    assert left == [], f"processes left running: {left}"
