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
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from floorguard.console.api.limits import StoreInt
from floorguard.console.auth import User, check_agent, current_user, require
from floorguard.console.duty import duty_floor
from floorguard.console.floor_state import (
    load_floor,
)
from floorguard.console.floors import FloorPolicy, all_floor_policies
from floorguard.console.store.db import now_us
from floorguard.console.store.schema import events
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
