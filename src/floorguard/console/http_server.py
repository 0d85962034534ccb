"""The console's HTTP server edge: uvicorn's h11 protocol with the limits it lacks.

uvicorn times out only idle keep-alive connections. A client that opens a socket and
sends half a request line holds a file descriptor for as long as it likes, and at the
process's open-file limit ``accept()`` fails for everyone (health checks and agents'
heartbeats included) while asyncio logs a traceback per attempt. So:

- ``HEADER_TIMEOUT_S``: a request's headers must be complete this long after its first
  byte (or after the connection opened); otherwise the connection is closed. The
  deadline is not renewed by each byte, so dripping a byte at a time does not help.
  Stalled bodies are ``request_limits.BodyLimits``'s business; the rest of a body the
  route never read (a 401 answered before it) must arrive within ``UNREAD_BODY_S`` of
  the response, or the connection ends: a client could otherwise trickle it for ever.
- ``ConnectionGuard``: at most ``per_address`` open connections from one address and
  ``total`` in all (sized below the open-file limit); a connection over either is closed
  as soon as it is accepted, so its descriptor is free again at once.
- ``RepeatFilter``: the same log message (and exception type) is written at most once
  per ``every_s``, then once more with how many were suppressed.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0
# Long enough for a client that sent its body right behind its headers (the answer may
# have gone out before the body's segment was read), too short to hold a socket.
UNREAD_BODY_S = 2.0
# One agent holds about two connections (a command long-poll and a heartbeat or
# shipment); a floor of browsers behind one NAT address holds a few each.
PER_ADDRESS = 256
# Descriptors kept back from the connection cap for the store, logs and report files.
RESERVED_FDS = 512

log = logging.getLogger("floorguard.console.http")


def default_total() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(32, int(soft) - RESERVED_FDS)


class ConnectionGuard:
    """Counts open connections per address and in all (one event loop: no lock)."""

    def __init__(self, per_address: int = PER_ADDRESS, total: int | None = None):
        self.per_address = per_address
        self.total = default_total() if total is None else total
        self.open: dict[str, int] = {}
        self.count = 0
        self.refused = 0

    def admit(self, address: str) -> bool:
        if self.count >= self.total or self.open.get(address, 0) >= self.per_address:
            self.refused += 1
            log.warning("connection refused: %s connections from %s, %s in all "
                        "(limits %s and %s)", self.open.get(address, 0), address,
                        self.count, self.per_address, self.total)
            return False
        self.open[address] = self.open.get(address, 0) + 1
        self.count += 1
        return True

    def release(self, address: str) -> None:
        left = self.open.get(address, 0) - 1
        if left > 0:
            self.open[address] = left
        else:
            self.open.pop(address, None)
        self.count = max(0, self.count - 1)


def guarded_protocol(guard: ConnectionGuard, header_timeout_s: float = HEADER_TIMEOUT_S
                     ) -> type[H11Protocol]:
    """An ``H11Protocol`` class for ``uvicorn.Config(http=...)`` enforcing ``guard`` and
    the header deadline."""

    class GuardedH11Protocol(H11Protocol):
        _address: str | None = None
        _header_timer: asyncio.TimerHandle | None = None
        _body_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = self.client[0] if self.client else ""
            if not guard.admit(address):
                transport.abort()
                return
            self._address = address
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None
            if self._address is not None:
                guard.release(self._address)
                self._address = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self._arm_header_timer()  # a request has begun but its headers have not
            else:
                self._cancel_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.conn.their_state is h11.SEND_BODY and self._body_timer is None:
                self._body_timer = self.loop.call_later(UNREAD_BODY_S, self._unread_body,
                                                        self.cycle)

        def _unread_body(self, cycle: Any) -> None:
            self._body_timer = None
            if self.cycle is not cycle:
                return  # that body came in full and the next request has begun
            if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
                self.transport.close()  # answered without reading it: drop the rest

        def _arm_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout_s,
                                                          self._headers_too_slow)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                if self.timeout_keep_alive_task is not None:
                    return  # idle between requests: the keep-alive timeout decides
                self.transport.abort()

    return GuardedH11Protocol


class RepeatFilter(logging.Filter):
    """Let the same message through at most once per ``every_s``; the next one that
    passes says how many were held back."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 1024):
        super().__init__()
        self.every_s = every_s
        self.clock = clock
        self.max_keys = max_keys
        self._seen: dict[tuple[Any, ...], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        key = (record.name, record.levelno, str(record.msg), exc)
        now = self.clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.every_s:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if len(self._seen) >= self.max_keys:
            self._seen.clear()
        if last is not None and last[1]:
            record.msg = f"{record.getMessage()} ({last[1]} more like this in the last " \
                         f"{now - last[0]:.0f} s not logged)"
            record.args = ()
        self._seen[key] = (now, 0)
        return True


THROTTLED_LOGGERS = ("asyncio", "uvicorn.error", "floorguard.console.http")


def throttle_logs(every_s: float = 60.0) -> RepeatFilter:
    """Install one ``RepeatFilter`` on the loggers a connection flood writes to."""
    f = RepeatFilter(every_s)
    for name in THROTTLED_LOGGERS:
        logging.getLogger(name).addFilter(f)
    return f
