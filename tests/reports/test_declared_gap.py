"""One meaning of a gap, everywhere the chain is walked: a gap the agent's journal made at
its size cap and declared is intact for ``floorguard verify``, at ingest and in the daily
report (normal and re-hashed); the same hole undeclared is a fault in all three.

The gap is made by the real journal's size cap, verified by the real CLI, shipped through
the console's real ingest API (with the gaps the link declares) on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from floorguard.console.app import create_app
from floorguard.console.auth import sha256_hex
from floorguard.console.console_events import CONSOLE_AGENT
from floorguard.console.reports.daily import build_report
from floorguard.console.store.schema import agents, events
from floorguard.journal import Journal, JournalReader
from tests.link.journal_fill import fill
from tests.rigs.processes import floorguard

FLOOR = "gap floor"
TOKEN = "declared-gap-token-0123456789"


def gap_fields(agent: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"agent": agent, "host": "pc-test", "seat": "T-01", "user": None,
            "control": "agent", "kind": "agent.gap", "severity": "warning", "policy": "",
            "details": details}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, empty_store: Engine) -> Engine:
    return empty_store if request.param == "sqlite" else request.getfixturevalue("empty_pg")


def capped_journal(state_dir: Path) -> int:
    """A journal over its size cap with nothing shipped: info records dropped, a gap
    declared. Returns how many records were dropped."""
    agent = fill(state_dir, 2000, every_warning=50, pad=600)[0]["agent"]
    with Journal(state_dir) as journal:
        out = journal.compact(0, 1_048_576, 14 * 86400, lambda d: gap_fields(agent, d))
    assert out["dropped"] > 0
    return int(out["dropped"])


def ship(client: TestClient, state_dir: Path, declare: bool) -> int:
    """Send the journal as the link does: batches after the acknowledgement, each with
    the gaps it jumps over (or none), again from the acknowledgement until it stops
    moving. Returns the final acknowledgement."""
    acked = 0
    with JournalReader(state_dir) as reader:
        last = reader.last_seq()
        for _ in range(200):  # an undeclared hole costs a second pass each
            batch = list(reader.records(after_seq=acked, limit=500))
            if not batch or acked == last:
                break
            body: dict[str, Any] = {"events": batch}
            if declare:
                body["gaps"] = reader.gaps(after_seq=acked, upto=batch[-1]["seq"])
            resp = client.post("/api/v1/events", json=body,
                               headers={"Authorization": f"Bearer {TOKEN}"})
            assert resp.status_code == 200, resp.text
            acked = int(resp.json()["acked"])
    return acked


def chain_broken(store: Engine, agent: str) -> list[dict[str, Any]]:
    with store.connect() as conn:
        rows = conn.execute(sa.select(events.c.details).where(
            events.c.agent == CONSOLE_AGENT, events.c.kind == "agent.chain_broken")).all()
    return [dict(r.details) for r in rows if r.details.get("agent") == agent]


@pytest.mark.parametrize("declare", [True, False], ids=["declared", "undeclared"])
def test_a_size_cap_gap_means_the_same_in_verify_ingest_and_the_report(
        store: Engine, tmp_path: Path, declare: bool) -> None:
    state = tmp_path / "state"
    dropped = capped_journal(state)
    with JournalReader(state) as reader:
        records = list(reader.records())
        holes = reader.gaps()
    assert sum(h["count"] for h in holes) == dropped
    agent = records[0]["agent"]
    uuid.UUID(agent)
    if not declare:
        # the same hole, without the journal's declaration of it
        conn = sqlite3.connect(state / "journal.db")
        conn.execute("DELETE FROM gaps")
        conn.commit()
        conn.close()

    # 1. floorguard verify, the real CLI
    res = floorguard("verify", "--state-dir", str(state))
    if declare:
        assert res.returncode == 0, res.stdout + res.stderr
    else:
        assert res.returncode == 1, res.stdout + res.stderr
        assert str(holes[0]["from_seq"]) in res.stdout + res.stderr

    # 2. ingest, through the console's API
    with store.begin() as conn:
        conn.execute(agents.insert().values(id=agent, token_hash=sha256_hex(TOKEN),
                                            floor=FLOOR, seat="T-01", enrolled_us=0))
    with TestClient(create_app(engine=store)) as client:
        acked = ship(client, state, declare)
    assert acked == records[-1]["seq"]  # never stuck behind the hole
    found = chain_broken(store, agent)
    if declare:
        assert found == []
    else:
        assert {(b["from_seq"], b["to_seq"], b["reason"]) for b in found} == {
            (h["from_seq"], h["to_seq"], "missing") for h in holes}

    # 3. the daily report, from the ingest rollups and re-hashed from the store; it
    # judges the seqs between the day's first and last record
    lo, hi = records[0]["seq"], records[-1]["seq"]
    in_span = sum(max(0, min(h["to_seq"], hi) - max(h["from_seq"], lo) + 1) for h in holes)
    assert in_span > 0
    ts = datetime.fromisoformat(records[0]["ts"].replace("Z", "+00:00"))
    day = ts.astimezone(ZoneInfo("Asia/Tokyo")).date()
    for deep in (False, True):
        with store.connect() as conn:
            doc = build_report(conn, day, [FLOOR], deep=deep)
        (row,) = doc["floors"][0]["integrity"]["agents"]
        assert row["records"] == len(records)
        assert (row["bad_hash"], row["bad_link"]) == (0, 0)
        if declare:
            assert row["verified"] is True, (deep, row)
            assert (row["missing"], row["declared_dropped"]) == (0, in_span), (deep, row)
            assert doc["floors"][0]["integrity"]["all_verified"] is True
        else:
            assert (row["missing"], row["declared_dropped"]) == (in_span, 0), (deep, row)
            assert row["verified"] is False
