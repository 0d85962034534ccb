"""The idle control against python-dbusmock's logind, driven by a clock the test moves."""

from __future__ import annotations

import pytest

from floorguard.events import verify_chain
from tests.controls.idle.conftest import Rig

POLICY = 'warn_after = "4m"\nlock_after = "5m"\n'


def idle_since_now(rig: Rig, sid: str) -> None:
    rig.logind.set_idle(sid, True, rig.clock.now)
    rig.follows(sid, idle_hint=True)


def manager_calls(rig: Rig, name: str) -> list[tuple[object, ...]]:
    return [args for n, args in rig.logind.calls() if n == name]


def test_idle_session_is_warned_then_locked_and_the_unlock_is_recorded(rig: Rig) -> None:
    rig.logind.add_session("c1", 1000, "alice", type="wayland")
    rig.start(POLICY)
    rig.follows("c1", user="alice", phase="active")
    assert rig.agent.operator.current() == "alice"
    idle_since_now(rig, "c1")

    rig.advance(239)
    assert rig.events("idle.warned") == []
    rig.advance(2)
    [warned] = rig.wait_events("idle.warned")
    assert warned["user"] == "alice" and warned["seat"] == "T-07"
    assert warned["details"]["source"] == "logind"
    assert warned["details"]["idle_for"] == 241.0
    assert warned["details"]["lock_in"] == 59.0
    assert warned["details"]["session"] == "c1"
    assert manager_calls(rig, "LockSession") == []

    rig.advance(59.75)  # 300.75 s idle: the lock goes out at this check
    assert manager_calls(rig, "LockSession") == [("c1",)]
    rig.follows("c1", phase="locked")
    [locked] = rig.wait_events("idle.locked")
    d = locked["details"]
    assert (d["source"], d["initiated"], d["method"], d["attempts"]) == (
        "logind", "idle", "LockSession", 1)
    assert d["idle_for"] == 300.8 and d["lock_signal_seen"] is True
    assert locked["user"] == "alice"
    assert rig.agent.state["locked"] is True
    assert rig.agent.state["session_user"] == "alice"

    rig.advance(120)  # still away: nothing more happens
    assert len(manager_calls(rig, "LockSession")) == 1

    rig.logind.set_locked("c1", False)  # the operator is back and unlocks
    rig.logind.set_idle("c1", False)
    rig.settle(lambda: rig.session("c1")["phase"] == "active", "the unlock")
    [unlocked] = rig.wait_events("idle.unlocked")
    assert unlocked["details"]["locked_for"] == 120.0
    assert rig.agent.state["locked"] is False

    # Idleness counts again from the unlock, not from the old hint.
    idle_since_now(rig, "c1")
    rig.advance(200)
    assert len(rig.events("idle.warned")) == 1
    rig.advance(50)
    rig.wait_events("idle.warned", 2)
    bad, why = verify_chain(rig.events())
    assert bad is None, why


def test_a_lock_that_never_takes_is_reported_and_retried_until_a_door_works(
        rig: Rig) -> None:
    rig.logind.lock_takes(False)
    rig.logind.add_session("c1", 1000, "alice", type="wayland")
    rig.start('lock_after = "5m"\nverify_within = "5s"\nretry_every = "10s"\n')
    rig.follows("c1", phase="active")
    idle_since_now(rig, "c1")

    rig.advance(300)
    assert manager_calls(rig, "LockSession") == [("c1",)]
    rig.advance(4.75)
    assert rig.events("idle.lock_failed") == []
    rig.advance(0.25)  # verify_within has passed: the lock did not take
    [f1] = rig.events("idle.lock_failed")  # violations are durable at once
    assert f1["severity"] == "violation" and f1["user"] == "alice"
    assert (f1["details"]["method"], f1["details"]["attempt"]) == ("LockSession", 1)
    assert f1["details"]["lock_signal_seen"] is True  # logind relayed it; nobody locked
    # The first fallback goes out at once.
    assert [n for n, _ in rig.logind.calls("c1") if n == "Lock"] == ["Lock"]
    assert rig.session("c1")["phase"] == "locking"

    rig.advance(5)
    f2 = rig.events("idle.lock_failed")[1]
    assert (f2["details"]["method"], f2["details"]["attempt"]) == ("Session.Lock", 2)
    assert f2["details"]["next_attempt_in"] == 5.0  # retry_every after attempt 2
    rig.advance(4.75)
    assert rig.session("c1")["attempts"] == 2
    rig.advance(0.25)  # attempt 3: loginctl, a real client on the same bus
    assert rig.session("c1")["attempts"] == 3
    rig.advance(5)
    f3 = rig.events("idle.lock_failed")[2]
    assert f3["details"]["method"] == "loginctl"
    if f3["details"]["error"] is None:  # a machine booted with systemd: it reached logind
        assert len(manager_calls(rig, "LockSession")) == 2
    else:  # without systemd as PID 1 loginctl refuses; the failure names it
        assert f3["details"]["error"].startswith("loginctl exited")

    # A locker now answers the session's own Lock method; LockSession still does nothing.
    rig.logind.session_lock_takes("c1")
    rig.advance(5)  # attempt 4: LockSession again
    rig.advance(5)
    assert len(rig.events("idle.lock_failed")) == 4
    rig.advance(5)  # attempt 5: Session.Lock, which now takes
    rig.follows("c1", phase="locked")
    [locked] = rig.wait_events("idle.locked")
    assert (locked["details"]["method"], locked["details"]["attempts"]) == ("Session.Lock", 5)
    assert locked["details"]["took"] == 35.0  # attempts at 0, 5, 15, 25, 35 s
    assert [e["details"]["attempt"] for e in rig.events("idle.lock_failed")] == [1, 2, 3, 4]
    rig.advance(60)
    assert len(rig.events("idle.lock_failed")) == 4  # locked: reporting stops


