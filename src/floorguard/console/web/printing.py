"""The print approval queue: SVs see each held job with its thumbnail and approve or deny
it in one click; auditors read the whole trail.

The ``print_jobs`` table is kept up to date from the agents' ``print.*`` events by an
ingest hook (so the page never scans events). A decision becomes a ``print.decide``
command for the job's agent plus an audit record; the agent's own events then move the
job on (approved, released, denied), so the page shows what really happened at the
printer, not what was asked for.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Connection

from floorguard.console import commands
from floorguard.console.api.limits import Limit, RowId
from floorguard.console.auth import User, audit, check_agent, check_csrf, client_ip, require
from floorguard.console.store.db import now_us
from floorguard.console.store.schema import (
    agents,
    events,
    print_jobs,
)
from floorguard.events import Command

OPEN_STATES = ("held", "approving", "denying")
DECIDERS = require("admin", "sv")
READERS = require("admin", "sv", "auditor")

router = APIRouter()


# --- keeping print_jobs from events -------------------------------------------------------


def _ts_us(record: dict[str, Any]) -> int:
    from floorguard.console.ingest.pipeline import ts_to_us

    return ts_to_us(record["ts"])


def apply_event(conn: Connection, agent_id: str, rec: dict[str, Any]) -> None:
    """Move one job along by one of its agent's ``print.*`` events (idempotent: an event
    the row has already seen, by seq, changes nothing)."""
    d = rec.get("details") or {}
    jid = d.get("job_id")
    if isinstance(jid, bool) or not isinstance(jid, int):
        return
    key = (print_jobs.c.agent == agent_id) & (print_jobs.c.job_id == jid)
    row = conn.execute(sa.select(print_jobs.c.last_seq, print_jobs.c.state).where(key)).first()
    seq = int(rec["seq"])
    if row is not None and seq <= row.last_seq:
        return
    kind = rec["kind"]
    now = now_us()
    if kind == "print.held":
        values = {
            "seat": str(d.get("seat") or rec.get("seat") or "")[:255],
            "host": str(rec.get("host") or "")[:255],
            "operator": str(d.get("operator") or rec.get("user") or "")[:255],
            "queue": str(d.get("queue") or "")[:255],
            "title": str(d.get("title") or ""),
            "pages": d["pages"] if isinstance(d.get("pages"), int) else None,
            "pages_source": str(d.get("pages_source") or "unknown")[:16],
            "size": d["size"] if isinstance(d.get("size"), int) else 0,
            "format": str(d.get("format") or "")[:128],
            "needs_note": bool(d.get("needs_note")),
            "thumbnail_seq": seq if d.get("thumbnail") else None,
            "placeholder": (str(d["thumbnail_placeholder"])[:32]
                            if d.get("thumbnail_placeholder") else None),
            "state": "held", "held_us": _ts_us(rec), "decided_by": None, "decided_us": None,
            "reason": "", "note": "", "outcome": "", "error": "", "command_id": None,
            "last_seq": seq, "updated_us": now,
        }
        if row is None:
            conn.execute(print_jobs.insert().values(agent=agent_id, job_id=jid, **values))
        else:  # cupsd numbered a new job like an old one
            conn.execute(print_jobs.update().where(key).values(**values))
        return
    if row is None:
        return  # a job this console never saw held (e.g. before enrolment)
    values = {"last_seq": seq, "updated_us": now}
    if kind == "print.approved":
        values.update(state="approved", decided_by=str(d.get("by") or "")[:64],
                      note=str(d.get("note") or ""), decided_us=_ts_us(rec))
    elif kind == "print.denied":
        values.update(state="denied", decided_by=str(d.get("by") or "")[:64] or None,
                      reason=str(d.get("reason") or ""), decided_us=_ts_us(rec))
    elif kind == "print.expired":
        values.update(state="expired", outcome="expired")
    elif kind == "print.released":
        values.update(state="released", outcome=str(d.get("outcome") or "")[:64])
    elif kind == "print.decision_failed":
        values.update(state="held" if d.get("still_held") else "failed",
                      error=str(d.get("error") or ""))
    else:
        return
    conn.execute(print_jobs.update().where(key).values(**values))


def ingest_hook(conn: Connection, agent_id: str, records: list[dict[str, Any]],
                _result: dict[str, Any]) -> None:
    for rec in records:
        if str(rec.get("kind", "")).startswith("print."):
            apply_event(conn, agent_id, rec)


def on_decide_result(conn: Connection, command: dict[str, Any], result: dict[str, Any]
                     ) -> None:
    """The agent's answer to a decision. Success is shown through its events; a refusal
    is shown here too, so a job never sits "approving" after the agent said no."""
    if result.get("ok"):
        return
    args = command.get("args") or {}
    jid = args.get("job_id")
    if not isinstance(jid, int):
        return
    conn.execute(print_jobs.update()
                 .where(print_jobs.c.agent == command["agent"], print_jobs.c.job_id == jid,
                        print_jobs.c.command_id == command["id"],
                        print_jobs.c.state.in_(("approving", "denying")))
                 .values(state="held" if result.get("still_held") else "failed",
                         error=str(result.get("error") or "refused by the agent"),
                         updated_us=now_us()))


# --- decisions ----------------------------------------------------------------------------


class DecisionError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def request_decision(conn: Connection, user: User, agent_id: str, job_id: int,
                     decision: str, *, reason: str = "", note: str = "", ip: str = ""
                     ) -> int:
    """Queue an SV's decision for the job's agent; returns the command id."""
    reason, note = reason.strip(), note.strip()
    check_agent(conn, user, agent_id)  # an SV decides only for their own floors
    row = conn.execute(sa.select(print_jobs).where(print_jobs.c.agent == agent_id,
                                                   print_jobs.c.job_id == job_id)
                       .with_for_update()).first()
    if row is None:
        raise DecisionError(404, "no such print job")
    if row.state != "held":
        raise DecisionError(409, f"this job is already {row.state}; reload the page")
    if decision == "deny" and not reason:
        raise DecisionError(422, "give a reason for denying the job")
    if decision == "approve" and row.needs_note and not note:
        raise DecisionError(422, "this job needs a note with the approval (it is over the "
                                 "page limit, or its length is unknown)")
    args = {"job_id": job_id, "decision": decision, "by": user.name, "reason": reason,
            "note": note}
    cid = commands.enqueue(conn, agent_id, Command.PRINT_DECIDE, args, user.name)
    conn.execute(print_jobs.update()
                 .where(print_jobs.c.agent == agent_id, print_jobs.c.job_id == job_id)
                 .values(state="approving" if decision == "approve" else "denying",
                         decided_by=user.name, decided_us=now_us(), reason=reason,
                         note=note, command_id=cid, error="", updated_us=now_us()))
    audit(conn, user.name, f"print.{decision}", f"{agent_id}/{job_id}", ip,
          {"command": cid, "seat": row.seat, "operator": row.operator, "title": row.title,
           "pages": row.pages, "reason": reason, "note": note})
    return cid


def _decide(request: Request, user: User, agent_id: str, job_id: int, decision: str,
            reason: str, note: str) -> int:
    with request.app.state.engine.begin() as conn:
        return request_decision(conn, user, agent_id, job_id, decision, reason=reason,
                                note=note, ip=client_ip(request))


# --- pages --------------------------------------------------------------------------------


def _age(held_us: int, now_s: float) -> dict[str, int]:
    seconds = max(0, int(now_s - held_us / 1_000_000))
    return {"minutes": seconds // 60, "seconds": seconds % 60}


def open_jobs(conn: Connection, user: User | None = None) -> list[dict[str, Any]]:
    """Jobs awaiting a decision, on the user's floors (every floor without a user)."""
    visible = sa.true() if user is None else user.agent_clause(print_jobs.c.agent)
    rows = conn.execute(sa.select(print_jobs).where(print_jobs.c.state.in_(OPEN_STATES),
                                                    visible)
                        .order_by(print_jobs.c.held_us))
    now = time.time()
    return [{**r._mapping, "age": _age(r.held_us, now)} for r in rows]


