"""Reading an agent's request: its bearer token (checked before any body is read) and
its JSON body (read under a streaming limit by the one strict reader)."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from fastapi import HTTPException, Request
from pydantic import ValidationError

from floorguard.console.api.limits import ROUTE_LIMITS, parse_json
from floorguard.console.auth import sha256_hex
from floorguard.console.store.schema import agents

MAX_BODY = dict(ROUTE_LIMITS)["/api/v1/events"]


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    m = re.fullmatch(r"Bearer ([A-Za-z0-9_\-\.~+/=]{16,256})", header)
    if not m:
        raise HTTPException(401, "missing or malformed 'Authorization: Bearer TOKEN' header",
                            headers={"WWW-Authenticate": "Bearer"})
    return m.group(1)


def agent_for_token(request: Request) -> str:
    """The agent id the bearer token belongs to; 401 otherwise. Reads no body."""
    token = _bearer(request)
    with request.app.state.engine.connect() as conn:
        row = conn.execute(sa.select(agents.c.id, agents.c.revoked_us)
                           .where(agents.c.token_hash == sha256_hex(token))).first()
    if row is None or row.revoked_us is not None:
        raise HTTPException(401, "unknown or revoked agent token: enroll the agent again",
                            headers={"WWW-Authenticate": "Bearer"})
    return str(row.id)


async def read_json(request: Request, limit: int = MAX_BODY) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body of {declared} bytes is over the {limit}-byte limit; "
                                 "send smaller batches")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise HTTPException(413, f"body is over the {limit}-byte limit; send smaller "
                                     "batches")
    return parse_json(body)


def validation_detail(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_input=False)]
