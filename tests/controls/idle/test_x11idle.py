"""The X11 idle source against real Xvfb servers, with xdotool as the operator's hand."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from floorguard.agent.adapters.x11 import (
    X11Error,
    X11Idle,
    display_number,
    find_xauthority,
    read_cookie,
)
from tests.rigs.processes import wait_until
from tests.rigs.xvfb import Xserver, start_xvfb, stop_xvfb

COOKIE = "5f3a9c1e77d04b2a8e61c0ffee123456"


def test_idle_time_grows_without_input_and_input_resets_it(xvfb: Xserver) -> None:
    x = X11Idle(xvfb.display)
    try:
        first = x.idle_ms()
        wait_until(lambda: x.idle_ms() >= first + 300, 5, 0.02, "X idle time to grow")
        grown = x.idle_ms()
        assert abs(grown - xvfb.xprintidle()) < 200  # the same counter xprintidle reads
        xvfb.xdotool("mousemove", "100", "100")
        assert x.idle_ms() < grown - 250
        wait_until(lambda: x.idle_ms() >= 200, 5, 0.02, "X idle time to grow again")
        xvfb.xdotool("key", "shift")
        assert x.idle_ms() < 200
    finally:
        x.close()


def test_a_display_that_needs_a_cookie_is_opened_with_the_sessions_xauthority(
        tmp_path: Path) -> None:
    server = start_xvfb(tmp_path, cookie=COOKIE)
    holder = None
    try:
        with pytest.raises(X11Error, match="without an X authority file"):
            X11Idle(server.display).idle_ms()
        assert server.auth is not None
        assert read_cookie(server.auth, server.display) == bytes.fromhex(COOKIE)
        # A process of the session carries its XAUTHORITY; that is how the agent finds it.
        holder = subprocess.Popen(["sleep", "30"], env={
            "PATH": os.environ["PATH"], "DISPLAY": server.display,
            "XAUTHORITY": str(server.auth), "XDG_SESSION_ID": "c42"})
        wait_until(lambda: b"XDG_SESSION_ID=c42" in Path(
            f"/proc/{holder.pid}/environ").read_bytes(), 5, 0.01, "the holder process")
        found = find_xauthority(server.display, os.getuid(), "c42")
        assert found == str(server.auth)
        x = X11Idle(server.display, found)
        assert 0 <= x.idle_ms() < 60_000
        x.close()
    finally:
        if holder is not None:
            holder.kill()
            holder.wait(5)
        stop_xvfb(server)


def test_a_wrong_cookie_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    server = start_xvfb(tmp_path, cookie=COOKIE)
    try:
        other = tmp_path / "other.Xauthority"
        subprocess.run(["xauth", "-f", str(other), "add", server.display, ".",
                        "00" * 16], check=True, capture_output=True, timeout=10)
        with pytest.raises(X11Error, match=f"with the cookie from {other}"):
            X11Idle(server.display, str(other)).idle_ms()
    finally:
        stop_xvfb(server)


def test_a_vanished_server_raises_and_the_process_lives_on(tmp_path: Path) -> None:
    server = start_xvfb(tmp_path)
    x = X11Idle(server.display)
    assert x.idle_ms() >= 0
    stop_xvfb(server)
    # Xlib's default would exit() the whole agent here.
    with pytest.raises(X11Error, match="lost the connection"):
        x.idle_ms()
    with pytest.raises(X11Error, match="cannot open X display"):
        x.idle_ms()
    x.close()


def test_a_display_with_no_server_says_so() -> None:
    free = next(n for n in range(90, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    with pytest.raises(X11Error, match=f"cannot open X display :{free}"):
        X11Idle(f":{free}").idle_ms()


def test_remote_displays_are_refused() -> None:
    with pytest.raises(X11Error, match="not a local X display"):
        X11Idle("example.org:0")
    assert display_number(":3.0") == 3 and display_number("unix:7") == 7


def test_xauthority_files_that_are_damaged_or_lack_the_display_are_named(
        tmp_path: Path) -> None:
    good = tmp_path / "good"
    subprocess.run(["xauth", "-f", str(good), "add", ":5", ".", COOKIE], check=True,
                   capture_output=True, timeout=10)
    assert read_cookie(good, ":5") == bytes.fromhex(COOKIE)
    with pytest.raises(X11Error, match=f"{good} has no MIT-MAGIC-COOKIE-1 for :6"):
        read_cookie(good, ":6")
    bad = tmp_path / "bad"
    bad.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(X11Error, match=f"{bad} is damaged at byte"):
        read_cookie(bad, ":5")
    with pytest.raises(X11Error, match="cannot read the X authority file"):
        read_cookie(tmp_path / "missing", ":5")


def test_the_connection_is_kept_between_queries(xvfb: Xserver) -> None:
    x = X11Idle(xvfb.display)
    x.idle_ms()
    handle = x._dpy
    for _ in range(50):
        x.idle_ms()
    assert x._dpy == handle
    x.close()
    assert x._dpy is None


def test_dead_connections_are_closed_not_leaked(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        server = start_xvfb(tmp_path)
        x = X11Idle(server.display)
        x.idle_ms()
        stop_xvfb(server)
        with pytest.raises(X11Error):
            x.idle_ms()
        x.close()
    assert len(os.listdir("/proc/self/fd")) == before


def test_missing_x_libraries_are_named_with_their_package(
        monkeypatch: pytest.MonkeyPatch, xvfb: Xserver) -> None:
    import ctypes.util

    from floorguard.agent.adapters import x11 as x11idle

    real = ctypes.util.find_library
    monkeypatch.setattr(x11idle, "_lib", None)  # load afresh, then put the real one back
    monkeypatch.setattr(ctypes.util, "find_library",
                        lambda name: None if name == "Xss" else real(name))
    with pytest.raises(X11Error, match=r"libXss is not installed \(Debian package libxss1\)"):
        X11Idle(xvfb.display).idle_ms()
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.raises(X11Error, match=r"libX11 is not installed \(Debian package libx11-6\)"):
        X11Idle(xvfb.display).idle_ms()
