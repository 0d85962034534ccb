"""The agent side of the link besides ingest: heartbeats, commands, central policy.

- ``POST /api/v1/heartbeat``: the agent's state every ``[agent] heartbeat_interval``, and
  ``"state": "stopping"`` once before a deliberate stop. The reply carries the hash of the
  policy in force for the agent's floor, the fleet size and the console's drain rate (the
  agent spreads its backlog over a window sized by them after an outage).
- ``GET /api/v1/commands?wait=25``: a long-poll held open until a command is queued for
  this agent (woken in-process at once, and by a store poll every quarter second so that
  commands queued, or agents revoked, through another console process are seen too).
- ``POST /api/v1/commands/{id}/result``: the agent's result, stored once.
- ``GET /api/v1/policy``: the policy text for the agent's floor.

Every route authenticates the agent by its bearer token and acts only as that agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Annotated, Any, Literal

import sqlalchemy as sa
import structlog
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from floorguard.console import floor_policy, presence
from floorguard.console.api.agent_request import (
    _bearer,
    agent_for_token,
    read_json,
    validation_detail,
)
from floorguard.console.api.limits import RowId
from floorguard.console.auth import audit, client_ip, sha256_hex
from floorguard.console.commands import complete, mark_delivered, pending
from floorguard.console.store.db import now_us
from floorguard.console.store.schema import agents, commands

log = structlog.get_logger("floorguard.console.link")

router = APIRouter(prefix="/api/v1", tags=["agents"])

MAX_WAIT = 60.0


Finite = Annotated[float, Field(allow_inf_nan=False)]
Name = Annotated[str, Field(max_length=255)]


class HeartbeatStatus(TypedDict, total=False):
    """The facts the console's pages read, typed, so that one agent's odd heartbeat
    (``"controls": 5``) is its own 422 rather than a broken page for everyone. Controls
    may add other facts (kept as sent)."""

    __pydantic_config__ = ConfigDict(extra="allow", strict=True)  # type: ignore[misc]

    version: Annotated[str, Field(max_length=64)] | None
    policy: Annotated[str, Field(max_length=64)] | None
    controls: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=64)]
    unavailable: dict[Annotated[str, Field(max_length=64)], Any]
    user: Name | None
    session_user: Name | None
    locked: bool | None
    idle_seconds: Annotated[Finite, Field(ge=0)] | None
    interval: Annotated[Finite, Field(gt=0)]
    pending: Annotated[int, Field(ge=0, le=2**63 - 1)] | None


class HeartbeatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: Annotated[str | None, Field(max_length=64)] = None
    state: Literal["running", "stopping"] = "running"
    status: HeartbeatStatus = Field(default_factory=lambda: HeartbeatStatus(), description=(
        "version, policy (hash in force), controls, unavailable, user, interval, and "
        "facts the controls add (lock state)"))


class PolicyRef(BaseModel):
    floor: str
    hash: str


class HeartbeatOut(BaseModel):
    policy: PolicyRef | None = Field(description="the policy in force for this floor")
    fleet: int = Field(description="enrolled agents (sizes the backlog drain window)")
    drain_rate: float = Field(description="events per second the console takes in")


class CommandOut(BaseModel):
    id: int
    name: str
    args: dict[str, Any]


class CommandsOut(BaseModel):
    commands: list[CommandOut]


class ResultIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    result: dict[str, Any]


class PolicyOut(BaseModel):
    floor: str
    hash: str
    text: str


class TokenCache:
    """Token hash -> agent id for the frequent agent calls (heartbeats, polls), so that a
    thousand agents do not each cost a store query and a worker thread per call.

    A revocation drops the agent's entries at once in the revoking process, and within the
    bell's store poll (a quarter second) in every other console process; entries expire
    after ``ttl`` seconds whatever happens (a re-enrollment replaces the token)."""

    def __init__(self, ttl: float = 30.0):
        self.ttl = ttl
        self._known: dict[str, tuple[str, float]] = {}

    def get(self, token_hash: str) -> str | None:
        hit = self._known.get(token_hash)
        if hit is None or time.monotonic() - hit[1] > self.ttl:
            return None
        return hit[0]

    def put(self, token_hash: str, agent_id: str) -> None:
        self._known[token_hash] = (agent_id, time.monotonic())

    def forget(self, agent_id: str) -> None:
        for key in [k for k, v in self._known.items() if v[0] == agent_id]:
            self._known.pop(key, None)


async def authenticated_agent(request: Request) -> str:
    """The agent the bearer token belongs to (401 otherwise), from the cache if fresh."""
    cache: TokenCache = request.app.state.token_cache
    key = sha256_hex(_bearer(request))
    agent_id = cache.get(key)
    if agent_id is None:
        agent_id = await run_in_threadpool(agent_for_token, request)
        cache.put(key, agent_id)
    return agent_id


class CommandBell:
    """Wakes long-polls waiting for a given agent's commands."""

    def __init__(self, engine: Engine, tokens: TokenCache, poll: float = 0.25):
        self.engine = engine
        self.tokens = tokens
        self.poll = poll
        self._events: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._high = 0
        self._revoked_since = 0

    def event(self, agent_id: str) -> asyncio.Event:
        ev = self._events.get(agent_id)
        if ev is None:
            ev = self._events[agent_id] = asyncio.Event()
        return ev

    def ring(self, agent_id: str) -> None:
        """Safe from any thread."""
        self.tokens.forget(agent_id)  # a revocation or re-enrollment may be why
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(lambda: self.event(agent_id).set())

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        with self.engine.connect() as conn:
            self._high = int(conn.execute(sa.select(sa.func.max(commands.c.id))).scalar()
                             or 0)
            self._revoked_since = int(conn.execute(sa.select(sa.func.max(
                agents.c.revoked_us))).scalar() or 0)
        self._task = self._loop.create_task(self._watch())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _new_since(self) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
        """Commands queued and agents revoked since the last look (by any process)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(commands.c.id, commands.c.agent)
                                .where(commands.c.id > self._high)).all()
            revoked = conn.execute(sa.select(agents.c.revoked_us, agents.c.id)
                                   .where(agents.c.revoked_us > self._revoked_since)).all()
        return ([(int(r.id), str(r.agent)) for r in rows],
                [(int(r.revoked_us), str(r.id)) for r in revoked])

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            try:
                rows, revoked = await run_in_threadpool(self._new_since)
            except Exception:  # a busy store: try again next tick
                log.exception("command watch failed")
                continue
            for cid, agent in rows:
                self._high = max(self._high, cid)
                self.event(agent).set()
            for at, agent in revoked:  # its waiting poll re-checks the token and ends
                self._revoked_since = max(self._revoked_since, at)
                self.tokens.forget(agent)
                self.event(agent).set()


def configure(app: FastAPI) -> None:
    """The link's per-process state: the drain rate, the fleet size and token caches."""
    app.state.drain_rate = float(os.environ.get("FLOORGUARD_DRAIN_RATE", "5000"))
    app.state.fleet_cache = (0.0, 0)
    app.state.token_cache = TokenCache()


