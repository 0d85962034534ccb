"""Background work: a periodic loop for controls whose pace the policy sets, and the CPU
priority that all of the agent's periodic work runs at.

The agent's scheduler runs ``Control.check`` at a fixed class-level interval; the leak
controls instead scan at the policy's ``check_interval`` / ``check_interval``, which a new
policy may change while they run. One exception in a scan is logged and the loop goes on:
a single unreadable ``/proc`` entry must never end the watching.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable

import structlog

from floorguard.agent.guarded import GuardedThread

log = structlog.get_logger("floorguard.agent")

# The nice value of the scan loops (processes, files, network): a full scan can always
# wait a few milliseconds; the operator's programs and the agent's own decisions (a USB
# uevent in the USB worker, a print job, an idle lock) must not wait behind it. The
# scheduler's checks are short and keep the agent's priority: a process started from one
# (the USB worker after a crash) inherits the priority of the thread that starts it.
BACKGROUND_NICE = 10


def background_thread() -> None:
    """Lower the calling thread's CPU priority to ``BACKGROUND_NICE``.

    Linux keeps a nice value per thread, and lowering one's own needs no privilege. A
    thread already running lower is left as it is."""
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):
        if os.getpriority(os.PRIO_PROCESS, tid) < BACKGROUND_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, BACKGROUND_NICE)


class Periodic:
    """Calls ``fn`` every ``interval()`` seconds on its own daemon thread until stopped."""

    def __init__(self, name: str, fn: Callable[[], None], interval: Callable[[], float], *,
                 wait_first: bool = False):
        self.name = name
        self._wait_first = wait_first
        self._fn = fn
        self._interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: GuardedThread | None = None
        self._first = True

    def start(self) -> None:
        self._stop.clear()
        self._first = True
        self._thread = GuardedThread(self.name, self._run, stop=self._stop)
        self._thread.start()

    def wake(self) -> None:
        """Run the next round now (a new policy, a test that wants an answer)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        background_thread()
        if self._wait_first and self._first:
            self._wake.wait(max(self._interval(), 0.01))
            self._wake.clear()
        self._first = False
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._fn()
            except Exception:
                log.exception("periodic scan failed", loop=self.name)
            # A fixed rate, not a fixed pause: a round that had to wait for the journal
            # (a kill recorded durably) must not push every later round back. An
            # interval() that raises reaches the guard, which restarts the loop.
            interval = max(self._interval(), 0.01)
            self._wake.wait(max(started + interval - time.monotonic(), 0.01))
            self._wake.clear()
