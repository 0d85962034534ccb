"""Storing events from agents: exactly once per (agent, seq).

A record that comes back with the same seq but a different hash is not stored over the
first one. The acknowledgement is not computed here: the chain check (``chain.py``, the
first ingest hook) sets it from its walk, so an agent whose batch was partly lost simply
sends the rest again.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from floorguard.console.store.db import now_us
from floorguard.console.store.schema import events
from floorguard.events import record_hash


def ts_to_us(ts: str) -> int:
    dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return int(dt.timestamp() * 1_000_000)


_ROW_COLUMNS = ("agent", "seq", "id", "ts", "ts_us", "host", "seat", "user", "control", "kind",
                "severity", "policy", "details", "prev", "hash", "received_us")
_COLS_SQL = ", ".join(f'"{c}"' for c in _ROW_COLUMNS)
# Only the fixed column names above go into these texts; values are bound or copied.
_SQLITE_INSERT = (f"INSERT INTO events ({_COLS_SQL}) "  # noqa: S608
                  f"VALUES ({', '.join('?' for _ in _ROW_COLUMNS)}) "
                  "ON CONFLICT (agent, seq) DO NOTHING")
_PG_BUFFER = ("CREATE TEMP TABLE IF NOT EXISTS ingest_buffer "
              "(LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
_PG_COPY = f"COPY ingest_buffer ({_COLS_SQL}) FROM STDIN"
_PG_MOVE = (f"INSERT INTO events ({_COLS_SQL}) SELECT {_COLS_SQL} "  # noqa: S608
            "FROM ingest_buffer ON CONFLICT (agent, seq) DO NOTHING")

_details_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _insert_ignore(conn: Connection, params: list[tuple[Any, ...]]) -> int:
    """Insert the rows (values in ``_ROW_COLUMNS`` order) that are not stored yet; return
    how many were inserted.

    Plain values go straight to the driver: SQLAlchemy's per-row parameter processing of
    a compiled insert costs more than the database's own work at ingest rates.
    """
    dialect = conn.dialect.name
    if dialect == "sqlite":
        return int(conn.exec_driver_sql(_SQLITE_INSERT, params).rowcount)
    if dialect == "postgresql":
        # COPY into a per-connection buffer (emptied at commit), then one INSERT that
        # skips what is already stored: PostgreSQL's fastest path that keeps
        # exactly-once.
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(_PG_BUFFER)
            with cursor.copy(_PG_COPY) as copy:
                for row in params:
                    copy.write_row(row)
            cursor.execute(_PG_MOVE)
            return int(cursor.rowcount)
        finally:
            cursor.close()
    raise RuntimeError(f"unsupported dialect {dialect}")  # pragma: no cover


def store_events(conn: Connection, agent_id: str, batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Insert a validated batch for one agent (sorted by seq).

    Returns ``{"stored": K, "inserted": [seq, ...], "conflicts": [seq, ...],
    "altered": [seq, ...]}`` where inserted are the seqs this batch newly stored (for
    rollups kept by ingest hooks), conflicts are seqs already stored with a different hash
    (evidence was rewritten at the agent) and altered are records whose hash does not
    match their content.
    """
    received = now_us()
    # One tuple per record in _ROW_COLUMNS order, built in one pass: at a thousand
    # records a batch, an intermediate dict per record cost more than the insert.
    params = [(agent_id, e["seq"], e["id"], e["ts"], ts_to_us(e["ts"]), e["host"], e["seat"],
               e["user"], e["control"], e["kind"], e["severity"], e["policy"],
               _details_json(e["details"]), e["prev"], e["hash"], received) for e in batch]
    stored = _insert_ignore(conn, params) if params else 0
    conflicts: list[int] = []
    inserted = [e["seq"] for e in batch]
    if stored < len(params):
        # Some were here already (a resent batch): the insert kept the first copy; a
        # different hash under the same seq is evidence of a rewrite at the agent. The
        # rows this request stored carry its receive time.
        incoming = {e["seq"]: e["hash"] for e in batch}
        inserted = []
        for seq, h, got_us in conn.execute(
            sa.select(events.c.seq, events.c.hash, events.c.received_us).where(
                events.c.agent == agent_id, events.c.seq.in_(list(incoming)))
        ):
            if incoming[int(seq)] != h:
                conflicts.append(int(seq))
            elif got_us == received:
                inserted.append(int(seq))
    # Each record's own hash is checked once here; the chain check and the report
    # rollups (ingest hooks) read the answer instead of hashing the batch again.
    altered = sorted(e["seq"] for e in batch if record_hash(e) != e["hash"])
    return {"stored": stored, "inserted": sorted(inserted),
            "conflicts": sorted(conflicts), "altered": altered}
