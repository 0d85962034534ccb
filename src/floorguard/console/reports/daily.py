"""Building the daily compliance summary of one floor: plain data, one dict per floor.

Counts come from the rollups kept at ingest (``rollup.py``); the lists (violations,
prints, policy loads, silences, chain breaks) from indexed range queries over the events
of the rarer kinds. Nothing here scans the day's events.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from floorguard import __version__
from floorguard.console.console_events import CONSOLE_AGENT
from floorguard.console.reports import sources
from floorguard.console.reports.mapping import load_mapping
from floorguard.console.reports.rollup import USB_EXCEPTION, USB_RECOGNITIONS, is_device_rule
from floorguard.console.store.schema import (
    agents,
    chain_breaks,
    events,
    report_counts,
    report_marks,
    report_slots,
)
from floorguard.events import FIELDS, GENESIS, ChainWalker, DeclaredGap

SCHEMA_ID = "floorguard.report.daily/1"
HOUR_US = 3600 * 1_000_000

# The per-operator and per-seat tables count these kinds, one column each.
KEY_KINDS = ("usb.blocked", "usb.allowed", "idle.locked", "idle.lock_failed", "print.held",
             "print.approved", "print.denied", "print.expired", "files.flagged",
             "processes.flagged", "processes.killed", "network.flagged")
PRINT_KINDS = ("print.held", "print.approved", "print.denied", "print.expired")
LIST_KINDS = ("usb.allowed", "idle.lock_failed", *PRINT_KINDS, "agent.policy_loaded",
              "agent.control_unavailable", "agent.chain_broken", "floor.sv_ratio_exceeded")
SILENCE_KINDS = ("agent.silent", "agent.recovered")
SILENCE_LOOKBACK_US = 7 * 24 * HOUR_US


@dataclass(frozen=True)
class Window:
    day: date
    tz: ZoneInfo
    start_us: int
    end_us: int

    @classmethod
    def of(cls, day: date, tz_name: str) -> Window:
        tz = ZoneInfo(tz_name)
        start = datetime(day.year, day.month, day.day, tzinfo=tz)
        nxt = day + timedelta(days=1)
        end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)
        return cls(day, tz, int(start.timestamp() * 1e6), int(end.timestamp() * 1e6))

    def local(self, us: int | None) -> str | None:
        if us is None:
            return None
        return datetime.fromtimestamp(us / 1e6, self.tz).isoformat(timespec="seconds")

    def hours(self) -> list[int]:
        """Start of each hour of the local day (23 or 25 of them on a DST change)."""
        return list(range(self.start_us, self.end_us, HOUR_US))


def list_floors(conn: Connection, day: date, tz_name: str = sources.DEFAULT_TIMEZONE
                ) -> list[str]:
    """Floors with an enrolled agent or any rolled-up record around that day."""
    w = Window.of(day, tz_name)
    found = {str(f) for (f,) in conn.execute(sa.select(agents.c.floor).distinct())}
    found |= {str(f) for (f,) in conn.execute(
        sa.select(report_slots.c.floor).distinct()
        .where(report_slots.c.slot_us >= w.start_us - 14 * HOUR_US,
               report_slots.c.slot_us < w.end_us + 14 * HOUR_US))}
    return sorted(found)


def _int(v: Any) -> int:
    return int(v or 0)


def _event_row(w: Window, r: Any) -> dict[str, Any]:
    d = r.details or {}
    return {"time": w.local(r.ts_us), "agent": r.agent, "seq": int(r.seq), "seat": r.seat,
            "user": r.user, "control": r.control, "kind": r.kind, "severity": r.severity,
            "details": d}


def _subject(r: Any) -> str:
    """The agent an event is about: its sender, except for the console's own events,
    which name their subject in details. An agent's record never speaks for another
    agent, whatever its details say."""
    if r.agent != CONSOLE_AGENT:
        return str(r.agent)
    d = r.details or {}
    return str(d.get("agent") or "")


_EVENT_COLS = (events.c.agent, events.c.seq, events.c.ts_us, events.c.seat, events.c.user,
               events.c.control, events.c.kind, events.c.severity, events.c.policy,
               events.c.details)


@dataclass
class _Floor:
    """What every section of one floor's report reads: the day's window and the floor's
    agents (an agent's records count on its sender's floor)."""

    conn: Connection
    w: Window
    name: str
    agents: dict[str, Any]

    def on_floor(self, r: Any) -> bool:
        # An agent's record is on its sender's floor; only a console-made record names a
        # floor (floor.*) or an agent of its own.
        if r.agent == CONSOLE_AGENT and r.kind.startswith("floor."):
            return bool((r.details or {}).get("floor") == self.name)
        return _subject(r) in self.agents

    def seat_of(self, aid: str) -> str:
        a = self.agents.get(aid)
        return str(a.seat) if a is not None else ""


def floor_agents(conn: Connection, floor: str) -> dict[str, Any]:
    return {str(a.id): a for a in conn.execute(
        sa.select(agents.c.id, agents.c.host, agents.c.seat, agents.c.enrolled_us,
                  agents.c.revoked_us, agents.c.policy).where(agents.c.floor == floor))}


def heard_per_agent(f: _Floor) -> dict[str, dict[str, Any]]:
    """Per agent, from the rollup slots: events, heartbeats, hours heard, first and last
    heard, the seq span and what the chain walk at ingest found."""
    rs, w = report_slots.c, f.w
    hour_of_slot = (rs.slot_us - w.start_us) // HOUR_US
    heard_slot = rs.events + rs.heartbeats > 0
    per_agent: dict[str, dict[str, Any]] = {}
    for s in f.conn.execute(
            sa.select(rs.agent, sa.func.sum(rs.events).label("events"),
                      sa.func.sum(rs.heartbeats).label("heartbeats"),
                      sa.func.count(sa.distinct(sa.case((heard_slot, hour_of_slot))))
                      .label("hours"),
                      sa.func.min(sa.case((heard_slot, rs.slot_us))).label("first"),
                      sa.func.max(sa.case((heard_slot, rs.slot_us))).label("last"),
                      sa.func.min(rs.min_seq).label("min_seq"),
                      sa.func.max(rs.max_seq).label("max_seq"),
                      sa.func.sum(rs.bad_hash).label("bad_hash"),
                      sa.func.sum(rs.bad_link).label("bad_link"),
                      sa.func.min(rs.first_bad_seq).label("first_bad_seq"))
            .where(rs.floor == f.name, rs.slot_us >= w.start_us, rs.slot_us < w.end_us)
            .group_by(rs.agent)):
        per_agent[str(s.agent)] = {
            "events": _int(s.events), "heartbeats": _int(s.heartbeats),
            "hours": _int(s.hours), "first": s.first, "last": s.last,
            "min_seq": None if s.min_seq is None else int(s.min_seq),
            "max_seq": None if s.max_seq is None else int(s.max_seq),
            "bad_hash": _int(s.bad_hash), "bad_link": _int(s.bad_link),
            "first_bad_seq": None if s.first_bad_seq is None else int(s.first_bad_seq)}
    return per_agent


def expected_agents(f: _Floor) -> list[str]:
    """Agents enrolled on the floor before the day ended and not revoked before it began."""
    w = f.w
    return sorted(aid for aid, a in f.agents.items()
                  if a.enrolled_us < w.end_us
                  and (a.revoked_us is None or a.revoked_us >= w.start_us))


def coverage_agents(f: _Floor, per_agent: dict[str, dict[str, Any]],
                    expected: list[str]) -> list[dict[str, Any]]:
    """The coverage table: every expected or heard agent, and when it was heard."""
    out = []
    for aid in sorted(set(expected) | set(per_agent)):
        heard = per_agent.get(aid)
        out.append({
            "agent": aid, "host": str(f.agents[aid].host) if aid in f.agents else "",
            "seat": f.seat_of(aid), "expected": aid in expected,
            "reporting": bool(heard and heard["hours"]),
            "hours_heard": heard["hours"] if heard else 0,
            "events": heard["events"] if heard else 0,
            "heartbeats": heard["heartbeats"] if heard else 0,
            "first_heard": f.w.local(heard["first"]) if heard else None,
            "last_heard": f.w.local(heard["last"]) if heard else None})
    return out


def listed_by_kind(f: _Floor) -> dict[str, list[Any]]:
    """The day's records of the kinds the report lists, by indexed range queries."""
    w = f.w
    # usb.allowed is common (every headset): the device-rule exceptions to list were
    # marked at ingest, so they are found without reading every usb.allowed of the day.
    listed = [r for r in f.conn.execute(
        sa.select(*_EVENT_COLS).where(
            events.c.kind.in_([k for k in LIST_KINDS if k != "usb.allowed"]),
            events.c.ts_us >= w.start_us, events.c.ts_us < w.end_us))
        if f.on_floor(r)]
    rm = report_marks.c
    listed += f.conn.execute(
        sa.select(*_EVENT_COLS).select_from(report_marks.join(
            events, sa.and_(events.c.agent == rm.agent, events.c.seq == rm.seq)))
        .where(rm.floor == f.name, rm.mark == USB_EXCEPTION, rm.ts_us >= w.start_us,
               rm.ts_us < w.end_us)).all()
    listed.sort(key=lambda r: (r.ts_us, r.agent, r.seq))
    by_kind: dict[str, list[Any]] = defaultdict(list)
    for r in listed:
        by_kind[r.kind].append(r)
    return by_kind


