from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from floorguard.agent.adapters.cups import Cups
from floorguard.agent.controls.base import Commands, ControlContext, Operator
from floorguard.agent.controls.print.control import PrintControl
from floorguard.config import AgentConfig
from floorguard.policy import parse_policy
from tests.rigs.agent import AgentProcess
from tests.rigs.console import LiveConsole
from tests.rigs.cupsd import Cupsd
from tests.rigs.processes import wait_until


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

    def wait_for(self, kind: str, timeout: float = 30.0, **details: Any
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

    def start(self, cups: Cups | None = None) -> PrintControl:
        ctx = ControlContext(config=self.config, record=self.recorded,
                             commands=self.commands, operator=Operator(), clock=self.clock)
        self.control = PrintControl(ctx, cups=cups)
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


def job_state(cupsd: Cupsd, job_id: int) -> int | None:
    cups = Cups(cupsd.socket)
    try:
        job = cups.get_job(job_id)
        return job.state if job else None
    finally:
        cups.close()


class Floor:
    """One agent printing through its own queue, shipping to the module's console."""

    def __init__(self, cupsd: Cupsd, console: LiveConsole, workdir: Path,
                 expire_after: str = "30m"):
        self.cupsd = cupsd
        self.console = console
        self.queue, self.out = cupsd.add_queue("live")
        workdir.mkdir(parents=True, exist_ok=True)
        policy = workdir / "policy.toml"
        policy.write_text(f'[print]\napproval = "required"\nqueues = ["{self.queue}"]\n'
                          f'expire_after = "{expire_after}"\ncheck_interval = "300ms"\n')
        self.agent = AgentProcess(workdir, policy, console_url=console.url, seat="T-12",
                                  env={"FLOORGUARD_CUPS_SERVER": cupsd.socket,
                                       "FLOORGUARD_CUPS_SPOOL": cupsd.spool,
                                       "FLOORGUARD_CUPS_CONF": str(cupsd.conf)})
        res = self.agent.enroll(console.url, console.enroll_code())
        assert res.returncode == 0, res.stderr
        self.agent_id = (self.agent.state_dir / "agent_id").read_text().strip()

    def wait_for(self, kind: str, timeout: float = 30.0, count: int = 1, **details: Any
                 ) -> list[dict[str, Any]]:
        """The agent's events of a kind; the timeout is generous for a loaded machine."""
        return self.agent.wait_for(kind, timeout=timeout, count=count, **details)

    def start(self, count: int = 1) -> None:
        """Start the agent and wait until it holds the queue (a job printed before that
        would not be held)."""
        self.agent.start()
        self.agent.wait_for("agent.started", count=count, timeout=30)
        self.agent.wait_for("print.hold_restored", queue=self.queue, timeout=30)

    def console_job(self, sv: httpx.Client, job_id: int) -> dict[str, Any] | None:
        jobs = sv.get("/api/v1/print/jobs", params={"state": "all"}).json()
        mine = [j for j in jobs if j["job_id"] == job_id and j["agent"] == self.agent_id]
        return mine[0] if mine else None

    def wait_console_state(self, sv: httpx.Client, job_id: int, state: str,
                           timeout: float = 30) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.console_job(sv, job_id)
            return job if job and job["state"] == state else None

        return dict(wait_until(reached, timeout, 0.1, f"job {job_id} {state} in the console"))


@pytest.fixture
def floor(cupsd: Cupsd, print_console: LiveConsole, tmp_path: Path) -> Iterator[Any]:
    made: list[Floor] = []

    def make(**kw: Any) -> Floor:
        f = Floor(cupsd, print_console, tmp_path / f"agent{len(made)}", **kw)
        made.append(f)
        return f

    try:
        yield make
    finally:
        for f in made:
            f.agent.stop()