def test_operator_back_before_the_lock_took_stops_the_retries(rig: Rig) -> None:
    rig.logind.lock_takes(False)
    rig.logind.add_session("c1", 1000, "alice", type="wayland")
    rig.start('lock_after = "5m"\nverify_within = "5s"\nretry_every = "10s"\n')
    idle_since_now(rig, "c1")
    rig.advance(300)
    rig.advance(5)
    assert len(rig.events("idle.lock_failed")) == 1
    rig.advance(5)
    assert len(rig.events("idle.lock_failed")) == 2
    rig.logind.set_idle("c1", False)
    rig.settle(lambda: rig.session("c1")["phase"] == "active", "the operator's return")
    rig.advance(60)
    assert len(rig.events("idle.lock_failed")) == 2
    assert rig.session("c1")["attempts"] == 0


def test_an_idle_inhibitor_is_recorded_by_name_and_ignored(rig: Rig) -> None:
    rig.logind.add_session("c1", 1000, "alice", type="wayland")
    rig.logind.inhibit("idle", "mpv", "Playing a video")
    rig.logind.inhibit("sleep", "backup", "Copying")  # not an idle inhibitor
    rig.start(POLICY)
    [inh] = rig.events("idle.inhibited")
    d = inh["details"]
    assert inh["severity"] == "warning"
    assert (d["who"], d["why"], d["pid"], d["uid"], d["action"]) == (
        "mpv", "Playing a video", 123456, 1000, "ignored")
    assert d["program"] == "mpv" and d["sessions"] == ["c1"]
    assert inh["user"] == "alice"
    idle_since_now(rig, "c1")
    rig.advance(300)
    rig.follows("c1", phase="locked")
    rig.advance(30)  # rescans see the same inhibitor: recorded once
    assert len(rig.events("idle.inhibited")) == 1


def test_a_respected_inhibitor_keeps_the_session_unlocked_until_released(rig: Rig) -> None:
    rig.logind.add_session("c1", 1000, "alice", type="wayland")
    rig.logind.inhibit("idle:sleep", "presentation", "Slides")
    rig.start(POLICY + 'inhibitors = "respect"\n')
    assert rig.events("idle.inhibited")[0]["details"]["action"] == "respected"
    idle_since_now(rig, "c1")
    rig.advance(600)
    assert manager_calls(rig, "LockSession") == []
    assert rig.events("idle.warned") == []
    rig.logind.release_inhibitors()

    def released() -> bool:
        rig.advance(5)  # the next rescan reads the inhibitors again
        return rig.control.status()["inhibitors"] == []

    rig.settle(released, "the inhibitor's release")
    assert manager_calls(rig, "LockSession") == [("c1",)]