def start(app: FastAPI) -> None:
    """The heartbeat writer, the command bell and the silence watch, for the app's life."""
    app.state.write_sink = presence.WriteSink(app.state.engine)
    app.state.write_sink.start()
    app.state.command_bell = CommandBell(app.state.engine, app.state.token_cache)
    app.state.command_bell.start()
    app.state.silence_watch = presence.SilenceWatch(app.state.engine)
    app.state.silence_watch.start()


def stop(app: FastAPI) -> None:
    app.state.write_sink.stop()
    app.state.command_bell.stop()
    app.state.silence_watch.stop()


def ring(request: Request, agent_id: str) -> None:
    """Wake the agent's long-poll now (after the command's transaction committed)."""
    bell = getattr(request.app.state, "command_bell", None)
    if bell is not None:
        bell.ring(agent_id)


def _fleet_size(request: Request, conn: Any) -> int:
    at, size = request.app.state.fleet_cache
    if time.monotonic() - at > 10:
        size = int(conn.execute(sa.select(sa.func.count()).select_from(agents)
                                .where(agents.c.revoked_us.is_(None))).scalar() or 0)
        request.app.state.fleet_cache = (time.monotonic(), size)
    return int(size)


@router.post("/heartbeat", response_model=HeartbeatOut,
             responses={401: {"description": "missing, unknown or revoked token"},
                        403: {"description": "the body names another agent"},
                        422: {"description": "malformed heartbeat; the detail names the field"}})
