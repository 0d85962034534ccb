"""What the console accepts from the network before any route sees it, and the value
bounds the routes' models share.

- ``BodyLimits`` is an ASGI middleware that refuses an oversized body by its
  ``Content-Length`` before one byte of it is read (413), counts the bytes of a chunked
  body as the route reads them (413 at the cap; nothing is spooled to disk first), and
  gives up on a client that stops sending its body (408). Forms are small; the routes
  that take more are listed in ``ROUTE_LIMITS``.
- ``StoreInt``, ``RowId`` and ``Limit`` bound the integers routes take to what the
  store's columns hold (64-bit seqs and times, 32-bit row ids on PostgreSQL), so 2^63 is
  a 422 naming the parameter rather than an overflow in the database driver.
- ``parse_json`` is the one JSON reader of the agent API: NaN and Infinity, lone
  surrogates, NUL characters (PostgreSQL's text and jsonb cannot hold them) and nesting
  deeper than ``MAX_DEPTH`` are 422s naming the field. ``BodyLimits`` refuses a NUL in a
  query parameter the same way.
- ``check_event_ts`` is the clock-skew bound of ingest.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

import annotated_types as at
from fastapi import HTTPException

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
StoreInt = Annotated[int, at.Interval(ge=0, le=INT64_MAX)]  # BigInteger columns (seq)
RowId = Annotated[int, at.Interval(ge=0, le=INT32_MAX)]  # Integer columns (ids, job ids)
Limit = Annotated[int, at.Interval(ge=1, le=INT64_MAX)]

# Pages post small forms; these routes take more (the route itself may hold a finer
# limit, e.g. a heartbeat's 64 KiB inside the agent API's allowance).
FORM_LIMIT = 64 * 1024
MULTIPART_SLACK = 64 * 1024
ROUTE_LIMITS: tuple[tuple[str, int], ...] = (
    ("/api/v1/events", 8 * 1024 * 1024),
    ("/api/v1/commands/", 256 * 1024),
    ("/policies", 256 * 1024 + MULTIPART_SLACK),
    ("/reports/verify", 512 * 1024 * 1024 + MULTIPART_SLACK),
)
# A client that sends no body bytes for this long is given up on; a whole body must
# arrive within BODY_TOTAL_S (8 MiB of ingest at 2 Mbit/s is about 34 s).
BODY_IDLE_S = 10.0
BODY_TOTAL_S = 60.0

MAX_DEPTH = 64
# Agents' clocks drift and PCs start with a wrong clock; a record more than a day ahead
# of the console, or from before 2000, is a broken clock, not evidence of "when".
MAX_FUTURE_S = 24 * 3600
MIN_TS = datetime(2000, 1, 1, tzinfo=UTC)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def body_limit(path: str) -> int:
    for prefix, limit in ROUTE_LIMITS:
        if path.startswith(prefix):
            return limit
    return FORM_LIMIT


class BodyLimits:
    """Refuse oversized or stalled request bodies for every route (see module doc)."""

    def __init__(self, app: ASGIApp, *, idle_s: float = BODY_IDLE_S,
                 total_s: float = BODY_TOTAL_S,
                 limit_for: Callable[[str], int] = body_limit):
        self.app = app
        self.idle_s = idle_s
        self.total_s = total_s
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nul = _nul_in_query(scope.get("query_string", b""))
        if nul is not None:
            await _refuse(send, 422, [{"loc": ["query", nul], "type": "nul_character",
                                       "msg": _NUL_MSG}])
            return
        limit = self.limit_for(scope["path"])
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _refuse(send, 400, "Content-Length is not a number")
                return
            if int(declared) > limit:
                await _refuse(send, 413, f"body of {declared} bytes is over this route's "
                                         f"{limit}-byte limit")
                return
        got = 0
        done = False
        deadline = time.monotonic() + self.total_s
        # Set when this layer stopped the body: whatever the route's parser then makes of
        # the error (FastAPI turns some into "error parsing the body"), the client gets
        # this answer.
        refusal: tuple[int, str] | None = None
        answered = False

        async def limited() -> Message:
            nonlocal got, done, refusal
            if done:  # the body is in: what follows is a disconnect, wait for it
                return await receive()
            wait = min(self.idle_s, deadline - time.monotonic())
            try:
                message = await asyncio.wait_for(receive(), max(wait, 0.001))
            except TimeoutError:
                refusal = (408, "the request body stopped arriving; send it again in one go")
                raise HTTPException(*refusal) from None
            if message["type"] == "http.request":
                got += len(message.get("body", b""))
                if got > limit:
                    refusal = (413, f"body is over this route's {limit}-byte limit")
                    raise HTTPException(*refusal)
                done = not message.get("more_body", False)
            else:
                done = True
            return message

        async def answer(message: Message) -> None:
            nonlocal answered
            if refusal is None:
                await send(message)
            elif not answered:
                answered = True
                await _refuse(send, *refusal)

        try:
            await self.app(scope, limited, answer)
        except Exception:
            if refusal is None or answered:
                raise
            # A middleware between here and the route (Starlette's BaseHTTPMiddleware
            # reads the body in a task group) hands this layer's refusal back as an error
            # group: the client still gets the refusal, never a 500.
            answered = True
            await _refuse(send, *refusal)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1").strip()
    return None


_NUL_MSG = "holds a NUL character (\\u0000), which the store cannot hold; remove it"


def _nul_in_query(query: bytes) -> str | None:
    """The name of the first query parameter holding a NUL character, or None."""
    if b"%00" not in query and b"\x00" not in query:
        return None
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True,
                                encoding="utf-8", errors="replace"):
        if "\x00" in key or "\x00" in value:
            return key.replace("\x00", "\\u0000")
    return None


async def _refuse(send: Send, status: int, detail: Any) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), (b"x-content-type-options", b"nosniff")]})
    await send({"type": "http.response.body", "body": body})


# --- JSON --------------------------------------------------------------------------------

def parse_json(body: bytes | bytearray) -> Any:
    """Parse a request body, refusing (422, naming the field) what the store or a page
    cannot hold: NaN/Infinity, lone surrogates, nesting deeper than ``MAX_DEPTH``."""
    try:
        # NaN and Infinity parse (as Python does) so that json_problem can name where.
        value = json.loads(body)
    except RecursionError:
        raise HTTPException(422, [{"loc": ["body"], "msg": "JSON nested too deeply (the "
                                   f"limit is {MAX_DEPTH} levels)", "type": "json_depth"}]
                            ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(422, f"body is not valid JSON: {exc}") from None
    problem = json_problem(value)
    if problem is not None:
        loc, msg, kind = problem
        raise HTTPException(422, [{"loc": ["body", *loc], "msg": msg, "type": kind}])
    return value


def json_problem(value: Any) -> tuple[list[str | int], str, str] | None:
    """The first place in a parsed JSON value that cannot be stored as is, or None.

    Iterative, so that depth costs no Python stack."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        v, loc = stack.pop()
        if len(loc) > MAX_DEPTH:
            return loc, f"nested deeper than {MAX_DEPTH} levels", "json_depth"
        if isinstance(v, dict):
            for k, item in v.items():
                if "\x00" in k:
                    return [*loc, k.replace("\x00", "\\u0000")], f"key {_NUL_MSG}", \
                        "nul_character"
                if not _encodable(k):
                    return [*loc, _escaped(k)], "key holds a lone surrogate (\\ud800-\\udfff)" \
                        "; send valid UTF-16 pairs or escape the bytes", "surrogate"
                stack.append((item, [*loc, k]))
        elif isinstance(v, list):
            stack.extend((item, [*loc, i]) for i, item in enumerate(v))
        elif isinstance(v, str):
            if "\x00" in v:
                return loc, _NUL_MSG, "nul_character"
            if not _encodable(v):
                return loc, "holds a lone surrogate (\\ud800-\\udfff); send valid UTF-16 " \
                            "pairs or escape the bytes", "surrogate"
        elif isinstance(v, float) and not math.isfinite(v):
            return loc, "not a finite number (NaN and Infinity are not JSON); send a " \
                        "number or null", "finite_number"
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escaped(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("ascii", "replace")


# --- time --------------------------------------------------------------------------------

def check_event_ts(ts: str, *, now_s: float | None = None) -> str:
    """``ts`` if it is a real instant within the skew bound; ValueError saying what is
    wrong otherwise (the pattern has already fixed its shape)."""
    try:
        dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not a real date and time ({exc})") from None
    now = time.time() if now_s is None else now_s
    if dt < MIN_TS:
        raise ValueError("before 2000-01-01: the PC's clock is wrong; set it (NTP) and "
                         "the agent records again")
    if dt.timestamp() > now + MAX_FUTURE_S:
        raise ValueError(f"more than {MAX_FUTURE_S // 3600} h ahead of the console's "
                         "clock: the PC's clock is wrong; set it (NTP)")
    return ts
