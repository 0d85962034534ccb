"""Chain checks at ingest: every agent's evidence is continuous, linked and unaltered,
and the acknowledgement the agent relies on.

Runs as the first ingest hook inside the transaction that stores a batch. Per agent it
keeps the point up to which the chain has been walked (``agent_link.chain_seq``/
``chain_hash``) and walks forward over what the store now holds with the one chain walker
(``floorguard.events.ChainWalker``, the same walk as ``floorguard verify`` and the daily
report):

- each incoming record's ``hash`` is recomputed from its content (an altered record);
- a record sent again with the same seq but another hash (a rewritten record) comes from
  the ingest result's ``conflicts``;
- each stored record's ``prev`` must equal the hash of the record before it;
- a missing run of seqs is a fault, unless the agent declared it with the batch as a gap
  its journal made at its size cap (``gaps``) *and* the record after it links to the
  gap's declared hash (see the walker for what a declared gap means). An undeclared hole
  first holds the acknowledgement back (the records may still come); when the agent,
  sending again from the acknowledgement, still jumps it, the records are missing.

Each fault becomes one ``agent.chain_broken`` violation (by the console, see
``console_events``) naming the agent, the seq range and why; ``chain_breaks`` keeps it
once, and keeps each declared gap (``explained``) for the report. The console keeps every
record it has.

The acknowledgement (``agents.acked_seq``) is computed here and nowhere else: it is the
point the walk reached, so it moves past a declared gap and past a fault once flagged, so
that the rest of the journal still arrives, and stops before a hole it is still waiting
for.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from floorguard.console.console_events import record_console_event
from floorguard.console.store.db import now_us
from floorguard.console.store.schema import (
    agent_link,
    agents,
    chain_breaks,
    events,
)
from floorguard.events import GENESIS, REASONS, ChainWalker, DeclaredGap, Finding, record_hash

WALK = 2000

WHY = {**REASONS,
       "rewritten": "a record came again with the same seq but a different hash"}


def link_row(conn: Connection, agent_id: str) -> Any:
    """The agent's link state row, made on first use."""
    row = conn.execute(sa.select(agent_link).where(agent_link.c.agent == agent_id)).first()
    if row is None:
        conn.execute(agent_link.insert().values(agent=agent_id, chain_seq=0,
                                                chain_hash=GENESIS))
        row = conn.execute(sa.select(agent_link).where(agent_link.c.agent == agent_id)).one()
    return row


def _note(conn: Connection, agent_id: str, seat: str, first: int, last: int, reason: str,
          *, explained: bool = False, extra: dict[str, Any] | None = None) -> bool:
    """Record one break once; returns whether it was new."""
    known = conn.execute(sa.select(chain_breaks.c.id).where(
        chain_breaks.c.agent == agent_id, chain_breaks.c.from_seq == first,
        chain_breaks.c.reason == reason)).first()
    if known is not None:
        return False
    conn.execute(chain_breaks.insert().values(
        agent=agent_id, from_seq=first, to_seq=last, reason=reason, explained=explained,
        details=json.dumps(extra or {}, sort_keys=True), recorded_us=now_us()))
    if not explained:
        record_console_event(conn, "agent.chain_broken", "violation", {
            "agent": agent_id, "from_seq": first, "to_seq": last, "reason": reason,
            "why": WHY[reason], **(extra or {})}, seat=seat)
    return True


def _seen_before(conn: Connection, agent_id: str, first: int, last: int) -> bool:
    """Whether this hole was already waited for once; if not, remember it."""
    known = conn.execute(sa.select(chain_breaks.c.id).where(
        chain_breaks.c.agent == agent_id, chain_breaks.c.from_seq == first,
        chain_breaks.c.reason == "waiting")).first()
    if known is not None:
        conn.execute(chain_breaks.delete().where(chain_breaks.c.id == known.id))
        return True
    conn.execute(chain_breaks.insert().values(
        agent=agent_id, from_seq=first, to_seq=last, reason="waiting", explained=True,
        details="", recorded_us=now_us()))
    return False


def _declared(result: dict[str, Any]) -> list[DeclaredGap]:
    return [DeclaredGap(int(g["from_seq"]), int(g["to_seq"]), str(g["last_hash"]),
                        int(g.get("count", 0))) for g in result.get("gaps", [])]


