"""Enrollment cannot take over an agent: a code enrolls a new agent, or re-enrolls exactly
the agent it was made for; a revoked agent stays revoked; every refusal is audited.
Against a live console on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import sqlalchemy as sa

from floorguard.console.store.schema import agents, audit_log
from tests.console.kit import Seat, Site, unique


def enroll(site: Site, code: str, agent_id: str, seat: str = "X-99") -> httpx.Response:
    return httpx.post(site.url + "/api/v1/enroll", json={
        "code": code, "agent_id": agent_id, "host": "attacker-pc", "seat": seat},
        timeout=10)


def refusals(site: Site, agent_id: str) -> list[dict[str, Any]]:
    rows = site.rows(sa.select(audit_log.c.details).where(
        audit_log.c.actor == "agent:" + agent_id,
        audit_log.c.action == "agent.enroll_refused"))
    return [dict(r.details) for r in rows]


def agent_row(site: Site, agent_id: str) -> Any:
    return site.rows(sa.select(agents).where(agents.c.id == agent_id))[0]


def still_works(seat: Seat) -> bool:
    resp = httpx.post(seat.url + "/api/v1/events", json={"events": [seat.record(
        "agent.started")]}, headers={"Authorization": f"Bearer {seat.token}"}, timeout=10)
    if resp.status_code != 200:
        seat.seq -= 1
    return resp.status_code == 200


def code(site: Site, *args: str) -> str:
    res = site.live.cli("enroll-code", *args)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_a_fresh_code_cannot_take_over_an_enrolled_agent(site: Site) -> None:
    f1, f2 = unique("F1"), unique("F2")
    victim = site.seat(f1, "T-01")
    before = agent_row(site, victim.agent_id)
    resp = enroll(site, code(site, "--floor", f2), victim.agent_id)
    assert resp.status_code == 403, resp.text
    assert "already enrolled" in resp.json()["detail"]
    assert f"enroll-code --agent {victim.agent_id}" in resp.json()["detail"]
    after = agent_row(site, victim.agent_id)
    assert (after.floor, after.token_hash, after.seat, after.host) == (
        f1, before.token_hash, before.seat, before.host)
    assert still_works(victim)
    assert [r["reason"] for r in refusals(site, victim.agent_id)] == ["agent_exists"]


def test_a_revoked_agent_stays_revoked(site: Site) -> None:
    floor = unique("F")
    seat = site.seat(floor, "T-02")
    res = site.live.cli("agent", "revoke", seat.agent_id)
    assert res.returncode == 0, res.stderr
    revoked_at = agent_row(site, seat.agent_id).revoked_us
    assert revoked_at is not None
    resp = enroll(site, code(site, "--floor", floor), seat.agent_id)
    assert resp.status_code == 403, resp.text
    assert agent_row(site, seat.agent_id).revoked_us == revoked_at
    assert not still_works(seat)
    # nor can an admin make a re-enrollment code for it
    res = site.live.cli("enroll-code", "--agent", seat.agent_id)
    assert res.returncode == 1 and "stays revoked" in res.stderr, res.stderr
    assert refusals(site, seat.agent_id)[0]["reason"] == "agent_exists"


def test_a_refused_code_is_audited_and_stays_unused(site: Site) -> None:
    agent_id = str(uuid.uuid4())
    resp = enroll(site, "not-a-real-code-123", agent_id)
    assert resp.status_code == 403 and "expired" in resp.json()["detail"]
    assert [r["reason"] for r in refusals(site, agent_id)] == ["bad_code"]


def test_enroll_code_for_an_agent_reenrolls_that_agent_only(site: Site) -> None:
    floor = unique("F")
    seat = site.seat(floor, "T-03")
    other = site.seat(floor, "T-04")
    for_seat = code(site, "--agent", seat.agent_id)
    # not for another enrolled agent, nor for a new one
    assert enroll(site, for_seat, other.agent_id).status_code == 403
    newcomer = str(uuid.uuid4())
    resp = enroll(site, for_seat, newcomer)
    assert resp.status_code == 403 and f"re-enrolls agent {seat.agent_id} only" in \
        resp.json()["detail"]
    assert site.rows(sa.select(agents.c.id).where(agents.c.id == newcomer)) == []
    assert still_works(other)
    assert [r["reason"] for r in refusals(site, other.agent_id)] == ["other_agent"]
    # the agent it was made for gets a new token; the old one stops working at once
    resp = enroll(site, for_seat, seat.agent_id, seat="T-03b")
    assert resp.status_code == 200, resp.text
    old_token = seat.token
    assert not still_works(seat)
    seat.token = resp.json()["token"]
    assert seat.token != old_token and still_works(seat)
    row = agent_row(site, seat.agent_id)
    assert (row.floor, row.seat, row.revoked_us) == (floor, "T-03b", None)
    # used once
    assert enroll(site, for_seat, seat.agent_id).status_code == 403


def test_enroll_code_for_an_unknown_agent_is_refused(site: Site) -> None:
    res = site.live.cli("enroll-code", "--agent", str(uuid.uuid4()))
    assert res.returncode == 1 and "no agent" in res.stderr, res.stderr
