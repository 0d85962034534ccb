"""The fixture day's report, figure by figure, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from sqlalchemy.engine import Engine

from floorguard.console.reports.daily import build_report
from floorguard.console.reports.render import render
from tests.reports import fixture_day
from tests.reports.fixture_day import A1, A2, A3, A4, B1, FLOOR, P0, P1, P2

DAY = date(2026, 11, 26)
NOW = 1_900_000_000_000_000  # long after the day: nothing is cut at "now"
SCHEMA = Path(__file__).resolve().parents[2] / "src/floorguard/data/report_daily.schema.json"


def t(hhmm: str) -> str:
    return f"2026-11-26T{hhmm}+09:00"


def report(engine: Engine, **kw: Any) -> dict[str, Any]:
    with engine.connect() as conn:
        return build_report(conn, DAY, now_us=lambda: NOW, **kw)


def floor_of(doc: dict[str, Any], name: str = FLOOR) -> dict[str, Any]:
    return next(f for f in doc["floors"] if f["floor"] == name)


def ev(time: str, agent: str, seq: int, seat: str, user: str | None, control: str,
       kind: str, severity: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"time": t(time), "agent": agent, "seq": seq, "seat": seat, "user": user,
            "control": control, "kind": kind, "severity": severity, "details": details}


def test_every_figure_of_the_fixture_day(store: Engine) -> None:
    doc = report(store)
    assert doc["schema"] == "floorguard.report.daily/1"
    assert [f["floor"] for f in doc["floors"]] == ["2F south", FLOOR]
    f = floor_of(doc)
    assert f["timezone"] == "Asia/Tokyo"
    assert f["window"] == {"start": t("00:00:00"), "end": "2026-11-27T00:00:00+09:00"}

    # A1 15 records in the day (its seq 1 is from the 25th) + A2 10 (its 11th is after
    # midnight) + A3 5 (seq 5 never arrived) + 3 the console made that day (silent,
    # recovered, ratio; its chain_broken is dated when it ingested the altered record).
    assert f["summary"] == {
        "agents_expected": 4, "agents_reporting": 3, "events": 33, "violations": 10,
        "violations_acknowledged": 0, "usb_blocked": 5, "idle_locked": 3,
        "prints_approved": 1, "silent_periods": 1, "chains_verified": 2,
        "chains_with_faults": 1, "policy_changes": 4, "sv_ratio_exceeded": 1}

    cov = f["coverage"]
    assert (cov["agents_expected"], cov["agents_reporting"]) == (4, 3)
    assert cov["agents"] == [
        {"agent": A1, "host": "pc-t-01", "seat": "T-01", "expected": True, "reporting": True,
         "hours_heard": 6, "events": 15, "heartbeats": 0, "first_heard": t("09:00:00"),
         "last_heard": t("16:00:00")},
        # hours 9, 10, 13, 14, 15, 23 from events and 20, 21 from heartbeats
        {"agent": A2, "host": "pc-t-02", "seat": "T-02", "expected": True, "reporting": True,
         "hours_heard": 8, "events": 10, "heartbeats": 3, "first_heard": t("09:00:00"),
         "last_heard": t("23:45:00")},
        # hours 9, 10, 13 from events and 12 from the heartbeat that ended its silence
        {"agent": A3, "host": "pc-t-03", "seat": "T-03", "expected": True, "reporting": True,
         "hours_heard": 4, "events": 5, "heartbeats": 2, "first_heard": t("09:00:00"),
         "last_heard": t("13:00:00")},
        {"agent": A4, "host": "pc-t-04", "seat": "T-04", "expected": True, "reporting": False,
         "hours_heard": 0, "events": 0, "heartbeats": 0, "first_heard": None,
         "last_heard": None}]
    # from its last heartbeat to the heartbeat that recovered it
    assert cov["silent_periods"] == [{"agent": A3, "seat": "T-03", "start": t("10:59:30"),
                                      "end": t("12:30:00"), "minutes_in_day": 90.5}]
    assert cov["controls_unavailable"] == [{"time": t("15:00:00"), "agent": A2,
                                            "seat": "T-02", "control": "print",
                                            "reason": "cupsd not reachable"}]

    c = f["controls"]
    # A3's seq 4 was altered from storage to phone after hashing: the count shows what is
    # stored, and the integrity section shows that it cannot be trusted.
    assert c["usb"]["blocked"] == {"storage": 1, "phone": 2, "network": 1, "other": 1,
                                   "total": 5}
    assert c["usb"]["allowed_exceptions"] == 1
    assert c["usb"]["exceptions"] == [ev(
        "09:30:00", A1, 6, "T-01", "alice", "usb", "usb.allowed", "info",
        {"rule": "usb.device[0b0e:24c8]", "device": "0b0e:24c8"})]
    assert c["idle"] == {"locked": 3, "lock_failed": 1, "lock_failures": [ev(
        "16:00:00", A1, 16, "T-01", "bob", "idle", "idle.lock_failed", "violation",
        {"error": "no session"})]}
    p = c["print"]
    assert {k: p[k] for k in ("held", "approved", "denied", "expired")} == {
        "held": {"jobs": 3, "pages": 10}, "approved": {"jobs": 1, "pages": 3},
        "denied": {"jobs": 1, "pages": 5}, "expired": {"jobs": 1, "pages": 2}}
    assert p["approved_by"] == {"sv1": 1}
    job = {"title": None, "queue": None, "by": None}
    assert p["jobs"] == [
        {**job, "time": t("10:00:00"), "agent": A2, "seq": 4, "seat": "T-02", "user": "bob",
         "kind": "print.held", "job": "21", "pages": 2},
        {**job, "time": t("10:30:00"), "agent": A1, "seq": 9, "seat": "T-01",
         "user": "alice", "kind": "print.held", "job": "11", "pages": 3, "title": "form"},
        {**job, "time": t("10:35:00"), "agent": A1, "seq": 10, "seat": "T-01",
         "user": "alice", "kind": "print.approved", "job": "11", "pages": 3, "by": "sv1"},
        {**job, "time": t("10:45:00"), "agent": A2, "seq": 5, "seat": "T-02", "user": "bob",
         "kind": "print.expired", "job": "21", "pages": 2, "queue": "floor1"},
        {**job, "time": t("14:30:00"), "agent": A1, "seq": 13, "seat": "T-01", "user": "bob",
         "kind": "print.held", "job": "12", "pages": 5},
        {**job, "time": t("14:40:00"), "agent": A1, "seq": 14, "seat": "T-01", "user": "bob",
         "kind": "print.denied", "job": "12", "pages": 5, "by": "sv2"}]
    assert c["files"] == {"flagged": 2}
    assert c["processes"] == {"flagged": 1, "killed": 1}
    assert c["network"] == {"flagged": 1}

    zero = {k: 0 for k in ("usb.blocked", "usb.allowed", "idle.locked", "idle.lock_failed",
                           "print.held", "print.approved", "print.denied", "print.expired",
                           "files.flagged", "processes.flagged", "processes.killed",
                           "network.flagged")}
    assert f["operators"] == [
        {**zero, "user": "alice", "seats": ["T-01"], "events": 10, "warnings": 0,
         "violations": 2, "usb.blocked": 2, "usb.allowed": 2, "idle.locked": 1,
         "print.held": 1, "print.approved": 1},
        # bob hot-desks: T-02 in the morning, T-01 in the afternoon
        {**zero, "user": "bob", "seats": ["T-01", "T-02"], "events": 10, "warnings": 1,
         "violations": 3, "usb.blocked": 2, "idle.lock_failed": 1, "print.held": 2,
         "print.denied": 1, "print.expired": 1, "files.flagged": 1},
        {**zero, "user": "carol", "seats": ["T-02"], "events": 4, "warnings": 2,
         "violations": 2, "processes.flagged": 1, "processes.killed": 1,
         "network.flagged": 1},
        {**zero, "user": "dave", "seats": ["T-03"], "events": 5, "warnings": 0,
         "violations": 1, "usb.blocked": 1, "idle.locked": 2}]
    assert f["seats"] == [
        # the console's ratio finding is about the floor, not a seat
        {**zero, "seat": "", "users": [], "events": 1, "warnings": 0, "violations": 1},
        {**zero, "seat": "T-01", "users": ["alice", "bob"], "events": 15, "warnings": 1,
         "violations": 4, "usb.blocked": 3, "usb.allowed": 2, "idle.locked": 1,
         "idle.lock_failed": 1, "print.held": 2, "print.approved": 1, "print.denied": 1,
         "files.flagged": 1},
        {**zero, "seat": "T-02", "users": ["bob", "carol"], "events": 10, "warnings": 3,
         "violations": 3, "usb.blocked": 1, "print.held": 1, "print.expired": 1,
         "files.flagged": 1, "processes.flagged": 1, "processes.killed": 1,
         "network.flagged": 1},
        # + the console's agent.silent (a violation) and agent.recovered for the seat
        {**zero, "seat": "T-03", "users": ["dave"], "events": 7, "warnings": 0,
         "violations": 2, "usb.blocked": 1, "idle.locked": 2}]

    hours = {h["hour"]: h for h in f["hourly"]}
    assert len(f["hourly"]) == 24
    busy = {i: (h["events"], h["violations"], h["operators"], h["ratio_exceeded_events"])
            for i, h in hours.items() if h["events"]}
    assert busy == {9: (11, 3, 3, 0), 10: (7, 1, 3, 0), 11: (2, 1, 1, 0), 12: (1, 0, 0, 0),
                    13: (3, 1, 2, 0), 14: (5, 3, 2, 1), 15: (2, 0, 2, 0), 16: (1, 1, 1, 0),
                    23: (1, 0, 0, 0)}
    # Nobody marked themselves on duty that day: zero SVs, no ratio to show.
    assert all(h["svs_on_duty"] == 0 and h["operators_per_sv"] is None
               and h["over_ratio"] is None for h in f["hourly"])
    assert hours[14]["start"] == t("14:00:00")
    assert f["sv_ratio"] == {"max_operators_per_sv": None, "exceeded": [ev(
        "14:10:00", "console", 4, "", None, "floor", "floor.sv_ratio_exceeded", "violation",
        {"floor": FLOOR, "operators": 12, "svs": 1, "max_operators_per_sv": 10})]}

    src = "/etc/floorguard/policy.toml"
    assert f["policies"] == {
        "in_force": [{"hash": P0, "agents": [A1], "sources": []},
                     {"hash": P1, "agents": [A1, A2, A3], "sources": [src]},
                     {"hash": P2, "agents": [A1], "sources": ["console"]}],
        "changes": [
            {"time": t("09:00:01"), "agent": A1, "seat": "T-01", "hash": P1, "previous": P0,
             "source": src},
            {"time": t("09:00:01"), "agent": A2, "seat": "T-02", "hash": P1,
             "previous": None, "source": src},
            {"time": t("09:00:01"), "agent": A3, "seat": "T-03", "hash": P1,
             "previous": None, "source": src},
            {"time": t("11:00:00"), "agent": A1, "seat": "T-01", "hash": P2, "previous": P1,
             "source": "console"}]}

    integ = f["integrity"]
    assert integ["method"] == "checked at ingest"
    assert integ["all_verified"] is False
    assert integ["agents"] == [
        {"agent": A1, "seat": "T-01", "records": 15, "first_seq": 2, "last_seq": 16,
         "missing": 0, "declared_dropped": 0, "bad_hash": 0, "bad_link": 0,
         "first_bad_seq": None, "verified": True},
        {"agent": A2, "seat": "T-02", "records": 10, "first_seq": 1, "last_seq": 10,
         "missing": 0, "declared_dropped": 0, "bad_hash": 0, "bad_link": 0,
         "first_bad_seq": None, "verified": True},
        {"agent": A3, "seat": "T-03", "records": 5, "first_seq": 1, "last_seq": 6,
         "missing": 1, "declared_dropped": 0, "bad_hash": 1, "bad_link": 0, "first_bad_seq": 4,
         "verified": False}]
    assert integ["chain_broken_events"] == []  # recorded on the day it was ingested

    assert [(v["time"], v["agent"], v["seq"], v["seat"], v["user"], v["kind"])
            for v in f["violations"]] == [
        (t("09:05:00"), A2, 3, "T-02", "bob", "usb.blocked"),
        (t("09:10:00"), A1, 4, "T-01", "alice", "usb.blocked"),
        (t("09:20:00"), A1, 5, "T-01", "alice", "usb.blocked"),
        (t("10:30:00"), A3, 4, "T-03", "dave", "usb.blocked"),
        (t("11:05:00"), "console", 2, "T-03", None, "agent.silent"),
        (t("13:00:05"), A2, 7, "T-02", "carol", "processes.killed"),
        (t("14:00:00"), A1, 12, "T-01", "bob", "usb.blocked"),
        (t("14:00:00"), A2, 8, "T-02", "carol", "network.flagged"),
        (t("14:10:00"), "console", 4, "", None, "floor.sv_ratio_exceeded"),
        (t("16:00:00"), A1, 16, "T-01", "bob", "idle.lock_failed")]
    # Nobody acknowledged anything that day: "no" for each, read from the console.
    assert all(v["acknowledged"] is False and v["acknowledged_by"] is None
               for v in f["violations"])
    assert f["sources"]["acknowledgements"] == "console"

    counts = {(r["kind"], r["sub"]): (r["n"], r["pages"]) for r in f["counts"]}
    assert counts[("usb.allowed", "device_rule")] == (1, 0)
    assert counts[("usb.allowed", "class")] == (1, 0)
    assert counts[("print.approved", "sv1")] == (1, 3)
    assert counts[("print.denied", "sv2")] == (1, 5)
    assert sum(r["n"] for r in f["counts"]) == 33

    assert [m["control"] for m in f["mapping"]] == ["usb", "idle", "print", "files",
                                                    "processes", "network", "floor", "agent"]


def test_other_floor_is_kept_apart(store: Engine) -> None:
    south = floor_of(report(store), "2F south")
    assert south["summary"]["events"] == 1
    assert south["summary"]["violations"] == 1
    assert [a["agent"] for a in south["coverage"]["agents"]] == [B1]
    assert south["operators"][0]["user"] == "erin"
    only = report(store, floors=[FLOOR])
    assert [f["floor"] for f in only["floors"]] == [FLOOR]


def test_deep_check_of_stored_rows_agrees_with_ingest(store: Engine) -> None:
    deep = floor_of(report(store, deep=True))
    assert deep["integrity"]["method"] == "stored rows re-hashed"
    fast = floor_of(report(store))
    assert deep["integrity"]["agents"] == fast["integrity"]["agents"]


def test_json_output_matches_its_schema(store: Engine) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema,
                                                format_checker=jsonschema.FormatChecker())
    for lang in ("en", "ja"):
        doc = json.loads(render(report(store, lang=lang), "json"))
        errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]
        assert errors == []
    broken = json.loads(render(report(store), "json"))
    del broken["floors"][0]["integrity"]["all_verified"]
    assert not validator.is_valid(broken)


@pytest.mark.parametrize("tz,start", [("Asia/Tokyo", "2026-11-26T00:00:00+09:00"),
                                      ("UTC", "2026-11-26T00:00:00+00:00")])
def test_day_is_counted_in_the_floor_time_zone(store: Engine, tz: str, start: str) -> None:
    from floorguard.console.reports.daily import build_floor
    from floorguard.console.reports.sources import FloorSettings

    with store.connect() as conn:
        f = build_floor(conn, DAY, FLOOR, settings=FloorSettings(timezone=tz),
                        now_us=lambda: NOW)
    assert f["window"]["start"] == start
    # In UTC the day ends at 09:00 Tokyo on the 27th, so A2's 00:10 lock falls inside it
    # and A1's whole morning (before 09:00 Tokyo = 00:00 UTC) still does too.
    assert f["controls"]["idle"]["locked"] == (3 if tz == "Asia/Tokyo" else 4)


def test_ratio_by_hour_and_acknowledgements_when_their_sources_answer(store: Engine) -> None:
    from floorguard.console.reports.daily import build_floor
    from floorguard.console.reports.sources import Acknowledgement, FloorSettings

    def one_sv_until_noon(_conn: Any, _floor: str, hours: list[int]) -> list[int]:
        return [1 if i < 12 else 2 for i in range(len(hours))]

    def acks(_conn: Any, keys: list[tuple[str, int]]) -> dict[Any, Acknowledgement]:
        return {(A1, 4): Acknowledgement("sv1", fixture_day.us("09:12:00"))}

    with store.connect() as conn:
        f = build_floor(conn, DAY, FLOOR, settings=FloorSettings(max_operators_per_sv=2),
                        now_us=lambda: NOW, sv_on_duty=one_sv_until_noon,
                        acknowledgements=acks)
    h = {x["hour"]: x for x in f["hourly"]}
    # 09:00 has alice, bob and dave for one SV allowed two: over; 13:00 has 2 for 2 SVs.
    assert (h[9]["operators"], h[9]["svs_on_duty"], h[9]["operators_per_sv"],
            h[9]["over_ratio"]) == (3, 1, 3.0, True)
    assert (h[13]["operators"], h[13]["svs_on_duty"], h[13]["operators_per_sv"],
            h[13]["over_ratio"]) == (2, 2, 1.0, False)
    assert h[3]["operators_per_sv"] == 0.0 and h[3]["over_ratio"] is False
    assert f["sources"]["sv_on_duty"] == "console"
    assert f["summary"]["violations_acknowledged"] == 1
    v = {(x["agent"], x["seq"]): x for x in f["violations"]}
    assert (v[(A1, 4)]["acknowledged"], v[(A1, 4)]["acknowledged_by"],
            v[(A1, 4)]["acknowledged_at"]) == (True, "sv1", t("09:12:00"))
    assert v[(A1, 5)]["acknowledged"] is False and v[(A1, 5)]["acknowledged_by"] is None


def test_the_console_records_the_altered_record_on_the_day_it_ingests_it(
        store: Engine) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    import sqlalchemy as sa

    from floorguard.console.store.schema import events

    with store.connect() as conn:
        ts_us = conn.execute(sa.select(events.c.ts_us).where(
            events.c.kind == "agent.chain_broken")).scalar_one()
        day = datetime.fromtimestamp(ts_us / 1e6, ZoneInfo("Asia/Tokyo")).date()
        doc = build_report(conn, day, [FLOOR], now_us=lambda: NOW)
    f = doc["floors"][0]
    broken = f["integrity"]["chain_broken_events"]
    assert [(e["details"]["agent"], e["details"]["from_seq"], e["details"]["reason"])
            for e in broken] == [(A3, 4, "altered")]
    assert f["integrity"]["all_verified"] is False
    assert [v["kind"] for v in f["violations"]] == ["agent.chain_broken"]
    # counted through the same rollup as every other event of that day
    assert f["summary"]["events"] == 1


def test_floor_settings_come_from_the_policy_the_console_holds(empty_store: Engine) -> None:
    from floorguard.console.floor_policy import store as store_policy
    from floorguard.console.reports.daily import build_floor

    text = '[floor]\nname = "3F north"\nmax_operators_per_sv = 7\ntimezone = "UTC"\n'
    with empty_store.begin() as conn:
        _policy, problems = store_policy(conn, FLOOR, text, "floor3.toml", "admin1")
        assert problems == []
    with empty_store.connect() as conn:
        f = build_floor(conn, DAY, FLOOR, now_us=lambda: NOW)
        other = build_floor(conn, DAY, "2F south", now_us=lambda: NOW)
    assert f["timezone"] == "UTC" and f["settings"] == {
        "max_operators_per_sv": 7, "policy_file": "console: floor3.toml"}
    assert other["timezone"] == "Asia/Tokyo"
    assert other["settings"]["max_operators_per_sv"] is None


def test_acknowledgements_and_duty_stints_recorded_in_the_console_reach_the_report(
        store: Engine) -> None:
    from floorguard.console.reports.daily import build_floor
    from floorguard.console.reports.sources import FloorSettings
    from floorguard.console.store.schema import sv_duty, violation_acks

    with store.begin() as conn:
        conn.execute(violation_acks.insert().values(
            agent=A1, seq=4, actor="sv1", comment="spoke to the operator",
            ts_us=fixture_day.us("09:12:00")))
        conn.execute(violation_acks.insert().values(  # a later second word changes nothing
            agent=A1, seq=4, actor="sv2", comment="again", ts_us=fixture_day.us("09:30:00")))
        conn.execute(sv_duty.insert(), [
            {"user_name": "sv1", "floor": FLOOR, "on_us": fixture_day.us("08:30:00"),
             "off_us": fixture_day.us("12:00:00")},
            {"user_name": "sv2", "floor": FLOOR, "on_us": fixture_day.us("13:30:00"),
             "off_us": None},
            {"user_name": "sv3", "floor": "2F south", "on_us": fixture_day.us("08:00:00"),
             "off_us": None}])
    with store.connect() as conn:
        f = build_floor(conn, DAY, FLOOR, settings=FloorSettings(max_operators_per_sv=2),
                        now_us=lambda: NOW)
    h = {x["hour"]: x for x in f["hourly"]}
    assert [h[i]["svs_on_duty"] for i in (8, 9, 11, 12, 13, 14, 23)] == [1, 1, 1, 0, 1, 1, 1]
    assert (h[9]["operators"], h[9]["operators_per_sv"], h[9]["over_ratio"]) == (3, 3.0, True)
    assert f["sources"] == {**f["sources"], "sv_on_duty": "console",
                            "acknowledgements": "console"}
    assert f["summary"]["violations_acknowledged"] == 1
    v = {(x["agent"], x["seq"]): x for x in f["violations"]}
    assert (v[(A1, 4)]["acknowledged"], v[(A1, 4)]["acknowledged_by"],
            v[(A1, 4)]["acknowledged_at"]) == (True, "sv1", t("09:12:00"))
