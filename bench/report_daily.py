"""Benchmark: the daily report over a day of 100k and 1M events, SQLite and PostgreSQL.

    python -m bench.report_daily [--events 100000,1000000] [--stores sqlite,postgresql]
                                 [--seats 100]

For each store and size it ingests one Tokyo day of hash-chained events through the
console's real ingest path (``store_events`` plus the report's ingest hook, one
transaction per batch of 1000 as the API does), then times building the day's report
(median of 3) and rendering it as JSON. "rollup %" is the share of the ingest time spent
in the hook (the rollup upserts and the hash-chain checks), inside the same transactions.
PostgreSQL runs on a private cluster on a loopback port, stopped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from floorguard.console.ingest.chain import check_batch
from floorguard.console.ingest.pipeline import store_events
from floorguard.console.reports.daily import build_report
from floorguard.console.reports.render import render
from floorguard.console.reports.rollup import ingest_hook
from floorguard.console.store.db import make_engine, open_store
from floorguard.console.store.schema import agents
from floorguard.events import GENESIS, rfc3339

DAY = date(2026, 11, 26)
FLOOR = "bench floor"
BATCH = 1000
# kind, control, severity, share of events
# The listed kinds (prints, violations, device-rule exceptions) cost per row in the report;
# their shares here are 0.3% prints, 0.5% violations and 0.05% USB exceptions.
MIX = [("idle.warned", "idle", "info", 0.30), ("idle.unlocked", "idle", "info", 0.26),
       ("idle.locked", "idle", "info", 0.20), ("files.flagged", "files", "warning", 0.11),
       ("usb.removed", "usb", "info", 0.05), ("usb.allowed", "usb", "info", 0.04),
       ("print.held", "print", "info", 0.0015), ("print.approved", "print", "info", 0.0015),
       ("usb.blocked", "usb", "violation", 0.005), ("network.flagged", "network",
                                                     "warning", 0.007)]


def day_events(n: int, seats: int, seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    """n events spread over the day, per agent hash-chained (hash computed later)."""
    rng = random.Random(seed)
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=ZoneInfo("Asia/Tokyo")).timestamp()
    kinds = [m[:3] for m in MIX]
    weights = [m[3] for m in MIX]
    per_agent = n // seats
    out: dict[str, list[dict[str, Any]]] = {}
    for s in range(seats):
        aid = str(uuid.UUID(int=s + 1))
        times = sorted(start + rng.random() * 86400 for _ in range(per_agent))
        recs = []
        for seq, ts in enumerate(times, start=1):
            kind, control, sev = rng.choices(kinds, weights)[0]
            hour = int((ts - start) // 3600)
            user = f"op{(s + (hour // 8) * 7) % (seats + 5):03d}"  # shifts: hot-desking
            details: dict[str, Any] = {}
            if kind == "usb.blocked":
                details = {"recognition": rng.choice(["storage", "phone", "network", "x"])}
            elif kind == "usb.allowed" and rng.random() < 0.0125:
                details = {"rule": "usb.device[0b0e:24c8]"}
            elif kind.startswith("print."):
                details = {"job": seq, "pages": rng.randint(1, 9)}
                if kind == "print.approved":
                    details["by"] = rng.choice(["sv1", "sv2", "sv3"])
            recs.append({"id": str(uuid.uuid4()), "seq": seq, "ts": rfc3339(ts),
                         "agent": aid, "host": f"pc{s:03d}", "seat": f"T-{s:03d}",
                         "user": user, "control": control, "kind": kind, "severity": sev,
                         "policy": "p" * 64, "details": details})
        out[aid] = recs
    return out


def chain(recs: list[dict[str, Any]]) -> None:
    from floorguard.events import record_hash

    prev = GENESIS
    for r in recs:
        r["prev"] = prev
        r["hash"] = prev = record_hash(r)


def ingest(engine: sa.engine.Engine, data: dict[str, list[dict[str, Any]]], hook: bool
           ) -> tuple[int, float, float]:
    with engine.begin() as conn:
        for aid, recs in data.items():
            conn.execute(agents.insert().values(id=aid, floor=FLOOR, seat=recs[0]["seat"],
                                                enrolled_us=0))
    total, in_hook, t0 = 0, 0.0, time.perf_counter()
    # interleave agents batch by batch, as many agents sending at once would
    offsets = dict.fromkeys(data, 0)
    while any(offsets[a] < len(data[a]) for a in data):
        for aid, recs in data.items():
            i = offsets[aid]
            if i >= len(recs):
                continue
            batch = recs[i:i + BATCH]
            offsets[aid] = i + BATCH
            with engine.begin() as conn:
                result = store_events(conn, aid, batch)
                check_batch(conn, aid, batch, result)  # the chain walk and the ack
                if hook:
                    h0 = time.perf_counter()
                    ingest_hook(conn, aid, batch, result)
                    in_hook += time.perf_counter() - h0
            total += len(batch)
    return total, time.perf_counter() - t0, in_hook


def time_report(engine: sa.engine.Engine) -> tuple[float, float, dict[str, Any]]:
    runs = []
    doc: dict[str, Any] = {}
    for _ in range(3):
        t0 = time.perf_counter()
        with engine.connect() as conn:
            doc = build_report(conn, DAY, [FLOOR])
        runs.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    render(doc, "json")
    return statistics.median(runs), time.perf_counter() - t0, doc


def fresh_pg(url: str, name: str) -> str:
    admin = make_engine(url)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", default="100000,1000000")
    ap.add_argument("--stores", default="sqlite,postgresql")
    ap.add_argument("--seats", type=int, default=100)
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.events.split(",")]
    names = [x.strip() for x in args.stores.split(",")]

    tmp = Path(tempfile.mkdtemp(prefix="fg-report-bench"))
    try:
        return _run(sizes, names, args.seats, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _cluster() -> Iterator[str]:
    """The tests' private PostgreSQL cluster, for this run."""
    from tests.rigs.postgres import PostgresCluster

    cluster = PostgresCluster().start()
    try:
        yield cluster.url()
    finally:
        cluster.stop()


def _run(sizes: list[int], names: list[str], seats: int, tmp: Path) -> int:
    print(f"{'store':<11}{'events':>9}{'ingest s':>10}{'ev/s':>9}{'rollup %':>10}"
          f"{'report s':>10}{'json s':>8}  check", flush=True)
    with _cluster() if "postgresql" in names else _nothing() as pg_url:
        for n in sizes:
            data = day_events(n, seats)
            for recs in data.values():
                chain(recs)
            for name in names:
                url = (f"sqlite:///{tmp}/bench-{n}.db" if name == "sqlite"
                       else fresh_pg(pg_url, f"bench_{n}"))
                engine = open_store(url)
                total, secs, in_hook = ingest(engine, data, hook=True)
                rep, js, doc = time_report(engine)
                f = doc["floors"][0]
                ok = f["summary"]["events"] == total and f["integrity"]["all_verified"]
                print(f"{name:<11}{total:>9}{secs:>10.1f}{total / secs:>9.0f}"
                      f"{100 * in_hook / secs:>9.0f}%{rep:>10.3f}{js:>8.3f}  "
                      f"{'ok' if ok else 'MISMATCH'}", flush=True)
                engine.dispose()
    return 0


class _nothing:
    def __enter__(self) -> str:
        return ""

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    sys.exit(main())