def test_two_sessions_are_followed_and_locked_each_on_its_own(rig: Rig) -> None:
    rig.logind.add_session("c1", 1000, "alice", type="x11")
    rig.logind.add_session("c2", 1001, "bob", type="wayland", seat="seat1")
    rig.logind.add_session("c3", 1002, "carol", type="tty")  # a console login: not locked
    rig.start(POLICY)
    rig.follows("c2", user="bob")
    idle_since_now(rig, "c2")
    rig.logind.set_idle("c3", True, rig.clock.now)
    rig.advance(301)
    rig.follows("c2", phase="locked")
    assert rig.session("c1")["phase"] == "active"
    [locked] = rig.wait_events("idle.locked")
    assert locked["user"] == "bob" and locked["details"]["logind_seat"] == "seat1"
    assert manager_calls(rig, "LockSession") == [("c2",)]

    idle_since_now(rig, "c1")
    rig.advance(301)
    rig.follows("c1", phase="locked")
    assert manager_calls(rig, "LockSession") == [("c2",), ("c1",)]
    assert [e["user"] for e in rig.wait_events("idle.locked", 2)] == ["bob", "alice"]


def test_a_session_that_disappears_mid_lock_is_dropped_quietly(rig: Rig) -> None:
    rig.logind.lock_takes(False)
    rig.logind.add_session("c1", 1000, "alice", type="wayland")
    rig.logind.add_session("c2", 1001, "bob", type="wayland", seat="seat1")
    rig.start(POLICY)
    idle_since_now(rig, "c1")
    rig.advance(300)
    assert rig.session("c1")["phase"] == "locking"
    rig.logind.remove_session("c1")  # logged out while the lock was pending
    rig.settle(lambda: rig.session("c1") is None, "the session's removal")
    rig.advance(60)
    assert rig.events("idle.lock_failed") == []
    # The control goes on with the others.
    rig.logind.lock_takes(True)
    idle_since_now(rig, "c2")
    rig.advance(301)
    rig.follows("c2", phase="locked")


def test_a_session_logind_removes_without_a_signal_goes_at_the_next_rescan(
        rig: Rig) -> None:
    rig.logind.add_session("c1", 1000, "alice", type="wayland")
    rig.start(POLICY)
    rig.logind.mock.RemoveObject("/org/freedesktop/login1/session/c1")
    rig.advance(5)
    assert rig.session("c1") is None
    assert rig.agent.operator.current() is None


def test_user_switch_moves_the_operator_and_the_background_session_still_locks(
        rig: Rig) -> None:
    rig.logind.add_session("c1", 1000, "alice", type="x11")
    rig.start(POLICY)
    rig.follows("c1", active=True)
    assert rig.agent.operator.current() == "alice"
    # bob switches user on the same seat: his session becomes the active one.
    rig.logind.add_session("c2", 1001, "bob", type="x11")
    rig.logind.set_active("c1", False)
    rig.follows("c1", active=False)
    rig.follows("c2", active=True)
    assert rig.agent.operator.current() == "bob"
    assert rig.agent.state["session_user"] == "bob"
    # alice's session, left behind, goes idle and is locked in her name.
    idle_since_now(rig, "c1")
    rig.advance(301)
    rig.follows("c1", phase="locked")
    [locked] = rig.wait_events("idle.locked")
    assert locked["user"] == "alice" and locked["details"]["foreground"] is False
    assert rig.agent.state["locked"] is False  # bob's session, in front, is open
    # Events without a session name the operator in front: bob.
    rec = rig.agent.record("idle", "idle.warned", "info", {"probe": True}, wait=True)
    assert rec is not None and rec["user"] == "bob"


def test_a_session_locked_by_its_user_is_recorded_as_such(rig: Rig) -> None:
    rig.logind.add_session("c1", 1000, "alice", type="wayland")
    rig.start(POLICY)
    rig.logind.set_locked("c1", True)  # Super+L before leaving
    rig.follows("c1", phase="locked")
    [locked] = rig.wait_events("idle.locked")
    assert locked["details"]["initiated"] == "session"
    assert locked["details"]["method"] is None
    assert manager_calls(rig, "LockSession") == []


def test_suspend_after_a_long_absence_goes_through_logind(rig: Rig) -> None:
    rig.logind.add_session("c1", 1000, "alice", type="wayland")
    rig.start(POLICY + 'suspend_after = "30m"\n')
    idle_since_now(rig, "c1")
    rig.advance(301)
    rig.follows("c1", phase="locked")
    rig.advance(1497)
    assert manager_calls(rig, "Suspend") == []
    rig.advance(3)
    assert manager_calls(rig, "Suspend") == [(False,)]
    [sus] = rig.wait_events("idle.suspended")
    assert sus["details"]["idle_for"] == 1801.0 and sus["details"]["error"] is None
    rig.advance(600)
    assert len(manager_calls(rig, "Suspend")) == 1