def check_batch(conn: Connection, agent_id: str, records: list[dict[str, Any]],
                result: dict[str, Any]) -> None:
    """The ingest hook: check what this batch added to the agent's chain, and set the
    acknowledgement (``result["acked"]``, and the agent's ``acked_seq``).

    Also leaves the walk's findings in ``result["chain_findings"]`` (a list of
    ``Finding``) for the report rollups, which count them and do not walk again."""
    seat_row = conn.execute(sa.select(agents.c.seat, agents.c.acked_seq)
                            .where(agents.c.id == agent_id)).first()
    seat = str(seat_row.seat) if seat_row else ""
    for seq in result.get("conflicts", []):
        _note(conn, agent_id, seat, seq, seq, "rewritten")
    altered = result.get("altered")
    if altered is None:
        altered = [rec["seq"] for rec in records if record_hash(rec) != rec["hash"]]
    # A record's own hash is judged once, when it arrives (records walked later, once a
    # hole before them fills, were judged then).
    for seq in altered:
        _note(conn, agent_id, seat, seq, seq, "altered")
    state = link_row(conn, agent_id)
    walker = ChainWalker(int(state.chain_seq), str(state.chain_hash), _declared(result))
    findings: list[Finding] = []

    def note(found: list[Finding]) -> None:
        for f in found:
            findings.append(f)
            if f.reason == "declared_gap":
                _note(conn, agent_id, seat, f.first, f.last, "declared_gap", explained=True,
                      extra=_gap_extra(walker, f))
            elif f.reason in ("missing", "bad_gap", "unlinked"):
                extra = _gap_extra(walker, f) if f.reason == "bad_gap" else None
                _note(conn, agent_id, seat, f.first, f.last, f.reason, extra=extra)

    if len(result.get("inserted", ())) == len(records):
        # Every record of the batch was stored by this request as it came, so where the
        # batch continues the walked chain without a hole, the store holds exactly these
        # records: walk them here rather than read a thousand rows back. The walk over
        # the store goes on from where they end.
        for rec in records:
            at = int(rec["seq"])
            if at <= walker.seq:
                continue
            if at != walker.seq + 1:
                break
            note(walker.step(rec, hash_ok=True))
    held = False
    while not held:
        rows = conn.execute(
            sa.select(events.c.seq, events.c.prev, events.c.hash)
            .where(events.c.agent == agent_id, events.c.seq > walker.seq)
            .order_by(events.c.seq).limit(WALK)).all()
        for row in rows:
            rec = {"seq": int(row.seq), "prev": row.prev, "hash": row.hash}
            found = walker.look(rec, hash_ok=True)
            if any(f.reason == "missing" for f in found) and not _seen_before(
                    conn, agent_id, walker.seq + 1, rec["seq"] - 1):
                # The first time, the missing records may still be on their way (a batch
                # sent twice at once): the acknowledgement stops before them and the
                # agent sends from there again. Sent again from its acknowledgement,
                # the agent still jumps the hole: it does not have those records.
                held = True
                break
            note(found)
            walker.step(rec, hash_ok=True)
        if len(rows) < WALK:
            break
    # holes that were filled after all are no longer waited for
    conn.execute(chain_breaks.delete().where(chain_breaks.c.agent == agent_id,
                                             chain_breaks.c.reason == "waiting",
                                             chain_breaks.c.from_seq <= walker.seq))
    conn.execute(agent_link.update().where(agent_link.c.agent == agent_id)
                 .values(chain_seq=walker.seq, chain_hash=walker.prev or GENESIS))
    result["chain_findings"] = findings
    result["acked"] = acknowledge(conn, agent_id, walker.seq, walker.prev or GENESIS)


def _gap_extra(walker: ChainWalker, f: Finding) -> dict[str, Any]:
    gap = walker._declared(f.first, f.last)
    if gap is None:  # pragma: no cover - a gap finding always has its declaration
        return {}
    return {"declared_count": gap.count, "last_hash": gap.last_hash}


def acknowledge(conn: Connection, agent_id: str, seq: int, last_hash: str) -> int:
    """Set the agent's acknowledgement to the walked point (never backwards) and note it
    heard; return the acknowledgement. The only writer of ``agents.acked_seq``."""
    row = conn.execute(sa.select(agents.c.acked_seq).where(agents.c.id == agent_id)
                       ).first()
    if row is None:
        return 0
    values: dict[str, Any] = {"last_seen_us": now_us()}
    acked = int(row.acked_seq)
    if seq > acked:
        values.update(acked_seq=seq, last_hash=last_hash)
        acked = seq
    conn.execute(agents.update().where(agents.c.id == agent_id).values(**values))
    return acked
