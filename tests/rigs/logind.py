"""A private system bus with python-dbusmock's logind, plus the methods its template
lacks (LockSession that really locks, SetIdleHint), for the idle tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from typing import Any

from tests.rigs.processes import (
    need,
)

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