def test_lock_seat_command_locks_the_active_session_now(rig: Rig) -> None:
    rig.logind.add_session("c1", 1000, "alice", type="wayland")
    rig.start(POLICY)
    assert "idle.lock_seat" in rig.agent.commands.names()
    result = rig.agent.commands.run("idle.lock_seat", {"by": "sv1", "reason": "sv"})
    assert result == {"ok": True, "locked": True, "method": "LockSession",
                      "session": "c1", "user": "alice"}
    rig.follows("c1", phase="locked")
    [locked] = rig.wait_events("idle.locked")
    assert locked["details"]["initiated"] == "console"
    assert locked["details"]["requested_by"] == "sv1"
    again = rig.agent.commands.run("idle.lock_seat", {})
    assert again["ok"] is True and again["already"] is True


def test_lock_seat_command_says_why_it_could_not_lock(rig: Rig) -> None:
    rig.start(POLICY)
    assert rig.agent.commands.run("idle.lock_seat", {}) == {
        "ok": False, "error": "there is no active graphical session on seat0"}
    assert rig.agent.commands.run("idle.lock_seat", {"session": 7})["error"] == (
        "'session' must be a session id string")


def test_lock_seat_command_reports_a_lock_that_did_not_take(rig: Rig) -> None:
    rig.logind.lock_takes(False)
    rig.logind.add_session("c1", 1000, "alice", type="wayland")
    rig.start(POLICY + 'verify_within = "300ms"\n')
    result = rig.agent.commands.run("idle.lock_seat", {"actor": "sv1"})
    assert result["ok"] is False and result["locked"] is False
    assert "did not report locked within 0.3s" in result["error"]
    rig.advance(0.5)
    [failed] = rig.events("idle.lock_failed")
    assert failed["details"]["initiated"] == "console"
    assert failed["details"]["requested_by"] == "sv1"


def test_policy_reload_takes_new_limits(rig: Rig) -> None:
    from floorguard.policy import parse_policy

    rig.logind.add_session("c1", 1000, "alice", type="wayland")
    rig.start(POLICY)
    idle_since_now(rig, "c1")
    rig.control.apply_policy(parse_policy('[idle]\nlock_after = "1m"\n', "p.toml"))
    rig.advance(61)
    assert manager_calls(rig, "LockSession") == [("c1",)]


def test_a_logind_restart_is_followed_and_locking_goes_on(rig: Rig) -> None:
    rig.logind.add_session("c1", 1000, "alice", type="wayland")
    rig.start(POLICY)
    rig.follows("c1", user="alice")
    rig.logind.restart()
    rig.settle(lambda: rig.session("c1") is None, "the restart")
    rig.logind.add_session("c2", 1001, "bob", type="wayland")
    rig.follows("c2", user="bob")
    idle_since_now(rig, "c2")
    rig.advance(301)
    rig.follows("c2", phase="locked")
    assert manager_calls(rig, "LockSession") == [("c2",)]


def test_losing_logind_is_recorded_and_the_control_reconnects(rig: Rig) -> None:
    rig.logind.add_session("c1", 1000, "alice", type="wayland")
    rig.start(POLICY)
    rig.follows("c1", user="alice")
    rig.logind.server.terminate()  # logind gone; the bus stays
    rig.settle(lambda: rig.control.status()["logind"] != "connected", "logind's loss")
    [gap] = rig.events("agent.control_unavailable")
    assert gap["control"] == "agent" and gap["details"]["control"] == "idle"
    assert gap["details"]["reason"].startswith("lost logind")
    rig.advance(5)
    rig.advance(5)
    assert len(rig.events("agent.control_unavailable")) == 1  # once per outage
    rig.logind.restart()
    rig.logind.add_session("c2", 1001, "bob", type="wayland")
    rig.advance(5)
    rig.follows("c2", user="bob")
    assert rig.session("c1") is None
    idle_since_now(rig, "c2")
    rig.advance(301)
    rig.follows("c2", phase="locked")


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_system_bus_going_away_is_recorded_and_no_thread_dies_unnoticed(
        rig: Rig) -> None:
    rig.logind.add_session("c1", 1000, "alice", type="wayland")
    rig.start(POLICY)
    rig.follows("c1", user="alice")
    rig.logind.stop()
    rig.logind.private_bus.stop()
    rig.settle(lambda: rig.control.status()["logind"] != "connected", "the bus's loss")
    [gap] = rig.events("agent.control_unavailable")
    assert gap["details"]["reason"].startswith("lost logind")
    rig.advance(5)  # reconnecting fails with a message that says where it looked
    assert "cannot connect to the system bus" in rig.control.status()["logind"]
    assert rig.agent.commands.run("idle.lock_seat", {})["error"].startswith(
        "logind is not reachable")
