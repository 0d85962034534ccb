"""A slow-client flood against a live console held to the systemd default of 1,024 open
files: N sockets from 127.0.0.1 each send half a request line and then nothing.

Starts a real console (uvicorn, loopback, free port, SQLite) with RLIMIT_NOFILE 1024,
opens the sockets, and while they are held probes ``/healthz`` from another loopback
address (127.0.0.2) every 100 ms. Reports how many flood sockets the console closed at
once (over its per-address cap) and how many after its header deadline, the /healthz
latencies and failures during the flood, and how many bytes the console logged. Stops the
console it started.

    python bench/slow_clients.py [--sockets 1100] [--hold 15] [--dir DIR]

Targets: no /healthz failure; every flood socket closed within the header deadline;
the log grows by a few lines, not by a traceback per socket.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import selectors
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from tests.rigs.console import LiveConsole  # noqa: E402

UNIT_NOFILE = 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sockets", type=int, default=1100)
    ap.add_argument("--hold", type=float, default=15.0, help="seconds to keep probing")
    ap.add_argument("--dir", help="work folder (default: a temp folder, removed after)")
    args = ap.parse_args()
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="fg-slow-"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The console inherits the unit's default limit; this process needs room for the flood.
    resource.setrlimit(resource.RLIMIT_NOFILE, (UNIT_NOFILE, hard))
    live = LiveConsole(workdir)
    try:
        live.start()
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log_before = live.log.stat().st_size
        sel = selectors.DefaultSelector()
        opened_at = time.monotonic()
        for _ in range(args.sockets):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", live.port))
            sel.register(s, selectors.EVENT_READ)
        time.sleep(0.2)
        for key in list(sel.get_map().values()):
            with contextlib.suppress(OSError):  # refused already by the cap
                key.fileobj.send(b"GET /healthz HT")  # type: ignore[union-attr]
        probe = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"),
                             timeout=5)
        latencies: list[float] = []
        failures = 0
        closed_at: list[float] = []
        end = time.monotonic() + args.hold
        while time.monotonic() < end:
            for key, _ev in sel.select(timeout=0):
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                try:
                    data = conn.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    closed_at.append(time.monotonic() - opened_at)
                    sel.unregister(conn)
                    conn.close()
            t0 = time.monotonic()
            try:
                ok = probe.get(live.url + "/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append((time.monotonic() - t0) * 1000)
            else:
                failures += 1
            time.sleep(0.1)
        still_open = len(sel.get_map())
        for key in list(sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        time.sleep(0.5)
        log_bytes = live.log.stat().st_size - log_before
        at_once = sum(1 for t in closed_at if t < 1.0)
        later = sorted(t for t in closed_at if t >= 1.0)
        print(f"flood: {args.sockets} half-sent requests from 127.0.0.1, console at "
              f"RLIMIT_NOFILE {UNIT_NOFILE}, watched {args.hold:g} s")
        print(f"  closed by the console at once (over a cap): {at_once}")
        if later:
            print(f"  closed after the header deadline: {len(later)} (from {later[0]:.1f} s "
                  f"to {later[-1]:.1f} s after opening)")
        print(f"  still open at the end: {still_open}")
        if latencies:
            q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies
            print(f"  /healthz from 127.0.0.2: {len(latencies)} answered, {failures} failed;"
                  f" median {statistics.median(latencies):.1f} ms, p99 {q[-1]:.1f} ms, "
                  f"max {max(latencies):.1f} ms")
        else:
            print(f"  /healthz from 127.0.0.2: none answered, {failures} failed")
        print(f"  console log grew by {log_bytes} bytes")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        live.stop()
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
