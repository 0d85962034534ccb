"""The coverage page: what each agent runs and what it cannot (coverage gaps), its version
and policy, when it was last heard, and which agents went silent (``presence.liveness``,
the definition the Floor and Agents pages use too)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from floorguard.console.auth import User, require
from floorguard.console.floors import FloorPolicy, all_floor_policies
from floorguard.console.presence import interval_of, is_silent, liveness
from floorguard.console.store.db import now_us
from floorguard.console.store.schema import agent_link, agents
from floorguard.console.web.i18n import N_
from floorguard.console.web.site import add_nav, render

router = APIRouter(include_in_schema=False)
add_nav("/coverage", N_("Coverage"), ("admin", "sv", "auditor"), order=32)


@dataclass(frozen=True)
class AgentRow:
    id: str
    floor: str
    seat: str
    host: str
    version: str
    policy: str
    last_seen_us: int | None
    silent: bool
    controls: list[str]
    unavailable: dict[str, str]
    timezone: str


def describe(row: Any, policy: FloorPolicy, now: int) -> AgentRow:
    """One agent's line from its row (with its ``agent_link`` heartbeat columns) and
    heartbeat status. Pure."""
    status = row.status if isinstance(row.status, dict) else {}
    controls = status.get("controls")
    unavailable = status.get("unavailable")
    return AgentRow(
        id=row.id, floor=row.floor, seat=row.seat, host=row.host,
        version=str(status.get("version") or row.version or ""),
        policy=str(status.get("policy") or row.policy or ""),
        last_seen_us=row.last_seen_us,
        silent=is_silent(liveness(
            now_us=now, heard_us=row.last_seen_us, stopped=row.stopped_us is not None,
            interval_s=interval_of(row.heartbeat_us, row.interval_s,
                                   policy.heartbeat_interval_s))),
        controls=[str(c) for c in controls] if isinstance(controls, list) else [],
        unavailable={str(k): str(v) for k, v in unavailable.items()}
        if isinstance(unavailable, dict) else {},
        timezone=policy.timezone)


@router.get("/coverage")
def agents_page(request: Request, user: Annotated[User, Depends(require("admin", "sv",
                                                                        "auditor"))]
                ) -> HTMLResponse:
    now = now_us()
    with request.app.state.engine.connect() as conn:
        policies = all_floor_policies(conn)
        rows = conn.execute(
            sa.select(agents, agent_link.c.heartbeat_us, agent_link.c.interval_s,
                      agent_link.c.stopped_us)
            .select_from(agents.outerjoin(agent_link, agent_link.c.agent == agents.c.id))
            .where(agents.c.revoked_us.is_(None), user.floor_clause(agents.c.floor))
            .order_by(agents.c.floor, agents.c.seat, agents.c.id)).all()
    listed = [describe(r, policies.get(r.floor) or FloorPolicy(r.floor), now) for r in rows]
    return render(request, "coverage.html", {
        "agents": listed, "silent": [a for a in listed if a.silent],
        "gaps": [a for a in listed if a.unavailable]})
