"""The state of each seat, kept up to date by ingest so the floor view never scans events.

``on_ingest`` runs inside every ingest transaction and folds the batch into one
``seat_state`` row per agent (operator, last violation, idle and lock state).
``tile_state`` is the pure decision the floor view shows, from that row, the agent's
heartbeat status and the floor's settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from floorguard.console.ingest.pipeline import ts_to_us
from floorguard.console.store.db import now_us
from floorguard.console.store.schema import (
    seat_state,
)

# Tile states, most urgent first.
SILENT, VIOLATION, IDLE_UNLOCKED, LOCKED, OK = "silent", "violation", "idle", "locked", "ok"
STATES = (SILENT, VIOLATION, IDLE_UNLOCKED, LOCKED, OK)
RECENT_VIOLATION_US = 15 * 60 * 1_000_000  # a violation colours the tile this long

_FIELDS = ("seat", "host", "user", "last_event_us", "last_kind", "last_violation_us",
           "last_violation_kind", "idle_since_us", "locked")


def fold(state: dict[str, Any], records: list[dict[str, Any]], now: int | None = None
         ) -> dict[str, Any]:
    """The seat's state after ``records`` (in seq order), as of ``now``. Pure.

    A record stamped after ``now`` counts as made ``now``: a PC whose clock jumped ahead
    would otherwise hold its tile at that future time, and every record after the clock
    was set right would look like a late one and change nothing."""
    s = dict(state)
    for r in records:
        ts = r.get("ts_us") or ts_to_us(r["ts"])
        if now is not None:
            ts = min(ts, now)
        if s.get("last_event_us") is not None and ts < s["last_event_us"]:
            # A late record from a backlog: it may still be the latest violation.
            if r["severity"] == "violation" and ts > (s.get("last_violation_us") or 0):
                s["last_violation_us"], s["last_violation_kind"] = ts, r["kind"]
            continue
        s["seat"], s["host"] = r["seat"], r["host"]
        s["last_event_us"], s["last_kind"] = ts, r["kind"]
        kind = r["kind"]
        if kind in ("agent.started", "agent.stopped") or r.get("user"):
            s["user"] = r.get("user")
        if r["severity"] == "violation":
            s["last_violation_us"], s["last_violation_kind"] = ts, kind
        if kind in ("idle.warned", "idle.lock_failed"):
            s["idle_since_us"] = s.get("idle_since_us") or ts
        elif kind == "idle.locked":
            s["locked"], s["idle_since_us"] = True, None
        elif kind == "idle.unlocked":
            s["locked"], s["idle_since_us"] = False, None
        elif kind == "agent.started":
            s["idle_since_us"] = None
    return s


def on_ingest(conn: Connection, agent_id: str, records: list[dict[str, Any]],
              result: dict[str, Any]) -> None:
    """Ingest hook: one read and one write of the agent's seat row per batch."""
    if not records or not result.get("stored"):
        return
    row = conn.execute(sa.select(seat_state).where(seat_state.c.agent == agent_id)).first()
    before = {k: getattr(row, k) for k in _FIELDS} if row else {"locked": False}
    now = now_us()
    after = fold(before, records, now)
    values = {k: after.get(k) for k in _FIELDS}
    values["locked"] = bool(values["locked"])
    values["updated_us"] = now
    if row is None:
        conn.execute(seat_state.insert().values(agent=agent_id, **values))
    else:
        conn.execute(seat_state.update().where(seat_state.c.agent == agent_id)
                     .values(**values))


@dataclass(frozen=True)
class Tile:
    agent: str
    seat: str
    floor: str
    user: str | None
    state: str
    last_heard_us: int | None
    violation_kind: str | None = None


def tile_state(*, now: int, last_seen_us: int | None, silent_after_us: int,
               status: dict[str, Any] | None, last_violation_us: int | None,
               idle_since_us: int | None, locked: bool, idle_unlocked_after_us: int) -> str:
    """The one state a seat tile shows, most urgent first. Pure."""
    if last_seen_us is None or now - last_seen_us > silent_after_us:
        return SILENT
    if last_violation_us is not None and now - last_violation_us <= RECENT_VIOLATION_US:
        return VIOLATION
    heartbeat_locked = status.get("locked") if isinstance(status, dict) else None
    is_locked = bool(heartbeat_locked) if heartbeat_locked is not None else locked
    if not is_locked and idle_since_us is not None:
        return IDLE_UNLOCKED  # warned of idleness (or the lock failed), still unlocked
    idle_s = status.get("idle_seconds") if isinstance(status, dict) else None
    if not is_locked and isinstance(idle_s, int | float) and \
            idle_s * 1_000_000 >= idle_unlocked_after_us:
        return IDLE_UNLOCKED
    return LOCKED if is_locked else OK
