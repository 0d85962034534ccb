"""Real logind and X servers for the idle tests: python-dbusmock's logind template on a
private system bus, and Xvfb; every one is stopped when its test ends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rigs.logind import (
    LogindMock,
    running_logind,
)
from tests.rigs.xvfb import (
    Xserver,
    start_xvfb,
    stop_xvfb,
)


@pytest.fixture
def logind() -> Iterator[LogindMock]:
    """The logind mock for one test (see ``running_logind``)."""
    with running_logind() as mock:
        yield mock


@pytest.fixture
def xvfb(tmp_path: Path) -> Iterator[Xserver]:
    x = start_xvfb(tmp_path)
    try:
        yield x
    finally:
        stop_xvfb(x)


class FakeClock:
    """A wall clock the test moves by hand; starts at the real time so that logind's
    wall-clock hints and this clock agree."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Rig:
    """The real IdleControl in this process: a real Agent's journal and recorder in
    tmp_path, the dbusmock logind, and a clock the test moves."""

    def __init__(self, tmp_path: Path, logind: LogindMock, clock: FakeClock) -> None:
        from floorguard.agent.daemon import Agent
        from floorguard.config import AgentConfig

        self.logind = logind
        self.clock = clock
        self.agent = Agent(AgentConfig(state_dir=str(tmp_path / "state"), seat="T-07",
                                       policy=str(tmp_path / "policy.toml")), clock=clock)
        (tmp_path / "state").mkdir()
        self.agent.journal.open()
        self.agent.agent_id = "agent-test"
        self.control: Any = None

    def start(self, idle_table: str) -> Any:
        from floorguard.agent.controls.idle.control import IdleControl
        from floorguard.policy import parse_policy

        self.agent.policy = parse_policy("[idle]\n" + idle_table, "policy.toml")
        self.control = IdleControl(self.agent.ctx, bus_address=self.logind.address)
        self.control.start(self.agent.policy)
        return self.control

    def stop(self) -> None:
        if self.control is not None:
            self.control.stop()
        self.agent.journal.close()

    def check(self) -> None:
        self.control.check()

    def advance(self, seconds: float) -> None:
        """Move the clock and run one check at the new time."""
        self.clock.advance(seconds)
        self.control.check()

    def session(self, sid: str) -> dict[str, Any] | None:
        sessions: dict[str, dict[str, Any]] = self.control.status()["sessions"]
        return sessions.get(sid)

    def settle(self, predicate: Any, what: str, timeout: float = 5.0) -> None:
        """Run checks (at the same clock time) until the control has taken in what
        logind sent; D-Bus delivery is asynchronous, the clock does not move."""
        deadline = time.monotonic() + timeout
        while True:
            self.control.check()
            if predicate():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the control never saw {what}: "
                                     f"{self.control.status()}")
            time.sleep(0.005)

    def follows(self, sid: str, **fields: Any) -> None:
        def ok() -> bool:
            s = self.session(sid)
            return s is not None and all(s.get(k) == v for k, v in fields.items())

        self.settle(ok, f"session {sid} with {fields}")

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        from floorguard.journal import JournalReader

        with JournalReader(self.agent.config.state_dir) as reader:
            recs = list(reader.records())
        return [r for r in recs if kind is None or r["kind"] == kind]

    def wait_events(self, kind: str, count: int = 1, timeout: float = 5.0
                    ) -> list[dict[str, Any]]:
        """Info events are group-committed within 100 ms: wait for them to be durable."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(kind)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} x {kind}, journal has "
                                     f"{[e['kind'] for e in self.events()]}")
            time.sleep(0.02)


@pytest.fixture
def rig(tmp_path: Path, logind: LogindMock, clock: FakeClock) -> Iterator[Rig]:
    r = Rig(tmp_path, logind, clock)
    try:
        yield r
    finally:
        r.stop()