def silent_periods(f: _Floor, now: int) -> list[dict[str, Any]]:
    w = f.w
    silences = [r for r in f.conn.execute(
        sa.select(*_EVENT_COLS).where(events.c.kind.in_(SILENCE_KINDS),
                                      events.c.ts_us >= w.start_us - SILENCE_LOOKBACK_US,
                                      events.c.ts_us < w.end_us)
        .order_by(events.c.ts_us, events.c.seq)) if f.on_floor(r)]
    return silent_periods_of(w, silences, min(now, w.end_us), f.seat_of)


def violations_of(f: _Floor, acknowledgements: Callable[..., Any]
                  ) -> tuple[list[dict[str, Any]], Any]:
    """Every violation of the day with whether an SV acknowledged it, and the
    acknowledgements source's answer (None: not kept by this console)."""
    w = f.w
    rows = [r for r in f.conn.execute(
        sa.select(*_EVENT_COLS).where(events.c.severity == "violation",
                                      events.c.ts_us >= w.start_us,
                                      events.c.ts_us < w.end_us)
        .order_by(events.c.ts_us, events.c.agent, events.c.seq)) if f.on_floor(r)]
    acks = acknowledgements(f.conn, [(r.agent, int(r.seq)) for r in rows])
    out = []
    for r in rows:
        v = _event_row(w, r)
        ack = acks.get((r.agent, int(r.seq))) if acks is not None else None
        v["acknowledged"] = None if acks is None else ack is not None
        v["acknowledged_by"] = ack.by if ack else None
        v["acknowledged_at"] = w.local(ack.at_us) if ack else None
        out.append(v)
    return out, acks


