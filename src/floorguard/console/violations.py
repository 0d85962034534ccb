"""Violations as the console keeps them: the filtered, keyset-paged list of events and
the SVs' acknowledgements (which never change or delete an event)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from floorguard.console.floors import all_floor_policies
from floorguard.console.store.schema import (
    events,
    violation_acks,
)
from floorguard.events import SEVERITIES
from floorguard.policy import FloorSettings

PAGE = 50


@dataclass(frozen=True)
class Filters:
    day: str = ""
    seat: str = ""
    operator: str = ""
    control: str = ""
    kind: str = ""
    severity: str = "violation"  # "" for every severity

    def query(self, **extra: str) -> str:
        fields = {k: v for k, v in self.__dict__.items() if v} | extra
        if not self.severity:
            fields["severity"] = ""
        return urlencode(fields)


def day_range(day: str, tz: str) -> tuple[int, int]:
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), ZoneInfo(tz))
    end = start + timedelta(days=1)
    return int(start.timestamp() * 1_000_000), int(end.timestamp() * 1_000_000)


def display_timezone(conn: Connection) -> str:
    """The zone lists show times in: the floors' zone when they share one."""
    zones = {p.timezone for p in all_floor_policies(conn).values()}
    return zones.pop() if len(zones) == 1 else FloorSettings.timezone


def list_events(conn: Connection, f: Filters, tz: str, after: tuple[int, str, int] | None,
                limit: int = PAGE, *, visible: Any = None) -> list[Any]:
    """``visible``: a WHERE clause limiting the list to the reader's floors
    (``User.event_clause()``); None lists every floor."""
    if not f.severity and not f.kind:
        # Any severity: one walk per severity of the (..., severity, ts_us, agent, seq)
        # index of the other filters, merged in page order, each stopping after a page.
        # No index without severity is needed, and one that leads with ts_us would take
        # every stored event at its one rightmost leaf.
        parts = [_events_query(f, s, tz, after, limit, visible).subquery()
                 for s in SEVERITIES]
        merged = sa.union_all(*(sa.select(p) for p in parts)).subquery()
        q: Any = sa.select(merged).order_by(merged.c.ts_us.desc(), merged.c.agent.desc(),
                                            merged.c.seq.desc())
    else:
        q = _events_query(f, f.severity, tz, after, limit, visible)
    return list(conn.execute(q.limit(limit)).all())


def _events_query(f: Filters, severity: str, tz: str, after: tuple[int, str, int] | None,
                  limit: int, visible: Any = None) -> sa.Select[Any]:
    q = sa.select(events)
    if visible is not None:
        q = q.where(visible)
    if severity:
        q = q.where(events.c.severity == severity)
    if f.day:
        lo, hi = day_range(f.day, tz)
        q = q.where(events.c.ts_us >= lo, events.c.ts_us < hi)
    if f.seat:
        q = q.where(events.c.seat == f.seat)
    if f.operator:
        q = q.where(events.c.user == f.operator)
    if f.control:
        q = q.where(events.c.control == f.control)
    if f.kind:
        q = q.where(events.c.kind == f.kind)
    if after is not None:
        keys = (events.c.ts_us, events.c.agent, events.c.seq)
        # Typed like the columns, so PostgreSQL compares the row against the index as is.
        q = q.where(sa.tuple_(*keys)
                    < sa.tuple_(*(sa.literal(v, c.type) for v, c in zip(after, keys,
                                                                        strict=True))))
    q = q.order_by(events.c.ts_us.desc(), events.c.agent.desc(), events.c.seq.desc())
    return q.limit(limit)


def acks_for(conn: Connection, keys: list[tuple[str, int]]) -> dict[tuple[str, int], list[Any]]:
    out: dict[tuple[str, int], list[Any]] = {}
    if not keys:
        return out
    rows = conn.execute(sa.select(violation_acks)
                        .where(sa.tuple_(violation_acks.c.agent, violation_acks.c.seq)
                               .in_(keys)).order_by(violation_acks.c.id))
    for r in rows:
        out.setdefault((r.agent, int(r.seq)), []).append(r)
    return out
