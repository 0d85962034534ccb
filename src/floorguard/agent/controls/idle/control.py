"""Idle lock: warn an operator who has left the seat, lock the session, prove it locked.

The control follows every graphical session (X11, Wayland) that logind knows, with its
user, seat and state, and measures how long each has been idle:

* **logind**: the session's ``IdleHint``/``IdleSinceHint``, as the desktop reports it;
* **x11**: for X11 sessions, the X server's own idle time (XScreenSaver extension), which
  does not depend on the desktop. While logind says the session is idle, X must agree
  (input on the display means someone is there). When X has seen no input for
  ``stale_hint_after`` but the IdleHint never went true, the desktop is not maintaining
  the hint: ``idle.source_stale`` is recorded and X's idle time is trusted from then on.

Every event names the source it went by. At ``warn_after`` the operator gets a desktop
notification (``notify = true``) and ``idle.warned`` is recorded. At ``lock_after`` the
control asks logind to lock (``LockSession``) and then checks that the session's
``LockedHint`` became true within ``verify_within``: ``idle.locked`` records how long the
seat was idle and how long the lock took. If the hint stays false, ``idle.lock_failed``
(a violation) is recorded and the control retries through the other doors (the session's
own ``Lock`` method, ``loginctl lock-session``, ``xdg-screensaver lock``) every
``retry_every``, recording each failure until the seat is locked or the operator is back.
``idle.unlocked`` records how long the session stayed locked. With ``suspend_after`` the
PC is suspended through logind once a locked seat has been idle that long
(``idle.suspended``).

A program holding a logind idle inhibitor (a video player, a script) is recorded as
``idle.inhibited`` (warning, naming the program, its pid and uid). With
``inhibitors = "ignore"`` (the default) it changes nothing: the seat still locks, and for
an X11 session the X idle time is used, since an inhibitor keeps the desktop from
reporting idleness. ``inhibitors = "respect"`` lets it keep that user's sessions unlocked.

The operator at the seat is the user of the active session on ``seat0``; the agent's
heartbeat facts carry ``session_user`` and ``locked``. The console's "lock this seat
now" arrives as the command ``lock_seat``: it locks the active session at once and
answers whether the lock took.

Policy (``[idle]``): ``warn_after``, ``lock_after`` (required), ``verify_within`` (5s),
``retry_every`` (10s), ``suspend_after``, ``inhibitors`` (ignore | respect),
``stale_hint_after`` (1h), ``notify`` (true).

All times come from the agent's clock; the check runs every quarter second, so the lock
is issued within about that after ``lock_after`` passes.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from floorguard.agent.adapters.desktop import notify_user
from floorguard.agent.adapters.logind import Inhibitor, Logind, LogindError, SessionInfo, Signal
from floorguard.agent.adapters.x11 import X11Error, X11Idle, find_xauthority
from floorguard.agent.controls.base import Control, ControlContext, ControlUnavailable
from floorguard.agent.controls.idle.rules import (
    LOCK_SESSION,
    LOGINCTL,
    SESSION_LOCK,
    XDG_SCREENSAVER,
    affected_by,
    hint_is_stale,
    idle_stage,
    lock_doors,
    x_input_between,
)
from floorguard.events import Command
from floorguard.policy import IdleSettings, Policy

log = structlog.get_logger("floorguard.idle")

RESCAN_EVERY = 5.0  # full re-read of sessions and inhibitors, in case a signal was lost
RECONNECT_EVERY = 5.0
X_RETRY_EVERY = 10.0  # after a failed X connection
SUBPROCESS_TIMEOUT = 3.0


# --- pure decisions ------------------------------------------------------------------------


# --- per-session state ---------------------------------------------------------------------

@dataclass
class _Session:
    info: SessionInfo
    hint_seen_at: float | None = None  # when we saw IdleHint turn true (clock)
    hint_true_at: float | None = None  # last time IdleHint was true (clock)
    x: X11Idle | None = None
    x_error: str = ""
    x_retry_at: float = 0.0
    x_anchor: float | None = None  # clock time the X display's idleness began
    x_last: tuple[int, float] | None = None  # (idle ms, monotonic time) of the last read
    x_ms: int | None = None
    stale: bool = False
    armed_from: float = float("-inf")  # idleness counts from here (after an unlock)
    phase: str = "active"  # active | warned | locking | failing | locked
    initiated: str = ""  # idle | console
    requested_by: str | None = None
    attempts: int = 0
    attempt_at: float = 0.0
    first_attempt_at: float = 0.0
    verify_deadline: float = 0.0
    next_attempt_at: float = 0.0
    method: str = ""
    call_error: str | None = None
    lock_signal_at: float | None = None
    locked_at: float = 0.0
    suspended: bool = False
    inhibited_by: list[Inhibitor] = field(default_factory=list)
    source: str = "logind"
    idle_for: float = 0.0

    def reset_lock(self) -> None:
        self.initiated, self.requested_by, self.attempts = "", None, 0
        self.method, self.call_error, self.lock_signal_at = "", None, None


class IdleControl(Control):
    """Warns, locks and proves the lock of unattended graphical sessions (see the module
    docstring for the policy keys and events)."""

    name = "idle"
    check_interval = 0.25

    def __init__(self, ctx: ControlContext, *, bus_address: str | None = None):
        super().__init__(ctx)
        self.limits: IdleSettings | None = None
        self._bus_address = bus_address
        self._logind: Logind | None = None
        self._logind_error = ""
        self._sessions: dict[str, _Session] = {}  # by object path
        self._inhibitors: list[Inhibitor] = []
        self._seen_inhibitors: set[tuple[str, int, int, str, str]] = set()
        self._next_rescan = 0.0
        self._next_reconnect = 0.0
        self._operator: tuple[str | None, bool] | None = None
        self._lock = threading.RLock()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, policy: Policy) -> None:
        super().start(policy)
        self.limits = policy.settings(IdleSettings)
        try:
            self._logind = Logind(self._bus_address)
        except LogindError as exc:
            raise ControlUnavailable(f"idle lock needs logind: {exc}") from None
        with self._lock:
            self._rescan(self.ctx.clock())
            self._publish()
        self.ctx.commands.register(Command.LOCK_SEAT, self.lock_seat)

    def apply_policy(self, policy: Policy) -> None:
        with self._lock:
            super().apply_policy(policy)
            self.limits = policy.settings(IdleSettings)

    def stop(self) -> None:
        self.ctx.commands.unregister(Command.LOCK_SEAT)
        with self._lock:
            for s in self._sessions.values():
                self._close_x(s)
            self._sessions.clear()
            if self._logind is not None:
                self._logind.close()
                self._logind = None

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "logind": "connected" if self._logind is not None else self._logind_error,
                "sessions": {
                    s.info.id: {"user": s.info.user, "type": s.info.type, "seat": s.info.seat,
                                "active": s.info.active, "phase": s.phase,
                                "locked": s.info.locked_hint, "idle_hint": s.info.idle_hint,
                                "source": s.source, "attempts": s.attempts,
                                "idle_for": round(s.idle_for, 1), "stale_hint": s.stale,
                                "x11": s.x_error or ("ok" if s.x is not None else "")}
                    for s in self._sessions.values()},
                "inhibitors": [i.who for i in self._inhibitors],
            }

    # -- the check ------------------------------------------------------------------------

    def check(self) -> None:
        """Follow logind's signals, re-read now and then, and move each session along."""
        with self._lock:
            now = self.ctx.clock()
            if not self._connected(now):
                return
            assert self._logind is not None
            try:
                signals = self._logind.drain()
            except LogindError as exc:
                self._lost(exc)
                return
            for sig in signals:
                if self._logind is None:
                    return  # lost while reading a session: reconnect on a later check
                self._apply_signal(sig, now)
            if self._logind is not None and now >= self._next_rescan:
                self._rescan(now)
            if self._logind is None:
                return  # lost while re-reading: reconnect on a later check
            for s in list(self._sessions.values()):
                if s.info.graphical:
                    self._step(s, now)
            self._publish()

    def _connected(self, now: float) -> bool:
        if self._logind is not None and self._logind.alive:
            return True
        if self._logind is not None:
            self._lost(LogindError(self._logind.error or "the system bus connection closed"))
        if now < self._next_reconnect:
            return False
        self._next_reconnect = now + RECONNECT_EVERY
        try:
            self._logind = Logind(self._bus_address)
        except LogindError as exc:
            if str(exc) != self._logind_error:
                log.warning("cannot reach logind; idle lock paused", error=str(exc))
            self._logind_error = str(exc)
            return False
        log.warning("reconnected to logind; idle lock resumes")
        self._logind_error = ""
        self._next_rescan = now
        return True

    def _lost(self, exc: LogindError) -> None:
        log.warning("lost logind; idle lock paused until it is back", error=str(exc))
        self._logind_error = str(exc)
        if self._logind is not None:
            with contextlib.suppress(Exception):
                self._logind.close()
            # A seat nobody watches is a coverage gap: evidence, once per outage.
            self.ctx.record("agent", "agent.control_unavailable", "warning",
                            {"control": self.name, "reason": f"lost logind: {exc}"})
        self._logind = None

    def _apply_signal(self, sig: Signal, now: float) -> None:
        assert self._logind is not None
        if sig.kind == "new":
            if sig.path not in self._sessions:
                try:
                    info = self._logind.session(sig.path, sig.session_id)
                except LogindError as exc:
                    log.info("new session vanished before it could be read", path=sig.path,
                             error=str(exc))
                    return
                self._track(info, now)
        elif sig.kind == "removed":
            self._untrack(sig.path)
        elif sig.kind == "changed":
            s = self._sessions.get(sig.path)
            if s is None:
                return  # announced later by SessionNew, or picked up by the next rescan
            if sig.invalidated:
                self._refresh(s, now)
            else:
                self._note_hint(s, lambda: s.info.update(sig.changed), now)
        elif sig.kind == "lock":
            s = self._sessions.get(sig.path)
            if s is not None:
                s.lock_signal_at = now
        elif sig.kind == "restarted":
            self._next_rescan = now

    def _note_hint(self, s: _Session, change: Any, now: float) -> None:
        was = s.info.idle_hint
        change()
        if s.info.idle_hint:
            s.hint_true_at = now
            if not was or s.hint_seen_at is None:
                s.hint_seen_at = now
            if s.stale:
                s.stale = False
                log.info("IdleHint is maintained again", session=s.info.id)
        else:
            s.hint_seen_at = None

    def _refresh(self, s: _Session, now: float) -> None:
        assert self._logind is not None
        try:
            fresh = self._logind.session(s.info.path, s.info.id)
        except LogindError as exc:
            if self._logind.alive:
                self._untrack(s.info.path)  # logind no longer knows it: the session ended
            else:
                self._lost(exc)  # the bus went: keep the sessions until logind is back
            return

        def swap() -> None:
            s.info = fresh

        self._note_hint(s, swap, now)

    def _track(self, info: SessionInfo, now: float) -> None:
        s = _Session(info=info)
        self._sessions[info.path] = s
        self._note_hint(s, lambda: None, now)
        s.inhibited_by = [i for i in self._inhibitors if affected_by(i, info.uid)]
        if info.locked_hint:
            s.phase, s.locked_at = "locked", now  # locked before we came: no event for that
        log.info("following session", session=info.id, user=info.user, type=info.type,
                 seat=info.seat, display=info.display)

    def _untrack(self, path: str) -> None:
        s = self._sessions.pop(path, None)
        if s is None:
            return
        self._close_x(s)
        if s.phase in ("locking", "failing"):
            log.info("session ended while its lock was pending", session=s.info.id,
                     user=s.info.user)

    def _rescan(self, now: float) -> None:
        assert self._logind is not None
        self._next_rescan = now + RESCAN_EVERY
        try:
            rows = self._logind.list_sessions()
            inhibitors = [i for i in self._logind.list_inhibitors() if i.blocks_idle]
        except LogindError as exc:
            self._lost(exc)
            return
        present = {path for _sid, _uid, _user, _seat, path in rows}
        for path in list(self._sessions):
            if path not in present:
                self._untrack(path)
        for sid, _uid, _user, _seat, path in rows:
            if self._logind is None:
                return
            if path in self._sessions:
                self._refresh(self._sessions[path], now)
            else:
                try:
                    info = self._logind.session(path, sid)
                except LogindError:
                    continue
                self._track(info, now)
        self._check_inhibitors(inhibitors)

    def _check_inhibitors(self, inhibitors: list[Inhibitor]) -> None:
        assert self.limits is not None
        self._inhibitors = inhibitors
        keys = set()
        for inh in inhibitors:
            key = (inh.who, inh.pid, inh.uid, inh.what, inh.why)
            keys.add(key)
            if key in self._seen_inhibitors:
                continue
            action = "respected" if self.limits.inhibitors == "respect" else "ignored"
            sessions = [s for s in self._sessions.values()
                        if s.info.graphical and affected_by(inh, s.info.uid)]
            self.record("idle.inhibited", "warning", {
                "who": inh.who, "why": inh.why, "what": inh.what, "mode": inh.mode,
                "uid": inh.uid, "pid": inh.pid, "program": _program(inh.pid) or inh.who,
                "action": action, "sessions": sorted(s.info.id for s in sessions)},
                user=_user_name(inh.uid, sessions))
        self._seen_inhibitors = keys
        for s in self._sessions.values():
            s.inhibited_by = [i for i in inhibitors if affected_by(i, s.info.uid)]

    # -- idleness ---------------------------------------------------------------------------

    def _sample_x(self, s: _Session, now: float) -> None:
        info = s.info
        if info.type != "x11" or not info.display:
            return
        if s.x is None:
            if now < s.x_retry_at:
                return
            try:
                auth = find_xauthority(info.display, info.uid, info.id)
                s.x = X11Idle(info.display, auth)
            except X11Error as exc:
                self._x_failed(s, now, exc)
                return
        try:
            ms = s.x.idle_ms()
        except X11Error as exc:
            self._x_failed(s, now, exc)
            return
        at = time.monotonic()
        if s.x_last is None or x_input_between(s.x_last[0], s.x_last[1], ms, at):
            s.x_anchor = now - ms / 1000.0
        s.x_last, s.x_ms = (ms, at), ms
        if s.x_error:
            log.info("reading X idle time again", session=info.id, display=info.display)
        s.x_error = ""

    def _x_failed(self, s: _Session, now: float, exc: X11Error) -> None:
        if str(exc) != s.x_error:
            log.warning("X idle time unavailable; logind's hint alone is used",
                        session=s.info.id, display=s.info.display, error=str(exc))
        s.x_error = str(exc)
        self._close_x(s)
        s.x_retry_at = now + X_RETRY_EVERY

    def _close_x(self, s: _Session) -> None:
        if s.x is not None:
            with contextlib.suppress(Exception):
                s.x.close()
        s.x, s.x_anchor, s.x_last, s.x_ms = None, None, None, None

    def _idle(self, s: _Session, now: float) -> tuple[str, float]:
        """(source, seconds idle) for a session, deciding which source to trust."""
        assert self.limits is not None
        self._sample_x(s, now)
        info = s.info
        hint_since: float | None = None
        if info.idle_hint:
            since = info.idle_since
            # A hint from the future or from before we could know is taken as "now-ish".
            hint_since = since if since is not None and since <= now + 1.0 else s.hint_seen_at
        x_since = s.x_anchor if s.x is not None else None
        if not s.stale and hint_is_stale(hint_idle=info.idle_hint, hint_true_at=s.hint_true_at,
                                         x_since=x_since, now=now,
                                         limit=self.limits.stale_hint_after):
            s.stale = True
            assert x_since is not None
            self.record("idle.source_stale", "warning", {
                **self._where(s), "source": "logind", "trusted": "x11",
                "x_idle_for": round(now - x_since, 1),
                "stale_hint_after": self.limits.stale_hint_after,
                "reason": "IdleHint stayed false while the X server saw no input"},
                user=info.user or None)
        ignore_inhibitor = bool(s.inhibited_by) and self.limits.inhibitors == "ignore"
        since_at: float | None
        if x_since is not None and (s.stale or ignore_inhibitor):
            source, since_at = "x11", x_since
        elif hint_since is not None and x_since is not None:
            # Input on the display means someone is there, whatever the hint says.
            source, since_at = "logind", max(hint_since, x_since)
        else:
            source, since_at = "logind", hint_since
        if since_at is None:
            return source, 0.0
        return source, max(0.0, now - max(since_at, s.armed_from))

    # -- the state machine ----------------------------------------------------------------

    def _step(self, s: _Session, now: float) -> None:
        assert self.limits is not None
        limits = self.limits
        source, idle_for = self._idle(s, now)
        s.source, s.idle_for = source, idle_for
        if s.info.locked_hint:
            if s.phase != "locked":
                self._locked(s, now)
            self._maybe_suspend(s, now)
            return
        if s.phase == "locked":
            self._unlocked(s, now)
            return
        stage = idle_stage(idle_for, limits)
        respected = bool(s.inhibited_by) and limits.inhibitors == "respect"
        if s.phase == "failing" and s.initiated == "idle" and stage != "lock":
            log.info("operator back before the lock took; retries stop", session=s.info.id)
            s.phase = "active"
            s.reset_lock()
            return
        if s.phase == "locking":
            if now >= s.verify_deadline:
                self._lock_failed(s, now)
            else:
                return
        if s.phase == "failing":
            if now >= s.next_attempt_at:
                self._attempt(s, now, s.initiated or "idle")
            return
        if respected:
            s.phase = "active"
            return
        if stage == "lock":
            self._attempt(s, now, "idle")
        elif stage == "warn" and s.phase != "warned":
            self._warn(s, idle_for)
        elif stage == "active" and s.phase == "warned":
            s.phase = "active"

    def _where(self, s: _Session) -> dict[str, Any]:
        # "foreground": the session in front on its seat (a switched-away one is not).
        return {"session": s.info.id, "session_type": s.info.type,
                "logind_seat": s.info.seat, "display": s.info.display or None,
                "foreground": s.info.active}

    def _warn(self, s: _Session, idle_for: float) -> None:
        assert self.limits is not None
        s.phase = "warned"
        lock_in = max(0.0, self.limits.lock_after - idle_for)
        notified = False
        if self.limits.notify:
            notified = notify_user(s.info.user, "This screen will lock",
                                   f"No input for {_human(idle_for)}: the screen locks in "
                                   f"{_human(lock_in)} unless you use it.")
        self.record("idle.warned", "info", {**self._where(s), "source": s.source,
                                            "idle_for": round(idle_for, 1),
                                            "lock_in": round(lock_in, 1),
                                            "notified": notified},
                    user=s.info.user or None)

    def _attempt(self, s: _Session, now: float, initiated: str,
                 requested_by: str | None = None) -> None:
        assert self.limits is not None
        doors = lock_doors(s.info.type)
        method = doors[s.attempts % len(doors)]
        if s.attempts == 0:
            s.first_attempt_at = now
            s.initiated, s.requested_by = initiated, requested_by
            s.lock_signal_at = None
        s.attempts += 1
        s.method, s.attempt_at = method, now
        s.call_error = self._knock(method, s)
        s.phase = "locking"
        s.verify_deadline = now + self.limits.verify_within
        log.info("lock requested", session=s.info.id, user=s.info.user, method=method,
                 attempt=s.attempts, error=s.call_error)

    def _knock(self, method: str, s: _Session) -> str | None:
        """Ask for the lock through one door; the error text, or None when asked."""
        assert self._logind is not None
        try:
            if method == LOCK_SESSION:
                self._logind.lock_session(s.info.id)
            elif method == SESSION_LOCK:
                self._logind.lock_session_object(s.info.path)
            elif method == LOGINCTL:
                return _run(["loginctl", "lock-session", s.info.id],
                            {"DBUS_SYSTEM_BUS_ADDRESS": self._logind.address})
            elif method == XDG_SCREENSAVER:
                return _run_as(s.info, ["xdg-screensaver", "lock"])
        except LogindError as exc:
            return str(exc)
        return None

    def _lock_failed(self, s: _Session, now: float) -> None:
        assert self.limits is not None
        s.phase = "failing"
        # The first fallback goes at once: the seat is open now. Then every retry_every.
        s.next_attempt_at = now if s.attempts == 1 else s.attempt_at + self.limits.retry_every
        self.record("idle.lock_failed", "violation", {
            **self._where(s), "source": s.source, "idle_for": round(s.idle_for, 1),
            "method": s.method, "attempt": s.attempts, "error": s.call_error,
            "verify_within": self.limits.verify_within,
            "lock_signal_seen": s.lock_signal_at is not None,
            "unlocked_for": round(now - s.first_attempt_at, 1),
            "initiated": s.initiated, "requested_by": s.requested_by,
            "next_attempt_in": round(max(0.0, s.next_attempt_at - now), 1)},
            user=s.info.user or None)

    def _locked(self, s: _Session, now: float) -> None:
        ours = s.phase in ("locking", "failing")
        self.record("idle.locked", "info", {
            **self._where(s), "source": s.source, "idle_for": round(s.idle_for, 1),
            "initiated": s.initiated if ours else "session",
            "requested_by": s.requested_by if ours else None,
            "method": s.method if ours else None, "attempts": s.attempts if ours else 0,
            "took": round(now - s.first_attempt_at, 3) if ours else None,
            "lock_signal_seen": s.lock_signal_at is not None},
            user=s.info.user or None, wait=True)
        s.phase, s.locked_at = "locked", now
        s.reset_lock()

    def _unlocked(self, s: _Session, now: float) -> None:
        self.record("idle.unlocked", "info", {
            **self._where(s), "locked_for": round(now - s.locked_at, 1)},
            user=s.info.user or None)
        s.phase, s.armed_from, s.suspended = "active", now, False
        s.reset_lock()

    def _maybe_suspend(self, s: _Session, now: float) -> None:
        assert self.limits is not None and self._logind is not None
        limit = self.limits.suspend_after
        if limit is None or s.suspended or not s.info.active or s.idle_for < limit:
            return
        s.suspended = True
        error: str | None = None
        try:
            self._logind.suspend(False)
        except LogindError as exc:
            error = str(exc)
        self.record("idle.suspended", "warning" if error else "info", {
            **self._where(s), "source": s.source, "idle_for": round(s.idle_for, 1),
            "suspend_after": limit, "error": error}, user=s.info.user or None)

    # -- who is at the seat ---------------------------------------------------------------

    def _publish(self) -> None:
        seat = [s for s in self._sessions.values() if s.info.seat == "seat0" and s.info.active]
        seat.sort(key=lambda s: not s.info.graphical)
        current = seat[0] if seat else None
        fact = (current.info.user or None, current.info.locked_hint) if current else (None,
                                                                                      False)
        if fact != self._operator:
            self._operator = fact
            self.ctx.operator.set(fact[0], "logind")
        self.ctx.state["session_user"] = fact[0]
        self.ctx.state["locked"] = fact[1]

    def _seat_session(self, session_id: str | None) -> _Session | None:
        for s in self._sessions.values():
            if session_id is not None and s.info.id == session_id:
                return s
        if session_id is not None:
            return None
        active = [s for s in self._sessions.values()
                  if s.info.graphical and s.info.active and s.info.seat == "seat0"]
        return active[0] if active else None

    # -- the console's "lock this seat now" -----------------------------------------------

    def lock_seat(self, args: dict[str, Any]) -> dict[str, Any]:
        """Command ``lock_seat``: lock the active graphical session on seat0 (or
        ``args["session"]``) now, in the name of ``args["by"]`` (the SV). Answers within
        ``verify_within`` whether it locked; the journal gets ``idle.locked`` (initiated
        "console") or ``idle.lock_failed``."""
        try:
            return self._lock_seat(args)
        except Exception as exc:  # runs on the link's thread: never let it die there
            log.exception("lock_seat failed")
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    def _lock_seat(self, args: dict[str, Any]) -> dict[str, Any]:
        sid = args.get("session")
        if sid is not None and not isinstance(sid, str):
            return {"ok": False, "error": "'session' must be a session id string"}
        actor = args.get("by") or args.get("actor")  # the console sends "by"
        with self._lock:
            if self._logind is None or self.limits is None:
                return {"ok": False, "error": f"logind is not reachable: {self._logind_error}"}
            s = self._seat_session(sid)
            if s is None:
                what = f"session {sid}" if sid else "active graphical session on seat0"
                return {"ok": False, "error": f"there is no {what}"}
            base = {"session": s.info.id, "user": s.info.user}
            if s.info.locked_hint:
                return {"ok": True, "locked": True, "already": True, **base}
            if s.phase not in ("locking", "failing"):
                self._attempt(s, self.ctx.clock(), "console", str(actor) if actor else None)
            logind, path, wait = self._logind, s.info.path, self.limits.verify_within
            method, error = s.method, s.call_error
        deadline = time.monotonic() + min(wait, 30.0)
        locked = False
        while True:
            try:
                locked = logind.session(path).locked_hint
            except LogindError as exc:
                return {"ok": False, "locked": False, "error": str(exc), **base}
            if locked or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        out: dict[str, Any] = {"ok": locked, "locked": locked, "method": method, **base}
        if not locked:
            out["error"] = error or (f"the session did not report locked within {wait:g}s; "
                                     "floorguard keeps retrying and records each failure")
        return out


