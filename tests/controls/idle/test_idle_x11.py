"""The idle control with the X server as a second witness (Xvfb + xdotool)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.controls.idle.conftest import Rig
from tests.rigs.processes import wait_until
from tests.rigs.xvfb import Xserver, start_xvfb, stop_xvfb

POLICY = 'lock_after = "5m"\nstale_hint_after = "1h"\n'


def x_ready(rig: Rig, sid: str) -> None:
    rig.follows(sid, x11="ok")


def test_a_stuck_idle_hint_is_reported_and_x_idle_is_trusted(rig: Rig,
                                                             xvfb: Xserver) -> None:
    # The desktop never sets IdleHint: logind alone would never lock this seat.
    rig.logind.add_session("c1", 1000, "alice", type="x11", display=xvfb.display)
    rig.start(POLICY)
    x_ready(rig, "c1")
    rig.advance(1800)
    assert rig.events("idle.source_stale") == []
    # Someone touches the mouse half an hour in: X's idleness starts again from there.
    wait_until(lambda: xvfb.xprintidle() >= 400, 5, 0.02, "X idle to pass 400 ms")
    rig.check()
    xvfb.xdotool("mousemove", "10", "20")
    rig.check()
    rig.advance(1800)
    assert rig.events("idle.source_stale") == []  # X idle only 30 min: nothing stale yet
    assert not any(name == "LockSession" for name, _args in rig.logind.calls())
    rig.advance(1799)
    assert rig.events("idle.source_stale") == []
    rig.advance(2)
    [stale] = rig.events("idle.source_stale")
    d = stale["details"]
    assert stale["severity"] == "warning" and stale["user"] == "alice"
    assert (d["source"], d["trusted"], d["display"]) == ("logind", "x11", xvfb.display)
    assert 3600 <= d["x_idle_for"] < 3602
    # X now says how long the seat has been idle, so the lock follows at once.
    rig.follows("c1", phase="locked")
    [locked] = rig.wait_events("idle.locked")
    assert locked["details"]["source"] == "x11"
    assert locked["details"]["idle_for"] >= 3600
    assert rig.session("c1")["stale_hint"] is True


def test_input_on_the_display_holds_off_a_lock_the_hint_alone_would_cause(
        rig: Rig, xvfb: Xserver) -> None:
    rig.logind.add_session("c1", 1000, "alice", type="x11", display=xvfb.display)
    # The hint claims idleness since long ago (a desktop that never clears it).
    rig.logind.set_idle("c1", True, rig.clock.now - 10_000)
    rig.start(POLICY)
    x_ready(rig, "c1")
    rig.follows("c1", idle_hint=True)
    rig.advance(200)
    wait_until(lambda: xvfb.xprintidle() >= 400, 5, 0.02, "X idle to pass 400 ms")
    rig.check()
    xvfb.xdotool("key", "shift")  # the operator is typing
    rig.check()
    rig.advance(150)
    assert rig.session("c1")["phase"] == "active"
    assert rig.session("c1")["idle_for"] < 160
    rig.advance(151)  # 301 s without input: both witnesses agree now
    rig.follows("c1", phase="locked")
    [locked] = rig.wait_events("idle.locked")
    assert locked["details"]["source"] == "logind"


def test_x_idle_is_read_with_the_sessions_cookie(rig: Rig, tmp_path: Path) -> None:
    server = start_xvfb(tmp_path, cookie="c0ffee" * 5 + "ab")
    holder = subprocess.Popen(["sleep", "60"], env={
        "PATH": os.environ["PATH"], "DISPLAY": server.display,
        "XAUTHORITY": str(server.auth), "XDG_SESSION_ID": "c1"})
    try:
        rig.logind.add_session("c1", os.getuid(), "root", type="x11",
                               display=server.display)
        rig.start(POLICY)
        x_ready(rig, "c1")
    finally:
        holder.kill()
        holder.wait(5)
        stop_xvfb(server)


def test_an_x_server_that_goes_away_leaves_logind_in_charge(rig: Rig,
                                                            tmp_path: Path) -> None:
    server = start_xvfb(tmp_path)
    try:
        rig.logind.add_session("c1", 1000, "alice", type="x11", display=server.display)
        rig.start('lock_after = "5m"\n')
        x_ready(rig, "c1")
    finally:
        stop_xvfb(server)
    rig.check()
    assert "lost the connection" in rig.session("c1")["x11"]
    rig.logind.set_idle("c1", True, rig.clock.now)
    rig.follows("c1", idle_hint=True)
    rig.advance(301)
    rig.follows("c1", phase="locked")
    assert rig.wait_events("idle.locked")[0]["details"]["source"] == "logind"
