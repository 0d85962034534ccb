"""Pure decisions of the console, without a store: how events fold into a seat's state,
which state a tile shows, when the SV ratio is exceeded, floor settings validation,
console event chains and the login throttle window."""

from __future__ import annotations

from floorguard.console.floor_state import ratio_exceeded
from floorguard.console.floors import FloorPolicy
from floorguard.console.ingest.seats import RECENT_VIOLATION_US, fold, tile_state
from floorguard.console.web.floor_settings import validate_settings

MIN = 60 * 1_000_000


def rec(kind: str, severity: str = "info", user: str | None = "op", ts_us: int = 0
        ) -> dict[str, object]:
    return {"kind": kind, "severity": severity, "user": user, "seat": "S", "host": "h",
            "ts_us": ts_us, "ts": ""}


def test_fold_tracks_operator_idle_lock_and_last_violation() -> None:
    s = fold({"locked": False}, [rec("agent.started", ts_us=1), rec("idle.warned", "warning",
                                                                     ts_us=2)])
    assert s["user"] == "op" and s["idle_since_us"] == 2 and not s["locked"]
    s = fold(s, [rec("idle.locked", ts_us=3)])
    assert s["locked"] and s["idle_since_us"] is None
    s = fold(s, [rec("usb.blocked", "violation", ts_us=5), rec("idle.unlocked", ts_us=6)])
    assert not s["locked"] and s["last_violation_us"] == 5
    assert s["last_violation_kind"] == "usb.blocked"
    # A late record from a backlog does not roll the seat back, but counts as a violation.
    s = fold(s, [rec("processes.killed", "violation", ts_us=4), rec("idle.locked", ts_us=4)])
    assert not s["locked"] and s["last_violation_us"] == 5
    s = fold(s, [rec("agent.stopped", user=None, ts_us=9)])
    assert s["user"] is None


def _tile(**kw: object) -> str:
    base: dict[str, object] = dict(now=100 * MIN, last_seen_us=100 * MIN,
                                   silent_after_us=90_000_000, status=None,
                                   last_violation_us=None, idle_since_us=None, locked=False,
                                   idle_unlocked_after_us=5 * MIN)
    base.update(kw)
    return tile_state(**base)  # type: ignore[arg-type]


def test_tile_state_most_urgent_first() -> None:
    assert _tile() == "ok"
    assert _tile(last_seen_us=None) == "silent"
    assert _tile(last_seen_us=100 * MIN - 91_000_000, last_violation_us=100 * MIN) == "silent"
    assert _tile(last_violation_us=100 * MIN - RECENT_VIOLATION_US) == "violation"
    assert _tile(last_violation_us=100 * MIN - RECENT_VIOLATION_US - 1) == "ok"
    assert _tile(idle_since_us=99 * MIN) == "idle"
    assert _tile(idle_since_us=99 * MIN, locked=True) == "locked"
    assert _tile(status={"locked": True}) == "locked"
    assert _tile(status={"locked": False}, locked=True) == "ok"  # the heartbeat is newer
    assert _tile(status={"locked": False, "idle_seconds": 301}) == "idle"
    assert _tile(status={"locked": False, "idle_seconds": 299}) == "ok"


def test_ratio_exceeded_only_with_a_limit_and_operators() -> None:
    assert not ratio_exceeded(30, 0, None)
    assert not ratio_exceeded(0, 0, 10)
    assert ratio_exceeded(1, 0, 10)
    assert not ratio_exceeded(20, 2, 10)
    assert ratio_exceeded(21, 2, 10)


def test_floor_defaults_follow_the_policy_schema() -> None:
    p = FloorPolicy("3F")
    assert (p.max_operators_per_sv, p.timezone, p.idle_unlocked_after_s,
            p.heartbeat_interval_s) == (None, "Asia/Tokyo", 300.0, 30.0)
    assert p.silent_after_us == 90_000_000


def test_floor_settings_validation_names_each_bad_field() -> None:
    values, problems = validate_settings("12", "Asia/Tokyo", "5m", "30s")
    assert problems == [] and values["max_operators_per_sv"] == 12
    values, problems = validate_settings("", "UTC", "90s", "1m")
    assert values["max_operators_per_sv"] is None and values["heartbeat_interval_s"] == 60
    _, problems = validate_settings("-1", "Nowhere/City", "0s", "soon")
    assert len(problems) == 4