def _render(request: Request, user: User, error: str | None = None, status: int = 200
            ) -> HTMLResponse:
    from floorguard.console.web.site import render

    with request.app.state.engine.connect() as conn:
        jobs = open_jobs(conn, user)
        recent = conn.execute(
            sa.select(print_jobs).where(print_jobs.c.state.not_in(OPEN_STATES),
                                        user.agent_clause(print_jobs.c.agent))
            .order_by(print_jobs.c.updated_us.desc()).limit(50)).all()
    return render(request, "print.html",
                  {"jobs": jobs, "recent": [r._mapping for r in recent], "error": error,
                   "can_decide": user.role in ("admin", "sv")}, status=status)


@router.get("/print", include_in_schema=False)
def print_queue(request: Request, user: Annotated[User, Depends(READERS)]) -> HTMLResponse:
    return _render(request, user)


@router.post("/print/{agent_id}/{job_id}/approve", include_in_schema=False)
def approve_form(request: Request, user: Annotated[User, Depends(DECIDERS)], agent_id: str,
                 job_id: RowId, csrf: Annotated[str, Form()] = "",
                 note: Annotated[str, Form(max_length=1000)] = "") -> Response:
    check_csrf(request, user, csrf)
    try:
        _decide(request, user, agent_id, job_id, "approve", "", note)
    except DecisionError as exc:
        return _render(request, user, exc.message, exc.status)
    return RedirectResponse("/print", status_code=303)


@router.post("/print/{agent_id}/{job_id}/deny", include_in_schema=False)
def deny_form(request: Request, user: Annotated[User, Depends(DECIDERS)], agent_id: str,
              job_id: RowId, csrf: Annotated[str, Form()] = "",
              reason: Annotated[str, Form(max_length=1000)] = "") -> Response:
    check_csrf(request, user, csrf)
    try:
        _decide(request, user, agent_id, job_id, "deny", reason, "")
    except DecisionError as exc:
        return _render(request, user, exc.message, exc.status)
    return RedirectResponse("/print", status_code=303)


