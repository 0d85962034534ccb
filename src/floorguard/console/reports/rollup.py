"""Rollups kept at ingest: counters per floor, 15-minute slot, seat, operator, control,
kind, severity and sub-kind, and per agent and slot the records heard and what checking
their hash chain found.

``apply_ingest`` is a plain function: the API's ingest hook calls it for each stored batch,
and any other path that writes to the events table (events the console makes itself,
heartbeats) calls it, or ``note_heartbeats``, in the same transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from floorguard.console.ingest.pipeline import ts_to_us
from floorguard.console.store.schema import (
    SLOT_US,
    agents,
    events,
    report_counts,
    report_marks,
    report_slots,
)
from floorguard.events import record_hash

USB_RECOGNITIONS = ("storage", "phone", "network")
USB_EXCEPTION = "usb_exception"


def usb_blocked_kind(details: dict[str, Any]) -> str:
    """Which of the report's USB columns a blocked device counts in."""
    rec = details.get("recognition")
    return rec if rec in USB_RECOGNITIONS else "other"


def is_device_rule(details: dict[str, Any]) -> bool:
    """A ``usb.allowed`` that a ``[[usb.device]]`` rule let in (an exception), as opposed
    to a keyboard or headset allowed by its interface class."""
    return any(isinstance(details.get(k), str) and details[k].startswith("usb.device")
               for k in ("rule", "by", "reason"))


def sub_kind(kind: str, details: dict[str, Any]) -> str:
    if kind == "usb.blocked":
        return usb_blocked_kind(details)
    if kind == "usb.allowed":
        return "device_rule" if is_device_rule(details) else "class"
    if kind in ("print.approved", "print.denied", "print.released"):
        by = details.get("by")
        return str(by)[:255] if by else ""
    return ""


def pages_of(kind: str, details: dict[str, Any]) -> int:
    if not kind.startswith("print."):
        return 0
    pages = details.get("pages")
    return pages if isinstance(pages, int) and not isinstance(pages, bool) and pages > 0 else 0


def slot_of(ts_us: int) -> int:
    return ts_us - ts_us % SLOT_US


_UPSERT_SQL: dict[tuple[str, str], tuple[str, tuple[str, ...] | None]] = {}


def _upsert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]],
            keys: list[str], set_: dict[str, Any]) -> None:
    if not rows:
        return
    dialect = conn.dialect.name
    cached = _UPSERT_SQL.get((dialect, table.name))
    if cached is None:
        ins: Any
        if dialect == "postgresql":
            ins = postgresql.insert(table)
        elif dialect == "sqlite":
            ins = sqlite.insert(table)
        else:  # pragma: no cover - only the two dialects are supported
            raise RuntimeError(f"unsupported dialect {dialect}")
        stmt = ins.on_conflict_do_update(index_elements=keys,
                                         set_={k: v(table, ins.excluded, dialect)
                                               for k, v in set_.items()})
        compiled = stmt.compile(dialect=conn.dialect, column_keys=[c.name for c in table.c])
        order = tuple(compiled.positiontup) if compiled.positional and \
            compiled.positiontup else None
        cached = _UPSERT_SQL[(dialect, table.name)] = (str(compiled), order)
    sql, order = cached
    # Compiled once, then plain values to the driver: SQLAlchemy's per-row parameter
    # processing would cost more than the upsert itself at ingest rates.
    params: Any = [tuple(r[k] for k in order) for r in rows] if order else rows
    conn.exec_driver_sql(sql, params)


def _add(col: str) -> Any:
    return lambda t, ex, _d: t.c[col] + ex[col]


def _least(col: str) -> Any:
    def build(t: sa.Table, ex: Any, dialect: str) -> Any:
        fn = sa.func.least if dialect == "postgresql" else sa.func.min
        # NULL means "none yet": take the other side (min/least ignore no NULL in SQLite).
        return fn(sa.func.coalesce(t.c[col], ex[col]), sa.func.coalesce(ex[col], t.c[col]))
    return build


