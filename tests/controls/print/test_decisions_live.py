"""Decisions from the console to the printer: the SV's click travels as a command to the
real agent, which releases or cancels the job in the private cupsd."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from floorguard.agent.adapters.cups import CANCELED, COMPLETED, HELD
from tests.controls.print.conftest import job_state
from tests.controls.print.feed import csrf_of
from tests.rigs.console import LiveConsole
from tests.rigs.cupsd import Cupsd, printed
from tests.rigs.processes import wait_until


def pages_of(path: Path) -> int:
    out = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True)
    return int(next(line.split()[1] for line in out.stdout.splitlines()
                    if line.startswith("Pages:")))


def test_an_sv_approval_in_the_console_prints_the_job(
        floor: Any, cupsd: Cupsd, print_console: LiveConsole, pdf3: Path) -> None:
    f = floor()
    f.start()
    job = cupsd.submit(f.queue, pdf3, title="Approved letter")
    sv = print_console.login("sv1")
    f.wait_console_state(sv, job, "held")
    resp = sv.post(f"/print/{f.agent_id}/{job}/approve", data={"csrf": csrf_of(sv)})
    assert resp.status_code == 303
    released = f.wait_for("print.released", job_id=job)[0]
    assert released["details"]["outcome"] == "completed"
    approved = f.wait_for("print.approved", job_id=job)[0]
    assert approved["details"]["by"] == "sv1" and approved["user"] == "alice"
    assert job_state(cupsd, job) == COMPLETED
    assert pages_of(f.out) == 3
    row = f.wait_console_state(sv, job, "released")
    assert row["decided_by"] == "sv1" and row["outcome"] == "completed"


def test_an_sv_denial_cancels_the_job_and_nothing_prints(
        floor: Any, cupsd: Cupsd, print_console: LiveConsole, pdf1: Path) -> None:
    f = floor()
    f.start()
    job = cupsd.submit(f.queue, pdf1, title="Customer list")
    sv = print_console.login("sv1")
    f.wait_console_state(sv, job, "held")
    resp = sv.post(f"/print/{f.agent_id}/{job}/deny",
                   data={"csrf": csrf_of(sv), "reason": "customer data"})
    assert resp.status_code == 303
    denied = f.wait_for("print.denied", job_id=job)[0]
    assert denied["details"]["reason"] == "customer data"
    assert denied["details"]["by"] == "sv1"
    assert job_state(cupsd, job) == CANCELED
    assert not printed(f.out)
    assert f.wait_console_state(sv, job, "denied")["decided_by"] == "sv1"


def test_a_decision_survives_restarts_of_the_agent_and_the_console(
        floor: Any, cupsd: Cupsd, print_console: LiveConsole, pdf1: Path) -> None:
    f = floor()
    f.start()
    job = cupsd.submit(f.queue, pdf1, title="Decided while offline")
    sv = print_console.login("sv1")
    f.wait_console_state(sv, job, "held")
    assert f.agent.stop() == 0
    resp = sv.post(f"/print/{f.agent_id}/{job}/approve", data={"csrf": csrf_of(sv)})
    assert resp.status_code == 303
    assert f.console_job(sv, job)["state"] == "approving"  # type: ignore[index]
    print_console.stop()
    print_console.start()
    assert job_state(cupsd, job) == HELD  # nothing prints until the agent carries it out
    f.agent.start()
    f.wait_for("print.released", job_id=job)
    assert printed(f.out)
    sv = print_console.login("sv1")
    f.wait_console_state(sv, job, "released")


def test_an_approval_for_a_job_gone_meanwhile_is_reported_not_retried(
        floor: Any, cupsd: Cupsd, print_console: LiveConsole, pdf1: Path) -> None:
    f = floor()
    f.start()
    job = cupsd.submit(f.queue, pdf1, title="Cancelled by the admin")
    sv = print_console.login("sv1")
    f.wait_console_state(sv, job, "held")
    assert f.agent.stop() == 0
    cupsd.run("cancel", str(job))  # an admin at the print server
    assert sv.post(f"/print/{f.agent_id}/{job}/approve", data={"csrf": csrf_of(sv)}
                   ).status_code == 303
    f.agent.start()
    failed = f.wait_for("print.decision_failed", job_id=job)
    assert failed[0]["details"]["still_held"] is False
    row = wait_until(lambda: (lambda j: j if j and j["state"] == "failed" else None)(
        f.console_job(sv, job)), 20, 0.2, "the console to show the failure")
    assert row["error"]
    assert not printed(f.out)
