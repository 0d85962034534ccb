"""The fleet pages: agents and their state, enrollment codes, revocation, "lock this seat
now", "reload policy", and the policy each floor runs.

Who may do what (checked on the server for every request): every role sees the agents;
SVs and admins lock a seat; admins make enrollment codes, revoke agents, reload and upload
policies. Every state-changing form carries the session's CSRF token and is audited.
"""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from floorguard.console import floor_policy
from floorguard.console.api.link import ring
from floorguard.console.auth import User, audit, check_agent, check_csrf, client_ip, require
from floorguard.console.commands import enqueue
from floorguard.console.enrollment import create_code
from floorguard.console.store.db import now_us
from floorguard.console.store.schema import agent_link, agents
from floorguard.console.web.site import render
from floorguard.events import Command
from floorguard.policy import parse_duration

router = APIRouter(include_in_schema=False)

VIEW = require("admin", "sv", "auditor")
LOCK = require("admin", "sv")
ADMIN = require("admin")


def revoke_agent(conn: Connection, agent_id: str, actor: str, ip: str = "") -> bool:
    """Refuse the agent's credential from now on; returns False for an unknown agent."""
    res = conn.execute(agents.update().where(agents.c.id == agent_id,
                                             agents.c.revoked_us.is_(None))
                       .values(revoked_us=now_us()))
    if res.rowcount == 0:
        known = conn.execute(sa.select(agents.c.id).where(agents.c.id == agent_id)).first()
        return known is not None
    audit(conn, actor, "agent.revoked", agent_id, ip)
    return True


def list_agents(conn: Connection, now: int) -> list[dict[str, Any]]:
    from floorguard.console.floors import FloorPolicy, all_floor_policies
    from floorguard.console.presence import interval_of, liveness

    policies = all_floor_policies(conn)
    rows = conn.execute(
        sa.select(agents, agent_link.c.heartbeat_us, agent_link.c.interval_s,
                  agent_link.c.silent_us, agent_link.c.stopped_us)
        .select_from(agents.outerjoin(agent_link, agent_link.c.agent == agents.c.id))
        .order_by(agents.c.floor, agents.c.seat)).all()
    out = []
    for r in rows:
        d = dict(r._mapping)
        d.pop("token_hash", None)
        if d["revoked_us"] is not None:
            d["state"] = "revoked"
        else:
            # the one definition, shared with the Floor and Coverage pages
            policy = policies.get(r.floor) or FloorPolicy(r.floor)
            d["state"] = liveness(
                now_us=now, heard_us=r.last_seen_us, stopped=r.stopped_us is not None,
                interval_s=interval_of(r.heartbeat_us, r.interval_s,
                                       policy.heartbeat_interval_s))
        # Read defensively: a row stored before heartbeats were typed must not break the
        # page for everyone.
        status = d["status"] if isinstance(d.get("status"), dict) else {}
        controls, unavailable = status.get("controls"), status.get("unavailable")
        d["controls"] = ", ".join(map(str, controls)) if isinstance(controls, list) else ""
        d["unavailable"] = ", ".join(sorted(map(str, unavailable))) \
            if isinstance(unavailable, dict) else ""
        d["user"] = status.get("session_user") or status.get("user") or ""
        d["locked"] = status.get("locked")
        # The agent's own words ("degraded: disk full ...") while its journal cannot write.
        journal = status.get("journal")
        d["journal"] = journal[:300] if isinstance(journal, str) and journal != "ok" else ""
        out.append(d)
    return out


def _agents_page(request: Request, user: User, *, code: str | None = None,
                 message: str | None = None, status: int = 200) -> HTMLResponse:
    with request.app.state.engine.connect() as conn:
        rows = [a for a in list_agents(conn, now_us()) if user.sees(a["floor"])]
    return render(request, "agents.html", {"agents": rows, "code": code,
                                           "message": message}, status=status)


@router.get("/agents")
def agents_page(request: Request, user: Annotated[User, Depends(VIEW)]) -> HTMLResponse:
    return _agents_page(request, user)


def _known_agent(conn: Connection, agent_id: str) -> Any:
    row = conn.execute(sa.select(agents).where(agents.c.id == agent_id)).first()
    if row is None:
        raise HTTPException(404, f"no agent {agent_id}")
    return row


@router.post("/agents/{agent_id}/lock")
def lock_seat(request: Request, agent_id: str, user: Annotated[User, Depends(LOCK)],
              csrf: Annotated[str, Form()] = "") -> Response:
    """Queue "lock this seat now" for the agent; it arrives through its long-poll."""
    check_csrf(request, user, csrf)
    with request.app.state.engine.begin() as conn:
        row = check_agent(conn, user, agent_id)  # an SV locks seats of their floors only
        cid = enqueue(conn, agent_id, Command.LOCK_SEAT, {"by": user.name, "reason": "sv"},
                      user.name)
        audit(conn, user.name, "command.queued", agent_id, client_ip(request),
              {"id": cid, "name": Command.LOCK_SEAT, "seat": row.seat})
    ring(request, agent_id)
    return RedirectResponse("/agents", status_code=303)


