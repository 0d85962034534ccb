"""The journal as an offline buffer: pruning what the console acknowledged, dropping
unshipped info events (never warnings or violations) at the size cap with a chained
agent.gap, and a chain that still verifies across every documented hole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from floorguard.events import verify_chain
from floorguard.journal import Journal, JournalReader

from .journal_fill import fill


def gap_fields(details: dict[str, Any]) -> dict[str, Any]:
    return {"agent": "a", "host": "h", "seat": "s", "user": None, "control": "agent",
            "kind": "agent.gap", "severity": "warning", "policy": "", "details": details}


def test_cap_drops_only_unshipped_info_and_records_a_chained_gap(tmp_path: Path) -> None:
    stored = fill(tmp_path, 3000, every_warning=7, pad=600)
    warnings = {r["seq"] for r in stored if r["severity"] != "info"}
    with Journal(tmp_path) as journal:
        before = journal.used_bytes()
        assert before > 1_048_576
        out = journal.compact(0, 1_048_576, 14 * 86400, gap_fields)
        assert out["dropped"] > 0 and out["used_bytes"] <= 1_048_576
        gap = out["gap"]
        assert gap["kind"] == "agent.gap" and gap["seq"] == 3001
        assert gap["details"]["dropped"] == out["dropped"]
        assert gap["details"]["severity_dropped"] == "info"
    with JournalReader(tmp_path) as reader:
        left = list(reader.records())
        assert warnings <= {r["seq"] for r in left}, "a warning was dropped"
        assert len(left) == 3001 - out["dropped"]
        assert reader.verify() == (None, "intact")
        holes = reader.gaps()
        assert sum(h["count"] for h in holes) == out["dropped"]
        # each hole names the hash of its last dropped record: the record after links to it
        by_seq = {r["seq"]: r for r in left}
        for h in holes:
            assert by_seq[h["to_seq"] + 1]["prev"] == h["last_hash"]


def test_chain_continues_after_a_drop_and_a_reopen(tmp_path: Path) -> None:
    fill(tmp_path, 2000, pad=600)
    with Journal(tmp_path) as journal:
        journal.compact(0, 1_048_576, 14 * 86400, gap_fields)
    fill(tmp_path, 10)
    with JournalReader(tmp_path) as reader:
        assert reader.verify() == (None, "intact")
        assert reader.last_seq() == 2011


def test_a_hole_not_in_the_gaps_table_is_still_caught(tmp_path: Path) -> None:
    import sqlite3

    fill(tmp_path, 50)
    conn = sqlite3.connect(tmp_path / "journal.db")
    conn.execute("DELETE FROM journal WHERE seq = 20")
    conn.commit()
    conn.close()
    with JournalReader(tmp_path) as reader:
        assert reader.verify()[0] == 20


def test_acknowledged_records_beyond_retention_are_pruned_and_verify_still_holds(
        tmp_path: Path) -> None:
    now = [1_000_000.0]
    with Journal(tmp_path, clock=lambda: now[0]) as journal:
        for i in range(100):
            # warnings commit at once, each with its own time
            journal.record({"agent": "a", "host": "h", "seat": "s", "user": None,
                            "control": "usb", "kind": "usb.blocked", "severity": "warning",
                            "policy": "", "details": {"i": i}})
            now[0] += 3600  # one an hour: 100 hours
        # 14 days hold all of them; 1 day holds the last 24 hours, if acknowledged
        assert journal.compact(100, 1 << 30, 14 * 86400, gap_fields)["pruned"] == 0
        out = journal.compact(60, 1 << 30, 86400, gap_fields)
        assert out["pruned"] == 60  # not past what the console acknowledged
        out = journal.compact(100, 1 << 30, 86400, gap_fields)
        assert out["pruned"] == 100 - 60 - 24
    with JournalReader(tmp_path) as reader:
        assert reader.meta("base_seq") == "76"
        assert reader.verify() == (None, "intact")
        assert next(r["seq"] for r in reader.records()) == 77


def test_over_the_cap_acknowledged_records_go_before_unshipped_ones(tmp_path: Path) -> None:
    fill(tmp_path, 3000, pad=600)
    with Journal(tmp_path) as journal:
        out = journal.compact(2500, 1_048_576, 14 * 86400, gap_fields)
    assert out["pruned"] > 0 and out["dropped"] == 0
    with JournalReader(tmp_path) as reader:
        seqs = [r["seq"] for r in reader.records()]
        assert seqs[-1] == 3000 and seqs == list(range(seqs[0], 3001))
        assert reader.verify() == (None, "intact")


def test_verify_chain_accepts_only_declared_holes_that_link() -> None:
    from floorguard.events import GENESIS, record_hash

    recs, prev = [], GENESIS
    for seq in range(1, 6):
        r = {"seq": seq, "kind": "x", "prev": prev}
        r["hash"] = record_hash(r)
        prev = r["hash"]
        recs.append(r)
    kept = [recs[0], recs[3], recs[4]]
    assert verify_chain(kept)[0] == 2
    assert verify_chain(kept, gaps={2: (3, recs[2]["hash"])}) == (None, "intact")
    assert verify_chain(kept, gaps={2: (3, recs[1]["hash"])})[0] == 4