async def post_heartbeat(request: Request) -> HeartbeatOut:
    """Store this agent's state; reply with the policy in force for its floor."""
    agent_id = await authenticated_agent(request)
    payload = await read_json(request, limit=64 * 1024)
    try:
        body = HeartbeatIn.model_validate(payload)
    except ValidationError as exc:
        raise HTTPException(422, validation_detail(exc)) from None
    if body.agent is not None and body.agent != agent_id:
        raise HTTPException(403, f"this heartbeat names agent {body.agent}, but the token "
                                 "belongs to another agent")

    ip = client_ip(request)
    received = now_us()

    def store(conn: Any) -> HeartbeatOut:
        changed = presence.heartbeat(conn, agent_id, body.state, dict(body.status), received)
        if changed["stopping"]:
            audit(conn, "agent:" + agent_id, "agent.stopping", "", ip,
                  {"version": body.status.get("version")})
        fleet = _fleet_size(request, conn)
        held = changed["policy_hash"]
        ref = PolicyRef(floor=changed["floor"], hash=held) if held else None
        return HeartbeatOut(policy=ref, fleet=fleet, drain_rate=request.app.state.drain_rate)

    out: HeartbeatOut = await asyncio.wrap_future(request.app.state.write_sink.submit(store))
    return out


@router.get("/commands", response_model=CommandsOut,
            responses={401: {"description": "missing, unknown or revoked token"}})
async def get_commands(
    request: Request,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT, description="seconds to hold the "
                                 "request open while no command is queued")] = 0.0,
) -> CommandsOut:
    """Commands queued for this agent (oldest first; sent again until acknowledged)."""
    bell: CommandBell = request.app.state.command_bell
    deadline = time.monotonic() + wait
    agent_id = ""

    def fetch() -> list[dict[str, Any]]:
        with request.app.state.engine.begin() as conn:
            rows = pending(conn, agent_id)
            if rows:
                mark_delivered(conn, [r["id"] for r in rows])
        return rows

    ev: asyncio.Event | None = None
    while True:
        if ev is not None:
            ev.clear()
        # The token is checked again at every wake: a revocation ends the poll at once.
        agent_id = await authenticated_agent(request)
        rows = await run_in_threadpool(fetch)
        if ev is None:
            ev = bell.event(agent_id)
            if ev.is_set():  # rung between the fetch and now: look again
                continue
        left = deadline - time.monotonic()
        if rows or left <= 0:
            return CommandsOut(commands=[CommandOut(**r) for r in rows])
        # No disconnect check while waiting: under the app's HTTP middleware each one
        # costs a task group, and a poll whose agent went away only holds a timer until
        # its deadline.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), left)


@router.post("/commands/{command_id}/result",
             responses={401: {"description": "missing, unknown or revoked token"},
                        404: {"description": "no such command for this agent"}})
async def post_result(request: Request, command_id: RowId) -> dict[str, Any]:
    """Acknowledge a command with its result (idempotent)."""
    agent_id = await authenticated_agent(request)
    payload = await read_json(request, limit=256 * 1024)
    try:
        body = ResultIn.model_validate(payload)
    except ValidationError as exc:
        raise HTTPException(422, validation_detail(exc)) from None

    def store() -> bool:
        with request.app.state.engine.begin() as conn:
            ok = complete(conn, agent_id, command_id, body.result,
                          request.app.state.result_hooks)
            if ok:
                audit(conn, "agent:" + agent_id, "command.result", str(command_id),
                      client_ip(request), {"ok": bool(body.result.get("ok")),
                                           "result": body.result})
        return ok

    if not await run_in_threadpool(store):
        raise HTTPException(404, f"no command {command_id} for this agent")
    return {"ok": True}


@router.get("/policy", response_model=PolicyOut,
            responses={401: {"description": "missing, unknown or revoked token"},
                       404: {"description": "the console holds no policy for this floor"}})
async def get_policy(request: Request) -> PolicyOut:
    """The policy text in force for this agent's floor."""
    agent_id = await authenticated_agent(request)

    def load() -> dict[str, Any] | None:
        with request.app.state.engine.connect() as conn:
            floor = conn.execute(sa.select(agents.c.floor).where(agents.c.id == agent_id)
                                 ).scalar() or ""
            return floor_policy.for_floor(conn, str(floor))

    held = await run_in_threadpool(load)
    if held is None:
        raise HTTPException(404, "the console holds no policy for this agent's floor")
    return PolicyOut(floor=held["floor"], hash=held["hash"], text=held["text"])
