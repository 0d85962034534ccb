"""Journal append rate, with the hash chain: violations (each committed and fsync'd on its
own before ``record`` returns) and info events (group-committed), then the verify rate.

    python bench/journal_append.py [--violations 1000] [--info 50000] [--dir DIR]

DIR decides which disk is measured (default: a temporary directory).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from floorguard.journal import Journal, JournalReader

FIELDS = {"agent": "0a0a0a0a-0000-4000-8000-000000000001", "host": "pc-17", "seat": "T-01",
          "user": "alice", "control": "usb", "policy": "ab" * 32}


def event(kind: str, severity: str, n: int) -> dict[str, object]:
    return {**FIELDS, "kind": kind, "severity": severity,
            "details": {"n": n, "device": "0781:5583", "serial": "4C530001230412114554",
                        "interfaces": ["08:06:50"], "verdict": "block"}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--violations", type=int, default=1000)
    ap.add_argument("--info", type=int, default=50000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--dir", help="where to put the journal (default: a temp dir)")
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    base = Path(tempfile.mkdtemp(prefix="fg-journal-", dir=args.dir))
    try:
        # 1. violations, one at a time: each record() returns once fsync'd
        with Journal(base / "v") as j:
            lat = []
            t0 = time.perf_counter()
            for i in range(args.violations):
                s = time.perf_counter()
                j.record(event("usb.blocked", "violation", i))
                lat.append(time.perf_counter() - s)
            dt = time.perf_counter() - t0
            commits = j.commits
        lat.sort()
        print(f"violations, 1 writer:   {args.violations / dt:9.0f} events/s  "
              f"(median {statistics.median(lat) * 1000:.2f} ms, "
              f"p99 {lat[int(len(lat) * 0.99)] * 1000:.2f} ms per durable event, "
              f"{commits} commits)")

        # 2. violations from several threads at once (several controls): commits share fsyncs
        with Journal(base / "vt") as j:
            per = args.violations // args.threads

            def worker(k: int) -> None:
                for i in range(per):
                    j.record(event("usb.blocked", "violation", k * per + i))

            threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.threads)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            dt = time.perf_counter() - t0
            n, commits = per * args.threads, j.commits
        print(f"violations, {args.threads} threads:  {n / dt:9.0f} events/s  "
              f"({n / commits:.1f} events per fsync'd commit)")

        # 3. info events: appended without waiting, group-committed within 100 ms
        with Journal(base / "i") as j:
            c0 = time.process_time()
            t0 = time.perf_counter()
            tickets = [j.append(event("agent.command", "info", i)) for i in range(args.info)]
            for t in tickets:
                t.wait(60)
            dt = time.perf_counter() - t0
            cpu = time.process_time() - c0
            commits = j.commits
        print(f"info, group-committed:  {args.info / dt:9.0f} events/s  "
              f"({args.info / commits:.0f} events per commit, {commits} commits; "
              f"{cpu / args.info * 1e6:.0f} us of CPU per event, caller and writer)")

        # 4. verifying the chain
        with JournalReader(base / "i") as r:
            t0 = time.perf_counter()
            bad, why = r.verify()
            dt = time.perf_counter() - t0
        assert bad is None, why
        print(f"verify:                 {args.info / dt:9.0f} records/s")
        return 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
