"""The real agent process, a live console and the private cupsd together."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from floorguard.agent.cups import CANCELED, HELD, Cups
from tests.live import AgentProcess, LiveConsole, floorguard, wait_until
from tests.print.cupsd import Cupsd


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
        # "--code=" because a code may start with "-"
        res = floorguard("enroll", "--console", console.url,
                         f"--code={console.enroll_code()}", env=self.agent.env)
        assert res.returncode == 0, res.stderr
        self.agent_id = (self.agent.state_dir / "agent_id").read_text().strip()

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
                           timeout: float = 20) -> dict[str, Any]:
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


def test_held_job_reaches_the_console_page_through_the_agent(
        floor: Any, cupsd: Cupsd, print_console: LiveConsole, pdf3: Path) -> None:
    f = floor()
    f.start()
    job = cupsd.submit(f.queue, pdf3, user="alice", title="Policy schedule")
    held = f.agent.wait_for("print.held", job_id=job)[0]
    assert held["user"] == "alice" and held["seat"] == "T-12"
    assert held["details"]["pages"] == 3
    sv = print_console.login("sv1")
    row = f.wait_console_state(sv, job, "held")
    assert (row["operator"], row["title"], row["pages"]) == ("alice", "Policy schedule", 3)
    page = sv.get("/print").text
    assert "Policy schedule" in page
    assert job_state(cupsd, job) == HELD and not f.out.exists()


def test_with_the_console_down_jobs_stay_held_and_arrive_when_it_is_back(
        floor: Any, cupsd: Cupsd, print_console: LiveConsole, pdf1: Path) -> None:
    f = floor()
    print_console.stop()
    try:
        f.start()
        job = cupsd.submit(f.queue, pdf1, title="Offline job")
        f.agent.wait_for("print.held", job_id=job)
        assert job_state(cupsd, job) == HELD
    finally:
        print_console.start()
    sv = print_console.login("sv1")
    f.wait_console_state(sv, job, "held", timeout=40)
    assert job_state(cupsd, job) == HELD and not f.out.exists()


def test_an_undecided_job_expires_and_prints_nothing(
        floor: Any, cupsd: Cupsd, print_console: LiveConsole, pdf1: Path) -> None:
    f = floor(expire_after="2s")
    f.start()
    job = cupsd.submit(f.queue, pdf1)
    f.agent.wait_for("print.expired", job_id=job)
    assert job_state(cupsd, job) == CANCELED and not f.out.exists()
    f.wait_console_state(print_console.login("sv1"), job, "expired")


def test_restarts_of_the_agent_and_cupsd_keep_jobs_held_and_reported_once(
        floor: Any, cupsd: Cupsd, pdf1: Path) -> None:
    f = floor()
    f.start()
    first = cupsd.submit(f.queue, pdf1, title="before restarts")
    f.agent.wait_for("print.held", job_id=first)
    assert f.agent.stop() == 0
    cupsd.restart()
    assert job_state(cupsd, first) == HELD
    f.agent.start()
    f.agent.wait_for("agent.started", count=2, timeout=30)
    second = cupsd.submit(f.queue, pdf1, title="after restarts")
    f.agent.wait_for("print.held", job_id=second)
    cupsd.restart()  # and once more while the agent runs
    third = cupsd.submit(f.queue, pdf1, title="after a cupsd restart")
    f.agent.wait_for("print.held", job_id=third)
    held = [e for e in f.agent.events() if e["kind"] == "print.held"
            and e["details"]["job_id"] == first]
    assert len(held) == 1
    assert {job_state(cupsd, j) for j in (first, second, third)} == {HELD}
    assert not f.out.exists()


def test_resetting_the_hold_behind_the_agents_back_is_a_violation(
        floor: Any, cupsd: Cupsd, print_console: LiveConsole) -> None:
    f = floor()
    f.start()
    cupsd.run("lpadmin", "-p", f.queue, "-o", "job-hold-until-default=no-hold")
    hits = f.agent.wait_for("print.hold_restored", count=2, queue=f.queue)
    assert hits[-1]["severity"] == "violation" and hits[-1]["details"]["found"] == "no-hold"
    cups = Cups(cupsd.socket)
    try:
        assert cups.get_printer(f.queue).hold_default == "indefinite"
    finally:
        cups.close()
