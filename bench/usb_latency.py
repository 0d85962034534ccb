"""USB decision latency: from the testbed's add uevent to the ``authorized`` write.

Runs under umockdev (it re-executes itself under ``umockdev-wrapper``, in a private network
namespace when root so that the uevent queue limit can be raised). The subject runs in its
own process, as the agent does in production; this process holds the testbed and times
each plug: the device's remove uevent is sent, it is reset to unauthorized with a new device
number (as a re-plug gets), and after the gap its add uevent is sent and timed until inotify
reports that ``authorized`` was closed after a write. Three subjects over the same mixed devices:

* ``bare pyudev``: a minimal loop (kernel-source monitor, read ``descriptors``, write
  ``authorized``), the floor to compare with;
* ``agent idle``: the full agent (journal, evidence thread, scheduler) with the USB control;
* ``agent busy``: the same with other periodic work in the agent process: a process scan
  every 20 ms on a scan loop (what the processes control does, at 50 times its default
  pace) and a heartbeat-like journal event every 100 ms.

The agent keeps the judgement of a device it has seen plugged (the same descriptor bytes
under the same rules), as an operator's own headset is plugged again and again; the two
``new devices`` runs change every plug's device release number so that each plug is a
device never seen before and is parsed and judged in full.

    python bench/usb_latency.py [--plugs 1000] [--devices 20] [--gap-ms 5] [--nice -10]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO)]

PRELOAD = "libumockdev-preload.so"
IN_CLOSE_WRITE = 0x00000008
POLICY = """
[usb]
mode = "enforce"
allow = ["03:*:*", "09:*:*", "01:*:*"]
block = ["08:*:*", "06:*:*", "02:*:*", "0a:*:*", "e0:*:*", "ef:04:*", "ff:*:*"]
default = "block"
"""
BUSY = """
[processes]
forbid = ["obs"]
"""


def reexec_under_umockdev() -> None:
    if PRELOAD in os.environ.get("LD_PRELOAD", ""):
        return
    wrapper = shutil.which("umockdev-wrapper")
    if wrapper is None:
        sys.exit("umockdev-wrapper not found: install the Debian package umockdev")
    cmd = [wrapper, sys.executable, *sys.argv]
    if os.geteuid() == 0 and shutil.which("unshare"):
        cmd = ["unshare", "-n", "sh", "-c",
               'echo 4096 > /proc/sys/net/unix/max_dgram_qlen && exec "$@"', "sh", *cmd]
    os.execvp(cmd[0], cmd)  # noqa: S606 an argument list, no shell interpretation


class Inotify:
    """Close-after-write notifications on the mock's real files (outside /sys, so the
    preload leaves them alone)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.wds: dict[str, int] = {}

    def watch(self, path: str) -> int:
        wd = int(self._add(self.fd, path.encode(), IN_CLOSE_WRITE))
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
        self.wds[path] = wd
        return wd

    def drain(self) -> None:
        while True:
            try:
                os.read(self.fd, 65536)
            except BlockingIOError:
                return

    def wait_for(self, wd: int, timeout: float = 5.0) -> float:
        """Block until ``wd`` reports a close-after-write; returns when it did."""
        deadline = time.perf_counter() + timeout
        while True:
            ready, _, _ = select.select([self.fd], [], [], max(deadline - time.perf_counter(),
                                                                0))
            if not ready:
                raise TimeoutError("no authorized write observed")
            now = time.perf_counter()
            data = os.read(self.fd, 65536)
            off = 0
            while off < len(data):
                got, _mask, _cookie, length = struct.unpack_from("iIII", data, off)
                off += 16 + length
                if got == wd:
                    return now


class BareLoop:
    """The baseline: what any pyudev program must do at least."""

    def __init__(self) -> None:
        import pyudev

        self.monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
        self.monitor.filter_by("usb")
        self.monitor.set_receive_buffer_size(64 * 1024 * 1024)
        self.monitor.start()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        print("ready", flush=True)
        fd = self.monitor.fileno()
        while True:
            select.select([fd], [], [])
            while (dev := self.monitor.poll(0)) is not None:
                if dev.action != "add" or dev.device_type != "usb_device":
                    continue
                with open(f"{dev.sys_path}/descriptors", "rb") as f:
                    raw = f.read()
                allowed = raw[4] in (3, 9)  # a stand-in decision, as cheap as it gets
                out = os.open(f"{dev.sys_path}/authorized", os.O_WRONLY)
                os.write(out, b"1" if allowed else b"0")
                os.close(out)