# --- small OS helpers ----------------------------------------------------------------------

def _program(pid: int) -> str | None:
    """The inhibitor holder's executable (or command name) as the kernel knows it."""
    if pid <= 0:
        return None
    proc = Path(f"/proc/{pid}")
    with contextlib.suppress(OSError):
        return os.readlink(proc / "exe")
    with contextlib.suppress(OSError):
        return (proc / "comm").read_text().strip() or None
    return None


def _user_name(uid: int, sessions: list[_Session]) -> str | None:
    for s in sessions:
        if s.info.uid == uid and s.info.user:
            return s.info.user
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _run(cmd: list[str], env_extra: dict[str, str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return f"{cmd[0]} is not installed"
    env = {**os.environ, **env_extra}
    try:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True,
                             timeout=SUBPROCESS_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{cmd[0]}: {exc}"
    if res.returncode != 0:
        return f"{cmd[0]} exited {res.returncode}: {res.stderr.strip()[:200]}"
    return None


def _run_as(info: SessionInfo, cmd: list[str]) -> str | None:
    """Run ``cmd`` in the session's X display as the session's user."""
    try:
        pw = pwd.getpwnam(info.user)
    except KeyError:
        return f"no local user {info.user!r} to run {cmd[0]} as"
    env = {"DISPLAY": info.display, "HOME": pw.pw_dir}
    auth = None
    with contextlib.suppress(X11Error):
        auth = find_xauthority(info.display, info.uid, info.id)
    if auth:
        env["XAUTHORITY"] = auth
    if os.geteuid() != pw.pw_uid:
        cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups",
               "env", *[f"{k}={v}" for k, v in env.items()], *cmd]
        return _run(cmd, {})
    return _run(cmd, env)


def _human(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 90:
        return f"{seconds} s"
    return f"{round(seconds / 60)} min"
