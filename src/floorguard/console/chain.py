"""Chain checks at ingest: every agent's evidence is continuous, linked and unaltered.

Runs as an ingest hook inside the transaction that stores a batch. Per agent it keeps the
point up to which the chain has been walked (``agent_link.chain_seq``/``chain_hash``) and
walks forward over what the store now holds:

- each incoming record's ``hash`` is recomputed from its content (an altered record);
- a record sent again with the same seq but another hash (a rewritten record) comes from
  the ingest result's ``conflicts``;
- each stored record's ``prev`` must equal the hash of the record before it;
- a missing run of seqs is a gap, unless the agent declared it in the batch as a hole
  its journal made at its size cap (``gaps``: first and last seq and the hash of the last
  dropped record) *and* the record after the hole links to that hash. An undeclared hole
  first holds the acknowledgement back (the records may still come); when the agent,
  sending again from the acknowledgement, still jumps it, the records are missing.

Each break becomes one ``agent.chain_broken`` violation (by the console, see
``console_events``) naming the agent, the seq range and why; ``chain_breaks`` keeps it
once. The console keeps every record it has, and the agent's acknowledgement moves past
a break so that the rest of its journal still arrives.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..events import GENESIS, record_hash
from .console_events import record_console_event
from .db import now_us
from .schema import agents, events, metadata

agent_link = sa.Table(
    "agent_link", metadata,
    sa.Column("agent", sa.String(64), primary_key=True),
    sa.Column("chain_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("chain_hash", sa.String(64), nullable=False, server_default=GENESIS),
    sa.Column("heartbeat_us", sa.BigInteger),
    sa.Column("interval_s", sa.Float, nullable=False, server_default="30"),
    sa.Column("state", sa.String(16), nullable=False, server_default=""),
    sa.Column("silent_us", sa.BigInteger),
    sa.Column("stopped_us", sa.BigInteger),
)

chain_breaks = sa.Table(
    "chain_breaks", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("agent", sa.String(64), nullable=False),
    sa.Column("from_seq", sa.BigInteger, nullable=False),
    sa.Column("to_seq", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("explained", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("details", sa.Text, nullable=False, server_default=""),
    sa.Column("recorded_us", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("agent", "from_seq", "reason", name="chain_breaks_once"),
)

WALK = 2000

WHY = {
    "altered": "the record's hash does not match its content",
    "rewritten": "a record came again with the same seq but a different hash",
    "unlinked": "the record's prev is not the hash of the record before it",
    "missing": "records are missing and the agent did not declare the hole",
    "bad_gap": "the record after a declared hole does not link to the hole's last hash",
}


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


def check_batch(conn: Connection, agent_id: str, records: list[dict[str, Any]],
                result: dict[str, Any]) -> None:
    """The ingest hook: check what this batch added to the agent's chain and move the
    acknowledgement past any break (``result["acked"]``)."""
    seat_row = conn.execute(sa.select(agents.c.seat, agents.c.acked_seq)
                            .where(agents.c.id == agent_id)).first()
    seat = str(seat_row.seat) if seat_row else ""
    for seq in result.get("conflicts", []):
        _note(conn, agent_id, seat, seq, seq, "rewritten")
    altered = result.get("altered")
    if altered is None:
        altered = [rec["seq"] for rec in records if record_hash(rec) != rec["hash"]]
    for seq in altered:
        _note(conn, agent_id, seat, seq, seq, "altered")
    declared = {int(g["from_seq"]): g for g in result.get("gaps", [])}
    state = link_row(conn, agent_id)
    seq, prev = int(state.chain_seq), str(state.chain_hash)
    if len(result.get("inserted", ())) == len(records):
        # Every record of the batch was stored by this request as it came, so where the
        # batch continues the walked chain without a hole, the store holds exactly these
        # records: walk them here rather than read a thousand rows back. The walk over
        # the store goes on from where they end.
        for rec in records:
            at = int(rec["seq"])
            if at <= seq:
                continue
            if at != seq + 1:
                break
            if rec["prev"] != prev:
                _note(conn, agent_id, seat, max(seq, 1), at, "unlinked")
            seq, prev = at, str(rec["hash"])
    held = False
    while not held:
        rows = conn.execute(
            sa.select(events.c.seq, events.c.prev, events.c.hash)
            .where(events.c.agent == agent_id, events.c.seq > seq)
            .order_by(events.c.seq).limit(WALK)).all()
        for row in rows:
            at = int(row.seq)
            if at > seq + 1:
                hole = declared.get(seq + 1)
                if hole is not None and int(hole["to_seq"]) == at - 1:
                    linked = row.prev == hole["last_hash"]
                    _note(conn, agent_id, seat, seq + 1, at - 1,
                          "missing" if linked else "bad_gap", explained=linked,
                          extra={"declared_count": int(hole.get("count", 0))})
                elif not _seen_before(conn, agent_id, seq + 1, at - 1):
                    # The first time, the missing records may still be on their way (a
                    # batch sent twice at once): the acknowledgement stops before them
                    # and the agent sends from there again.
                    held = True
                    break
                else:
                    # Sent again from its acknowledgement, the agent still jumps the
                    # hole: it does not have those records.
                    _note(conn, agent_id, seat, seq + 1, at - 1, "missing")
            elif row.prev != prev:
                _note(conn, agent_id, seat, max(seq, 1), at, "unlinked")
            seq, prev = at, str(row.hash)
        if len(rows) < WALK:
            break
    # holes that were filled after all are no longer waited for
    conn.execute(chain_breaks.delete().where(chain_breaks.c.agent == agent_id,
                                             chain_breaks.c.reason == "waiting",
                                             chain_breaks.c.from_seq <= seq))
    conn.execute(agent_link.update().where(agent_link.c.agent == agent_id)
                 .values(chain_seq=seq, chain_hash=prev))
    if seat_row is not None and seq > int(result.get("acked", 0)):
        # Only a break holds the plain contiguous acknowledgement back: every record
        # before ``seq`` is stored or was found missing and flagged.
        conn.execute(agents.update().where(agents.c.id == agent_id)
                     .values(acked_seq=seq, last_hash=prev))
        result["acked"] = seq
