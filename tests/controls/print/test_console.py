"""The approval queue in a live console: page, thumbnail, decisions, roles, CSRF, hooks."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from floorguard.agent.controls.print.control import describe_document
from floorguard.console import commands
from floorguard.console.store.db import open_store
from floorguard.console.store.schema import audit_log, print_jobs
from tests.controls.print.feed import AgentFeed, csrf_of
from tests.rigs.console import LiveConsole


@pytest.fixture
def console(print_console: LiveConsole) -> LiveConsole:
    """This module's tests share one console; each feeds its own agent."""
    return print_console


def held(job_id: int, *, thumbnail: str | None = None, pages: int | None = 1,
         needs_note: bool = False, title: str = "Quote") -> dict[str, Any]:
    return {"job_id": job_id, "queue": "floor1", "operator": "alice", "seat": "T-09",
            "title": title, "origin_host": "pc9", "format": "application/pdf",
            "size": 4000, "pages": pages, "pages_source": "pdfinfo",
            "thumbnail": thumbnail, "thumbnail_placeholder": None if thumbnail else "text",
            "needs_note": needs_note, "expire_after": 1800.0}


def store(console: LiveConsole) -> sa.engine.Engine:
    return open_store(console.db_url)


def job_row(console: LiveConsole, agent: str, job_id: int) -> Any:
    engine = store(console)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(print_jobs).where(
                print_jobs.c.agent == agent, print_jobs.c.job_id == job_id)).first()
    finally:
        engine.dispose()


def test_an_sv_sees_the_held_job_with_its_thumbnail(
        console: LiveConsole, tmp_path: Path, pdf1: Path) -> None:
    doc = describe_document("application/pdf", pdf1.read_bytes())
    feed = AgentFeed(console)
    feed.emit("print.held", held(41, thumbnail=doc["thumbnail"], title="Renewal form"))
    sv = console.login("sv1")
    page = sv.get("/print")
    assert page.status_code == 200
    assert "Renewal form" in page.text and "alice" in page.text and "T-09" in page.text
    src = f"/print/thumbnail/{feed.agent_id}/41"
    assert f'src="{src}"' in page.text
    img = sv.get(src)
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert img.content == base64.b64decode(doc["thumbnail"])
    assert "no-store" in img.headers["cache-control"]
    # Never public: without a session the picture is not served.
    import httpx

    anon = httpx.get(console.url + src)
    assert anon.status_code == 303 and "/login" in anon.headers["location"]
    assert "Print approvals" in page.text  # the nav link


def test_approval_queues_a_command_for_the_agent_and_is_audited(
        console: LiveConsole) -> None:
    feed = AgentFeed(console)
    feed.emit("print.held", held(7))
    sv = console.login("sv1")
    csrf = csrf_of(sv)
    resp = sv.post(f"/print/{feed.agent_id}/7/approve", data={"csrf": csrf, "note": ""})
    assert resp.status_code == 303
    engine = store(console)
    try:
        with engine.connect() as conn:
            cmds = commands.pending(conn, feed.agent_id)
            audits = conn.execute(sa.select(audit_log).where(
                audit_log.c.action == "print.approve")).all()
    finally:
        engine.dispose()
    assert len(cmds) == 1 and cmds[0]["name"] == "print.decide"
    assert cmds[0]["args"] == {"job_id": 7, "decision": "approve", "by": "sv1",
                               "reason": "", "note": ""}
    assert audits[0].actor == "sv1" and audits[0].target == f"{feed.agent_id}/7"
    row = job_row(console, feed.agent_id, 7)
    assert row.state == "approving" and row.command_id == cmds[0]["id"]
    again = sv.post(f"/print/{feed.agent_id}/7/approve", data={"csrf": csrf})
    assert again.status_code == 409


def test_denial_needs_a_reason_and_large_jobs_need_a_note(console: LiveConsole) -> None:
    feed = AgentFeed(console)
    feed.emit("print.held", held(8, pages=40, needs_note=True))
    sv = console.login("sv1")
    csrf = csrf_of(sv)
    no_reason = sv.post(f"/print/{feed.agent_id}/8/deny", data={"csrf": csrf, "reason": " "})
    assert no_reason.status_code == 422 and "reason" in no_reason.text
    no_note = sv.post(f"/print/{feed.agent_id}/8/approve", data={"csrf": csrf})
    assert no_note.status_code == 422 and "note" in no_note.text
    assert job_row(console, feed.agent_id, 8).state == "held"
    ok = sv.post(f"/print/{feed.agent_id}/8/deny", data={"csrf": csrf,
                                                       "reason": "not for printing"})
    assert ok.status_code == 303
    row = job_row(console, feed.agent_id, 8)
    assert (row.state, row.reason, row.decided_by) == ("denying", "not for printing", "sv1")