@router.post("/agents/{agent_id}/reload")
def reload_policy(request: Request, agent_id: str, user: Annotated[User, Depends(ADMIN)],
                  csrf: Annotated[str, Form()] = "") -> Response:
    """Queue "reload policy": the floor's console policy if there is one, else the
    agent's own policy file."""
    check_csrf(request, user, csrf)
    with request.app.state.engine.begin() as conn:
        row = _known_agent(conn, agent_id)
        held = floor_policy.for_floor(conn, row.floor)
        args = ({"text": held["text"], "source": f"console:{row.floor}"} if held else {})
        cid = enqueue(conn, agent_id, Command.RELOAD_POLICY, args, user.name)
        audit(conn, user.name, "command.queued", agent_id, client_ip(request),
              {"id": cid, "name": Command.RELOAD_POLICY, "hash": held["hash"] if held else None})
    ring(request, agent_id)
    return RedirectResponse("/agents", status_code=303)


@router.post("/agents/{agent_id}/revoke")
def revoke(request: Request, agent_id: str, user: Annotated[User, Depends(ADMIN)],
           csrf: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, user, csrf)
    with request.app.state.engine.begin() as conn:
        if not revoke_agent(conn, agent_id, user.name, client_ip(request)):
            raise HTTPException(404, f"no agent {agent_id}")
    ring(request, agent_id)  # a waiting long-poll re-checks the token and ends
    return RedirectResponse("/agents", status_code=303)


@router.post("/agents/enroll-code")
def make_code(request: Request, user: Annotated[User, Depends(ADMIN)],
              csrf: Annotated[str, Form()] = "",
              floor: Annotated[str, Form(max_length=255)] = "",
              expires: Annotated[str, Form(max_length=16)] = "24h") -> HTMLResponse:
    """A one-time enrollment code, shown once."""
    check_csrf(request, user, csrf)
    try:
        ttl = parse_duration(expires)
    except ValueError as exc:
        return _agents_page(request, user, message=f"expires: {exc}", status=422)
    with request.app.state.engine.begin() as conn:
        code = create_code(conn, user.name, floor.strip(), ttl, None)
    return _agents_page(request, user, code=code)


def _policies_page(request: Request, *, problems: list[str] | None = None,
                   message: str | None = None, floor: str = "", text: str = "",
                   status: int = 200) -> HTMLResponse:
    with request.app.state.engine.connect() as conn:
        floors = floor_policy.all_floors(conn)
    return render(request, "policies.html", {"floors": floors, "problems": problems or [],
                                             "message": message, "floor": floor,
                                             "text": text}, status=status)


@router.get("/policies")
def policies_page(request: Request, user: Annotated[User, Depends(ADMIN)]) -> HTMLResponse:
    return _policies_page(request)


@router.post("/policies")
async def upload_policy(
    request: Request,
    user: Annotated[User, Depends(ADMIN)],
    csrf: Annotated[str, Form()] = "",
    floor: Annotated[str, Form(max_length=255)] = "",
    text: Annotated[str, Form(max_length=floor_policy.MAX_POLICY)] = "",
    file: UploadFile | None = None,
) -> HTMLResponse:
    """Validate and store a floor's policy (refused, with FILE:LINE problems, if bad)."""
    check_csrf(request, user, csrf)
    floor = floor.strip()
    source = f"{floor or 'policy'}.toml"
    if file is not None and file.filename:
        data = await file.read(floor_policy.MAX_POLICY + 1)
        if len(data) > floor_policy.MAX_POLICY:
            return _policies_page(request, floor=floor, status=413,
                                  problems=[f"{file.filename}: larger than "
                                            f"{floor_policy.MAX_POLICY} bytes"])
        source = file.filename
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return _policies_page(request, floor=floor, status=422, problems=[
                f"{source}:1: not UTF-8 text; save the file as UTF-8"])
    if not floor:
        return _policies_page(request, text=text, status=422,
                              message="Name the floor this policy is for.")

    def save() -> tuple[Any, list[str]]:
        with request.app.state.engine.begin() as conn:
            policy, problems = floor_policy.store(conn, floor, text, source, user.name)
            audit(conn, user.name, "policy.uploaded" if policy else "policy.refused", floor,
                  client_ip(request), {"hash": policy.hash if policy else None,
                                       "source": source, "problems": problems})
        return policy, problems

    policy, problems = await run_in_threadpool(save)
    if policy is None:
        return _policies_page(request, problems=problems, floor=floor, text=text,
                              status=422)
    return _policies_page(request, message=f"{floor}: policy {policy.hash[:16]} in force; "
                                           "agents on this floor fetch it at their next "
                                           "heartbeat.")
