"""The floor view: one tile per seat, grouped by floor, live without reload.

The page subscribes to ``/floor/stream`` (server-sent events): every ingest publishes a
notice on ``app.state.hub`` and the page re-reads ``/floor/tiles`` at once; it also
re-reads on a short timer, which catches what another console process ingested and
seats that went silent. Tiles come from ``agents`` and ``seat_state`` (one row per seat),
never from a scan of events. A tile links to the seat's timeline.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from floorguard.console.api.limits import StoreInt
from floorguard.console.auth import User, check_agent, current_user, require
from floorguard.console.ingest.chain import agent_link
from floorguard.console.ingest.seats import SILENT, Tile, seat_state, tile_state
from floorguard.console.presence import STOPPED, interval_of, is_silent, liveness, silent_after_us
from floorguard.console.ratio import ratio_exceeded
from floorguard.console.store.db import now_us
from floorguard.console.store.schema import agents, events
from floorguard.console.web.duty import duty_floor, svs_on_duty
from floorguard.console.web.floor_settings import FloorPolicy, all_floor_policies
from floorguard.console.web.i18n import N_
from floorguard.console.web.site import add_nav, render

router = APIRouter(include_in_schema=False)
VIEWERS = require("admin", "sv", "auditor")
KEEPALIVE_S = 15.0

add_nav("/floor", N_("Floor"), ("admin", "sv", "auditor"), order=10)

STATE_LABELS = {
    "ok": N_("OK"), "violation": N_("Violation"), "idle": N_("Idle, unlocked"),
    "locked": N_("Locked"), "silent": N_("Agent silent"), "stopped": N_("Agent stopped"),
}


@dataclass
class FloorView:
    name: str
    policy: FloorPolicy
    tiles: list[Tile] = field(default_factory=list)
    svs: list[str] = field(default_factory=list)

    @property
    def operators(self) -> int:
        return sum(1 for t in self.tiles if t.user and t.state not in (SILENT, STOPPED))

    @property
    def exceeded(self) -> bool:
        return ratio_exceeded(self.operators, len(self.svs), self.policy.max_operators_per_sv)

    def count(self, state: str) -> int:
        return sum(1 for t in self.tiles if t.state == state)


def load_floor(conn: Connection, now: int, viewer: User | None = None) -> list[FloorView]:
    """Every floor with its seat tiles, operators and SVs on duty (two small queries);
    with ``viewer``, only the viewer's floors (each of them, even one without agents yet)."""
    policies = all_floor_policies(conn)
    duty = svs_on_duty(conn)
    views: dict[str, FloorView] = {}
    rows = conn.execute(
        sa.select(agents.c.id, agents.c.seat, agents.c.floor, agents.c.last_seen_us,
                  agents.c.status, seat_state.c.seat.label("event_seat"), seat_state.c.user,
                  seat_state.c.last_violation_us, seat_state.c.last_violation_kind,
                  seat_state.c.idle_since_us, seat_state.c.locked,
                  agent_link.c.heartbeat_us, agent_link.c.interval_s,
                  agent_link.c.stopped_us)
        .select_from(agents.outerjoin(seat_state, seat_state.c.agent == agents.c.id)
                     .outerjoin(agent_link, agent_link.c.agent == agents.c.id))
        .where(agents.c.revoked_us.is_(None),
               sa.true() if viewer is None else viewer.floor_clause(agents.c.floor)))
    for r in rows:
        policy = policies.get(r.floor) or FloorPolicy(floor=r.floor)
        view = views.setdefault(r.floor, FloorView(r.floor, policy))
        status = r.status if isinstance(r.status, dict) else None
        # Silent or stopped comes from the one definition (the Coverage and Agents pages
        # use it too); tile_state, given the same threshold, orders the rest.
        interval = interval_of(r.heartbeat_us, r.interval_s, policy.heartbeat_interval_s)
        live = liveness(now_us=now, heard_us=r.last_seen_us, interval_s=interval,
                        stopped=r.stopped_us is not None)
        if live == STOPPED:
            state = STOPPED
        elif is_silent(live):
            state = SILENT
        else:
            state = tile_state(now=now, last_seen_us=r.last_seen_us,
                               silent_after_us=silent_after_us(interval), status=status,
                               last_violation_us=r.last_violation_us,
                               idle_since_us=r.idle_since_us, locked=bool(r.locked),
                               idle_unlocked_after_us=int(policy.idle_unlocked_after_s
                                                          * 1e6))
        user = status.get("user") if status and "user" in status else r.user
        view.tiles.append(Tile(agent=r.id, seat=r.event_seat or r.seat or r.id[:8],
                               floor=r.floor, user=user, state=state,
                               last_heard_us=r.last_seen_us,
                               violation_kind=r.last_violation_kind))
    for floor in sorted(viewer.floors or ()) if viewer is not None else ():
        views.setdefault(floor, FloorView(floor, policies.get(floor) or FloorPolicy(floor)))
    for floor, names in duty.items():
        if viewer is not None and not viewer.sees(floor):
            continue
        view = views.setdefault(floor, FloorView(floor, policies.get(floor)
                                                 or FloorPolicy(floor=floor)))
        view.svs = names
    for view in views.values():
        view.tiles.sort(key=lambda t: (t.seat, t.agent))
    return [views[k] for k in sorted(views)]


