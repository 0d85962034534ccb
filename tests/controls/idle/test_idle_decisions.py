"""The idle control's decisions as plain functions, without any OS."""

from __future__ import annotations

import pytest

from floorguard.agent.adapters.logind import Inhibitor
from floorguard.agent.controls.idle.rules import (
    affected_by,
    hint_is_stale,
    idle_stage,
    lock_doors,
    x_input_between,
)
from floorguard.policy import IdleSettings, PolicyError, parse_policy


def test_stages_follow_the_limits() -> None:
    limits = IdleSettings(lock_after=300, warn_after=240)
    assert [idle_stage(t, limits) for t in (0, 239.9, 240, 299.9, 300, 10_000)] == [
        "active", "active", "warn", "warn", "lock", "lock"]
    assert idle_stage(299, IdleSettings(lock_after=300)) == "active"  # no warn_after: no warning


def test_x_input_is_seen_when_the_counter_grew_less_than_the_time_that_passed() -> None:
    # 10 s idle, 0.25 s later: 10.25 s without input, 0.05 s if someone moved the mouse.
    assert not x_input_between(10_000, 100.0, 10_250, 100.25)
    assert x_input_between(10_000, 100.0, 50, 100.25)
    # Jitter within the tolerance is not taken for input.
    assert not x_input_between(10_000, 100.0, 10_200, 100.25)
    assert x_input_between(10_000, 100.0, 10_100, 100.25)


def test_a_hint_is_stale_only_when_it_stayed_false_all_through_x_idleness() -> None:
    common = {"now": 10_000.0, "limit": 3600.0}
    assert hint_is_stale(hint_idle=False, hint_true_at=None, x_since=6000.0, **common)
    assert not hint_is_stale(hint_idle=False, hint_true_at=None, x_since=6500.0, **common)
    assert not hint_is_stale(hint_idle=True, hint_true_at=9999.0, x_since=0.0, **common)
    # The hint went true during this idle stretch: the desktop maintains it.
    assert not hint_is_stale(hint_idle=False, hint_true_at=7000.0, x_since=6000.0, **common)
    # ...but a true hint from before this stretch proves nothing about now.
    assert hint_is_stale(hint_idle=False, hint_true_at=5000.0, x_since=6000.0, **common)
    assert not hint_is_stale(hint_idle=False, hint_true_at=None, x_since=None, **common)


def test_lock_doors_add_xdg_screensaver_for_x11_only() -> None:
    assert lock_doors("wayland") == ["LockSession", "Session.Lock", "loginctl"]
    assert lock_doors("x11")[-1] == "xdg-screensaver"


def test_inhibitors_affect_their_users_sessions_and_root_ones_affect_all() -> None:
    mine = Inhibitor("idle", "mpv", "video", "block", 1000, 5)
    root = Inhibitor("idle:sleep", "kiosk", "", "block", 0, 6)
    sleep_only = Inhibitor("sleep", "backup", "", "delay", 1000, 7)
    assert affected_by(mine, 1000) and not affected_by(mine, 1001)
    assert affected_by(root, 1001)
    assert not affected_by(sleep_only, 1000)


def test_limits_come_from_the_policy_with_their_defaults() -> None:
    policy = parse_policy('[idle]\nlock_after = "5m"\nwarn_after = "4m"\n', "p.toml")
    limits = policy.settings(IdleSettings)
    assert limits == IdleSettings(lock_after=300.0, warn_after=240.0, verify_within=5.0,
                                retry_every=10.0, suspend_after=None, inhibitors="ignore",
                                stale_hint_after=3600.0, notify=True)


@pytest.mark.parametrize(("table", "message"), [
    ('lock_after = "5m"\nwarn_after = "6m"', "warn_after must be shorter"),
    ('lock_after = "5m"\nsuspend_after = "1m"', "suspend_after must be longer"),
    ('lock_after = "5m"\ninhibitors = "obey"', "inhibitors"),
    ('warn_after = "1m"', "lock_after"),
])
def test_bad_idle_tables_are_refused_naming_the_line(table: str, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy("[idle]\n" + table + "\n", "floor.toml")
    assert message in str(err.value) and "floor.toml:" in str(err.value)
