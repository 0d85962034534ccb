"""Console ingest rate over HTTP: POST /api/v1/events in batches of 500, on SQLite, with
the store holding about 100k rows and about 1M rows.

Starts a real console (uvicorn, loopback, free port) on a fresh SQLite file, enrolls
agents through the API, and posts chained journal records. The first point fills the store
to 100k rows through HTTP; for the second the store is pre-filled to 1M rows directly with
SQLAlchemy Core, then the HTTP rate is measured again. Stops the console it started.

    python bench/console_ingest.py [--rows 100000] [--big 1000000] [--measure 50000]
                                   [--clients 2] [--dir DIR]

Target: at least 10,000 events/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from tests.rigs.console import LiveConsole  # noqa: E402

from floorguard.events import GENESIS, new_id, record_hash, rfc3339  # noqa: E402

BATCH = 500


class Agent:
    """An enrolled agent that makes chained records the way the journal does."""

    def __init__(self, url: str, code: str, n: int):
        self.id = str(uuid.uuid4())
        resp = httpx.post(url + "/api/v1/enroll", json={"code": code, "agent_id": self.id,
                                                        "host": f"pc-{n:03d}",
                                                        "seat": f"T-{n:03d}"}, timeout=30)
        resp.raise_for_status()
        self.headers = {"Authorization": f"Bearer {resp.json()['token']}",
                        "Content-Type": "application/json"}
        self.n, self.seq, self.prev = n, 0, GENESIS

    def batch(self) -> bytes:
        out = []
        now = time.time()
        for _ in range(BATCH):
            self.seq += 1
            rec: dict[str, Any] = {
                "id": new_id(now), "seq": self.seq, "ts": rfc3339(now), "agent": self.id,
                "host": f"pc-{self.n:03d}", "seat": f"T-{self.n:03d}", "user": "alice",
                "control": "usb", "kind": "usb.blocked", "severity": "violation",
                "policy": "ab" * 32, "prev": self.prev,
                "details": {"device": "0781:5583", "serial": "4C530001230412114554",
                            "interfaces": ["08:06:50"], "verdict": "block", "port": "1-2"}}
            rec["hash"] = record_hash(rec)
            self.prev = rec["hash"]
            out.append(rec)
        return json.dumps({"events": out}).encode()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ingest(url: str, agents: list[Agent], rows: int, clients: int, pid: int
           ) -> tuple[float, float]:
    """Post ``rows`` events (pre-serialised, so only the console is timed); returns
    events/s of wall time and events per CPU-second the console process used."""
    per_agent = rows // BATCH // len(agents)
    work = [[a.batch() for _ in range(per_agent)] for a in agents]
    jobs: list[list[tuple[Agent, list[bytes]]]] = [[] for _ in range(clients)]
    for i, (a, batches) in enumerate(zip(agents, work, strict=True)):
        jobs[i % clients].append((a, batches))
    errors: list[str] = []

    def client(mine: list[tuple[Agent, list[bytes]]]) -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            for k in range(per_agent):  # agents interleaved, each in seq order
                for a, batches in mine:
                    r = c.post("/api/v1/events", content=batches[k], headers=a.headers)
                    if r.status_code != 200 or r.json()["stored"] != BATCH:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                        return

    threads = [threading.Thread(target=client, args=(j,)) for j in jobs]
    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    cpu = cpu_seconds(pid) - cpu0
    if errors:
        raise SystemExit(f"ingest failed: {errors[0]}")
    n = per_agent * BATCH * len(agents)
    return n / dt, n / cpu


def prefill(db_url: str, rows: int) -> float:
    """Add ``rows`` events of other agents straight into the store (SQLAlchemy Core)."""
    import sqlalchemy as sa

    from floorguard.console.store.db import make_engine
    from floorguard.console.store.schema import events

    engine = make_engine(db_url)
    t0 = time.perf_counter()
    now_us = int(time.time() * 1_000_000)
    chunk = 10_000
    details = {"device": "0781:5583", "verdict": "block"}
    with engine.begin() as conn:
        start = conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one()
        for base in range(0, rows, chunk):
            agent = f"prefill-{(start + base) // 100_000:04d}"
            conn.execute(events.insert(), [{
                "agent": agent, "seq": (start + base) % 100_000 + i + 1,
                "id": str(uuid.uuid4()), "ts": "2026-11-01T00:00:00.000000Z",
                "ts_us": now_us - (rows - base - i) * 1000, "host": "pc-x", "seat": "T-x",
                "user": "bob", "control": "usb", "kind": "usb.blocked",
                "severity": "violation", "policy": "cd" * 32, "details": details,
                "prev": "0" * 64, "hash": "1" * 64, "received_us": now_us,
            } for i in range(min(chunk, rows - base))])
    dt = time.perf_counter() - t0
    engine.dispose()
    return rows / dt


def count(db_url: str) -> int:
    import sqlite3

    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000, help="first point (through HTTP)")
    ap.add_argument("--big", type=int, default=1_000_000, help="second point (pre-filled)")
    ap.add_argument("--measure", type=int, default=50_000, help="events posted at --big")
    ap.add_argument("--agents", type=int, default=10)
    ap.add_argument("--clients", type=int, default=2, help="concurrent HTTP clients")
    ap.add_argument("--dir", help="where to put the database (default: a temp dir)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fg-ingest-", dir=args.dir))
    live = LiveConsole(work)
    db, url = live.db_url, live.url
    try:
        console = live.start(timeout=60).proc
        assert console is not None

        from floorguard.console.cli import create_enrollment_code
        from floorguard.console.store.db import open_store

        engine = open_store(db)
        codes = [create_enrollment_code(engine, "cli:bench", "bench", 600)
                 for _ in range(args.agents)]
        engine.dispose()
        agents = [Agent(url, code, n) for n, code in enumerate(codes)]

        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; "
              f"batches of {BATCH}, {args.agents} agents, {args.clients} HTTP clients")
        rate, per_cpu = ingest(url, agents, args.rows, args.clients, console.pid)
        print(f"HTTP ingest 0 -> {count(db):>9,} rows:  {rate:9.0f} events/s wall, "
              f"{per_cpu:9.0f} events per console CPU-second "
              f"(target >= 10,000/s: {'ok' if rate >= 10_000 else 'BELOW'})")
        fill = args.big - count(db)
        if fill > 0:
            frate = prefill(db, fill)
            print(f"pre-fill with SQLAlchemy Core:  {frate:9.0f} rows/s  "
                  f"(to {count(db):,} rows)")
        before = count(db)
        rate, per_cpu = ingest(url, agents, args.measure, args.clients, console.pid)
        print(f"HTTP ingest at {before:>9,} rows:  {rate:9.0f} events/s wall, "
              f"{per_cpu:9.0f} events per console CPU-second "
              f"({args.measure:,} events; target >= 10,000/s: "
              f"{'ok' if rate >= 10_000 else 'BELOW'})")
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        print(f"database size: {(work / 'console.db').stat().st_size / 2**20:.0f} MiB")
        return 0
    finally:
        live.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