def _floor_context(request: Request, user: User) -> dict[str, Any]:
    with request.app.state.engine.connect() as conn:
        floors = load_floor(conn, now_us(), user)
        on_duty = duty_floor(conn, user.name) if user.role == "sv" else None
    return {"floors": floors, "labels": STATE_LABELS, "on_duty": on_duty}


@router.get("/floor")
def floor_page(request: Request, user: Annotated[User, Depends(VIEWERS)]) -> HTMLResponse:
    return render(request, "floor.html", _floor_context(request, user))


@router.get("/floor/tiles")
def floor_tiles(request: Request, user: Annotated[User, Depends(VIEWERS)]) -> HTMLResponse:
    """The tiles alone, re-read by the page on every notice."""
    response = render(request, "floor_tiles.html", _floor_context(request, user))
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/floor/stream")
async def floor_stream(request: Request, user: Annotated[User, Depends(VIEWERS)]
                       ) -> StreamingResponse:
    """Server-sent events: ``change`` whenever events were ingested."""
    hub = request.app.state.hub
    queue = hub.subscribe()

    async def notices() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_S)
                except TimeoutError:
                    # Re-check the session now and then: a disabled or signed-out user
                    # stops receiving at once.
                    if await run_in_threadpool(current_user, request) is None:
                        return
                    yield ": keepalive\n\n"
                    continue
                while not queue.empty():  # many ingests, one refresh
                    message = queue.get_nowait()
                # which agent changed is another floor's business for a floor-scoped user
                agent = message.get("agent") if user.floors is None else None
                yield f"event: change\ndata: {json.dumps({'agent': agent})}\n\n"
        finally:
            hub.unsubscribe(queue)

    return StreamingResponse(notices(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store",
                                      "X-Accel-Buffering": "no"})


TIMELINE_PAGE = 100


@router.get("/seats/{agent_id}")
def seat_timeline(request: Request, user: Annotated[User, Depends(VIEWERS)],
                  agent_id: Annotated[str, Path(max_length=64)],
                  before: StoreInt | None = None) -> HTMLResponse:
    """One seat's events, newest first, a page at a time (by seq, on the primary key)."""
    with request.app.state.engine.connect() as conn:
        agent = check_agent(conn, user, agent_id)
        q = sa.select(events).where(events.c.agent == agent_id)
        if before is not None:
            q = q.where(events.c.seq < before)
        rows = conn.execute(q.order_by(events.c.seq.desc()).limit(TIMELINE_PAGE)).all()
        policy = all_floor_policies(conn).get(agent.floor) or FloorPolicy(agent.floor)
    more = rows[-1].seq if len(rows) == TIMELINE_PAGE else None
    return render(request, "seat.html", {"agent": agent, "events": [r._mapping for r in rows],
                                         "more": more, "tz": policy.timezone})
