"""The real agent process, a live console and the private cupsd together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from floorguard.agent.adapters.cups import CANCELED, HELD, Cups
from tests.controls.print.conftest import job_state
from tests.rigs.console import LiveConsole
from tests.rigs.cupsd import Cupsd, printed


def test_held_job_reaches_the_console_page_through_the_agent(
        floor: Any, cupsd: Cupsd, print_console: LiveConsole, pdf3: Path) -> None:
    f = floor()
    f.start()
    job = cupsd.submit(f.queue, pdf3, user="alice", title="Policy schedule")
    held = f.wait_for("print.held", job_id=job)[0]
    assert held["user"] == "alice" and held["seat"] == "T-12"
    assert held["details"]["pages"] == 3
    sv = print_console.login("sv1")
    row = f.wait_console_state(sv, job, "held")
    assert (row["operator"], row["title"], row["pages"]) == ("alice", "Policy schedule", 3)
    page = sv.get("/print").text
    assert "Policy schedule" in page
    assert job_state(cupsd, job) == HELD and not printed(f.out)


def test_with_the_console_down_jobs_stay_held_and_arrive_when_it_is_back(
        floor: Any, cupsd: Cupsd, print_console: LiveConsole, pdf1: Path) -> None:
    f = floor()
    print_console.stop()
    try:
        f.start()
        job = cupsd.submit(f.queue, pdf1, title="Offline job")
        f.wait_for("print.held", job_id=job)
        assert job_state(cupsd, job) == HELD
    finally:
        print_console.start()
    sv = print_console.login("sv1")
    f.wait_console_state(sv, job, "held", timeout=40)
    assert job_state(cupsd, job) == HELD and not printed(f.out)


def test_an_undecided_job_expires_and_prints_nothing(
        floor: Any, cupsd: Cupsd, print_console: LiveConsole, pdf1: Path) -> None:
    f = floor(expire_after="2s")
    f.start()
    job = cupsd.submit(f.queue, pdf1)
    f.wait_for("print.expired", job_id=job)
    assert job_state(cupsd, job) == CANCELED and not printed(f.out)
    f.wait_console_state(print_console.login("sv1"), job, "expired")


def test_restarts_of_the_agent_and_cupsd_keep_jobs_held_and_reported_once(
        floor: Any, cupsd: Cupsd, pdf1: Path) -> None:
    f = floor()
    f.start()
    first = cupsd.submit(f.queue, pdf1, title="before restarts")
    f.wait_for("print.held", job_id=first)
    assert f.agent.stop() == 0
    cupsd.restart()
    assert job_state(cupsd, first) == HELD
    f.agent.start()
    f.wait_for("agent.started", count=2)
    second = cupsd.submit(f.queue, pdf1, title="after restarts")
    f.wait_for("print.held", job_id=second)
    cupsd.restart()  # and once more while the agent runs
    third = cupsd.submit(f.queue, pdf1, title="after a cupsd restart")
    f.wait_for("print.held", job_id=third)
    held = [e for e in f.agent.events() if e["kind"] == "print.held"
            and e["details"]["job_id"] == first]
    assert len(held) == 1
    assert {job_state(cupsd, j) for j in (first, second, third)} == {HELD}
    assert not printed(f.out)


def test_resetting_the_hold_behind_the_agents_back_is_a_violation(
        floor: Any, cupsd: Cupsd, print_console: LiveConsole) -> None:
    f = floor()
    f.start()
    cupsd.run("lpadmin", "-p", f.queue, "-o", "job-hold-until-default=no-hold")
    hits = f.wait_for("print.hold_restored", count=2, queue=f.queue)
    assert hits[-1]["severity"] == "violation" and hits[-1]["details"]["found"] == "no-hold"
    cups = Cups(cupsd.socket)
    try:
        assert cups.get_printer(f.queue).hold_default == "indefinite"
    finally:
        cups.close()


def test_an_operator_cannot_resume_their_own_held_job(
        floor: Any, cupsd: Cupsd, print_console: LiveConsole, pdf1: Path) -> None:
    f = floor()
    f.start()
    as_operator = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]
    res = cupsd.run(*as_operator, "lp", "-d", f.queue, "-t", "my own", str(pdf1))
    job = int(res.stdout.split("request id is ", 1)[1].split()[0].rsplit("-", 1)[1])
    held = f.wait_for("print.held", job_id=job)[0]
    assert held["user"] == "nobody"
    resume = cupsd.run(*as_operator, "lp", "-i", str(job), "-H", "resume", check=False)
    assert resume.returncode != 0 and "Forbidden" in resume.stdout + resume.stderr
    alter = cupsd.run(*as_operator, "lp", "-i", str(job), "-H", "immediate", check=False)
    assert alter.returncode != 0
    assert cupsd.run(*as_operator, "cancel", str(job), check=False).returncode != 0
    row = f.wait_console_state(print_console.login("sv1"), job, "held")
    assert row["operator"] == "nobody"
    assert job_state(cupsd, job) == HELD and not printed(f.out)
    assert not [e for e in f.agent.events() if e["kind"] == "print.misconfigured"]
