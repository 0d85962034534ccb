"""In-process fan-out of "something changed" notices to live pages (server-sent events).

Several console processes behind a load balancer each notify their own clients of what
they ingested; pages also re-read the store on a short timer, so nothing depends on one
process seeing every write.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any


class Hub:
    def __init__(self) -> None:
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any]]] = set()
        self._lock = threading.Lock()

    def subscribe(self) -> asyncio.Queue[Any]:
        q: asyncio.Queue[Any] = asyncio.Queue(maxsize=100)
        with self._lock:
            self._subscribers.add((asyncio.get_running_loop(), q))
        return q

    def unsubscribe(self, q: asyncio.Queue[Any]) -> None:
        with self._lock:
            self._subscribers = {(lp, s) for lp, s in self._subscribers if s is not q}

    def publish(self, message: dict[str, Any]) -> None:
        """Safe from any thread; a slow subscriber loses notices, never blocks ingest."""
        with self._lock:
            subs = list(self._subscribers)
        for loop, q in subs:
            try:
                loop.call_soon_threadsafe(_offer, q, message)
            except RuntimeError:  # that loop has closed
                self.unsubscribe(q)


def _offer(q: asyncio.Queue[Any], message: dict[str, Any]) -> None:
    with contextlib.suppress(asyncio.QueueFull):
        q.put_nowait(message)
