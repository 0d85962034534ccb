"""Agent idle footprint: RSS and PSS after start, and CPU over an idle period.

Starts a real console (SQLite, loopback, free port) and a real agent enrolled with it, waits
for the agent's READY=1 on a private sd_notify socket and for its first events to be
shipped, then reads /proc/PID/smaps_rollup and /proc/PID/stat. Stops everything it started.

    python bench/agent_footprint.py [--seconds 60] [--policy FILE] [--no-console]
                                    [--importtime FILE] [--usb]

``--usb`` adds a ``[usb]`` table and runs everything under umockdev (a root hub and three
devices), and also prints the memory of the USB worker process the agent starts.

Targets: RSS at most 35 MiB, idle CPU under 0.2 % of one core.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "src")]

from tests.rigs.console import LiveConsole  # noqa: E402
from tests.rigs.processes import base_env  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
DEFAULT_POLICY = """# idle footprint: the tables that run without an OS surface
[floor]
name = "bench"
[agent]
heartbeat_interval = "30s"
"""
USB_TABLE = """
[usb]
mode = "enforce"
allow = ["03:*:*", "09:*:*", "01:*:*"]
block = ["08:*:*"]
default = "block"
"""


def under_umockdev() -> Any:
    """Re-run this benchmark under umockdev-wrapper (loopback stays usable: no private
    network namespace) and make a testbed, which lives as long as it is referenced."""
    if "libumockdev-preload" not in os.environ.get("LD_PRELOAD", ""):
        wrapper = shutil.which("umockdev-wrapper")
        if wrapper is None:
            raise SystemExit("--usb needs umockdev-wrapper: install the Debian package umockdev")
        os.execv(wrapper, [wrapper, sys.executable, *sys.argv])  # noqa: S606 an argument list
    import gi

    gi.require_version("UMockdev", "1.0")
    from gi.repository import UMockdev
    from tests.rigs.usb_devices import DEVICES, ROOT_HUB, umockdev_text

    tb = UMockdev.Testbed.new()
    tb.add_from_string(ROOT_HUB)
    for n, name in enumerate(["keyboard", "flash_drive", "headset"]):
        tb.add_from_string(umockdev_text(DEVICES[name], f"1-{n + 1}", devnum=n + 2))
    return tb


def unit_environment() -> dict[str, str]:
    """The Environment= settings of the shipped agent unit, so the agent is measured as
    systemd runs it."""
    out = {}
    for line in (REPO / "systemd" / "floorguard-agent.service").read_text().splitlines():
        if line.startswith("Environment="):
            key, _, value = line.removeprefix("Environment=").partition("=")
            out[key] = value
    return out


def cli(*args: str, **extra: str) -> str:
    res = subprocess.run([sys.executable, "-m", "floorguard", *args], env=base_env(extra),
                         capture_output=True, text=True, timeout=120, check=False)
    if res.returncode != 0:
        raise SystemExit(f"floorguard {' '.join(args)} failed: {res.stderr}")
    return res.stdout


def memory(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0])  # kB
    return out


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split():
            out += [int(child), *children(int(child))]
    return out


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="idle period to measure CPU")
    ap.add_argument("--policy", help="policy file (default: [floor] and [agent] only)")
    ap.add_argument("--no-console", action="store_true", help="run the agent without a link")
    ap.add_argument("--importtime", metavar="FILE", help="write the agent's -X importtime log")
    ap.add_argument("--usb", action="store_true",
                    help="add [usb] under umockdev; also print the USB worker's memory")
    args = ap.parse_args()
    testbed = under_umockdev() if args.usb else None

    work = Path(tempfile.mkdtemp(prefix="fg-bench-"))
    console: LiveConsole | None = None
    agent = None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        policy = Path(args.policy) if args.policy else work / "policy.toml"
        if not args.policy:
            policy.write_text(DEFAULT_POLICY + (USB_TABLE if args.usb else ""))
        agent_env = {**unit_environment(), "FLOORGUARD_STATE_DIR": str(work / "state"),
                     "FLOORGUARD_POLICY": str(policy), "FLOORGUARD_SEAT": "BENCH-01"}
        if testbed is not None:
            agent_env |= {"UMOCKDEV_DIR": testbed.get_root_dir(),
                          "FLOORGUARD_RUNTIME_DIR": str(work / "run")}
        if not args.no_console:
            console = LiveConsole(work).start(timeout=60)
            url, db = console.url, console.db_url
            code = cli("console", "--db", db, "enroll-code").strip()
            cli("enroll", "--console", url, "--code", code, **agent_env)
            agent_env["FLOORGUARD_CONSOLE_URL"] = url
        sock.bind(str(work / "notify.sock"))
        sock.settimeout(60)
        agent_env["NOTIFY_SOCKET"] = str(work / "notify.sock")
        xopt = ["-X", "importtime"] if args.importtime else []
        errf = open(args.importtime or os.devnull, "w")  # noqa: SIM115 closed below
        t_start = time.monotonic()
        agent = subprocess.Popen([sys.executable, *xopt, "-m", "floorguard", "agent"],
                                 env=base_env(agent_env), stdout=subprocess.DEVNULL, stderr=errf)
        errf.close()
        while not sock.recv(4096).startswith(b"READY=1"):
            pass
        ready_s = time.monotonic() - t_start
        time.sleep(3.0)  # let the link ship the start-up events and settle
        pid = agent.pid
        mem0 = memory(pid)
        ticks0, t0 = cpu_ticks(pid), time.monotonic()
        time.sleep(args.seconds)
        ticks1, t1 = cpu_ticks(pid), time.monotonic()
        mem1 = memory(pid)
        cpu_pct = 100.0 * (ticks1 - ticks0) / TICKS / (t1 - t0)
        rss_mib, pss_mib = mem0["Rss"] / 1024, mem0["Pss"] / 1024
        print(f"agent ready after        {ready_s:6.2f} s  (link: "
              f"{'off' if args.no_console else 'on'}, threads {threads(pid)})")
        print(f"RSS after start          {rss_mib:6.1f} MiB  (target <= 35 MiB: "
              f"{'ok' if rss_mib <= 35 else 'OVER'})")
        print(f"PSS after start          {pss_mib:6.1f} MiB  (anon {mem0['Pss_Anon'] / 1024:.1f},"
              f" file {mem0['Pss_File'] / 1024:.1f})")
        print(f"RSS after {args.seconds:.0f} s idle     {mem1['Rss'] / 1024:6.1f} MiB")
        print(f"CPU over {args.seconds:.0f} s idle      {cpu_pct:6.3f} % of a core  "
              f"({ticks1 - ticks0} ticks; target < 0.2 %: {'ok' if cpu_pct < 0.2 else 'OVER'})")
        kids = children(pid)
        if args.usb and not any(b"worker_main" in Path(f"/proc/{c}/cmdline").read_bytes()
                                for c in kids):
            print("no USB worker is running: the usb control did not start")
        for child in kids:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
            what = "USB worker" if b"worker_main" in cmd else cmd.split(b"\0")[0].decode()
            mem = memory(child)
            print(f"{what} (pid {child})  RSS {mem['Rss'] / 1024:.1f} MiB, PSS "
                  f"{mem['Pss'] / 1024:.1f} MiB (anon {mem['Pss_Anon'] / 1024:.1f}), "
                  f"threads {threads(child)}")
        return 0
    finally:
        stop(agent)
        if console is not None:
            console.stop()
        sock.close()
        with contextlib.suppress(OSError):
            shutil.rmtree(work)


if __name__ == "__main__":
    sys.exit(main())
