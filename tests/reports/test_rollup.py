"""Rollups kept at ingest: counted once, chain faults found whatever the arrival order."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from floorguard.console.app import create_app
from floorguard.console.auth import sha256_hex
from floorguard.console.reports.rollup import note_heartbeats, sub_kind
from floorguard.console.store.schema import agents, report_counts, report_slots
from floorguard.events import GENESIS, record_hash

AGENT = str(uuid.UUID(int=77))
TOKEN = "rollup-test-token-0123456789"


def chain(n: int, tamper: dict[int, dict[str, Any]] | None = None,
          relink: dict[int, str] | None = None) -> list[dict[str, Any]]:
    out, prev = [], GENESIS
    for seq in range(1, n + 1):
        rec = {"id": str(uuid.uuid4()), "seq": seq,
               "ts": f"2026-11-26T01:{seq:02d}:00.000000Z", "agent": AGENT, "host": "h",
               "seat": "T-07", "user": "u", "control": "usb", "kind": "usb.blocked",
               "severity": "violation", "policy": "p",
               "details": {"recognition": "storage"}, "prev": (relink or {}).get(seq, prev)}
        rec["hash"] = record_hash(rec)
        prev = rec["hash"]
        if tamper and seq in tamper:
            rec["details"] = tamper[seq]
        out.append(rec)
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, empty_store: Engine) -> Any:
    engine = empty_store if request.param == "sqlite" else request.getfixturevalue("empty_pg")
    with engine.begin() as conn:
        conn.execute(agents.insert().values(id=AGENT, token_hash=sha256_hex(TOKEN),
                                            floor="F", seat="T-07", enrolled_us=0))
    with TestClient(create_app(engine=engine)) as client:
        def post(records: list[dict[str, Any]]) -> None:
            r = client.post("/api/v1/events", json={"events": records},
                            headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200, r.text
        yield engine, post


def slots(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        row = conn.execute(sa.select(
            sa.func.sum(report_slots.c.events), sa.func.min(report_slots.c.min_seq),
            sa.func.max(report_slots.c.max_seq), sa.func.sum(report_slots.c.bad_hash),
            sa.func.sum(report_slots.c.bad_link), sa.func.min(report_slots.c.first_bad_seq),
            sa.func.sum(report_slots.c.heartbeats))).one()
        n = conn.execute(sa.select(sa.func.sum(report_counts.c.n))).scalar()
    return {"events": int(row[0]), "min": int(row[1]), "max": int(row[2]),
            "bad_hash": int(row[3]), "bad_link": int(row[4]),
            "first_bad": None if row[5] is None else int(row[5]), "heartbeats": int(row[6]),
            "counted": int(n)}


def test_resent_and_out_of_order_records_are_counted_once_and_link_up(api: Any) -> None:
    engine, post = api
    recs = chain(6)
    post([recs[0], recs[1], recs[3]])  # seq 3 is late
    post([recs[2], recs[4], recs[5]])
    post(recs)  # everything again
    assert slots(engine) == {"events": 6, "min": 1, "max": 6, "bad_hash": 0, "bad_link": 0,
                             "first_bad": None, "heartbeats": 0, "counted": 6}


def test_altered_record_and_broken_link_are_found(api: Any) -> None:
    engine, post = api
    # seq 3 altered after hashing; seq 5 hashed correctly but pointing at the wrong record
    recs = chain(6, tamper={3: {"recognition": "phone"}}, relink={5: "f" * 64})
    post(recs[:2])
    post(recs[4:])  # 5 and 6 arrive before 3 and 4
    post(recs[2:4])
    got = slots(engine)
    assert (got["bad_hash"], got["bad_link"], got["first_bad"]) == (1, 1, 3)
    assert got["events"] == 6


def test_heartbeats_count_towards_being_heard(empty_store: Engine) -> None:
    with empty_store.begin() as conn:
        conn.execute(agents.insert().values(id=AGENT, floor="F", enrolled_us=0))
        note_heartbeats(conn, AGENT, [0, 60_000_000, 3_600_000_000])
    with empty_store.connect() as conn:
        rows = conn.execute(sa.select(report_slots.c.slot_us, report_slots.c.heartbeats,
                                      report_slots.c.floor)
                            .order_by(report_slots.c.slot_us)).all()
    assert [tuple(r) for r in rows] == [(0, 2, "F"), (3_600_000_000, 1, "F")]


@pytest.mark.parametrize("kind,details,sub", [
    ("usb.blocked", {"recognition": "phone"}, "phone"),
    ("usb.blocked", {"recognition": "keyboard"}, "other"),
    ("usb.blocked", {}, "other"),
    ("usb.allowed", {"rule": "usb.device[0b0e:24c8]"}, "device_rule"),
    ("usb.allowed", {"rule": "usb.allow[03:*:*]"}, "class"),
    ("print.approved", {"by": "sv1"}, "sv1"),
    ("idle.locked", {"by": "x"}, ""),
])
def test_sub_kind(kind: str, details: dict[str, Any], sub: str) -> None:
    assert sub_kind(kind, details) == sub
