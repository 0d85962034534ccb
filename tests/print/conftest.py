from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from floorguard.agent.control import Commands, ControlContext, Operator
from floorguard.agent.printing import PrintControl
from floorguard.config import AgentConfig
from floorguard.policy import parse_policy
from tests.live import LiveConsole, wait_until
from tests.print.cupsd import Cupsd


@pytest.fixture(scope="session")
def cupsd() -> Iterator[Cupsd]:
    """One private cupsd for the whole print suite (queues are per test)."""
    server = Cupsd()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def pdf1(cupsd: Cupsd) -> Path:
    return cupsd.make_pdf("one.pdf", 1)


@pytest.fixture(scope="session")
def pdf3(cupsd: Cupsd) -> Path:
    return cupsd.make_pdf("three.pdf", 3)


class Clock:
    """The control's injected clock: tests move time instead of waiting for it."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorded:
    """Collects what a control records, as the journal would receive it."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, control: str, kind: str, severity: str, details: dict[str, Any], *,
                 user: Any = None, wait: bool | None = None) -> dict[str, Any]:
        event = {"control": control, "kind": kind, "severity": severity,
                 "details": details, "user": user}
        with self._lock:
            self.events.append(event)
        return event

    def of(self, kind: str, **details: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["kind"] == kind and all(
                e["details"].get(k) == v for k, v in details.items())]

    def wait_for(self, kind: str, timeout: float = 10.0, **details: Any
                 ) -> dict[str, Any]:
        return dict(wait_until(lambda: (self.of(kind, **details) or [None])[0], timeout,
                               0.02, f"{kind} {details}"))


class Harness:
    """A PrintControl in this process against the private cupsd."""

    def __init__(self, cupsd: Cupsd, state_dir: Path, queue: str, *, extra: str = "",
                 spool: str | None = None, policy: str | None = None):
        self.cupsd = cupsd
        self.queue = queue
        self.state_dir = state_dir
        self.clock = Clock()
        self.recorded = Recorded()
        self.commands = Commands()
        self.config = AgentConfig(state_dir=str(state_dir), seat="T-07",
                                  cups_server=cupsd.socket,
                                  cups_spool=spool if spool is not None else cupsd.spool,
                                  cups_conf=str(cupsd.conf))
        self.policy = parse_policy(policy or (
            f'[print]\napproval = "required"\nqueues = ["{queue}"]\n'
            f'expire_after = "10m"\ncheck_interval = "200ms"\n{extra}'), "test.toml")
        self.control: PrintControl | None = None

    def start(self) -> PrintControl:
        ctx = ControlContext(config=self.config, record=self.recorded,
                             commands=self.commands, operator=Operator(), clock=self.clock)
        self.control = PrintControl(ctx)
        self.control.start(self.policy)
        return self.control

    def stop(self) -> None:
        if self.control is not None:
            self.control.stop()
            self.control = None

    def decide(self, job_id: int, decision: str, **extra: Any) -> dict[str, Any]:
        return self.commands.run("print.decide", {"job_id": job_id, "decision": decision,
                                                  "by": "sv1", **extra})


@pytest.fixture
def harness(cupsd: Cupsd, tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def make(queue: str, **kwargs: Any) -> Harness:
        h = Harness(cupsd, tmp_path / f"state{len(made)}", queue, **kwargs)
        made.append(h)
        return h

    try:
        yield make
    finally:
        for h in made:
            h.stop()


@pytest.fixture(scope="module")
def print_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveConsole]:
    """One live console per test module (each test feeds its own agent into it): starting
    a console with its accounts costs seconds."""
    live = LiveConsole(tmp_path_factory.mktemp("console"))
    for name, role in (("admin1", "admin"), ("sv1", "sv"), ("aud1", "auditor")):
        live.add_user(name, role)
    live.start()
    try:
        yield live
    finally:
        live.stop()
