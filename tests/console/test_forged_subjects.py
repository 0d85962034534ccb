"""A compromised agent cannot plant findings in another floor's report: console-made kinds
are refused from agents, and every agent record is reported on its sender's floor,
whatever its details name. Real enrolled tokens against a live console, both stores."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa

from floorguard.console.reports.sources import DEFAULT_TIMEZONE
from floorguard.console.store.schema import audit_log, events
from tests.console.kit import Seat, Site, unique


def try_post(seat: Seat, rec: dict[str, Any]) -> httpx.Response:
    """Post one record; on refusal, the seat's chain stays where it was."""
    seq, prev = seat.seq - 1, rec["prev"]
    resp = httpx.post(seat.url + "/api/v1/events", json={"events": [rec]},
                      headers={"Authorization": f"Bearer {seat.token}"}, timeout=10)
    if resp.status_code != 200:
        seat.seq, seat.prev = seq, prev
    return resp


def daily(site: Site, floor: str, ts: float) -> dict[str, Any]:
    day = datetime.fromtimestamp(ts, ZoneInfo(DEFAULT_TIMEZONE)).date().isoformat()
    client = site.login("aud1")
    try:
        resp = client.get("/reports/daily", params={"date": day, "format": "json",
                                                    "floor": floor})
    finally:
        client.close()
    assert resp.status_code == 200, resp.text
    (report,) = resp.json()["floors"]
    assert report["floor"] == floor
    return dict(report)


CONSOLE_MADE = ("agent.chain_broken", "agent.recovered", "agent.silent",
                "floor.sv_ratio_exceeded")


@pytest.mark.parametrize("kind", CONSOLE_MADE)
def test_an_agent_cannot_send_a_console_kind(site: Site, kind: str) -> None:
    f1, f2 = unique("F1"), unique("F2")
    rogue, victim = site.seat(f1, "R-01"), site.seat(f2, "V-01")
    sev = "info" if kind == "agent.recovered" else "violation"
    rec = rogue.record(kind, sev, details={"agent": victim.agent_id, "floor": f2,
                                           "from_seq": 1, "to_seq": 9, "reason": "altered"})
    resp = try_post(rogue, rec)
    assert resp.status_code == 422, resp.text
    (err,) = resp.json()["detail"]
    assert err["loc"] == ["events", 0, "kind"] and "only by the console" in err["msg"]
    assert site.scalar(sa.select(sa.func.count()).select_from(events)
                       .where(events.c.agent == rogue.agent_id)) == 0
    noted = site.rows(sa.select(audit_log.c.details).where(
        audit_log.c.actor == "agent:" + rogue.agent_id,
        audit_log.c.action == "agent.forged_kind"))
    assert [e["kind"] for e in noted[0].details["events"]] == [kind]
    report = daily(site, f2, time.time())
    assert report["integrity"]["chain_broken_events"] == []
    assert report["sv_ratio"]["exceeded"] == [] and report["coverage"]["silent_periods"] == []
    assert report["violations"] == []


def test_an_agent_record_naming_another_agent_stays_on_the_senders_floor(site: Site) -> None:
    f1, f2 = unique("F1"), unique("F2")
    rogue, victim = site.seat(f1, "R-02"), site.seat(f2, "V-02")
    ts = time.time()
    rec = rogue.record("usb.blocked", "violation", ts=ts, user="mallory", details={
        "agent": victim.agent_id, "floor": f2, "recognition": "storage"})
    assert try_post(rogue, rec).status_code == 200
    theirs = daily(site, f2, ts)
    assert theirs["violations"] == []
    assert theirs["summary"]["violations"] == 0 and theirs["summary"]["usb_blocked"] == 0
    ours = daily(site, f1, ts)
    assert [(v["agent"], v["seq"], v["kind"]) for v in ours["violations"]] == [
        (rogue.agent_id, rec["seq"], "usb.blocked")]
    assert ours["summary"]["usb_blocked"] == 1
