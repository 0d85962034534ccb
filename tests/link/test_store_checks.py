"""Console-side decisions on a real store (SQLite through the console's own migrations):
the console's event chain, chain checks at ingest, silence and recovery, retry spread."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from floorguard.agent.link.shipper import MAX_DRAIN_WINDOW, retry_delay
from floorguard.console import presence
from floorguard.console.console_events import CONSOLE_AGENT, record_console_event
from floorguard.console.ingest.chain import check_batch
from floorguard.console.ingest.pipeline import store_events
from floorguard.console.store.db import open_store
from floorguard.console.store.schema import agents, chain_breaks, events
from floorguard.events import FIELDS, GENESIS, record_hash, rfc3339, verify_chain

AGENT = "0b7f6a9e-8a53-4a4e-9f0e-0c8f7c1d2e3f"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The console's store on SQLite and on PostgreSQL (a fresh database per test)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/console.db"
    else:
        server = request.getfixturevalue("postgres")
        name = "t" + secrets.token_hex(6)
        admin = sa.create_engine(server + "/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        admin.dispose()
        url = f"{server}/{name}"
    eng = open_store(url)
    with eng.begin() as conn:
        conn.execute(agents.insert().values(id=AGENT, token_hash="t" * 64, seat="T-07",
                                            host="pc7", floor="3F", enrolled_us=1))
    yield eng
    eng.dispose()


def chain(n: int, start: int = 1, prev: str = GENESIS) -> list[dict[str, Any]]:
    out = []
    for seq in range(start, start + n):
        rec = {"id": f"00000000-0000-7000-8000-{seq:012d}", "seq": seq,
               "ts": rfc3339(1_800_000_000 + seq), "agent": AGENT, "host": "pc7",
               "seat": "T-07", "user": "alice", "control": "usb", "kind": "usb.allowed",
               "severity": "info", "policy": "", "details": {"n": seq}, "prev": prev}
        rec["hash"] = record_hash(rec)
        prev = rec["hash"]
        out.append(rec)
    return out


def ingest(engine: Engine, batch: list[dict[str, Any]],
           gaps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    with engine.begin() as conn:
        result = store_events(conn, AGENT, batch)
        result["gaps"] = gaps or []
        check_batch(conn, AGENT, batch, result)
    return result


def broken(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(events).where(events.c.agent == CONSOLE_AGENT,
                                                    events.c.kind == "agent.chain_broken")
                            .order_by(events.c.seq)).all()
    return [dict(r._mapping["details"]) for r in rows]


def console_chain(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(events).where(events.c.agent == CONSOLE_AGENT)
                            .order_by(events.c.seq)).all()
    return [{k: r._mapping[k] for k in FIELDS} for r in rows]


def test_console_events_form_their_own_verifiable_chain_under_concurrency(
        engine: Engine) -> None:
    def write(i: int) -> None:
        for j in range(5):
            with engine.begin() as conn:
                record_console_event(conn, "floor.sv_ratio_exceeded", "violation",
                                     {"writer": i, "n": j}, seat="")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recs = console_chain(engine)
    assert [r["seq"] for r in recs] == list(range(1, 21))
    assert recs[0]["control"] == "floor"
    assert verify_chain(recs) == (None, "intact")
    with pytest.raises(ValueError, match="unknown event kind"), engine.begin() as conn:
        record_console_event(conn, "agent.made_up", "info", {})


def test_an_intact_chain_in_batches_raises_nothing(engine: Engine) -> None:
    recs = chain(30)
    first = ingest(engine, recs[:10])
    assert (first["acked"], first["stored"]) == (10, 10)
    assert ingest(engine, recs[10:])["acked"] == 30
    replay = ingest(engine, recs[5:15])  # a replayed batch: nothing new
    assert (replay["acked"], replay["stored"]) == (30, 0)
    assert broken(engine) == []
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(events)
                            .where(events.c.agent == AGENT)).scalar() == 30


def test_an_altered_record_is_flagged_once_and_kept(engine: Engine) -> None:
    recs = chain(10)
    recs[4]["details"] = {"n": "changed on disk"}
    assert ingest(engine, recs)["acked"] == 10
    ingest(engine, recs)  # sent again: still one violation
    found = broken(engine)
    assert [(b["from_seq"], b["to_seq"], b["reason"]) for b in found] == [(5, 5, "altered")]
    assert found[0]["agent"] == AGENT
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(events)
                            .where(events.c.agent == AGENT)).scalar() == 10


def test_a_rehashed_record_breaks_the_link_to_the_next(engine: Engine) -> None:
    recs = chain(10)
    recs[4]["details"] = {"n": "forged"}
    recs[4]["hash"] = record_hash(recs[4])
    ingest(engine, recs)
    assert [(b["from_seq"], b["to_seq"], b["reason"]) for b in broken(engine)] == [
        (5, 6, "unlinked")]


def test_a_batch_that_does_not_link_to_the_one_stored_before_it_is_flagged(
        engine: Engine) -> None:
    recs = chain(10)
    ingest(engine, recs[:5])
    forged = chain(5, start=6, prev="0" * 64)  # seqs continue, the link does not
    assert ingest(engine, forged)["acked"] == 10
    assert [(b["from_seq"], b["to_seq"], b["reason"]) for b in broken(engine)] == [
        (5, 6, "unlinked")]


def test_a_batch_that_fills_a_hole_is_checked_against_what_follows_it(
        engine: Engine) -> None:
    recs = chain(20)
    ingest(engine, recs[:5] + recs[8:])
    filler, prev = [], recs[4]["hash"]
    for rec in chain(3, start=6):  # other records: they link back, not forward
        rec.update(user="bob", prev=prev)
        rec["hash"] = prev = record_hash(rec)
        filler.append(rec)
    assert ingest(engine, filler)["acked"] == 20
    assert [(b["from_seq"], b["to_seq"], b["reason"]) for b in broken(engine)] == [
        (8, 9, "unlinked")]


def test_a_rewritten_record_is_flagged_and_the_first_copy_kept(engine: Engine) -> None:
    recs = chain(10)
    ingest(engine, recs)
    again = [dict(r) for r in recs[3:5]]
    again[0]["details"] = {"n": "rewritten"}
    again[0]["hash"] = record_hash(again[0])
    ingest(engine, again)
    assert [(b["from_seq"], b["reason"]) for b in broken(engine)] == [(4, "rewritten")]
    with engine.connect() as conn:
        kept = conn.execute(sa.select(events.c.hash).where(events.c.agent == AGENT,
                                                           events.c.seq == 4)).scalar()
    assert kept == recs[3]["hash"]


def test_a_hole_filled_later_is_no_break(engine: Engine) -> None:
    recs = chain(20)
    assert ingest(engine, recs[:5] + recs[8:])["acked"] == 5  # waits for 6-8
    assert ingest(engine, recs[5:8])["acked"] == 20
    assert broken(engine) == []
    with engine.connect() as conn:
        assert conn.execute(sa.select(chain_breaks)).all() == []


def test_an_undeclared_gap_is_flagged_and_the_ack_moves_past_it(engine: Engine) -> None:
    recs = chain(20)
    assert ingest(engine, recs[:5] + recs[8:])["acked"] == 5
    assert broken(engine) == []
    # the agent sends again from its acknowledgement and still jumps the hole
    result = ingest(engine, recs[8:])
    assert result["acked"] == 20  # the agent is not stuck resending
    assert [(b["from_seq"], b["to_seq"], b["reason"]) for b in broken(engine)] == [
        (6, 8, "missing")]
    with engine.connect() as conn:
        assert conn.execute(sa.select(agents.c.acked_seq).where(agents.c.id == AGENT)
                            ).scalar() == 20


def test_a_declared_hole_that_links_is_accepted(engine: Engine) -> None:
    recs = chain(20)
    hole = {"from_seq": 6, "to_seq": 8, "last_hash": recs[7]["hash"], "count": 3}
    assert ingest(engine, recs[:5] + recs[8:], [hole])["acked"] == 20
    assert broken(engine) == []
    with engine.connect() as conn:
        row = conn.execute(sa.select(chain_breaks)).one()
    assert (row.from_seq, row.to_seq, row.explained) == (6, 8, True)


def test_a_declared_hole_that_does_not_link_is_flagged(engine: Engine) -> None:
    recs = chain(20)
    hole = {"from_seq": 6, "to_seq": 8, "last_hash": recs[6]["hash"], "count": 3}
    ingest(engine, recs[:5] + recs[8:], [hole])
    assert [(b["from_seq"], b["to_seq"], b["reason"]) for b in broken(engine)] == [
        (6, 8, "bad_gap")]


def test_silence_is_recorded_once_and_recovery_after(engine: Engine) -> None:
    t0 = 1_800_000_000_000_000
    with engine.begin() as conn:
        presence.heartbeat(conn, AGENT, "running", {"interval": 2.0}, t0)
        assert presence.check_silent(conn, t0 + 5_900_000) == []
        assert presence.check_silent(conn, t0 + 6_100_000) == [AGENT]
        assert presence.check_silent(conn, t0 + 9_000_000) == []
        out = presence.heartbeat(conn, AGENT, "running", {"interval": 2.0}, t0 + 10_000_000)
        assert out["recovered"] is True
    recs = console_chain(engine)
    assert [r["kind"] for r in recs] == ["agent.silent", "agent.recovered"]
    assert recs[0]["severity"] == "violation" and recs[0]["details"]["agent"] == AGENT
    assert recs[0]["seat"] == "T-07"
    assert recs[1]["details"]["silent_for_s"] == pytest.approx(3.9)


def test_a_deliberate_stop_is_never_silence(engine: Engine) -> None:
    t0 = 1_800_000_000_000_000
    with engine.begin() as conn:
        presence.heartbeat(conn, AGENT, "running", {"interval": 1.0}, t0)
        presence.heartbeat(conn, AGENT, "stopping", {"interval": 1.0}, t0 + 500_000)
        assert presence.check_silent(conn, t0 + 3600_000_000) == []
        presence.heartbeat(conn, AGENT, "running", {"interval": 1.0}, t0 + 3700_000_000)
        assert presence.check_silent(conn, t0 + 3704_000_000) == [AGENT]


def test_first_retry_spreads_over_the_fleets_drain_time() -> None:
    assert retry_delay(1, 0, 1, 5000, rand=lambda: 1.0) == pytest.approx(1.0)
    # 10,000 records each on 500 agents at 5,000/s: 1,000 s of work, capped to 300 s
    assert retry_delay(1, 10_000, 500, 5000, rand=lambda: 1.0) == pytest.approx(
        0.5 + MAX_DRAIN_WINDOW)
    assert retry_delay(1, 10_000, 50, 5000, rand=lambda: 0.5) == pytest.approx(0.5 + 50)
    assert retry_delay(1, 10_000, 50, 5000, rand=lambda: 0.0) == pytest.approx(0.5)
    # later retries: exponential with jitter, capped
    assert retry_delay(3, 10_000, 500, 5000, rand=lambda: 1.0) == pytest.approx(4.0)
    assert retry_delay(30, 0, 1, 5000, rand=lambda: 1.0) == pytest.approx(60.0)
