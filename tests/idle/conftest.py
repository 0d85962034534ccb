"""Real logind and X servers for the idle tests: python-dbusmock's logind template on a
private system bus, and Xvfb; every one is stopped when its test ends."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BUS = "org.freedesktop.login1"
SESSION_IFACE = "org.freedesktop.login1.Session"
MANAGER_IFACE = "org.freedesktop.login1.Manager"
MOCK_IFACE = "org.freedesktop.DBus.Mock"

# LockSession as logind does it (emit the session's Lock signal) plus what the screen
# locker then does (set LockedHint), so a "lock" takes the way it does on a real desktop.
LOCK_TAKES = """
path = "/org/freedesktop/login1/session/" + args[0]
if path not in objects:
    raise dbus.exceptions.DBusException("No session " + args[0],
                                        name="org.freedesktop.login1.NoSuchSession")
objects[path].EmitSignal("org.freedesktop.login1.Session", "Lock", "", [])
objects[path].UpdateProperties("org.freedesktop.login1.Session", {"LockedHint": dbus.Boolean(True)})
"""
# LockSession that relays the request but no locker acts on it: LockedHint stays false.
LOCK_NEVER_TAKES = """
path = "/org/freedesktop/login1/session/" + args[0]
objects[path].EmitSignal("org.freedesktop.login1.Session", "Lock", "", [])
"""
SESSION_LOCK_TAKES = """
self.EmitSignal("org.freedesktop.login1.Session", "Lock", "", [])
self.UpdateProperties("org.freedesktop.login1.Session", {"LockedHint": dbus.Boolean(True)})
"""
# Session.SetIdleHint as logind implements it: the hint and its wall-clock timestamp.
SET_IDLE_HINT = """
import time as _t
since = dbus.UInt64(int(_t.time() * 1e6)) if args[0] else dbus.UInt64(0)
self.UpdateProperties("org.freedesktop.login1.Session",
                      {"IdleHint": dbus.Boolean(args[0]), "IdleSinceHint": since,
                       "IdleSinceHintMonotonic": dbus.UInt64(int(_t.monotonic() * 1e6))})
"""


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is missing: install the Debian package {package} "
                    "(scripts/setup.sh does)")
    return path


class LogindMock:
    """Drives python-dbusmock's logind the way a desktop and logind would."""

    def __init__(self, address: str, server: Any) -> None:
        import dbus

        self.address = address
        self.bus = dbus.bus.BusConnection(address)
        self.server = server
        self.private_bus: Any = None  # the PrivateDBus, for tests that take the bus away
        self._attach(server.obj)
        self._held: list[Any] = []

    def _attach(self, manager: Any) -> None:
        import dbus

        self.manager = manager
        self.mock = dbus.Interface(manager, MOCK_IFACE)
        self.lock_takes(True)

    def restart(self) -> None:
        """logind restarts: its sessions are gone, a new instance owns the name."""
        from dbusmock.testcase import SpawnedMock

        self.server.terminate()
        self.server = SpawnedMock.spawn_with_template("logind", stdout=subprocess.DEVNULL,
                                                      stderr=subprocess.DEVNULL)
        self._attach(self.server.obj)

    def stop(self) -> None:
        self.server.terminate()

    def _obj(self, sid: str) -> Any:
        return self.bus.get_object(BUS, f"/org/freedesktop/login1/session/{sid}")

    def session_mock(self, sid: str) -> Any:
        import dbus

        return dbus.Interface(self._obj(sid), MOCK_IFACE)

    def lock_takes(self, takes: bool) -> None:
        self.mock.AddMethod(MANAGER_IFACE, "LockSession", "s", "",
                            LOCK_TAKES if takes else LOCK_NEVER_TAKES)

    def session_lock_takes(self, sid: str) -> None:
        """Make ``Session.Lock`` on this one session lock it (a fallback that works)."""
        self.session_mock(sid).AddMethod(SESSION_IFACE, "Lock", "", "", SESSION_LOCK_TAKES)

    def add_session(self, sid: str, uid: int, user: str, *, type: str = "x11",
                    display: str = "", seat: str = "seat0", active: bool = True,
                    announce: bool = True) -> str:
        import dbus

        path = str(self.mock.AddSession(sid, seat, dbus.UInt32(uid), user, active))
        smock = self.session_mock(sid)
        smock.UpdateProperties(SESSION_IFACE, {"Type": type, "Display": display})
        smock.AddMethod(SESSION_IFACE, "SetIdleHint", "b", "", SET_IDLE_HINT)
        if announce:
            self.mock.EmitSignal(MANAGER_IFACE, "SessionNew", "so",
                                 [sid, dbus.ObjectPath(path)])
        return path

    def remove_session(self, sid: str) -> None:
        import dbus

        path = f"/org/freedesktop/login1/session/{sid}"
        self.mock.RemoveObject(path)
        self.mock.EmitSignal(MANAGER_IFACE, "SessionRemoved", "so",
                             [sid, dbus.ObjectPath(path)])

    def set_idle(self, sid: str, idle: bool, since: float | None = None) -> None:
        """What the desktop reports; ``since`` is a wall-clock time in seconds."""
        import dbus

        usec = dbus.UInt64(int(since * 1e6) if (idle and since is not None) else 0)
        self.session_mock(sid).UpdateProperties(SESSION_IFACE,
                                                {"IdleHint": idle, "IdleSinceHint": usec})

    def set_idle_hint(self, sid: str, idle: bool) -> None:
        """Through logind's own method, as a desktop calls it."""
        import dbus

        dbus.Interface(self._obj(sid), SESSION_IFACE).SetIdleHint(idle)

    def set_locked(self, sid: str, locked: bool) -> None:
        self.session_mock(sid).UpdateProperties(SESSION_IFACE, {"LockedHint": locked})

    def set_active(self, sid: str, active: bool) -> None:
        self.session_mock(sid).UpdateProperties(SESSION_IFACE, {"Active": active,
                                                               "State": "active" if active
                                                               else "online"})

    def prop(self, sid: str, name: str) -> Any:
        import dbus

        value = dbus.Interface(self._obj(sid), "org.freedesktop.DBus.Properties").Get(
            SESSION_IFACE, name)
        return bool(value) if isinstance(value, dbus.Boolean) else value

    def calls(self, sid: str | None = None) -> list[tuple[str, tuple[Any, ...]]]:
        """Mock method calls so far, on the manager or on session ``sid``."""
        import dbus

        target = self.mock if sid is None else self.session_mock(sid)
        return [(str(name), tuple(args)) for _ts, name, args in target.GetCalls()
                if isinstance(target, dbus.Interface)]

    def inhibit(self, what: str, who: str, why: str, mode: str = "block") -> None:
        fd = dbus_iface(self.manager, MANAGER_IFACE).Inhibit(what, who, why, mode)
        self._held.append(fd)

    def release_inhibitors(self) -> None:
        for fd in self._held:
            os.close(fd.take())
        self._held.clear()


