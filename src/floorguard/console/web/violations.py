"""Violations: a filtered, paginated list of events, each with its full record and chain
position; SVs acknowledge a violation with a comment.

Acknowledgements live in their own table and in the audit trail; the event itself is
never changed or deleted. Pages are cut by keyset on (ts_us, agent, seq), which the
``events_*`` indexes serve under every filter, so page 1000 costs what page 1 costs.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from floorguard.console.api.limits import INT64_MAX, StoreInt
from floorguard.console.auth import User, audit, check_event, client_ip, require, require_write
from floorguard.console.store.db import now_us
from floorguard.console.store.schema import violation_acks
from floorguard.console.violations import (
    PAGE,
    Filters,
    acks_for,
    day_range,
    display_timezone,
    list_events,
)
from floorguard.console.web.i18n import DEFAULT_TIMEZONE, N_
from floorguard.console.web.site import add_nav, render
from floorguard.events import CONTROLS, KINDS, SEVERITIES

router = APIRouter(include_in_schema=False)
VIEWERS = require("admin", "sv", "auditor")
MAX_COMMENT = 2000

add_nav("/violations", N_("Violations"), ("admin", "sv", "auditor"), order=20)


def parse_filters(day: str, seat: str, operator: str, control: str, kind: str,
                  severity: str) -> Filters:
    """Validate filter values at the edge (422 naming the field)."""
    if day:
        try:
            day_range(day, DEFAULT_TIMEZONE)
        except ValueError:
            raise HTTPException(422, "day: write the date as YYYY-MM-DD") from None
        except OverflowError:
            raise HTTPException(422, "day: a date between 0002-01-01 and 9999-12-30") \
                from None
    if control and control not in CONTROLS:
        raise HTTPException(422, f"control: one of {', '.join(CONTROLS)}")
    if kind and kind not in KINDS:
        raise HTTPException(422, f"kind: unknown kind {kind!r}")
    if severity and severity not in SEVERITIES:
        raise HTTPException(422, f"severity: one of {', '.join(SEVERITIES)}")
    return Filters(day, seat.strip(), operator.strip(), control, kind, severity)


def parse_cursor(text: str) -> tuple[int, str, int]:
    try:
        ts, rest = text.split(":", 1)
        agent, seq = rest.rsplit(":", 1)
        cursor = int(ts), agent, int(seq)
    except (ValueError, IndexError):
        raise HTTPException(422, "after: not a page cursor from this list") from None
    if not all(-INT64_MAX <= v <= INT64_MAX for v in (cursor[0], cursor[2])):
        raise HTTPException(422, "after: not a page cursor from this list")
    return cursor


@router.get("/violations")
def violations_page(
    request: Request, user: Annotated[User, Depends(VIEWERS)],
    day: str = "", seat: str = "", operator: str = "", control: str = "", kind: str = "",
    severity: str = "violation", after: str = "",
) -> HTMLResponse:
    f = parse_filters(day, seat, operator, control, kind, severity)
    cursor = parse_cursor(after) if after else None
    with request.app.state.engine.connect() as conn:
        tz = display_timezone(conn)
        rows = list_events(conn, f, tz, cursor, PAGE + 1, visible=user.event_clause())
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        acks = acks_for(conn, [(r.agent, int(r.seq)) for r in rows])
    next_q = f.query(after=f"{rows[-1].ts_us}:{rows[-1].agent}:{rows[-1].seq}") \
        if more and rows else None
    return render(request, "violations.html", {
        "rows": rows, "acks": acks, "f": f, "next_q": next_q, "tz": tz,
        "controls": CONTROLS, "kinds": sorted(KINDS), "severities": SEVERITIES,
        "first_page": cursor is None})


@router.get("/violations/{agent}/{seq}")
def violation_detail(request: Request, user: Annotated[User, Depends(VIEWERS)],
                     agent: Annotated[str, Path(max_length=64)], seq: StoreInt) -> HTMLResponse:
    with request.app.state.engine.connect() as conn:
        ev = check_event(conn, user, agent, seq)
        acks = acks_for(conn, [(agent, seq)]).get((agent, seq), [])
        tz = display_timezone(conn)
    return render(request, "violation.html", {
        "e": ev, "acks": acks, "tz": tz,
        "details_json": json.dumps(ev.details, indent=2, ensure_ascii=False, sort_keys=True),
        "can_ack": user.role == "sv" and ev.severity == "violation"})


@router.post("/violations/{agent}/{seq}/ack")
def acknowledge(request: Request, user: Annotated[User, Depends(require_write("sv"))],
                agent: Annotated[str, Path(max_length=64)], seq: StoreInt,
                comment: Annotated[str, Form(max_length=MAX_COMMENT)]) -> Response:
    """An SV acknowledges a violation with a comment (the event stays as it was)."""
    comment = comment.strip()
    if not comment:
        raise HTTPException(422, "comment: say what was done about it")
    with request.app.state.engine.begin() as conn:
        ev = check_event(conn, user, agent, seq)
        if ev.severity != "violation":
            raise HTTPException(422, "only violations are acknowledged")
        conn.execute(violation_acks.insert().values(agent=agent, seq=seq, actor=user.name,
                                                    comment=comment, ts_us=now_us()))
        audit(conn, user.name, "violation.acknowledged", f"{agent}/{seq}", client_ip(request),
              {"kind": ev.kind, "seat": ev.seat, "comment": comment})
    return RedirectResponse(f"/violations/{agent}/{seq}", status_code=303)
