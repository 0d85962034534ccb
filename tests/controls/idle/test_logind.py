"""The logind adapter against python-dbusmock's logind on a private system bus."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from floorguard.agent.adapters.logind import Logind, LogindError, Signal, session_id_from_path
from tests.rigs.logind import LogindMock
from tests.rigs.processes import wait_until


def drained(lg: Logind, count: int) -> list[Signal]:
    got: list[Signal] = []

    def enough() -> bool:
        got.extend(lg.drain())
        return len(got) >= count

    wait_until(enough, 5, 0.005, f"{count} signals")
    return got


def test_sessions_and_their_properties_are_read(logind: LogindMock) -> None:
    logind.add_session("c1", 1000, "alice", type="x11", display=":4")
    logind.add_session("c2", 1001, "bob", type="wayland", seat="seat1", active=False)
    lg = Logind(logind.address)
    try:
        rows = sorted(lg.list_sessions())
        assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
            ("c1", 1000, "alice", "seat0"), ("c2", 1001, "bob", "seat1")]
        by_id = {s.id: s for s in lg.sessions()}
        c1, c2 = by_id["c1"], by_id["c2"]
        assert (c1.user, c1.uid, c1.seat, c1.type, c1.display, c1.cls) == (
            "alice", 1000, "seat0", "x11", ":4", "user")
        assert c1.graphical and c1.active and not c1.locked_hint and not c1.idle_hint
        assert c1.idle_since is None
        assert (c2.type, c2.active, c2.state) == ("wayland", False, "online")
    finally:
        lg.close()


def test_signals_follow_sessions_idleness_and_locks(logind: LogindMock) -> None:
    lg = Logind(logind.address)
    try:
        path = logind.add_session("c1", 1000, "alice")
        sigs = drained(lg, 2)
        assert Signal("new", path, "c1") in sigs
        since = time.time() - 30
        logind.set_idle("c1", True, since)
        [changed] = drained(lg, 1)
        assert changed.kind == "changed" and changed.path == path
        info = lg.session(path)
        assert info.idle_hint and info.idle_since == pytest.approx(since, abs=1e-5)
        lg.lock_session("c1")
        kinds = [s.kind for s in drained(lg, 2)]
        assert kinds == ["lock", "changed"]
        assert lg.session(path).locked_hint
        logind.remove_session("c1")
        assert drained(lg, 1) == [Signal("removed", path, "c1")]
    finally:
        lg.close()


def test_set_idle_hint_as_a_desktop_calls_it(logind: LogindMock) -> None:
    path = logind.add_session("c1", 1000, "alice")
    lg = Logind(logind.address)
    try:
        before = time.time()
        logind.set_idle_hint("c1", True)
        info = lg.session(path)
        assert info.idle_hint and info.idle_since is not None
        assert before - 1 <= info.idle_since <= time.time() + 1
        assert info.idle_since_monotonic is not None
    finally:
        lg.close()


def test_inhibitors_are_listed_with_who_why_and_pid(logind: LogindMock) -> None:
    logind.inhibit("idle:sleep", "vlc", "Watching")
    lg = Logind(logind.address)
    try:
        [inh] = lg.list_inhibitors()
        assert (inh.what, inh.who, inh.why, inh.mode) == ("idle:sleep", "vlc", "Watching",
                                                         "block")
        assert inh.blocks_idle and inh.uid == 1000 and inh.pid == 123456
        logind.release_inhibitors()
        wait_until(lambda: lg.list_inhibitors() == [], 5, 0.01, "the release")
    finally:
        lg.close()


def test_calls_on_a_missing_session_fail_with_loginds_error(logind: LogindMock) -> None:
    lg = Logind(logind.address)
    try:
        with pytest.raises(LogindError, match="NoSuchSession"):
            lg.lock_session("nope")
        with pytest.raises(LogindError):
            lg.session("/org/freedesktop/login1/session/nope")
    finally:
        lg.close()


def test_no_bus_and_no_logind_are_clear_errors(tmp_path: Path) -> None:
    from dbusmock.testcase import BusType, PrivateDBus

    with pytest.raises(LogindError, match="cannot connect to the system bus"):
        Logind(f"unix:path={tmp_path}/nothing-here")
    saved = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    empty = PrivateDBus(BusType.SYSTEM)  # a bus with nobody on it
    empty.start()
    try:
        with pytest.raises(LogindError, match="is not on the system bus"):
            Logind(empty.address)
    finally:
        empty.stop()
        if saved is None:
            os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = saved


def test_escaped_session_paths_give_the_session_id() -> None:
    assert session_id_from_path("/org/freedesktop/login1/session/_31") == "1"
    assert session_id_from_path("/org/freedesktop/login1/session/c2") == "c2"
    assert session_id_from_path("/org/freedesktop/login1/session/_32_33") == "23"


def test_set_locked_hint_reaches_the_session(logind: LogindMock) -> None:
    path = logind.add_session("c1", 1000, "alice")
    lg = Logind(logind.address)
    try:
        lg.set_locked_hint(path, True)
        assert lg.session(path).locked_hint is True
        lg.set_locked_hint(path, False)
        assert lg.session(path).locked_hint is False
    finally:
        lg.close()
