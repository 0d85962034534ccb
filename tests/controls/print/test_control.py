"""PrintControl against a real private cupsd: holding, recording, deciding, expiring."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

from floorguard.agent.adapters.cups import CANCELED, COMPLETED, HELD, Cups
from tests.rigs.cupsd import STOCK_POLICY, Cupsd, printed
from tests.rigs.processes import wait_until


def job_state(cupsd: Cupsd, job_id: int) -> int | None:
    cups = Cups(cupsd.socket)
    try:
        job = cups.get_job(job_id)
        return job.state if job else None
    finally:
        cups.close()


def hold_default(cupsd: Cupsd, queue: str) -> str:
    cups = Cups(cupsd.socket)
    try:
        return cups.get_printer(queue).hold_default
    finally:
        cups.close()


def pages_of(path: Path) -> int:
    out = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True)
    return int(next(line.split()[1] for line in out.stdout.splitlines()
                    if line.startswith("Pages:")))


def test_queue_is_held_and_a_new_job_is_recorded_with_pages_and_thumbnail(
        cupsd: Cupsd, harness: Any, pdf3: Path) -> None:
    queue, out = cupsd.add_queue()
    assert hold_default(cupsd, queue) == "no-hold"
    h = harness(queue)
    h.start()
    initial = h.recorded.of("print.hold_restored", queue=queue)
    assert initial and initial[0]["severity"] == "info" and initial[0]["details"]["initial"]
    assert hold_default(cupsd, queue) == "indefinite"

    job = cupsd.submit(queue, pdf3, user="alice", title="Customer letter")
    held = h.recorded.wait_for("print.held", job_id=job)
    d = held["details"]
    assert (d["queue"], d["operator"], d["seat"], d["title"]) == (
        queue, "alice", "T-07", "Customer letter")
    assert held["user"] == "alice"
    assert d["pages"] == 3 and d["pages_source"] == "pdfinfo"
    assert d["format"] == "application/pdf" and d["size"] > 1000
    png = base64.b64decode(d["thumbnail"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) < 48 * 1024
    assert d["thumbnail_placeholder"] is None
    assert job_state(cupsd, job) == HELD
    assert not printed(out)


def test_approval_releases_the_job_and_its_output_is_printed(
        cupsd: Cupsd, harness: Any, pdf3: Path) -> None:
    queue, out = cupsd.add_queue()
    h = harness(queue)
    h.start()
    job = cupsd.submit(queue, pdf3)
    h.recorded.wait_for("print.held", job_id=job)
    result = h.decide(job, "approve", note="ok")
    assert result["ok"] is True
    approved = h.recorded.of("print.approved", job_id=job)[0]
    assert approved["details"]["by"] == "sv1" and approved["user"] == "alice"
    released = h.recorded.wait_for("print.released", job_id=job)
    assert released["details"]["outcome"] == "completed"
    assert released["details"]["approved_by"] == "sv1"
    assert job_state(cupsd, job) == COMPLETED
    assert pages_of(out) == 3
    # A repeated delivery of the same command changes nothing and records nothing.
    again = h.decide(job, "approve")
    assert again["ok"] is False and again["final"] is True
    assert len(h.recorded.of("print.approved", job_id=job)) == 1


def test_denial_cancels_the_job_and_nothing_is_printed(
        cupsd: Cupsd, harness: Any, pdf1: Path) -> None:
    queue, out = cupsd.add_queue()
    h = harness(queue)
    h.start()
    job = cupsd.submit(queue, pdf1)
    h.recorded.wait_for("print.held", job_id=job)
    assert h.decide(job, "deny", reason="customer data")["ok"] is True
    denied = h.recorded.of("print.denied", job_id=job)[0]
    assert denied["details"]["reason"] == "customer data"
    assert denied["details"]["by"] == "sv1"
    assert job_state(cupsd, job) == CANCELED
    assert not printed(out)


def test_an_undecided_job_expires_by_the_controls_clock(
        cupsd: Cupsd, harness: Any, pdf1: Path) -> None:
    queue, out = cupsd.add_queue()
    h = harness(queue)
    control = h.start()
    job = cupsd.submit(queue, pdf1)
    h.recorded.wait_for("print.held", job_id=job)
    h.clock.advance(9 * 60)
    control.reconcile()
    assert not h.recorded.of("print.expired")
    h.clock.advance(60)
    control.reconcile()
    expired = h.recorded.of("print.expired", job_id=job)
    assert expired and expired[0]["details"]["cancelled"] is True
    assert job_state(cupsd, job) == CANCELED
    assert not printed(out)


def test_hold_setting_reset_behind_the_agents_back_is_restored_as_a_violation(
        cupsd: Cupsd, harness: Any) -> None:
    queue, _ = cupsd.add_queue(hold="indefinite")
    h = harness(queue)
    h.start()
    assert not h.recorded.of("print.hold_restored")  # it was already held
    cupsd.run("lpadmin", "-p", queue, "-o", "job-hold-until-default=no-hold")
    restored = h.recorded.wait_for("print.hold_restored", queue=queue)
    assert restored["severity"] == "violation"
    assert restored["details"]["found"] == "no-hold"
    assert hold_default(cupsd, queue) == "indefinite"


def test_a_decision_for_a_job_that_no_longer_exists_is_reported_once(
        cupsd: Cupsd, harness: Any) -> None:
    queue, _ = cupsd.add_queue()
    h = harness(queue)
    h.start()
    result = h.decide(999_999, "approve")
    assert result == {"ok": False, "final": True, "still_held": False,
                      "error": result["error"]}
    failed = h.recorded.of("print.decision_failed", job_id=999_999)
    assert len(failed) == 1 and failed[0]["details"]["by"] == "sv1"


def test_malformed_decisions_are_refused_with_the_field_named(
        cupsd: Cupsd, harness: Any) -> None:
    queue, _ = cupsd.add_queue()
    h = harness(queue)
    h.start()
    assert "job_id" in h.commands.run("print.decide", {"job_id": "7", "decision": "approve",
                                                       "by": "sv1"})["error"]
    assert "decision" in h.decide(7, "print anyway")["error"]
    assert "by" in h.commands.run("print.decide", {"job_id": 7, "decision": "deny"})["error"]


def test_text_jobs_get_estimated_pages_and_a_placeholder(
        cupsd: Cupsd, harness: Any) -> None:
    queue, _ = cupsd.add_queue()
    h = harness(queue)
    h.start()
    doc = cupsd.dir / "docs" / "notes.txt"
    doc.write_text("\n".join(f"line {i}" for i in range(130)) + "\n")
    doc.chmod(0o644)
    job = cupsd.submit(queue, doc)
    d = h.recorded.wait_for("print.held", job_id=job)["details"]
    assert d["format"] == "text/plain"
    assert d["pages"] == 3 and d["pages_source"] == "estimated"
    assert d["thumbnail"] is None and d["thumbnail_placeholder"] == "text"


def test_jobs_above_the_page_limit_need_a_note(
        cupsd: Cupsd, harness: Any, pdf3: Path) -> None:
    queue, out = cupsd.add_queue()
    h = harness(queue, extra="note_above_pages = 2\n")
    h.start()
    job = cupsd.submit(queue, pdf3)
    assert h.recorded.wait_for("print.held", job_id=job)["details"]["needs_note"] is True
    refused = h.decide(job, "approve")
    assert refused["ok"] is False and "note" in refused["error"]
    assert job_state(cupsd, job) == HELD
    assert h.decide(job, "approve", note="board pack, checked")["ok"] is True
    h.recorded.wait_for("print.released", job_id=job)
    assert pages_of(out) == 3


def test_exempt_queues_are_not_held(cupsd: Cupsd, harness: Any, pdf1: Path) -> None:
    held_q, _ = cupsd.add_queue()
    free_q, free_out = cupsd.add_queue("free")
    h = harness(held_q, policy=f'[print]\nqueues = ["{held_q}", "{free_q}"]\n'
                               'exempt = ["free*"]\ncheck_interval = "200ms"\n')
    control = h.start()
    assert hold_default(cupsd, held_q) == "indefinite"
    assert hold_default(cupsd, free_q) == "no-hold"
    job = cupsd.submit(free_q, pdf1)
    wait_until(lambda: job_state(cupsd, job) == COMPLETED, 20, 0.05, "the exempt job")
    control.reconcile()
    assert printed(free_out)
    assert not h.recorded.of("print.held", job_id=job)


def test_small_jobs_print_unasked_when_approval_is_off_with_a_page_limit(
        cupsd: Cupsd, harness: Any, pdf1: Path, pdf3: Path) -> None:
    queue, out = cupsd.add_queue()
    h = harness(queue, policy=f'[print]\napproval = "off"\nqueues = ["{queue}"]\n'
                              'note_above_pages = 2\ncheck_interval = "200ms"\n')
    h.start()
    assert hold_default(cupsd, queue) == "indefinite"
    small = cupsd.submit(queue, pdf1)
    approved = h.recorded.wait_for("print.approved", job_id=small)
    assert approved["details"]["by"] == "policy"
    h.recorded.wait_for("print.released", job_id=small)
    big = cupsd.submit(queue, pdf3)
    h.recorded.wait_for("print.held", job_id=big)
    assert job_state(cupsd, big) == HELD
    assert pages_of(out) == 1


def test_polling_alone_notices_new_jobs(cupsd: Cupsd, harness: Any, pdf1: Path) -> None:
    queue, _ = cupsd.add_queue()
    h = harness(queue, spool="/nonexistent-spool")
    control = h.start()
    assert control.watching is False
    job = cupsd.submit(queue, pdf1)
    h.recorded.wait_for("print.held", job_id=job)


def test_the_spool_watch_notices_new_jobs_without_polling(
        cupsd: Cupsd, harness: Any, pdf1: Path) -> None:
    queue, _ = cupsd.add_queue()
    h = harness(queue, policy=f'[print]\nqueues = ["{queue}"]\ncheck_interval = "1h"\n')
    control = h.start()
    assert control.watching is True
    job = cupsd.submit(queue, pdf1)
    h.recorded.wait_for("print.held", job_id=job)  # the 1 h poll would never find it


def test_known_jobs_and_decisions_survive_an_agent_restart(
        cupsd: Cupsd, harness: Any, pdf1: Path) -> None:
    queue, out = cupsd.add_queue()
    first = harness(queue)
    first.start()
    job = cupsd.submit(queue, pdf1)
    first.recorded.wait_for("print.held", job_id=job)
    first.stop()
    assert job_state(cupsd, job) == HELD  # stopping never releases

    second = harness(queue)
    second.state_dir = first.state_dir
    second.config = first.config
    second.clock = first.clock
    second.start()
    assert not second.recorded.of("print.held", job_id=job)  # not reported twice
    assert second.decide(job, "approve")["ok"] is True
    second.recorded.wait_for("print.released", job_id=job)
    assert printed(out)


def test_a_decision_made_while_cupsd_is_down_is_carried_out_when_it_returns(
        cupsd: Cupsd, harness: Any, pdf1: Path) -> None:
    queue, out = cupsd.add_queue()
    h = harness(queue)
    h.start()
    job = cupsd.submit(queue, pdf1)
    h.recorded.wait_for("print.held", job_id=job)
    cupsd.stop()
    try:
        result = h.decide(job, "approve")
        assert result["ok"] is True and result["pending"] is True
        assert not h.recorded.of("print.approved")
    finally:
        cupsd.start()
    assert job_state(cupsd, job) in (HELD, COMPLETED)  # held jobs survive cupsd restarts
    h.recorded.wait_for("print.approved", job_id=job)
    h.recorded.wait_for("print.released", job_id=job)
    assert printed(out)


def test_an_operator_cannot_release_or_cancel_their_own_held_job(
        cupsd: Cupsd, harness: Any, pdf1: Path) -> None:
    queue, out = cupsd.add_queue()
    h = harness(queue)
    control = h.start()
    as_nobody = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]
    res = cupsd.run(*as_nobody, "lp", "-d", queue, "-t", "mine", str(pdf1))
    job = int(res.stdout.split("request id is ", 1)[1].split()[0].rsplit("-", 1)[1])
    held = h.recorded.wait_for("print.held", job_id=job)
    assert held["details"]["operator"] == "nobody"
    resume = cupsd.run(*as_nobody, "lp", "-i", str(job), "-H", "resume", check=False)
    assert resume.returncode != 0 and "Forbidden" in resume.stderr + resume.stdout
    cancel = cupsd.run(*as_nobody, "cancel", str(job), check=False)
    assert cancel.returncode != 0
    assert job_state(cupsd, job) == HELD
    control.reconcile()
    assert not printed(out)
    assert not h.recorded.of("print.misconfigured")  # the secure policy is in force


def test_a_cupsd_policy_that_lets_owners_release_is_reported(
        cupsd: Cupsd, harness: Any, tmp_path: Path) -> None:
    queue, _ = cupsd.add_queue()
    conf = tmp_path / "stock-cupsd.conf"
    conf.write_text(STOCK_POLICY)
    h = harness(queue)
    h.config = dataclasses.replace(h.config, cups_conf=str(conf))
    h.start()
    mis = h.recorded.of("print.misconfigured")
    assert len(mis) == 1 and mis[0]["severity"] == "violation"
    problems = " ".join(mis[0]["details"]["problems"])
    assert "Release-Job" in problems and "Cancel-Job" in problems
    assert "Set-Job-Attributes" in problems


def test_a_job_that_asks_not_to_be_held_is_cancelled_as_a_violation(
        cupsd: Cupsd, harness: Any, pdf3: Path) -> None:
    queue, _ = cupsd.add_queue()
    h = harness(queue)
    h.start()
    res = cupsd.run("lp", "-d", queue, "-U", "mallory", "-o", "job-hold-until=no-hold",
                    str(pdf3))
    job = int(res.stdout.split("request id is ", 1)[1].split()[0].rsplit("-", 1)[1])
    # cupsd lets any client ask for no-hold; the agent cancels as soon as it sees the job,
    # and says so honestly when the printer was faster: print.denied when it caught the
    # job (cancelled, or printed while being cancelled), print.released as a violation
    # when the job had already printed before the agent first saw it.
    event = wait_until(lambda: (h.recorded.of("print.denied", job_id=job)
                                or h.recorded.of("print.released", job_id=job)
                                or [None])[0], 30, 0.02, f"a verdict on job {job}")
    assert event["severity"] == "violation" and event["user"] == "mallory"
    if event["kind"] == "print.released":
        assert "printed without approval" in event["details"]["outcome"]
        assert job_state(cupsd, job) == COMPLETED
    elif event["details"]["printed"]:
        assert event["details"]["by"] == "policy"
        assert job_state(cupsd, job) == COMPLETED
    else:
        assert event["details"]["by"] == "policy"
        assert event["details"]["cancelled"] is True
        assert job_state(cupsd, job) == CANCELED
    assert not h.recorded.of("print.held", job_id=job)


def test_jobs_already_queued_when_the_agent_first_starts_are_left_alone(
        cupsd: Cupsd, harness: Any, pdf1: Path) -> None:
    queue, _ = cupsd.add_queue()
    cupsd.run("cupsdisable", queue)  # a stopped printer keeps the job pending
    try:
        job = cupsd.submit(queue, pdf1)
        h = harness(queue)
        control = h.start()
        control.reconcile()
        assert job_state(cupsd, job) == 3  # pending, not cancelled
        assert not h.recorded.of("print.denied", job_id=job)
    finally:
        cupsd.run("cupsenable", queue)


def test_a_corrupt_state_file_is_set_aside_and_nothing_is_released(
        cupsd: Cupsd, harness: Any, pdf1: Path) -> None:
    queue, out = cupsd.add_queue()
    h = harness(queue)
    h.state_dir.mkdir(parents=True)
    (h.state_dir / "print-state.json").write_text("{not json")
    h.start()
    job = cupsd.submit(queue, pdf1)
    h.recorded.wait_for("print.held", job_id=job)
    assert (h.state_dir / "print-state.unreadable").read_text() == "{not json"
    def saved() -> bool:
        state = json.loads((h.state_dir / "print-state.json").read_text())
        return state["jobs"].get(str(job), {}).get("phase") == "held"

    wait_until(saved, 10, 0.02, "the job in the new state file")
    assert job_state(cupsd, job) == HELD and not printed(out)


def test_document_tools_run_without_privileges() -> None:
    from floorguard.agent.controls.print import control as printing

    cmd = printing._sandboxed(["pdfinfo", "-"])
    assert cmd[-2:] == ["pdfinfo", "-"]
    assert "--reuid" in cmd and cmd[cmd.index("--reuid") + 1] == "nobody"
    who = subprocess.run(printing._sandboxed(["id", "-un"]), capture_output=True, text=True,
                         check=True)
    assert who.stdout.strip() == "nobody"


def test_cupsd_refusing_the_agent_leaves_jobs_held_and_is_reported(
        cupsd: Cupsd, harness: Any, pdf1: Path) -> None:
    queue, out = cupsd.add_queue(hold="indefinite")
    h = harness(queue)
    # The agent's IPP user is not in cupsd's SystemGroup: every protected operation fails.
    h.start(cups=Cups(cupsd.socket, user="nobody"))
    job = cupsd.submit(queue, pdf1)
    held = h.recorded.wait_for("print.held", job_id=job)
    assert held["details"]["thumbnail_placeholder"] == "unreadable"
    result = h.decide(job, "approve")
    assert result["ok"] is False and result["still_held"] is True
    failed = h.recorded.of("print.decision_failed", job_id=job)
    assert failed and "401" in failed[0]["details"]["error"]
    assert job_state(cupsd, job) == HELD and not printed(out)
    second = cupsd.submit(queue, pdf1)  # reconciling goes on
    h.recorded.wait_for("print.held", job_id=second)


def test_each_queue_prints_to_its_own_fresh_output_file(
        cupsd: Cupsd, harness: Any, pdf1: Path, pdf3: Path) -> None:
    # cupsd (Debian 2.4.2-3+deb12u10 and later) neither creates nor truncates a file:
    # device's output, so each queue has its own file, existing and empty before any job.
    first, first_out = cupsd.add_queue("fresh")
    _second, second_out = cupsd.add_queue("fresh")
    assert first_out != second_out
    assert first_out.exists() and not printed(first_out) and not printed(second_out)
    h = harness(first)
    h.start()
    job = cupsd.submit(first, pdf3)
    h.recorded.wait_for("print.held", job_id=job)
    assert h.decide(job, "approve")["ok"] is True
    h.recorded.wait_for("print.released", job_id=job)
    assert pages_of(first_out) == 3
    assert not printed(second_out)
