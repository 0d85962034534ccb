"""Benchmark the console at scale: HTTP ingest, the floor view and the violations list,
on SQLite or PostgreSQL, with N events already stored.

    python -m bench.console_store --backend sqlite --prefill 1000000
    python -m bench.console_store --backend postgresql --prefill 10000000

The store is pre-filled directly (SQLAlchemy Core executemany on SQLite, COPY on
PostgreSQL, with the events indexes dropped and rebuilt around the fill, which is how a
bulk import is done), with 500 seats on 5 floors. Then a real console process is started
and measured over HTTP: agents posting chained batches through POST /api/v1/events
concurrently, and an SV loading the floor view and violations pages. PostgreSQL runs in a
private cluster on 127.0.0.1 made for the run. Prints one line per figure.

    python -m bench.console_store --backend postgresql --prefill 10000000 --keep DIR

``--keep DIR`` (PostgreSQL) keeps the cluster in DIR after the run so that the next run
skips the pre-fill: the first run fills a template database there (named after the
pre-fill and seat counts, never connected to again), and every run, the first included,
measures a fresh file copy of it, migrated to this checkout's schema when it opens, so
each run starts from the same stored events and sees none of an earlier run's ingest.
Remove DIR when done; without ``--keep`` nothing is left behind.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from tests.rigs.console import LiveConsole
from tests.rigs.processes import PASSWORD

from floorguard.console.auth import add_user, sha256_hex
from floorguard.console.store.db import now_us, open_store
from floorguard.console.store.schema import agents, events, seat_state
from floorguard.events import GENESIS, new_id, record_hash, rfc3339

KINDS = [("usb.allowed", "info", "usb"), ("idle.warned", "warning", "idle"),
         ("idle.locked", "info", "idle"), ("idle.unlocked", "info", "idle"),
         ("print.held", "info", "print"), ("print.approved", "info", "print"),
         ("agent.started", "info", "agent"), ("usb.blocked", "violation", "usb"),
         ("files.flagged", "warning", "files"), ("processes.killed", "violation",
                                                 "processes")]
WEIGHTS = [30, 15, 15, 15, 8, 8, 4, 2, 2, 1]
COLUMNS = ("agent", "seq", "id", "ts", "ts_us", "host", "seat", "user", "control", "kind",
           "severity", "policy", "details", "prev", "hash", "received_us")


def log(msg: str) -> None:
    print(msg, flush=True)


def make_seats(n: int) -> list[dict[str, Any]]:
    return [{"id": str(uuid.UUID(int=i + 1)), "seat": f"S-{i + 1:03d}",
             "floor": f"{i % 5 + 3}F", "host": f"pc-{i + 1:03d}", "user": f"op{i + 1:03d}"}
            for i in range(n)]


def fill_rows(seats: list[dict[str, Any]], total: int, start_us: int, span_us: int
              ) -> Any:
    """Yield event rows, agent by agent (seq gapless per agent), times spread over span."""
    rng = random.Random(7)
    per = total // len(seats)
    extra = total - per * len(seats)
    policy = "p" * 64
    for i, s in enumerate(seats):
        n = per + (1 if i < extra else 0)
        step = span_us // max(n, 1)
        prev = GENESIS
        kinds = rng.choices(range(len(KINDS)), WEIGHTS, k=n)
        for seq in range(1, n + 1):
            kind, sev, control = KINDS[kinds[seq - 1]]
            ts_us = start_us + (seq - 1) * step + rng.randrange(step or 1)
            h = hashlib.sha256(f"{s['id']}{seq}".encode()).hexdigest()
            yield (s["id"], seq, str(uuid.UUID(int=(i << 64) | seq)), rfc3339(ts_us / 1e6),
                   ts_us, s["host"], s["seat"], s["user"], control, kind, sev, policy,
                   '{"n":1}', prev, h, ts_us)
            prev = h


def _event_indexes(engine: sa.Engine) -> list[dict[str, Any]]:
    return [i for i in sa.inspect(engine).get_indexes("events")]


def prefill(engine: sa.Engine, seats: list[dict[str, Any]], total: int) -> float:
    started = time.monotonic()
    now = now_us()
    with engine.begin() as conn:
        conn.execute(agents.insert(), [
            {"id": s["id"], "token_hash": sha256_hex("seat-token-" + s["id"]),
             "host": s["host"], "seat": s["seat"], "floor": s["floor"], "enrolled_us": now,
             "last_seen_us": now, "acked_seq": 0, "status": {
                 "user": s["user"], "locked": False, "controls": ["usb", "idle", "print"],
                 "unavailable": {}, "version": "0.1.0", "policy": "p" * 64}}
            for s in seats])
        conn.execute(seat_state.insert(), [
            {"agent": s["id"], "seat": s["seat"], "host": s["host"], "user": s["user"],
             "last_event_us": now, "locked": False, "updated_us": now} for s in seats])
    if total == 0:
        return 0.0
    indexes = _event_indexes(engine)
    with engine.begin() as conn:
        for ix in indexes:
            conn.exec_driver_sql(f'DROP INDEX "{ix["name"]}"')
    rows = fill_rows(seats, total, now - 30 * 86400 * 1_000_000, 30 * 86400 * 1_000_000)
    done = 0
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            cols = ", ".join(f'"{c}"' for c in COLUMNS)
            with cur.copy(f"COPY events ({cols}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                for row in rows:
                    copy.write_row(row)
                    done += 1
                    if done % 1_000_000 == 0:
                        log(f"  filled {done:,}")
            raw.commit()
        finally:
            raw.close()
    else:
        cols = ", ".join(f'"{c}"' for c in COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        sql = f"INSERT INTO events ({cols}) VALUES ({marks})"  # noqa: S608 fixed names
        batch: list[tuple[Any, ...]] = []
        with engine.begin() as conn:
            for row in rows:
                batch.append(row)
                if len(batch) == 50_000:
                    conn.exec_driver_sql(sql, batch)
                    done += len(batch)
                    batch.clear()
                    if done % 1_000_000 == 0:
                        log(f"  filled {done:,}")
            if batch:
                conn.exec_driver_sql(sql, batch)
    fill_s = time.monotonic() - started
    log(f"  rows in {fill_s:.0f}s; rebuilding {len(indexes)} indexes")
    with engine.begin() as conn:
        for ix in indexes:
            cols = ", ".join(f'"{c}"' for c in ix["column_names"])
            conn.exec_driver_sql(f'CREATE INDEX "{ix["name"]}" ON events ({cols})')
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE events")
        else:
            conn.exec_driver_sql("ANALYZE")
    return time.monotonic() - started


def chained_batches(agent_id: str, n: int, batch: int) -> list[list[dict[str, Any]]]:
    prev, out, cur = GENESIS, [], []
    base = time.time()
    for seq in range(1, n + 1):
        kind, sev, control = KINDS[seq % len(KINDS)]
        rec = {"id": new_id(base + seq / 1000), "seq": seq, "ts": rfc3339(base + seq / 1000),
               "agent": agent_id, "host": "bench", "seat": "B-" + agent_id[:4],
               "user": "bench-op", "control": control, "kind": kind, "severity": sev,
               "policy": "p" * 64, "details": {"n": seq}, "prev": prev}
        rec["hash"] = record_hash(rec)
        prev = rec["hash"]
        cur.append(rec)
        if len(cur) == batch:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def bench_ingest(live: LiveConsole, engine: sa.Engine, posters: int, per_agent: int,
                 batch: int) -> float:
    now = now_us()
    ids = [str(uuid.uuid4()) for _ in range(posters)]
    with engine.begin() as conn:
        conn.execute(agents.insert(), [
            {"id": a, "token_hash": sha256_hex("bench-token-" + a), "host": "bench",
             "seat": "B-" + a[:4], "floor": "bench", "enrolled_us": now} for a in ids])
    work = {a: [json.dumps({"events": b}).encode() for b in chained_batches(a, per_agent, batch)]
            for a in ids}
    errors: list[str] = []

    def post(agent_id: str) -> None:
        with httpx.Client(base_url=live.url, timeout=60, headers={
                "Authorization": "Bearer bench-token-" + agent_id}) as client:
            for body in work[agent_id]:
                resp = client.post("/api/v1/events", content=body,
                                   headers={"content-type": "application/json"})
                if resp.status_code != 200:
                    errors.append(resp.text[:200])
                    return

    threads = [threading.Thread(target=post, args=(a,)) for a in ids]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - started
    if errors:
        raise SystemExit(f"ingest failed: {errors[0]}")
    return posters * per_agent / took


def timed_get(client: httpx.Client, path: str, n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        resp = client.get(path)
        times.append((time.perf_counter() - t) * 1000)
        assert resp.status_code == 200, (path, resp.status_code)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def fill_store(db_url: str, args: argparse.Namespace, seats: list[dict[str, Any]]
               ) -> sa.Engine:
    engine = open_store(db_url)
    with engine.begin() as conn:
        add_user(conn, "bench-sv", "sv", PASSWORD)
    log(f"{args.backend}: pre-filling {args.prefill:,} events over {args.seats} seats")
    fill_s = prefill(engine, seats, args.prefill)
    log(f"prefill {args.prefill:,} events: {fill_s:.0f}s "
        f"({args.prefill / max(fill_s, 1e-9):,.0f} rows/s incl. index build)")
    return engine


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--prefill", type=int, default=1_000_000, help="events stored first")
    ap.add_argument("--seats", type=int, default=500)
    ap.add_argument("--posters", type=int, default=8, help="agents posting at once")
    ap.add_argument("--per-agent", type=int, default=10_000, help="events each poster sends")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", type=Path, default=None, metavar="DIR",
                    help="PostgreSQL: keep the cluster in DIR and reuse its pre-filled "
                         "store in later runs (see above)")
    args = ap.parse_args(argv)
    if args.keep is not None and args.backend != "postgresql":
        ap.error("--keep is for --backend postgresql")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fg-bench-"))
    cluster = None
    if args.backend == "postgresql":
        from tests.rigs.postgres import PostgresCluster

        cluster = PostgresCluster(root=args.keep).start()
    else:
        db_url = f"sqlite:///{workdir}/bench.db"
    live = None
    try:
        seats = make_seats(args.seats)
        if cluster is not None and args.keep is not None:
            template = f"prefilled_{args.prefill}_{args.seats}"
            known = f"SELECT 1 FROM pg_database WHERE datname = '{template}'"  # noqa: S608 digits only
            if not cluster.sql(known):
                fill_store(cluster.new_database(template), args, seats).dispose()
                # No connection to it again, autovacuum's included: every copy starts
                # from the state the fill left.
                cluster.sql(f'ALTER DATABASE "{template}" ALLOW_CONNECTIONS false')
            else:
                log(f"reusing the {args.prefill:,} events pre-filled in {template}")
            cluster.sql('DROP DATABASE IF EXISTS "bench_run"')
            db_url = cluster.new_database("bench_run", template=template)
            engine = open_store(db_url)
        else:
            if cluster is not None:
                db_url = cluster.new_database()
            engine = fill_store(db_url, args, seats)
        live = LiveConsole(workdir, db_url=db_url).start(timeout=120)
        sv = live.login("bench-sv")
        p50, p95 = timed_get(sv, "/floor/tiles", 30)
        log(f"floor view ({args.seats} seats), /floor/tiles: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
        p50, p95 = timed_get(sv, "/floor", 30)
        log(f"floor page ({args.seats} seats), /floor: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
        for label, path in (("violations, newest page", "/violations"),
                            ("violations of one seat", "/violations?seat=S-042"),
                            ("violations of one day", "/violations?day="
                             + time.strftime("%Y-%m-%d", time.localtime(time.time() - 86400 * 10))),
                            ("one kind, any severity", "/violations?kind=idle.locked&severity="),
                            ("seat timeline", f"/seats/{seats[41]['id']}")):
            p50, p95 = timed_get(sv, path, 20)
            log(f"{label}: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
        rate = bench_ingest(live, engine, args.posters, args.per_agent, args.batch)
        total = args.posters * args.per_agent
        log(f"ingest over HTTP: {total:,} events by {args.posters} agents in batches of "
            f"{args.batch}: {rate:,.0f} events/s (store held {args.prefill:,} before)")
        with engine.connect() as conn:
            stored = conn.execute(sa.select(sa.func.count()).select_from(events)).scalar()
        log(f"events stored at the end: {stored:,}")
        engine.dispose()
    finally:
        if live is not None:
            live.stop()
        if cluster is not None:
            cluster.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)  # a 10M SQLite store is 8 GB
    return 0


if __name__ == "__main__":
    sys.exit(main())
