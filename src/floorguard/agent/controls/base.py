"""What every control is: a small class with ``start``, ``stop`` and a reconciling ``check``.

A control watches one OS surface, decides by the policy and turns each decision into an
event through ``ctx.record``. It raises ``ControlUnavailable`` from ``start`` when its
surface is missing (no /sys/bus/usb, no logind, no cupsd); the agent records that as a
coverage gap and goes on without it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from floorguard.config import AgentConfig
from floorguard.events import COMMANDS
from floorguard.policy import Policy


class ControlUnavailable(Exception):
    """The OS surface this control needs is not there; the message says which and why."""


class Recorder(Protocol):
    def __call__(
        self,
        control: str,
        kind: str,
        severity: str,
        details: dict[str, Any],
        *,
        user: str | None = ...,
        wait: bool | None = ...,
    ) -> dict[str, Any] | None: ...


CommandHandler = Callable[[dict[str, Any]], dict[str, Any]]


class Commands:
    """Commands from the console (print decisions, "lock now", "reload policy"), by name."""

    def __init__(self) -> None:
        self._handlers: dict[str, CommandHandler] = {}
        self._lock = threading.Lock()

    def register(self, name: str, handler: CommandHandler) -> None:
        if name not in COMMANDS:  # the table in events.py is the contract
            raise ValueError(f"{name!r} is not a command in floorguard.events.COMMANDS")
        with self._lock:
            self._handlers[name] = handler

    def unregister(self, name: str) -> None:
        with self._lock:
            self._handlers.pop(name, None)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._handlers)

    def run(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            handler = self._handlers.get(name)
        if handler is None:
            return {"ok": False, "error": f"this agent has no command '{name}'"}
        return handler(args)


class Operator:
    """Who is at the seat now. The idle control knows best (from logind) and sets it;
    until then the login records (utmp) answer."""

    def __init__(self) -> None:
        self._user: str | None = None
        self._source = ""
        self._lock = threading.Lock()

    def set(self, user: str | None, source: str) -> None:
        with self._lock:
            self._user, self._source = user, source

    def current(self) -> str | None:
        with self._lock:
            if self._source:
                return self._user
        return _utmp_user()


def _utmp_user() -> str | None:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a core dependency
        return None
    users = psutil.users()
    # A graphical login first (display ":0" or a tty7-style VT), else any login.
    for u in users:
        if (u.host or "").startswith(":") or (u.terminal or "").startswith(":"):
            return str(u.name)
    return str(users[0].name) if users else None


@dataclass
class ControlContext:
    """What the agent hands each control."""

    config: AgentConfig
    record: Recorder
    commands: Commands
    operator: Operator
    clock: Callable[[], float] = time.time
    state: dict[str, Any] = field(default_factory=dict)  # shared facts for heartbeats


class Control:
    """Base class. Subclasses set ``name`` (also their policy table) and ``check_interval``."""

    name: ClassVar[str] = ""
    check_interval: ClassVar[float] = 5.0

    def __init__(self, ctx: ControlContext):
        self.ctx = ctx
        self.policy: Policy | None = None

    def record(self, kind: str, severity: str, details: dict[str, Any], *,
               user: str | object | None = ..., wait: bool | None = None
               ) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {"wait": wait}
        if user is not ...:
            kwargs["user"] = user
        return self.ctx.record(self.name, kind, severity, details, **kwargs)

    def start(self, policy: Policy) -> None:
        self.policy = policy

    def apply_policy(self, policy: Policy) -> None:
        """A new valid policy; the default keeps running with it."""
        self.policy = policy

    def check(self) -> None:
        """Reconcile with the OS; called every ``check_interval`` seconds."""

    def stop(self) -> None:
        """Stop watching. Must never relax what the control enforces."""

    def status(self) -> dict[str, Any]:
        return {}