def _greatest(col: str) -> Any:
    def build(t: sa.Table, ex: Any, dialect: str) -> Any:
        fn = sa.func.greatest if dialect == "postgresql" else sa.func.max
        return fn(sa.func.coalesce(t.c[col], ex[col]), sa.func.coalesce(ex[col], t.c[col]))
    return build


def _floor_of(conn: Connection, agent_id: str) -> str | None:
    row = conn.execute(sa.select(agents.c.floor).where(agents.c.id == agent_id)).first()
    return None if row is None else str(row.floor)


def _record_floor(conn: Connection, details: dict[str, Any], cache: dict[str, str]) -> str:
    """The floor of a record the console made: named in it, or its subject agent's."""
    if details.get("floor"):
        return str(details["floor"])
    subject = str(details.get("agent") or "")
    if subject not in cache:
        cache[subject] = _floor_of(conn, subject) or ""
    return cache[subject]


def apply_ingest(conn: Connection, agent_id: str, records: Iterable[dict[str, Any]], *,
                 floor: str | None = None, from_agent: bool = True,
                 altered: set[int] | None = None,
                 unlinked: set[int] | None = None) -> None:
    """Add newly stored records to the rollups (call once per record, in the same
    transaction that stored it).

    ``floor`` defaults to the agent's floor. Records from an agent's journal
    (``from_agent``) also count as the agent being heard, with what the checks at ingest
    found: ``altered`` (seqs whose hash does not match their content; hashed here when
    not given) and ``unlinked`` (seqs where the chain walk found a broken link). The walk
    itself is the chain check's (``console/ingest/chain.py``): nothing here walks the chain.
    Records the console makes itself (``agent.silent``, ``floor.*``) only count.
    """
    records = list(records)
    if not records:
        return
    agent_floor = floor if floor is not None else _floor_of(conn, agent_id)
    counts: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
    slots: dict[int, dict[str, Any]] = {}
    marks: list[dict[str, Any]] = []
    cache: dict[str, str] = {}
    faults: dict[int, str] = {}
    if from_agent:
        for seq in unlinked or ():
            faults[int(seq)] = "link"
        for rec in records:
            seq = int(rec["seq"])
            if (seq in altered) if altered is not None else \
                    record_hash(rec) != rec.get("hash"):
                faults[seq] = "hash"
    for rec in records:
        details = rec.get("details") or {}
        ts_us = rec["ts_us"] if "ts_us" in rec else ts_to_us(rec["ts"])
        slot = slot_of(ts_us)
        fl = agent_floor if agent_floor is not None else _record_floor(conn, details, cache)
        kind = rec["kind"]
        key = (fl, slot, rec.get("seat") or "", rec.get("user") or "", rec["control"], kind,
               rec["severity"], sub_kind(kind, details))
        c = counts[key]
        c[0] += 1
        c[1] += pages_of(kind, details)
        if key[-1] == "device_rule":
            marks.append({"agent": agent_id, "seq": int(rec["seq"]), "floor": fl,
                          "mark": USB_EXCEPTION, "ts_us": ts_us})
        if not from_agent:
            continue
        s = slots.get(slot)
        if s is None:
            s = slots[slot] = {"agent": agent_id, "slot_us": slot, "floor": fl, "events": 0,
                               "heartbeats": 0, "min_seq": None, "max_seq": None,
                               "bad_hash": 0, "bad_link": 0, "first_bad_seq": None}
        s["events"] += 1
        seq = int(rec["seq"])
        s["min_seq"] = seq if s["min_seq"] is None else min(s["min_seq"], seq)
        s["max_seq"] = seq if s["max_seq"] is None else max(s["max_seq"], seq)
        why = faults.get(seq)
        if why is not None:
            s["bad_hash" if why == "hash" else "bad_link"] += 1
            s["first_bad_seq"] = seq if s["first_bad_seq"] is None else min(
                s["first_bad_seq"], seq)
    names = [c.name for c in report_counts.primary_key.columns]
    rows = [{**dict(zip(names, k, strict=True)), "n": v[0], "pages": v[1]}
            for k, v in sorted(counts.items())]
    _upsert(conn, report_counts, rows, names, {"n": _add("n"), "pages": _add("pages")})
    _upsert_slots(conn, list(slots.values()))
    if marks:
        conn.execute(report_marks.insert(), marks)


