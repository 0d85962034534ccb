"""Guarded loops: every long-lived thread of the agent, and of its USB worker, runs in one.

A thread that dies silently is evidence lost: the link stops shipping, a folder stops
being watched, and nothing says so. A ``GuardedThread`` runs its body; when the body
raises (or returns while nobody asked it to stop), the failure is logged, counted, and the
body runs again after a bounded exponential backoff (0.5 s doubling to 30 s by default).
A body that ran for a while before failing starts the backoff afresh.

Some threads must live for the agent to do its job. If one of those keeps failing
(``give_up`` failures in a row) or ends without being stopped, ``Guards.dead()`` names
it, and the daemon withholds the systemd watchdog keep-alive so that systemd restarts the
whole agent: a clean process is better than one running with a hole in it. Other liveness
checks (the journal writer, the scheduler) are registered as probes in the same place.

Restart counts are in ``Guards.restarts()``; the agent reports them in its heartbeat
status (``thread_restarts``) and records each restart as an ``agent.thread_restarted``
warning.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("floorguard.agent")

OnRestart = Callable[[str, int, str], None]


@dataclass(frozen=True)
class Backoff:
    """Seconds to wait before restart number ``failures`` (1 = the first restart)."""

    first: float = 0.5
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.first * 2 ** min(max(failures - 1, 0), 30)))


class Guards:
    """The guarded threads and liveness probes of one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[int, GuardedThread] = {}
        self._probes: dict[str, Callable[[], bool]] = {}
        self._restarts: dict[str, int] = {}
        self.on_restart: OnRestart | None = None

    def _add(self, t: GuardedThread) -> None:
        with self._lock:
            self._threads[id(t)] = t

    def _remove(self, t: GuardedThread) -> None:
        with self._lock:
            self._threads.pop(id(t), None)

    def _restarted(self, name: str, error: str) -> None:
        with self._lock:
            self._restarts[name] = count = self._restarts.get(name, 0) + 1
            hook = self.on_restart
        if hook is not None:
            try:
                hook(name, count, error)
            except Exception:  # the restart itself matters more than its record
                log.exception("recording a thread restart failed", thread=name)

    def probe(self, name: str, alive: Callable[[], bool]) -> None:
        """Register another thing that must live (``alive()`` False or raising = dead)."""
        with self._lock:
            self._probes[name] = alive

    def unprobe(self, name: str) -> None:
        with self._lock:
            self._probes.pop(name, None)

    def restarts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._restarts)

    def dead(self) -> list[str]:
        """Names of the threads that must live but do not, and of failing probes."""
        with self._lock:
            threads = list(self._threads.values())
            probes = list(self._probes.items())
        out = [t.name for t in threads if t.must_live and t.dead]
        for name, alive in probes:
            try:
                ok = bool(alive())
            except Exception:
                ok = False
            if not ok:
                out.append(name)
        return sorted(out)


# One per process: the agent and the USB worker are each one process, and the controls
# that start threads are handed no daemon to register with.
GUARDS = Guards()


class GuardedThread:
    """Runs ``body`` on a daemon thread until it returns after ``stop`` was set.

    ``stop`` is the event the body itself watches. Without one, a normal return ends the
    thread (a reader that reached the end of its stream); with one, a return while it is
    not set is a failure like an exception. The backoff waits on ``stop`` too, so
    stopping never waits for a restart."""

    def __init__(self, name: str, body: Callable[[], None], *,
                 stop: threading.Event | None = None, must_live: bool = True,
                 backoff: Backoff = Backoff(), give_up: int | None = 8,
                 healthy_after: float = 60.0, guards: Guards | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.must_live = must_live
        self._body = body
        self._stop = stop
        self._backoff = backoff
        self._give_up = give_up
        self._healthy_after = healthy_after
        self._guards = guards if guards is not None else GUARDS
        self._clock = clock
        self._thread: threading.Thread | None = None
        self._finished = False  # ended as asked (or gave up: then ``dead`` says so)
        self._gave_up = False
        self.restarts = 0
        self.last_error: str | None = None

    @property
    def dead(self) -> bool:
        if self._gave_up:
            return True
        t = self._thread
        return t is not None and not t.is_alive() and not self._finished

    def start(self) -> None:
        self._finished = self._gave_up = False
        self._guards._add(self)
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            if self._stopping() and not self._thread.is_alive():
                # Its owner stopped it: one that had given up is no longer missed.
                self._guards._remove(self)

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _run(self) -> None:
        failures = 0
        while True:
            started = self._clock()
            try:
                self._body()
            except Exception as exc:
                if self._stopping():
                    break
                error = f"{type(exc).__name__}: {exc}"
                log.exception("thread failed; restarting it", thread=self.name)
            else:
                if self._stop is None or self._stopping():
                    break
                error = "the loop ended without being stopped"
                log.error("thread ended unexpectedly; restarting it", thread=self.name)
            if self._clock() - started >= self._healthy_after:
                failures = 0  # it ran well for a while: this is a new incident
            failures += 1
            self.last_error = error
            if self._give_up is not None and failures > self._give_up:
                log.error("thread keeps failing; giving up so that the agent restarts",
                          thread=self.name, failures=failures - 1, error=error)
                self._gave_up = True
                return
            self.restarts += 1
            self._guards._restarted(self.name, error)
            delay = self._backoff.delay(failures)
            if self._stop is not None:
                if self._stop.wait(delay):
                    break
            else:
                time.sleep(delay)
        self._finished = True
        self._guards._remove(self)