@dataclass
class _Counts:
    """The day's rollup counters: grouped by seat and operator, per hour, and in total."""

    grouped: list[Any]
    hourly: list[Any]
    totals: dict[tuple[str, str, str, str], list[int]]

    def total(self, kind: str, sub: str | None = None, what: int = 0) -> int:
        return sum(v[what] for (_c, k, _s, sb), v in self.totals.items()
                   if k == kind and (sub is None or sb == sub))

    def rows(self) -> list[dict[str, Any]]:
        return [{"control": c, "kind": k, "severity": s, "sub": sb, "n": v[0], "pages": v[1]}
                for (c, k, s, sb), v in sorted(self.totals.items())]


def counters(f: _Floor) -> _Counts:
    rc, w = report_counts.c, f.w
    in_day = (rc.floor == f.name, rc.slot_us >= w.start_us, rc.slot_us < w.end_us)
    grouped = f.conn.execute(
        sa.select(rc.seat, rc.user, rc.control, rc.kind, rc.severity, rc.sub,
                  sa.func.sum(rc.n).label("n"), sa.func.sum(rc.pages).label("pages"))
        .where(*in_day).group_by(rc.seat, rc.user, rc.control, rc.kind, rc.severity,
                                 rc.sub)).all()
    hour_of = (rc.slot_us - w.start_us) // HOUR_US
    hourly_rows = f.conn.execute(
        sa.select(hour_of.label("hour"), sa.func.sum(rc.n).label("n"),
                  sa.func.sum(sa.case((rc.severity == "violation", rc.n), else_=0))
                  .label("violations"),
                  sa.func.count(sa.distinct(sa.case((rc.user != "", rc.user))))
                  .label("operators"))
        .where(*in_day).group_by(hour_of)).all()
    totals: dict[tuple[str, str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for g in grouped:
        t = totals[(g.control, g.kind, g.severity, g.sub)]
        t[0] += _int(g.n)
        t[1] += _int(g.pages)
    return _Counts(list(grouped), list(hourly_rows), totals)


def people_table(grouped: Iterable[Any], key: str, other: str) -> list[dict[str, Any]]:
    """Per operator (``key="user"``) or per seat: every seat an operator hot-desked at, or
    every operator at a seat, with their counts."""
    rows: dict[str, dict[str, Any]] = {}
    for g in grouped:
        name = getattr(g, key)
        if key == "user" and not name:
            continue
        row = rows.setdefault(name, {key: name, other + "s": set(), "events": 0,
                                     "warnings": 0, "violations": 0,
                                     **{k: 0 for k in KEY_KINDS}})
        n = _int(g.n)
        if getattr(g, other):
            row[other + "s"].add(getattr(g, other))
        row["events"] += n
        if g.severity == "warning":
            row["warnings"] += n
        elif g.severity == "violation":
            row["violations"] += n
        if g.kind in row:
            row[g.kind] += n
    out = []
    for name in sorted(rows):
        row = rows[name]
        row[other + "s"] = sorted(row[other + "s"])
        out.append(row)
    return out


def hourly_span(w: Window, counts: _Counts, duty: list[int] | None,
                breaches: list[Any], max_per_sv: int | None) -> list[dict[str, Any]]:
    """The SV span of control by hour: operators heard against the SVs on duty."""
    hour_ops: dict[int, int] = defaultdict(int)
    hour_events: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for h in counts.hourly:
        hour_ops[int(h.hour)] = _int(h.operators)
        hour_events[int(h.hour)] = [_int(h.n), _int(h.violations)]
    breach_events: dict[int, int] = defaultdict(int)
    for r in breaches:
        breach_events[(r.ts_us - w.start_us) // HOUR_US] += 1
    hourly = []
    for i, start in enumerate(w.hours()):
        ops = hour_ops[i]
        svs = duty[i] if duty is not None else None
        ratio = round(ops / svs, 2) if svs else None
        over = None
        if svs is not None and max_per_sv is not None:
            over = ops > max_per_sv * svs
        hourly.append({"hour": i, "start": w.local(start), "events": hour_events[i][0],
                       "violations": hour_events[i][1], "operators": ops,
                       "svs_on_duty": svs, "operators_per_sv": ratio,
                       "over_ratio": over, "ratio_exceeded_events": breach_events[i]})
    return hourly


def print_jobs(w: Window, by_kind: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every print event of the day as a job row; a decision that does not repeat the page
    count (an expiry) takes the held job's."""
    def row(r: Any) -> dict[str, Any]:
        d = r.details or {}
        pages = d.get("pages")
        job = d.get("job_id", d.get("job"))
        return {"time": w.local(r.ts_us), "agent": r.agent, "seq": int(r.seq), "seat": r.seat,
                "user": r.user, "kind": r.kind, "job": None if job is None else str(job),
                "title": d.get("title"), "queue": d.get("queue"),
                "pages": pages if isinstance(pages, int) and not isinstance(pages, bool)
                else None, "by": d.get("by")}

    jobs = [row(r) for k in PRINT_KINDS for r in by_kind[k]]
    jobs.sort(key=lambda j: (j["time"], j["agent"], j["seq"]))
    held_pages = {(j["agent"], j["job"]): j["pages"] for j in jobs
                  if j["kind"] == "print.held" and j["job"] is not None}
    for j in jobs:
        if j["pages"] is None:
            j["pages"] = held_pages.get((j["agent"], j["job"]))
    return jobs


def controls_of(w: Window, counts: _Counts, by_kind: dict[str, list[Any]]
                ) -> dict[str, Any]:
    """What each control did: USB blocks by kind and exceptions, idle locks, prints by
    outcome and by whom approved, and the leak controls' flags."""
    jobs = print_jobs(w, by_kind)
    total = counts.total
    approved_by: dict[str, int] = defaultdict(int)
    for (_c, k, _s, sb), nv in counts.totals.items():
        if k == "print.approved":
            approved_by[sb or "?"] += nv[0]
    return {
        "usb": {"blocked": {**{k: total("usb.blocked", k) for k in USB_RECOGNITIONS},
                            "other": total("usb.blocked", "other"),
                            "total": total("usb.blocked")},
                "allowed_exceptions": total("usb.allowed", "device_rule"),
                "exceptions": [_event_row(w, r) for r in by_kind["usb.allowed"]
                               if is_device_rule(r.details or {})]},
        "idle": {"locked": total("idle.locked"), "lock_failed": total("idle.lock_failed"),
                 "lock_failures": [_event_row(w, r) for r in by_kind["idle.lock_failed"]]},
        "print": {**{k.split(".")[1]: {"jobs": total(k),
                                       "pages": sum(j["pages"] or 0 for j in jobs
                                                    if j["kind"] == k)}
                     for k in PRINT_KINDS},
                  "approved_by": dict(sorted(approved_by.items())),
                  "jobs": jobs},
        "files": {"flagged": total("files.flagged")},
        "processes": {"flagged": total("processes.flagged"),
                      "killed": total("processes.killed")},
        "network": {"flagged": total("network.flagged")},
    }


def controls_unavailable(w: Window, rows: Iterable[Any]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        d = r.details or {}
        out.append({"time": w.local(r.ts_us), "agent": r.agent, "seat": r.seat,
                    "control": str(d.get("control", "")),
                    "reason": str(d.get("reason") or d.get("error") or "")})
    return out


def integrity_of(f: _Floor, per_agent: dict[str, dict[str, Any]], *, deep: bool
                 ) -> list[dict[str, Any]]:
    """Per agent: records, seq span, missing and declared-dropped seqs, faults, and whether
    its chain is verified (re-hashed from the stored rows with ``deep``)."""
    w = f.w
    gaps = declared_gaps(f.conn, list(per_agent))
    chain = ({aid: verify_stored(f.conn, aid, w.start_us, w.end_us, gaps.get(aid, []))
              for aid in per_agent} if deep else {})
    out = []
    for aid in sorted(per_agent):
        a = per_agent[aid]
        if deep:
            c = chain[aid]
        else:
            # The walk at ingest found the faults; what the day's seq span lacks is
            # missing unless the agent declared it (a declared gap is not a fault).
            span = (a["max_seq"] - a["min_seq"] + 1) if a["min_seq"] is not None else 0
            declared = sum(max(0, min(g.to_seq, a["max_seq"]) - max(g.from_seq,
                                                                   a["min_seq"]) + 1)
                           for g in gaps.get(aid, [])) if span else 0
            c = {"records": a["events"], "first_seq": a["min_seq"], "last_seq": a["max_seq"],
                 "missing": max(0, span - a["events"] - declared),
                 "declared_dropped": declared, "bad_hash": a["bad_hash"],
                 "bad_link": a["bad_link"], "first_bad_seq": a["first_bad_seq"]}
        if c["records"] == 0 and not deep:
            continue
        c = {"agent": aid, "seat": f.seat_of(aid), **c}
        c["verified"] = c["missing"] == 0 and c["bad_hash"] == 0 and c["bad_link"] == 0
        out.append(c)
    return out


def build_floor(conn: Connection, day: date, floor: str, *, lang: str = "en",
                settings: sources.FloorSettings | None = None, deep: bool = False,
                now_us: Callable[[], int] | None = None,
                acknowledgements: Callable[..., Any] = sources.acknowledgements,
                sv_on_duty: Callable[..., Any] = sources.sv_on_duty) -> dict[str, Any]:
    """The report of one floor and local day, as plain JSON-ready data: each section
    comes from its own function above.

    ``acknowledgements`` and ``sv_on_duty`` are the adapters for facts kept outside the
    events table (see ``sources``)."""
    from floorguard.console.store.db import now_us as clock

    now = (now_us or clock)()
    settings = settings or sources.floor_settings(floor, conn=conn)
    w = Window.of(day, settings.timezone)
    f = _Floor(conn, w, floor, floor_agents(conn, floor))
    per_agent = heard_per_agent(f)
    expected = expected_agents(f)
    coverage = coverage_agents(f, per_agent, expected)
    by_kind = listed_by_kind(f)
    silent = silent_periods(f, now)
    violations, acks = violations_of(f, acknowledgements)
    counts = counters(f)
    duty = sv_on_duty(conn, floor, w.hours())
    maxr = settings.max_operators_per_sv
    policies = policies_of(conn, w, f.agents, by_kind["agent.policy_loaded"])
    integrity_agents = integrity_of(f, per_agent, deep=deep)
    broken = [_event_row(w, r) for r in by_kind["agent.chain_broken"]]
    total = counts.total

    reporting = sum(1 for a in coverage if a["reporting"] and a["expected"])
    return {
        "floor": floor,
        "date": day.isoformat(),
        "timezone": settings.timezone,
        "window": {"start": w.local(w.start_us), "end": w.local(w.end_us)},
        "settings": {"max_operators_per_sv": maxr, "policy_file": settings.source or None},
        "sources": {**sources.describe_sources(acks, duty),
                    "counts": "ingest rollups",
                    "integrity": "stored rows re-hashed" if deep else "checked at ingest"},
        "summary": {"agents_expected": len(expected), "agents_reporting": reporting,
                    "events": sum(v[0] for v in counts.totals.values()),
                    "violations": len(violations),
                    "violations_acknowledged": (None if acks is None else
                                                sum(1 for v in violations
                                                    if v["acknowledged"])),
                    "usb_blocked": total("usb.blocked"), "idle_locked": total("idle.locked"),
                    "prints_approved": total("print.approved"),
                    "silent_periods": len(silent),
                    "chains_verified": sum(1 for c in integrity_agents if c["verified"]),
                    "chains_with_faults": sum(1 for c in integrity_agents
                                              if not c["verified"]),
                    "policy_changes": len(policies["changes"]),
                    "sv_ratio_exceeded": len(by_kind["floor.sv_ratio_exceeded"])},
        "coverage": {"agents_expected": len(expected), "agents_reporting": reporting,
                     "agents": coverage, "silent_periods": silent,
                     "controls_unavailable": controls_unavailable(
                         w, by_kind["agent.control_unavailable"])},
        "controls": controls_of(w, counts, by_kind),
        "counts": counts.rows(),
        "operators": people_table(counts.grouped, "user", "seat"),
        "seats": people_table(counts.grouped, "seat", "user"),
        "hourly": hourly_span(w, counts, duty, by_kind["floor.sv_ratio_exceeded"], maxr),
        "sv_ratio": {"max_operators_per_sv": maxr,
                     "exceeded": [_event_row(w, r)
                                  for r in by_kind["floor.sv_ratio_exceeded"]]},
        "policies": policies,
        "integrity": {"method": "stored rows re-hashed" if deep else "checked at ingest",
                      "agents": integrity_agents, "chain_broken_events": broken,
                      "all_verified": all(c["verified"] for c in integrity_agents)
                      and not broken},
        "violations": violations,
        "mapping": load_mapping().for_lang(lang),
    }


def silent_periods_of(w: Window, rows: Iterable[Any], until_us: int,
                      seat_of: Callable[[str], str]) -> list[dict[str, Any]]:
    """Pair each agent's ``agent.silent`` with the next ``agent.recovered``; keep the parts
    inside the day. A silence still open is cut at ``until_us``."""
    open_since: dict[str, int] = {}
    spans: list[tuple[str, int, int | None]] = []
    for r in rows:
        aid = _subject(r)
        if r.kind == "agent.silent":
            d = r.details or {}
            # The silence began when the agent was last heard, if the event says so.
            since = (_us_from_text(d.get("last_seen")) or _us_from_text(d.get("since"))
                     or int(r.ts_us))
            open_since.setdefault(aid, since)
        elif aid in open_since:
            spans.append((aid, open_since.pop(aid), int(r.ts_us)))
    spans.extend((aid, since, None) for aid, since in open_since.items())
    out = []
    for aid, start, end in sorted(spans, key=lambda s: (s[1], s[0])):
        lo = max(start, w.start_us)
        hi = min(end if end is not None else until_us, w.end_us)
        if hi <= lo:
            continue
        out.append({"agent": aid, "seat": seat_of(aid), "start": w.local(start),
                    "end": w.local(end), "minutes_in_day": round((hi - lo) / 60e6, 1)})
    return out


def _us_from_text(v: Any) -> int | None:
    if not isinstance(v, str):
        return None
    try:
        return int(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1e6)
    except ValueError:
        return None


def policies_of(conn: Connection, w: Window, floor_agents: dict[str, Any],
                loaded_today: list[Any]) -> dict[str, Any]:
    """The policy hash each agent ran at the start of the day and every change in it."""
    before: dict[str, str] = {}
    for r in conn.execute(
            sa.select(events.c.agent, events.c.details)
            .where(events.c.kind == "agent.policy_loaded", events.c.ts_us < w.start_us)
            .order_by(events.c.ts_us, events.c.seq)):
        if r.agent in floor_agents and (r.details or {}).get("hash"):
            before[r.agent] = str(r.details["hash"])
    changes = []
    in_force: dict[str, dict[str, Any]] = {}
    for aid, h in before.items():
        in_force.setdefault(h, {"hash": h, "agents": set(), "sources": set()})["agents"].add(
            aid)
    for r in loaded_today:
        d = r.details or {}
        h = str(d.get("hash") or r.policy)
        changes.append({"time": w.local(r.ts_us), "agent": r.agent, "seat": r.seat,
                        "hash": h, "previous": d.get("previous"),
                        "source": d.get("source")})
        entry = in_force.setdefault(h, {"hash": h, "agents": set(), "sources": set()})
        entry["agents"].add(r.agent)
        if d.get("source"):
            entry["sources"].add(str(d["source"]))
    return {"in_force": [{"hash": e["hash"], "agents": sorted(e["agents"]),
                          "sources": sorted(e["sources"])}
                         for e in sorted(in_force.values(), key=lambda e: e["hash"])],
            "changes": changes}


def declared_gaps(conn: Connection, agent_ids: list[str]) -> dict[str, list[DeclaredGap]]:
    """The gaps each agent declared and the walk at ingest accepted (``chain_breaks``
    rows marked explained), as the walker takes them."""
    out: dict[str, list[DeclaredGap]] = defaultdict(list)
    if not agent_ids:
        return out
    cb = chain_breaks.c
    for r in conn.execute(sa.select(cb.agent, cb.from_seq, cb.to_seq, cb.details).where(
            cb.agent.in_(agent_ids), cb.explained.is_(True), cb.reason != "waiting")):
        try:
            extra = json.loads(r.details or "{}")
        except ValueError:
            extra = {}
        last_hash = extra.get("last_hash") if isinstance(extra, dict) else None
        if not isinstance(last_hash, str):
            # Accepted before the declared hash was kept with it: the walk at ingest
            # checked the link then; take the link the next record holds.
            last_hash = conn.execute(sa.select(events.c.prev).where(
                events.c.agent == r.agent, events.c.seq == int(r.to_seq) + 1)).scalar()
        if last_hash is not None:
            out[str(r.agent)].append(DeclaredGap(int(r.from_seq), int(r.to_seq),
                                                 str(last_hash)))
    return out


def verify_stored(conn: Connection, agent_id: str, start_us: int, end_us: int,
                  gaps: list[DeclaredGap] | None = None) -> dict[str, Any]:
    """Re-hash an agent's stored records of the window and walk their chain (the one
    walker, ``ChainWalker``), across the gaps the agent declared."""
    cols = [events.c[f] for f in FIELDS if f != "agent"]
    rows = conn.execute(sa.select(*cols).where(events.c.agent == agent_id,
                                               events.c.ts_us >= start_us,
                                               events.c.ts_us < end_us)
                        .order_by(events.c.seq)).all()
    out: dict[str, Any] = {"records": len(rows), "first_seq": None, "last_seq": None,
                           "missing": 0, "declared_dropped": 0, "bad_hash": 0,
                           "bad_link": 0, "first_bad_seq": None}
    if not rows:
        return out
    out["first_seq"], out["last_seq"] = int(rows[0].seq), int(rows[-1].seq)
    first = int(rows[0].seq)
    prev_hash: str | None = GENESIS if first == 1 else conn.execute(
        sa.select(events.c.hash).where(events.c.agent == agent_id,
                                       events.c.seq == first - 1)).scalar()
    walker = ChainWalker(first - 1, prev_hash, gaps or [])
    for r in rows:
        rec = dict(r._mapping)
        rec["agent"] = agent_id
        for f in walker.step(rec):
            if f.reason == "declared_gap":
                out["declared_dropped"] += f.size
                continue
            if f.reason in ("missing", "bad_gap"):
                out["missing"] += f.size
            if f.reason in ("unlinked", "bad_gap"):
                out["bad_link"] += 1
            elif f.reason == "altered":
                out["bad_hash"] += 1
            if f.reason != "missing" and out["first_bad_seq"] is None:
                out["first_bad_seq"] = f.at
    return out


def build_report(conn: Connection, day: date, floors: list[str] | None = None, *,
                 lang: str = "en", deep: bool = False,
                 now_us: Callable[[], int] | None = None) -> dict[str, Any]:
    """The whole document: every floor (or the ones named) for one day."""
    from floorguard.console.store.db import now_us as clock
    from floorguard.events import rfc3339

    now = (now_us or clock)()
    names = floors if floors else list_floors(conn, day)
    return {"schema": SCHEMA_ID, "generator": f"floorguard {__version__}",
            "generated_at": rfc3339(now / 1e6), "date": day.isoformat(), "lang": lang,
            "floors": [build_floor(conn, day, f, lang=lang, deep=deep, now_us=lambda: now)
                       for f in names]}