def _upsert_slots(conn: Connection, rows: list[dict[str, Any]]) -> None:
    _upsert(conn, report_slots, rows, ["agent", "slot_us"], {
        "events": _add("events"), "heartbeats": _add("heartbeats"),
        "min_seq": _least("min_seq"), "max_seq": _greatest("max_seq"),
        "bad_hash": _add("bad_hash"), "bad_link": _add("bad_link"),
        "first_bad_seq": _least("first_bad_seq")})


def note_heartbeats(conn: Connection, agent_id: str, times_us: Iterable[int],
                    floor: str | None = None) -> None:
    """Count heartbeats towards the hours an agent was heard (heartbeats are not events).
    ``floor`` saves a lookup when the caller has already read the agent's row."""
    floor = floor if floor is not None else (_floor_of(conn, agent_id) or "")
    per_slot: dict[int, int] = defaultdict(int)
    for t in times_us:
        per_slot[slot_of(int(t))] += 1
    _upsert_slots(conn, [{"agent": agent_id, "slot_us": s, "floor": floor, "events": 0,
                          "heartbeats": n, "min_seq": None, "max_seq": None, "bad_hash": 0,
                          "bad_link": 0, "first_bad_seq": None}
                         for s, n in sorted(per_slot.items())])


def ingest_hook(conn: Connection, agent_id: str, records: list[dict[str, Any]],
                result: dict[str, Any]) -> None:
    """The console's ingest hook: roll up the records this batch newly stored, with what
    the chain check (the ingest hook before this one) found."""
    inserted = result.get("inserted")
    if inserted is None:
        raise RuntimeError("store_events must report which seqs it inserted")
    findings = result.get("chain_findings")
    if findings is None:
        raise RuntimeError("run console.chain.check_batch before the report rollups")
    new = set(inserted)
    altered = result.get("altered")
    unlinked = {f.at for f in findings if f.reason in ("unlinked", "bad_gap")}
    apply_ingest(conn, agent_id, [r for r in records if r["seq"] in new],
                 altered=set(altered) if altered is not None else None,
                 unlinked=unlinked & new)
    _late_link_faults(conn, agent_id, sorted(unlinked - new))


def _late_link_faults(conn: Connection, agent_id: str, seqs: list[int]) -> None:
    """Broken links the walk found at records stored by an earlier batch (it reached
    them only now that a hole before them filled): count them in those records' slots."""
    if not seqs:
        return
    floor = _floor_of(conn, agent_id) or ""
    rows: list[dict[str, Any]] = []
    for seq, ts_us in conn.execute(sa.select(events.c.seq, events.c.ts_us).where(
            events.c.agent == agent_id, events.c.seq.in_(seqs))):
        rows.append({"agent": agent_id, "slot_us": slot_of(int(ts_us)), "floor": floor,
                     "events": 0, "heartbeats": 0, "min_seq": None, "max_seq": None,
                     "bad_hash": 0, "bad_link": 1, "first_bad_seq": int(seq)})
    # one row per slot: the upsert adds them up
    merged: dict[int, dict[str, Any]] = {}
    for r in rows:
        slot = int(r["slot_us"])
        m = merged.get(slot)
        if m is None:
            merged[slot] = r
        else:
            m["bad_link"] += 1
            m["first_bad_seq"] = min(m["first_bad_seq"], r["first_bad_seq"])
    _upsert_slots(conn, list(merged.values()))
