"""Each section of the daily report on its own, on small data: the per-operator and
per-seat tables, the SV span by hour, print jobs, controls unavailable, coverage and
integrity. (``test_daily_figures.py`` checks the whole report of the fixture day.)"""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace as Row

from floorguard.console.reports.daily import (
    HOUR_US,
    Window,
    _Counts,
    _Floor,
    controls_unavailable,
    coverage_agents,
    hourly_span,
    people_table,
    print_jobs,
)

DAY = date(2026, 12, 3)
W = Window.of(DAY, "Asia/Tokyo")


def _g(seat: str, user: str, kind: str, severity: str, n: int) -> Row:
    return Row(seat=seat, user=user, control=kind.split(".")[0], kind=kind,
               severity=severity, sub="", n=n, pages=0)


def test_a_hot_desking_operator_shows_every_seat_and_a_seat_every_operator() -> None:
    grouped = [_g("A-01", "sato", "usb.blocked", "violation", 2),
               _g("A-02", "sato", "idle.locked", "info", 3),
               _g("A-02", "kato", "files.flagged", "warning", 1),
               _g("A-03", "", "agent.started", "info", 1)]
    operators = people_table(grouped, "user", "seat")
    assert [o["user"] for o in operators] == ["kato", "sato"]  # no row for nobody
    sato = operators[1]
    assert sato["seats"] == ["A-01", "A-02"]
    assert (sato["events"], sato["violations"], sato["warnings"]) == (5, 2, 0)
    assert sato["usb.blocked"] == 2 and sato["idle.locked"] == 3
    seats = people_table(grouped, "seat", "user")
    assert [s["seat"] for s in seats] == ["A-01", "A-02", "A-03"]
    assert seats[1]["users"] == ["kato", "sato"] and seats[2]["users"] == []


def test_the_sv_span_marks_the_hours_over_the_ratio() -> None:
    counts = _Counts(grouped=[], totals={}, hourly=[
        Row(hour=9, n=40, violations=1, operators=12), Row(hour=10, n=10, violations=0,
                                                           operators=8)])
    duty = [0] * 24
    duty[9], duty[10] = 1, 1
    breach = Row(ts_us=W.start_us + 9 * HOUR_US + 5, agent="console", seq=1)
    hours = hourly_span(W, counts, duty, [breach], max_per_sv=10)
    assert len(hours) == 24
    nine, ten = hours[9], hours[10]
    assert (nine["operators"], nine["svs_on_duty"], nine["operators_per_sv"]) == (12, 1, 12.0)
    assert nine["over_ratio"] is True and nine["ratio_exceeded_events"] == 1
    assert ten["over_ratio"] is False and ten["ratio_exceeded_events"] == 0
    assert hours[0]["start"] == "2026-12-03T00:00:00+09:00"
    # Without a duty source the ratio is not judged, rather than judged as zero SVs.
    unknown = hourly_span(W, counts, None, [], max_per_sv=10)
    assert unknown[9]["svs_on_duty"] is None and unknown[9]["over_ratio"] is None


def test_an_expired_job_takes_the_page_count_its_held_record_gave() -> None:
    def ev(seq: int, kind: str, **details: object) -> Row:
        return Row(ts_us=W.start_us + seq * 1_000_000, agent="a1", seq=seq, seat="A-01",
                   user="sato", kind=kind, details=details)

    by_kind = {"print.held": [ev(1, "print.held", job_id=7, pages=3, title="list")],
               "print.expired": [ev(2, "print.expired", job_id=7)],
               "print.approved": [], "print.denied": [], "print.released": []}
    jobs = print_jobs(W, by_kind)
    assert [(j["kind"], j["job"], j["pages"]) for j in jobs] == [
        ("print.held", "7", 3), ("print.expired", "7", 3)]
    # A page count that is not a number (a hostile agent's true) is not a page count.
    by_kind["print.held"] = [ev(1, "print.held", job_id=8, pages=True)]
    by_kind["print.expired"] = []
    assert print_jobs(W, by_kind)[0]["pages"] is None


def test_controls_unavailable_say_which_control_and_why() -> None:
    rows = [Row(ts_us=W.start_us, agent="a1", seat="A-01",
                details={"control": "idle", "reason": "no logind on the system bus"}),
            Row(ts_us=W.start_us + 1, agent="a2", seat="A-02",
                details={"control": "print", "error": "cupsd refused"}),
            Row(ts_us=W.start_us + 2, agent="a3", seat="A-03", details=None)]
    out = controls_unavailable(W, rows)
    assert [(u["control"], u["reason"]) for u in out] == [
        ("idle", "no logind on the system bus"), ("print", "cupsd refused"), ("", "")]


def test_coverage_lists_expected_agents_never_heard_and_heard_ones_not_expected() -> None:
    floor = _Floor(conn=None, w=W, name="3F",  # type: ignore[arg-type]
                   agents={"a1": Row(host="pc1", seat="A-01"),
                           "a2": Row(host="pc2", seat="A-02")})
    heard = {"a1": {"hours": 8, "events": 120, "heartbeats": 900,
                    "first": W.start_us + 9 * HOUR_US, "last": W.start_us + 17 * HOUR_US},
             "x9": {"hours": 1, "events": 3, "heartbeats": 0, "first": W.start_us,
                    "last": W.start_us}}
    rows = {r["agent"]: r for r in coverage_agents(floor, heard, ["a1", "a2"])}
    assert rows["a1"]["reporting"] and rows["a1"]["last_heard"] == "2026-12-03T17:00:00+09:00"
    assert rows["a2"]["expected"] and not rows["a2"]["reporting"]
    assert rows["a2"]["first_heard"] is None
    assert not rows["x9"]["expected"] and rows["x9"]["seat"] == ""
