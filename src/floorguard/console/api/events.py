"""The agent API: event ingest and enrollment.

Agents authenticate with ``Authorization: Bearer TOKEN``. The token is checked before the
body is read (401 when missing, unknown or revoked); then the body is read within a size
limit (413) and validated (422 naming the field). Nothing is stored from a request that
fails any check.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from floorguard.console.api.agent_request import (
    agent_for_token,
    read_json,
    validation_detail,
)
from floorguard.console.api.limits import INT64_MAX, check_event_ts
from floorguard.console.ingest.pipeline import store_events
from floorguard.events import CONSOLE_KINDS, CONTROLS, KINDS, SEVERITIES

MAX_BATCH = 1000

router = APIRouter(prefix="/api/v1", tags=["agents"])

Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Label = Annotated[str, Field(max_length=255)]
Seq = Annotated[int, Field(ge=1, le=INT64_MAX)]


class EventIn(BaseModel):
    """One journal record, exactly as the agent hashed it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: Annotated[str, Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                                     r"[0-9a-f]{12}$")]
    seq: Seq
    # A real instant within the clock-skew bound (request_limits.check_event_ts).
    ts: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"),
                  AfterValidator(check_event_ts)]
    agent: Annotated[str, Field(min_length=1, max_length=64)]
    host: Label
    seat: Label
    user: Label | None
    control: Literal[CONTROLS]  # type: ignore[valid-type]
    kind: Annotated[str, Field(max_length=64)]
    severity: Literal[SEVERITIES]  # type: ignore[valid-type]
    policy: Annotated[str, Field(max_length=64)]
    details: dict[str, Any]
    prev: Hex64
    hash: Hex64