def dbus_iface(obj: Any, iface: str) -> Any:
    import dbus

    return dbus.Interface(obj, iface)


@contextlib.contextmanager
def running_logind() -> Iterator[LogindMock]:
    """A private system bus with python-dbusmock's logind (LockSession that takes,
    SetIdleHint that works), stopped afterwards."""
    need("dbus-daemon", "dbus")
    from dbusmock.testcase import BusType, PrivateDBus, SpawnedMock

    saved = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    bus = PrivateDBus(BusType.SYSTEM)
    bus.start()
    mock = None
    try:
        server = SpawnedMock.spawn_with_template("logind", stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL)
        mock = LogindMock(bus.address, server)
        mock.private_bus = bus
        yield mock
    finally:
        if mock is not None:
            mock.stop()
        bus.stop()
        if saved is None:
            os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = saved


@pytest.fixture
def logind() -> Iterator[LogindMock]:
    """The logind mock for one test (see ``running_logind``)."""
    with running_logind() as mock:
        yield mock


class Xserver:
    """One Xvfb display."""

    def __init__(self, proc: subprocess.Popen[bytes], display: str, auth: Path | None):
        self.proc = proc
        self.display = display
        self.auth = auth

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "XAUTHORITY")}
        env["DISPLAY"] = self.display
        if self.auth is not None:
            env["XAUTHORITY"] = str(self.auth)
        return env

    def xdotool(self, *args: str) -> None:
        subprocess.run([need("xdotool", "xdotool"), *args], env=self.env(), check=True,
                       timeout=10, capture_output=True)

    def xprintidle(self) -> int:
        res = subprocess.run([need("xprintidle", "xprintidle")], env=self.env(), check=True,
                             timeout=10, capture_output=True, text=True)
        return int(res.stdout.strip())