def test_decisions_need_the_csrf_token_and_the_sv_or_admin_role(
        console: LiveConsole) -> None:
    feed = AgentFeed(console)
    feed.emit("print.held", held(9))
    sv = console.login("sv1")
    assert sv.post(f"/print/{feed.agent_id}/9/approve", data={"csrf": "forged"}
                   ).status_code == 403
    aud = console.login("aud1")
    page = aud.get("/print")
    assert page.status_code == 200 and "Quote" in page.text
    assert "/approve" not in page.text  # read-only for auditors
    assert aud.post(f"/print/{feed.agent_id}/9/approve", data={"csrf": csrf_of(aud)}
                    ).status_code == 403
    api = aud.post(f"/api/v1/print/jobs/{feed.agent_id}/9/decision",
                   json={"decision": "approve"}, headers={"X-CSRF-Token": csrf_of(aud)})
    assert api.status_code == 403
    assert job_row(console, feed.agent_id, 9).state == "held"


def test_agent_events_move_the_job_along_and_resending_changes_nothing(
        console: LiveConsole) -> None:
    feed = AgentFeed(console)
    feed.emit("print.held", held(10))
    approved = feed.emit("print.approved", {"job_id": 10, "by": "sv1", "note": "fine"})
    assert job_row(console, feed.agent_id, 10).state == "approved"
    feed.emit("print.released", {"job_id": 10, "outcome": "completed"})
    feed.send(approved)  # at-least-once delivery sends it again
    row = job_row(console, feed.agent_id, 10)
    assert (row.state, row.outcome, row.decided_by) == ("released", "completed", "sv1")
    feed.emit("print.held", held(11))
    feed.emit("print.expired", {"job_id": 11})
    assert job_row(console, feed.agent_id, 11).state == "expired"
    aud = console.login("aud1")
    trail = aud.get("/print/trail")
    assert trail.status_code == 200
    for kind in ("print.held", "print.approved", "print.released", "print.expired"):
        assert f'data-kind="{kind}"' in trail.text


def test_a_refusal_from_the_agent_puts_the_job_back_or_closes_it(
        console: LiveConsole) -> None:
    feed = AgentFeed(console)
    feed.emit("print.held", held(12))
    feed.emit("print.held", held(13))
    sv = console.login("sv1")
    headers = {"X-CSRF-Token": csrf_of(sv)}
    r12 = sv.post(f"/api/v1/print/jobs/{feed.agent_id}/12/decision",
                  json={"decision": "approve"}, headers=headers)
    r13 = sv.post(f"/api/v1/print/jobs/{feed.agent_id}/13/decision",
                  json={"decision": "deny", "reason": "no"}, headers=headers)
    assert r12.status_code == 200 and r12.json()["state"] == "approving"
    assert r13.status_code == 200
    from floorguard.console.app import create_app

    hooks = create_app(console.db_url).state.result_hooks  # the console's own wiring
    engine = store(console)
    try:
        with engine.begin() as conn:
            commands.complete(conn, feed.agent_id, r12.json()["command"],
                              {"ok": False, "error": "needs a note", "still_held": True},
                              hooks)
            commands.complete(conn, feed.agent_id, r13.json()["command"],
                              {"ok": False, "error": "gone", "final": True}, hooks)
    finally:
        engine.dispose()
    assert job_row(console, feed.agent_id, 12).state == "held"
    assert job_row(console, feed.agent_id, 12).error == "needs a note"
    assert job_row(console, feed.agent_id, 13).state == "failed"
    listed = sv.get("/api/v1/print/jobs").json()
    assert [j["job_id"] for j in listed if j["agent"] == feed.agent_id] == [12]
    bad = sv.post(f"/api/v1/print/jobs/{feed.agent_id}/12/decision",
                  json={"decision": "maybe"}, headers=headers)
    assert bad.status_code == 422