class GapIn(BaseModel):
    """A hole the agent's journal made at its size cap (info records dropped), declared
    with the batch that jumps over it; the record after it must link to ``last_hash``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    from_seq: Seq
    to_seq: Seq
    last_hash: Hex64
    count: Seq


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: Annotated[list[EventIn], Field(min_length=1, max_length=MAX_BATCH)]
    gaps: Annotated[list[GapIn], Field(max_length=MAX_BATCH)] = []


class Ack(BaseModel):
    acked: int = Field(description="highest seq up to which the console holds every record")
    stored: int = Field(description="records newly stored from this batch")


class EnrollIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    code: Annotated[str, Field(min_length=8, max_length=128)]
    agent_id: Annotated[str, Field(pattern=r"^[0-9a-f-]{36}$")]
    host: Label
    seat: Label


class EnrollOut(BaseModel):
    agent_id: str
    token: str


_batch_adapter = TypeAdapter(EventBatch)


def _documented(*models: type[BaseModel]) -> dict[str, Any]:
    """JSON schemas of the request bodies this router reads by hand (the token is checked
    before the body is read, so FastAPI does not parse them); ``app.py`` adds them to the
    OpenAPI components so that every ``$ref`` resolves."""
    out: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


REQUEST_SCHEMAS = _documented(EventBatch, EnrollIn)


@router.post("/events", response_model=Ack, openapi_extra=_body(EventBatch),
             responses={401: {"description": "missing, unknown or revoked token"},
                        403: {"description": "an event names another agent"},
                        413: {"description": "body or batch too large"},
                        422: {"description": "malformed batch; the detail names the field"}})
async def post_events(request: Request) -> Ack:
    """Store a batch of journal records (idempotent on agent and seq)."""
    agent_id = await run_in_threadpool(agent_for_token, request)
    payload = await read_json(request)
    try:
        batch = _batch_adapter.validate_python(payload)
    except ValidationError as exc:
        raise HTTPException(422, validation_detail(exc)) from None
    seen: set[int] = set()
    for i, ev in enumerate(batch.events):
        if ev.agent != agent_id:
            raise HTTPException(403, f"events[{i}] names agent {ev.agent}, but this token "
                                     "belongs to another agent")
        if ev.seq in seen:
            raise HTTPException(422, [{"loc": ["events", i, "seq"],
                                       "msg": f"seq {ev.seq} appears twice in the batch",
                                       "type": "duplicate"}])
        if ev.kind not in KINDS:
            raise HTTPException(422, [{"loc": ["events", i, "kind"],
                                       "msg": f"unknown kind {ev.kind!r}",
                                       "type": "unknown_kind"}])
        seen.add(ev.seq)
    await _refuse_console_kinds(request, agent_id, batch)
    # Strict validation with extra fields forbidden leaves nothing to convert, so the
    # parsed dicts are stored as they came: a model_dump per event doubled the cost of a
    # batch.
    records = list(payload["events"])
    records.sort(key=lambda r: r["seq"])
    gaps = [g.model_dump() for g in batch.gaps]
    result = await run_in_threadpool(_store, request, agent_id, records, gaps)
    request.app.state.hub.publish({"type": "events", "agent": agent_id,
                                   "count": result["stored"]})
    return Ack(acked=result["acked"], stored=result["stored"])


async def _refuse_console_kinds(request: Request, agent_id: str, batch: EventBatch) -> None:
    """Only the console makes the kinds that judge agents and floors (``CONSOLE_KINDS``):
    from an agent they are a forgery. The whole batch is refused (422 naming the field,
    nothing stored) and the attempt goes to the audit trail against the sender."""
    forged = [(i, ev.kind, ev.seq) for i, ev in enumerate(batch.events)
              if ev.kind in CONSOLE_KINDS]
    if not forged:
        return
    from floorguard.console.auth import audit, client_ip

    def note() -> None:
        with request.app.state.engine.begin() as conn:
            audit(conn, "agent:" + agent_id, "agent.forged_kind", agent_id,
                  client_ip(request), {"events": [{"index": i, "kind": k, "seq": s}
                                                  for i, k, s in forged[:20]],
                                       "count": len(forged)})

    await run_in_threadpool(note)
    i, kind, _seq = forged[0]
    raise HTTPException(422, [{"loc": ["events", i, "kind"],
                               "msg": f"{kind!r} is made only by the console; an agent "
                                      "may not send it", "type": "console_kind"}])


def _store(request: Request, agent_id: str, records: list[dict[str, Any]],
           gaps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    with request.app.state.engine.begin() as conn:
        result = store_events(conn, agent_id, records)
        result["gaps"] = gaps or []
        for hook in request.app.state.ingest_pipeline:
            hook(conn, agent_id, records, result)
    return result


@router.post("/enroll", response_model=EnrollOut, openapi_extra=_body(EnrollIn),
             responses={403: {"description": "unknown, used or expired enrollment code, "
                                             "an agent that is already enrolled (a "
                                             "re-enrollment needs a code made for it) "
                                             "or a revoked agent"},
                        422: {"description": "malformed request; the detail names the field"}})
async def enroll(request: Request) -> EnrollOut:
    """Exchange a one-time enrollment code for a new agent's token, or a re-enrollment
    code for the token of the agent it was made for."""
    payload = await read_json(request, limit=16 * 1024)
    try:
        body = EnrollIn.model_validate(payload)
    except ValidationError as exc:
        raise HTTPException(422, validation_detail(exc)) from None
    return await run_in_threadpool(_enroll, request, body)


def _enroll(request: Request, body: EnrollIn) -> EnrollOut:
    # The rules (a code enrolls a new agent or re-enrolls the one it was made for; a
    # revoked agent stays revoked) live in ``enrollment``.
    from floorguard.console.api.link import ring
    from floorguard.console.auth import client_ip
    from floorguard.console.enrollment import EnrollRefused, enroll

    try:
        done = enroll(request.app.state.engine, body.code, body.agent_id, body.host,
                      body.seat, client_ip(request))
    except EnrollRefused as exc:
        raise HTTPException(403, str(exc)) from None
    if done.reenrolled:
        ring(request, done.agent_id)  # the old token's cached entries go at once
    return EnrollOut(agent_id=done.agent_id, token=done.token)
