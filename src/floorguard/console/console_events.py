"""Events the console itself makes (``agent.silent``, ``agent.recovered``,
``agent.chain_broken``, ``floor.sv_ratio_exceeded``...).

They go into the same ``events`` table as the agents' records, under the pseudo-agent
``console`` with a seq and hash chain of their own, so an auditor verifies them exactly as
an agent's journal: gapless seq from 1, each ``prev`` the hash of the record before, each
``hash`` recomputed from the record. The chain head lives in ``console_chain``; taking it
with an ``UPDATE`` first makes concurrent writers (threads or several console processes on
one store) queue for it instead of forking the chain.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from floorguard.console.store.schema import (
    console_chain,
    events,
)
from floorguard.events import GENESIS, KINDS, SEVERITIES, new_id, record_hash, rfc3339

CONSOLE_AGENT = "console"


def record_console_event(
    conn: Connection,
    kind: str,
    severity: str,
    details: dict[str, Any],
    *,
    seat: str = "",
    user: str | None = None,
    control: str | None = None,
    host: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Append one console-made event to the store inside the caller's transaction and
    return the full record (with its seq and hash). ``control`` defaults to the part of
    ``kind`` before the dot (``agent``, ``floor``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}: add it to floorguard.events.KINDS")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, not {severity!r}")
    # Taking the row lock first serialises writers; the read below then sees the head.
    bumped = conn.execute(console_chain.update().where(console_chain.c.id == 1)
                          .values(seq=console_chain.c.seq + 1))
    if bumped.rowcount == 0:
        conn.execute(console_chain.insert().values(id=1, seq=1, hash=GENESIS))
    head = conn.execute(sa.select(console_chain.c.seq, console_chain.c.hash)
                        .where(console_chain.c.id == 1)).one()
    ts = time.time() if now is None else now
    rec: dict[str, Any] = {
        "id": new_id(ts),
        "seq": int(head.seq),
        "ts": rfc3339(ts),
        "agent": CONSOLE_AGENT,
        "host": host if host is not None else socket.gethostname(),
        "seat": seat,
        "user": user,
        "control": control or kind.split(".", 1)[0],
        "kind": kind,
        "severity": severity,
        "policy": "",
        "details": details,
        "prev": str(head.hash),
    }
    rec["hash"] = record_hash(rec)
    conn.execute(console_chain.update().where(console_chain.c.id == 1)
                 .values(hash=rec["hash"]))
    row = {k: v for k, v in rec.items()}
    row["ts_us"] = int(ts * 1_000_000)
    row["received_us"] = row["ts_us"]
    conn.execute(events.insert().values(**row))
    # The daily report counts console-made events with the agents' own (same transaction).
    from floorguard.console.reports.rollup import apply_ingest

    apply_ingest(conn, CONSOLE_AGENT, [row], from_agent=False)
    return rec
