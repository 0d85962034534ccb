"""The agent daemon: loads the policy, runs the controls, journals every decision.

Lifecycle, as systemd sees it: ``READY=1`` once the controls are started, ``WATCHDOG=1``
keep-alives while the journal writer, the scheduler and every guarded thread that must
live are running (see ``guarded``), ``RELOADING=1`` on SIGHUP, ``STOPPING=1`` on SIGTERM,
exit 0 after ``agent.stopped`` is durable.

Signals are only noted: the C-level handler writes the signal's number to a pipe
(``signal.set_wakeup_fd``) and the Python handlers do nothing. The main loop reads the
pipe and does the stop or the reload itself, so a signal can never land inside a lock the
main thread holds (setting an Event from a handler while the main thread waits on it can
deadlock the process).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from floorguard import __version__
from floorguard.agent import CONTROLS
from floorguard.agent.controls.base import (
    Commands,
    Control,
    ControlContext,
    ControlUnavailable,
    Operator,
)
from floorguard.agent.guarded import GUARDS, Guards
from floorguard.config import AgentConfig
from floorguard.events import Command
from floorguard.journal import Journal, JournalError
from floorguard.policy import Policy, PolicyError, parse_policy, read_policy_text
from floorguard.sdnotify import Notifier

if TYPE_CHECKING:  # imported at run time only when there is a console to talk to
    from floorguard.agent.link.channel import Channel
    from floorguard.agent.link.shipper import Link

log = structlog.get_logger("floorguard.agent")

LAST_GOOD = "policy.last-good.toml"
_UNSET: Any = object()

ControlFactory = Callable[[ControlContext], Control]


def _noted(signum: int, frame: object) -> None:
    """The Python-level signal handler: nothing. The wake-up fd carries the signal."""


def _load_factory(name: str) -> ControlFactory:
    module, cls = CONTROLS[name].split(":")
    factory: ControlFactory = getattr(importlib.import_module(module), cls)
    return factory


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        clock: Callable[[], float] = time.time,
        notifier: Notifier | None = None,
        factories: dict[str, ControlFactory] | None = None,
        guards: Guards | None = None,
    ):
        self.config = config
        self.guards = guards if guards is not None else GUARDS
        self.clock = clock
        self.notifier = notifier or Notifier()
        self.factories = factories
        self.journal = Journal(config.state_dir, clock=clock)
        self.commands = Commands()
        self.operator = Operator()
        self.state: dict[str, Any] = {}
        self.controls: dict[str, Control] = {}
        self.unavailable: dict[str, str] = {}
        self.policy: Policy | None = None
        self.agent_id = ""
        self.host = socket.gethostname()
        self._stop = threading.Event()
        # The self-pipe: signal numbers (from set_wakeup_fd, request_stop, request_reload)
        # that the main loop acts on. Non-blocking both ways: a full pipe drops a byte
        # rather than block a handler, and the loop drains it without waiting.
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.RLock()
        self._scheduler: Any = None
        self._startup_rejection: PolicyError | None = None
        self.link: Link | None = None
        self.channel: Channel | None = None
        self.ctx = ControlContext(config=config, record=self.record, commands=self.commands,
                                  operator=self.operator, clock=clock, state=self.state)

    # -- recording ---------------------------------------------------------------------

    def record(
        self,
        control: str,
        kind: str,
        severity: str,
        details: dict[str, Any],
        *,
        user: str | None = _UNSET,
        wait: bool | None = None,
    ) -> dict[str, Any] | None:
        """Journal an event in this agent's name. Warnings and violations (and any event
        with ``wait=True``) return only once durable; info events return at once unless
        asked to wait."""
        fields = {
            "agent": self.agent_id,
            "host": self.host,
            "seat": self.config.seat_label,
            "user": self.operator.current() if user is _UNSET else user,
            "control": control,
            "kind": kind,
            "severity": severity,
            "policy": self.policy.hash if self.policy else "",
            "details": details,
        }
        entry = self.journal.append(fields)
        if wait or (wait is None and severity != "info"):
            rec = entry.wait()
            log.info("event", kind=kind, severity=severity, seq=rec["seq"])
            if self.link is not None:
                self.link.wake()
            return rec
        if self.link is not None:
            self.link.wake()
        return None

    # -- policy ------------------------------------------------------------------------

    def _last_good_path(self) -> Path:
        return Path(self.config.state_dir) / LAST_GOOD

    def _initial_policy(self) -> Policy | None:
        """The configured policy; if it is broken, the last good one saved by an earlier
        run (the rejection is recorded after ``agent.started``)."""
        try:
            text = read_policy_text(self.config.policy)
            policy = parse_policy(text, self.config.policy)
        except PolicyError as exc:
            failure = exc
        else:
            self._remember(policy, text)
            return policy
        saved = self._last_good_path()
        kept: Policy | None = None
        if saved.exists():
            try:
                kept = parse_policy(read_policy_text(saved), str(saved))
            except PolicyError:
                log.error("the saved last good policy is unreadable too", path=str(saved))
        # Recorded once the agent has said it started, with the policy that stays in
        # force, so the event says what was kept.
        self._startup_rejection = failure
        if kept is not None:
            log.warning("running the last good policy", path=str(saved), hash=kept.hash)
        else:
            log.error("no valid policy and no last good one: controls stay off; the udev "
                      "rule keeps USB storage blocked", policy=self.config.policy)
        return kept

    def _rejected(self, exc: PolicyError, source: str) -> None:
        problems = [str(p) for p in exc.problems]
        for line in problems:
            log.error("policy rejected", problem=line)
        self.record("agent", "agent.policy_rejected", "warning",
                    {"source": source, "problems": problems,
                     "kept": self.policy.hash if self.policy else None})

    def _remember(self, policy: Policy, text: str) -> None:
        path = self._last_good_path()
        tmp = path.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:  # the policy still applies; only the fallback copy is stale
            log.error("cannot save the last good policy", path=str(path), error=str(exc),
                      hash=policy.hash)

    def reload(self, text: str | None = None, source: str | None = None) -> bool:
        """Load a new policy (the configured file, or ``text`` from the console). A bad
        one is refused and the running policy stays; returns whether it took over."""
        source = source or self.config.policy
        with self._lock:
            try:
                if text is None:
                    text = read_policy_text(source)
                new = parse_policy(text, source)
            except PolicyError as exc:
                self._rejected(exc, source)
                return False
            old = self.policy
            self.policy = new
            self._remember(new, text)
            self.record("agent", "agent.policy_loaded", "info",
                        {"source": source, "hash": new.hash,
                         "previous": old.hash if old else None,
                         "tables": sorted(new.tables)}, wait=True)
            self._apply_to_controls(new)
            return True

    # -- controls ----------------------------------------------------------------------

    def _wanted(self, policy: Policy | None) -> list[str]:
        if policy is None:
            return []
        names = [n for n in (self.factories or CONTROLS) if policy.has(n)]
        if self.config.controls:
            names = [n for n in names if n in self.config.controls]
        return names

    def _start_control(self, name: str, policy: Policy) -> None:
        try:
            factory = (self.factories or {}).get(name) or _load_factory(name)
            control = factory(self.ctx)
            control.start(policy)
        except ControlUnavailable as exc:
            self._unavailable(name, str(exc))
            return
        except Exception as exc:  # a broken control must not take the others down
            log.exception("control failed to start", control=name)
            self._unavailable(name, f"failed to start: {type(exc).__name__}: {exc}")
            return
        self.unavailable.pop(name, None)
        self.controls[name] = control
        if self._scheduler is not None:
            self._schedule_check(name, control)
        log.info("control started", control=name)

    def _unavailable(self, name: str, why: str) -> None:
        if self.unavailable.get(name) == why:
            return  # once per cause: a coverage gap is evidence, not noise
        self.unavailable[name] = why
        self.record("agent", "agent.control_unavailable", "warning",
                    {"control": name, "reason": why})

    def _apply_to_controls(self, policy: Policy) -> None:
        wanted = set(self._wanted(policy))
        for name in list(self.controls):
            if name not in wanted:
                self._stop_control(name)
        for name in self._wanted(policy):
            if name in self.controls:
                try:
                    self.controls[name].apply_policy(policy)
                except Exception:
                    log.exception("control failed to take the new policy", control=name)
            else:
                self._start_control(name, policy)

    def _stop_control(self, name: str) -> None:
        control = self.controls.pop(name)
        if self._scheduler is not None:
            with contextlib.suppress(Exception):
                self._scheduler.remove_job(f"check-{name}")
        try:
            control.stop()
        except Exception:
            log.exception("control failed to stop", control=name)

    def _schedule_check(self, name: str, control: Control) -> None:
        def guarded() -> None:
            try:
                control.check()
            except Exception:
                log.exception("control check failed", control=name)

        self._scheduler.add_job(guarded, "interval", seconds=control.check_interval,
                                id=f"check-{name}", max_instances=1, coalesce=True,
                                replace_existing=True)

    # -- lifecycle ---------------------------------------------------------------------

    def _identity(self) -> str:
        from floorguard.agent.identity import agent_id

        return agent_id(self.config.state_dir)

    def status(self) -> dict[str, Any]:
        """The agent's state as heartbeats report it."""
        return {
            "version": __version__,
            "policy": self.policy.hash if self.policy else None,
            "controls": sorted(self.controls),
            "unavailable": dict(self.unavailable),
            "user": self.operator.current(),
            # "degraded: disk full ..." while violations wait in memory for space
            "journal": self.journal.condition(),
            **({"thread_restarts": restarts} if (restarts := self.guards.restarts()) else {}),
            **{k: v for k, v in self.state.items() if not k.startswith("_")},
        }

    def request_stop(self, *_: object) -> None:
        """Ask the main loop to stop (safe from any thread)."""
        self._note(signal.SIGTERM)

    def request_reload(self, *_: object) -> None:
        """Ask the main loop to reload the policy (safe from any thread)."""
        self._note(signal.SIGHUP)

    def _note(self, sig: int) -> None:
        if self._wake_w < 0:
            return  # the agent has ended
        with contextlib.suppress(OSError):  # full: a wake-up is already waiting
            os.write(self._wake_w, bytes([sig]))

    def _install_signals(self) -> Callable[[], None]:
        """Route SIGTERM, SIGINT and SIGHUP to the self-pipe; returns how to undo it."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None  # only the main thread may; callers use request_*()
        old_fd = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        # A Python handler must be installed for the wake-up byte to be written; it does
        # nothing, on purpose.
        old = {sig: signal.signal(sig, _noted)
               for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

        def restore() -> None:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(old_fd)

        return restore

    def _wait_for_signals(self, timeout: float) -> tuple[bool, bool]:
        """Wait up to ``timeout`` for the self-pipe; (stop asked, reload asked)."""
        try:
            ready, _, _ = select.select([self._wake_r], [], [], timeout)
        except InterruptedError:
            ready = [self._wake_r]
        if not ready:
            return False, False
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._wake_r, 4096):
                data += chunk
        stop = any(b in (signal.SIGTERM, signal.SIGINT) for b in data)
        return stop, signal.SIGHUP in data

    def missing_threads(self) -> list[str]:
        """What must live and does not: the journal writer, the scheduler, guarded
        threads (see ``guarded.Guards.dead``)."""
        dead = self.guards.dead()
        if not self.journal.healthy():
            dead.append("journal-writer")
        sched = self._scheduler
        # APScheduler keeps its thread private; without one to look at, trust ``running``.
        thread = getattr(sched, "_thread", None)
        if sched is not None and (not sched.running
                                  or (thread is not None and not thread.is_alive())):
            dead.append("scheduler")
        return dead

    def run(self) -> int:
        try:
            self.journal.open()
        except JournalError as exc:
            log.error("cannot open the journal", error=str(exc))
            return 1
        self.agent_id = self._identity()
        restore_signals = self._install_signals()
        try:
            return self._run()
        finally:
            restore_signals()
            # A request after the end must not write to a closed (or reused) fd.
            fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _run(self) -> int:
        self.commands.register(Command.RELOAD_POLICY, self._command_reload)
        self.policy = self._initial_policy()
        self.compact_journal()
        self.record("agent", "agent.started", "info",
                    {"version": __version__, "pid": os.getpid(), "config": self.config.source,
                     "policy_source": self.policy.source if self.policy else None},
                    wait=True)
        if self._startup_rejection is not None:
            self._rejected(self._startup_rejection, self.config.policy)
        from apscheduler.schedulers.background import BackgroundScheduler

        self._scheduler = BackgroundScheduler(daemon=True)
        if self.policy is not None:
            self.record("agent", "agent.policy_loaded", "info",
                        {"source": self.policy.source, "hash": self.policy.hash,
                         "previous": None, "tables": sorted(self.policy.tables)}, wait=True)
            for name in self._wanted(self.policy):
                self._start_control(name, self.policy)
        self._start_link()
        self._scheduler.add_job(self.compact_journal, "interval", seconds=60,
                                id="journal-retention", max_instances=1, coalesce=True)
        interval = self.notifier.watchdog_interval()
        self._scheduler.start()
        for name, control in self.controls.items():
            self._schedule_check(name, control)
        self.notifier.notify(f"READY=1\nSTATUS=enforcing {', '.join(sorted(self.controls))}"
                             f"\nMAINPID={os.getpid()}")
        log.info("agent ready", agent=self.agent_id, seat=self.config.seat_label,
                 controls=sorted(self.controls), unavailable=sorted(self.unavailable))
        # The keep-alive is sent from this loop: if the loop itself is stuck, systemd
        # hears nothing and restarts the agent, as it should.
        next_alive = time.monotonic()
        while True:
            timeout = 0.5 if not interval else max(0.0, next_alive - time.monotonic())
            stop, reload = self._wait_for_signals(min(timeout, 0.5))
            if stop:
                break
            if reload:
                self.notifier.notify("RELOADING=1")
                self.reload()
                self.notifier.notify("READY=1")
            if interval and time.monotonic() >= next_alive:
                self._keepalive()
                next_alive = time.monotonic() + interval
        self._stop.set()
        return self._shutdown()

    def _keepalive(self) -> None:
        # Keep-alives stop while something that must live is dead, so systemd restarts us.
        dead = self.missing_threads()
        if not dead:
            self.notifier.notify("WATCHDOG=1")
        else:
            log.error("withholding the watchdog keep-alive: a thread that must live is not "
                      "running", dead=dead)

    def _command_reload(self, args: dict[str, Any]) -> dict[str, Any]:
        ok = self.reload(args.get("text"), args.get("source"))
        return {"ok": ok, "policy": self.policy.hash if self.policy else None}

    def _start_link(self) -> None:
        if not self.config.console_url:
            log.info("no console_url: events stay in the local journal")
            return
        from floorguard.agent.link.shipper import Link

        self.link = Link(self.journal, self.config, self.state,
                         max_backoff=self.config.link_max_backoff)
        self.link.start()
        if self.link._thread is not None:  # the URL passed the link's checks
            from floorguard.agent.link.channel import Channel

            self.channel = Channel(
                self.config, link=self.link, journal=self.journal, commands=self.commands,
                policy=lambda: self.policy, status=self.status, reload=self.reload,
                record=self.record)
            self.channel.start()

    def compact_journal(self) -> dict[str, Any] | None:
        """Keep the journal within ``journal_max_mb`` / ``journal_max_days`` (see
        ``Journal.compact``): acknowledged records go first, then unshipped info records
        with a chained ``agent.gap``; warnings and violations are never dropped."""
        from floorguard.agent.link.shipper import ACKED

        acked = int(self.journal.get_meta(ACKED) or 0)

        def gap_fields(details: dict[str, Any]) -> dict[str, Any]:
            return {"agent": self.agent_id, "host": self.host,
                    "seat": self.config.seat_label, "user": self.operator.current(),
                    "control": "agent", "kind": "agent.gap", "severity": "warning",
                    "policy": self.policy.hash if self.policy else "", "details": details}

        try:
            out = self.journal.compact(acked, self.config.journal_max_mb * 1_048_576,
                                       self.config.journal_max_days * 86400.0, gap_fields)
        except JournalError:
            log.exception("journal retention failed")
            return None
        if out.get("dropped"):
            log.warning("journal full with unshipped records: info events dropped",
                        dropped=out["dropped"], gap_seq=out["gap"]["seq"])
        elif out.get("pruned"):
            log.info("journal pruned", pruned=out["pruned"], used_bytes=out["used_bytes"])
        return out

    def _shutdown(self) -> int:
        self.notifier.notify("STOPPING=1")
        log.info("agent stopping")
        if self.channel is not None:
            self.channel.stop()  # the console hears of a deliberate stop first
        for name in list(self.controls):
            self._stop_control(name)
        try:
            self.record("agent", "agent.stopped", "info",
                        {"reason": "signal", "pid": os.getpid()}, wait=True)
        except JournalError:
            log.exception("could not record agent.stopped")
        if self.link is not None:
            self.link.stop(flush_timeout=3.0)
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        self.journal.close()
        self.notifier.close()
        return 0