def serve_agent(workdir: Path, busy: bool) -> None:
    """The real Agent with the real UsbControl (and, when busy, other periodic work)."""
    import logging

    import structlog

    from floorguard.agent.controls.base import Control
    from floorguard.agent.controls.usb.control import UsbControl
    from floorguard.agent.daemon import Agent
    from floorguard.agent.periodic import Periodic
    from floorguard.config import AgentConfig

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    logging.getLogger("apscheduler").setLevel(logging.ERROR)

    class ProcessScan(Control):
        """Stands for the processes control's scan: a full process scan every 20 ms on a
        scan loop of its own (as the real control runs it), and a heartbeat-like journal
        event every fifth scan."""

        name = "processes"
        ticks = 0

        def start(self, policy: Any) -> None:
            super().start(policy)
            self.loop = Periodic("processes-scan", self.scan, lambda: 0.02)
            self.loop.start()

        def stop(self) -> None:
            self.loop.stop()

        def scan(self) -> None:
            import psutil

            for p in psutil.process_iter(["name", "cmdline", "exe", "username"]):
                _ = p.info
            ProcessScan.ticks += 1
            if ProcessScan.ticks % 5 == 0:
                self.record("processes.flagged", "info", {"heartbeat": ProcessScan.ticks})

    policy = workdir / "policy.toml"
    policy.write_text(POLICY + (BUSY if busy else ""))
    (workdir / "run").mkdir(exist_ok=True)
    config = AgentConfig(state_dir=str(workdir / "state"), policy=str(policy),
                         runtime_dir=str(workdir / "run"), seat="BENCH", log_level="error")
    factories: dict[str, Callable[[Any], Control]] = {"usb": UsbControl}
    if busy:
        factories["processes"] = ProcessScan
    agent = Agent(config, factories=factories)
    want = set(factories)

    def announce() -> None:
        while not want <= set(agent.controls):
            if agent.unavailable:
                print(f"unavailable: {agent.unavailable}", flush=True)
                return
            time.sleep(0.01)
        print("ready", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    sys.exit(agent.run())


def start_subject(kind: str, tb: Any, workdir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "UMOCKDEV_DIR": tb.get_root_dir()}
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--workdir",
                             str(workdir)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise RuntimeError(f"the {kind} subject did not start: {line!r}")
    return proc


def measure(tb: Any, paths: list[str], plugs: int, gap: float,
            new_devices: bool = False) -> list[float]:
    root = tb.get_root_dir()
    ino = Inotify()
    wds = {p: ino.watch(f"{root}{p}/authorized") for p in paths}
    original = {p: Path(f"{root}{p}/descriptors").read_bytes() for p in paths}
    samples = []
    for i in range(plugs + 20):
        path = paths[i % len(paths)]
        # A re-plug: the device goes away, then comes back unauthorized with a new device
        # number.
        tb.uevent(path, "remove")
        for name, value in (("authorized", "0"), ("devnum", str(1000 + i))):
            with open(f"{root}{path}/{name}", "w") as f:
                f.write(value)
        if new_devices:
            # A device never seen before: the same model with another bcdDevice (device
            # release number, bytes 12-13), so no judgement of an earlier plug applies.
            raw = bytearray(original[path])
            raw[12:14] = (i & 0xFFFF).to_bytes(2, "little")
            Path(f"{root}{path}/descriptors").write_bytes(raw)
        tb.set_property(path, "DEVNUM", f"{1000 + i:03d}")  # the uevent carries it too
        time.sleep(gap)  # plugs are isolated events: the subject records in between
        ino.drain()
        start = time.perf_counter()
        tb.uevent(path, "add")
        done = ino.wait_for(wds[path])
        if i >= 20:  # the first plugs warm caches up
            samples.append((done - start) * 1000)
    os.close(ino.fd)
    return samples


def summary(name: str, ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=100)
    row = {"p50": statistics.median(ms), "p90": q[89], "p99": q[98], "max": max(ms)}
    print(f"{name:<24} n={len(ms):<5} p50 {row['p50']:.3f} ms   p90 {row['p90']:.3f} ms   "
          f"p99 {row['p99']:.3f} ms   max {row['max']:.3f} ms", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugs", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--gap-ms", type=float, default=5.0,
                        help="pause between plugs (default 5 ms)")
    parser.add_argument("--nice", type=int, default=0,
                        help="run the timing side at this nice value (e.g. -10, as root)")
    parser.add_argument("--serve", choices=("bare", "idle", "busy"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    reexec_under_umockdev()
    if args.serve == "bare":
        BareLoop().run()
        return
    if args.serve:
        serve_agent(Path(args.workdir), busy=args.serve == "busy")
        return

    import gi

    gi.require_version("UMockdev", "1.0")
    from gi.repository import UMockdev
    from tests.rigs.usb_devices import DEVICES, ROOT_HUB, umockdev_text

    mix = ["flash_drive", "headset", "keyboard", "android_mtp", "headset_storage",
           "receiver", "usb_ethernet", "hub", "iphone", "android_rndis"]
    tb = UMockdev.Testbed.new()
    tb.add_from_string(ROOT_HUB)
    paths = []
    for n in range(args.devices):
        port = f"1-{n + 1}"
        tb.add_from_string(umockdev_text(DEVICES[mix[n % len(mix)]], port, devnum=n + 2))
        paths.append(f"/sys/devices/usb1/{port}")
    load = os.getloadavg()[0]
    print(f"{args.plugs} plugs per scenario over {args.devices} devices "
          f"({', '.join(sorted(set(mix[: args.devices])))}); {os.cpu_count()} CPUs, "
          f"load average {load:.1f}; Python {sys.version.split()[0]}", flush=True)
    if args.nice:
        # The observer must not be what waits: with the machine busy, this process would
        # otherwise wake late and add its own delay to every figure.
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    rows = {}
    for kind, name, new in (("bare", "bare pyudev", False), ("idle", "agent idle", False),
                            ("busy", "agent busy", False),
                            ("idle", "agent idle, new devices", True),
                            ("busy", "agent busy, new devices", True)):
        with tempfile.TemporaryDirectory() as tmp:
            proc = start_subject(kind, tb, Path(tmp))
            try:
                rows[name] = summary(name, measure(tb, paths, args.plugs,
                                                  args.gap_ms / 1000, new))
            finally:
                proc.terminate()
                proc.wait(30)
    base = rows.pop("bare pyudev")
    for name, row in rows.items():
        print(f"{name} / bare pyudev: p50 x{row['p50'] / base['p50']:.2f}, "
              f"p99 x{row['p99'] / base['p99']:.2f}")
    ok = all(r["p50"] <= 0.5 and r["p99"] <= 1.0 for r in rows.values())
    print(f"target p50 <= 0.5 ms and p99 <= 1 ms, idle and busy: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