@router.get("/print/thumbnail/{agent_id}/{job_id}", include_in_schema=False)
def thumbnail(request: Request, user: Annotated[User, Depends(READERS)], agent_id: str,
              job_id: RowId) -> Response:
    """The first-page picture, read from the job's ``print.held`` event; signed-in users
    only, never cached by anything in between."""
    with request.app.state.engine.connect() as conn:
        check_agent(conn, user, agent_id)
        seq = conn.execute(sa.select(print_jobs.c.thumbnail_seq)
                           .where(print_jobs.c.agent == agent_id,
                                  print_jobs.c.job_id == job_id)).scalar()
        details = None if seq is None else conn.execute(
            sa.select(events.c.details).where(events.c.agent == agent_id,
                                              events.c.seq == seq)).scalar()
    data = (details or {}).get("thumbnail") if isinstance(details, dict) else None
    try:
        png = base64.b64decode(data or "", validate=True)
    except (binascii.Error, ValueError):
        png = b""
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise HTTPException(404, "no thumbnail for this job")
    return Response(png, media_type="image/png",
                    headers={"Cache-Control": "private, no-store"})


@router.get("/print/trail", include_in_schema=False)
def trail(request: Request, user: Annotated[User, Depends(READERS)],
          limit: Limit = 500) -> HTMLResponse:
    """Every print event and every decision request, newest first (read-only)."""
    from floorguard.console.store.schema import audit_log
    from floorguard.console.violations import Filters, list_events
    from floorguard.console.web.i18n import DEFAULT_TIMEZONE
    from floorguard.console.web.site import render

    limit = max(1, min(limit, 5000))
    with request.app.state.engine.connect() as conn:
        evs = list_events(conn, Filters(control="print", severity=""), DEFAULT_TIMEZONE,
                          None, limit, visible=user.event_clause())
        asked = conn.execute(sa.select(audit_log).where(audit_log.c.action.in_(
            ("print.approve", "print.deny"))).order_by(audit_log.c.ts_us.desc())
            .limit(limit)).all()
        if user.floors is not None:  # the target is "AGENT/JOB"
            mine = set(conn.execute(sa.select(agents.c.id).where(
                user.floor_clause(agents.c.floor))).scalars())
            asked = [a for a in asked if a.target.split("/", 1)[0] in mine]
    slim = [{**e._mapping, "details": {k: v for k, v in e.details.items()
                                       if k != "thumbnail"}} for e in evs]
    return render(request, "print_trail.html",
                  {"events": slim, "requests": [a._mapping for a in asked]})


# --- JSON API (same session, roles and CSRF as the pages) -------------------------------


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    decision: Literal["approve", "deny"]
    reason: Annotated[str, Field(max_length=1000)] = ""
    note: Annotated[str, Field(max_length=1000)] = ""


class DecisionOut(BaseModel):
    command: int = Field(description="id of the print.decide command queued for the agent")
    state: str


class PrintJobOut(BaseModel):
    agent: str
    job_id: int
    seat: str
    operator: str
    queue: str
    title: str
    pages: int | None
    state: str
    held_us: int
    decided_by: str | None
    outcome: str
    error: str
    needs_note: bool


@router.get("/api/v1/print/jobs", tags=["print"], response_model=list[PrintJobOut])
def api_jobs(request: Request, user: Annotated[User, Depends(READERS)],
             state: Literal["open", "all"] = "open", limit: Limit = 500) -> list[PrintJobOut]:
    """Print jobs, oldest held first; ``state=open`` lists those awaiting a decision."""
    limit = max(1, min(limit, 5000))
    query = (sa.select(print_jobs).where(user.agent_clause(print_jobs.c.agent))
             .order_by(print_jobs.c.held_us).limit(limit))
    if state == "open":
        query = query.where(print_jobs.c.state.in_(OPEN_STATES))
    with request.app.state.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [PrintJobOut.model_validate(dict(r._mapping)) for r in rows]


@router.post("/api/v1/print/jobs/{agent_id}/{job_id}/decision", tags=["print"],
             response_model=DecisionOut,
             responses={403: {"description": "wrong role or missing CSRF token"},
                        404: {"description": "no such job"},
                        409: {"description": "already decided"},
                        422: {"description": "reason or note missing"}})
def api_decide(request: Request, user: Annotated[User, Depends(DECIDERS)], agent_id: str,
               job_id: RowId, body: DecisionIn) -> DecisionOut:
    """Approve or deny a held job (``X-CSRF-Token`` header required)."""
    check_csrf(request, user, None)
    try:
        cid = _decide(request, user, agent_id, job_id, body.decision, body.reason, body.note)
    except DecisionError as exc:
        raise HTTPException(exc.status, exc.message) from None
    return DecisionOut(command=cid,
                       state="approving" if body.decision == "approve" else "denying")