def start_xvfb(workdir: Path, *, cookie: str | None = None) -> Xserver:
    xvfb = need("Xvfb", "xvfb")
    auth: Path | None = None
    args = [xvfb, "-screen", "0", "640x480x24", "-nolisten", "tcp"]
    if cookie is not None:
        # The server loads every cookie in the file whatever display it names; the
        # client looks one up by display, so the entry is added again once N is known.
        auth = workdir / "Xauthority"
        subprocess.run([need("xauth", "xauth"), "-f", str(auth), "add", ":0", ".", cookie],
                       check=True, timeout=10, capture_output=True)
        args += ["-auth", str(auth)]
    r, w = os.pipe()
    proc = subprocess.Popen([*args, "-displayfd", str(w)], pass_fds=(w,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    try:
        data = b""
        deadline = time.monotonic() + 10
        while not data.endswith(b"\n"):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError("Xvfb did not start")
            chunk = os.read(r, 64)
            if not chunk:
                raise AssertionError("Xvfb exited before printing its display")
            data += chunk
    except BaseException:
        proc.kill()
        proc.wait(5)
        raise
    finally:
        os.close(r)
    display = ":" + data.decode().strip()
    if cookie is not None and auth is not None:
        subprocess.run([need("xauth", "xauth"), "-f", str(auth), "add", display, ".", cookie],
                       check=True, timeout=10, capture_output=True)
    return Xserver(proc, display, auth)


def stop_xvfb(x: Xserver) -> None:
    if x.proc.poll() is None:
        x.proc.terminate()
        try:
            x.proc.wait(5)
        except subprocess.TimeoutExpired:
            x.proc.kill()
            x.proc.wait(5)


@pytest.fixture
def xvfb(tmp_path: Path) -> Iterator[Xserver]:
    x = start_xvfb(tmp_path)
    try:
        yield x
    finally:
        stop_xvfb(x)


class FakeClock:
    """A wall clock the test moves by hand; starts at the real time so that logind's
    wall-clock hints and this clock agree."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Rig:
    """The real IdleControl in this process: a real Agent's journal and recorder in
    tmp_path, the dbusmock logind, and a clock the test moves."""

    def __init__(self, tmp_path: Path, logind: LogindMock, clock: FakeClock) -> None:
        from floorguard.agent.daemon import Agent
        from floorguard.config import AgentConfig

        self.logind = logind
        self.clock = clock
        self.agent = Agent(AgentConfig(state_dir=str(tmp_path / "state"), seat="T-07",
                                       policy=str(tmp_path / "policy.toml")), clock=clock)
        (tmp_path / "state").mkdir()
        self.agent.journal.open()
        self.agent.agent_id = "agent-test"
        self.control: Any = None

    def start(self, idle_table: str) -> Any:
        from floorguard.agent.controls.idle.control import IdleControl
        from floorguard.policy import parse_policy

        self.agent.policy = parse_policy("[idle]\n" + idle_table, "policy.toml")
        self.control = IdleControl(self.agent.ctx, bus_address=self.logind.address)
        self.control.start(self.agent.policy)
        return self.control

    def stop(self) -> None:
        if self.control is not None:
            self.control.stop()
        self.agent.journal.close()

    def check(self) -> None:
        self.control.check()

    def advance(self, seconds: float) -> None:
        """Move the clock and run one check at the new time."""
        self.clock.advance(seconds)
        self.control.check()

    def session(self, sid: str) -> dict[str, Any] | None:
        sessions: dict[str, dict[str, Any]] = self.control.status()["sessions"]
        return sessions.get(sid)

    def settle(self, predicate: Any, what: str, timeout: float = 5.0) -> None:
        """Run checks (at the same clock time) until the control has taken in what
        logind sent; D-Bus delivery is asynchronous, the clock does not move."""
        deadline = time.monotonic() + timeout
        while True:
            self.control.check()
            if predicate():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the control never saw {what}: "
                                     f"{self.control.status()}")
            time.sleep(0.005)

    def follows(self, sid: str, **fields: Any) -> None:
        def ok() -> bool:
            s = self.session(sid)
            return s is not None and all(s.get(k) == v for k, v in fields.items())

        self.settle(ok, f"session {sid} with {fields}")

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        from floorguard.journal import JournalReader

        with JournalReader(self.agent.config.state_dir) as reader:
            recs = list(reader.records())
        return [r for r in recs if kind is None or r["kind"] == kind]

    def wait_events(self, kind: str, count: int = 1, timeout: float = 5.0
                    ) -> list[dict[str, Any]]:
        """Info events are group-committed within 100 ms: wait for them to be durable."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(kind)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} x {kind}, journal has "
                                     f"{[e['kind'] for e in self.events()]}")
            time.sleep(0.02)


@pytest.fixture
def rig(tmp_path: Path, logind: LogindMock, clock: FakeClock) -> Iterator[Rig]:
    r = Rig(tmp_path, logind, clock)
    try:
        yield r
    finally:
        r.stop()
