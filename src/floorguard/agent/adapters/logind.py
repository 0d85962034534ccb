"""A thin adapter over systemd-logind on the system D-Bus (jeepney).

It lists sessions and reads their properties, calls ``LockSession``, ``Session.Lock``,
``Suspend`` and ``ListInhibitors``, and follows the signals that say what changed:
``SessionNew``/``SessionRemoved`` on the manager, ``PropertiesChanged`` (IdleHint,
LockedHint, Active...) and ``Lock``/``Unlock`` on sessions.

Threading choice: one blocking reader thread per connection owns the socket's receiving
side. It hands each method reply to the caller waiting for it and puts every signal on a
queue; it runs no other code, and anything that ends it (the bus going away) is caught
and turned into ``alive == False``, never a dead thread nobody noticed. The idle control
drains the queue in its clock-driven ``check()``, so all session state changes on one
thread and a test drives the whole control by advancing a clock. The subscriptions are
explicit ``AddMatch`` rules (not proxies built from introspection), because logind does
not have to list its signals in introspection data (python-dbusmock's logind does not).

The connection honours ``DBUS_SYSTEM_BUS_ADDRESS``, or takes an explicit address.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import structlog
from jeepney import DBusAddress, HeaderFields, MatchRule, Message, MessageType, new_method_call
from jeepney.bus_messages import message_bus
from jeepney.io.threading import DBusConnection, ReceiveStopped, open_dbus_connection
from jeepney.wrappers import DBusErrorResponse, unwrap_msg

log = structlog.get_logger("floorguard.logind")

BUS_NAME = "org.freedesktop.login1"
MANAGER_PATH = "/org/freedesktop/login1"
MANAGER_IFACE = "org.freedesktop.login1.Manager"
SESSION_IFACE = "org.freedesktop.login1.Session"
PROPS_IFACE = "org.freedesktop.DBus.Properties"
SESSION_PREFIX = "/org/freedesktop/login1/session/"

GRAPHICAL_TYPES = ("x11", "wayland", "mir")
CALL_TIMEOUT = 3.0  # logind answers in milliseconds; a stuck bus must not stall checks


class LogindError(Exception):
    """logind could not be reached or refused a call; the message says which and why."""


@dataclass
class SessionInfo:
    """One logind session as the idle control needs it. Times are seconds (float);
    ``idle_since`` is wall-clock (CLOCK_REALTIME), ``idle_since_monotonic`` is
    CLOCK_MONOTONIC, either None when logind reports 0 (never idle)."""

    id: str
    path: str
    user: str = ""
    uid: int = -1
    seat: str = ""
    type: str = ""
    cls: str = ""
    state: str = ""
    active: bool = False
    idle_hint: bool = False
    idle_since: float | None = None
    idle_since_monotonic: float | None = None
    locked_hint: bool = False
    display: str = ""
    leader: int = 0
    remote: bool = False

    @property
    def graphical(self) -> bool:
        return self.type in GRAPHICAL_TYPES and self.cls in ("user", "")

    def update(self, props: dict[str, Any]) -> None:
        """Apply a (partial) ``a{sv}`` dict as GetAll or PropertiesChanged gives it
        (jeepney hands each variant over as ``(signature, value)``)."""
        for key, variant in props.items():
            _apply(self, key, variant[1])


def _usec(value: Any) -> float | None:
    try:
        v = int(value)
    except (TypeError, ValueError):
        return None
    return v / 1e6 if v > 0 else None


def _apply(info: SessionInfo, key: str, value: Any) -> None:
    if key == "Name":
        info.user = str(value)
    elif key == "User" and isinstance(value, tuple) and value:
        info.uid = int(value[0])
    elif key == "Seat" and isinstance(value, tuple) and value:
        info.seat = str(value[0])
    elif key == "Type":
        info.type = str(value)
    elif key == "Class":
        info.cls = str(value)
    elif key == "State":
        info.state = str(value)
    elif key == "Active":
        info.active = bool(value)
    elif key == "IdleHint":
        info.idle_hint = bool(value)
    elif key == "IdleSinceHint":
        info.idle_since = _usec(value)
    elif key == "IdleSinceHintMonotonic":
        info.idle_since_monotonic = _usec(value)
    elif key == "LockedHint":
        info.locked_hint = bool(value)
    elif key == "Display":
        info.display = str(value)
    elif key == "Leader":
        info.leader = int(value)
    elif key == "Remote":
        info.remote = bool(value)


@dataclass(frozen=True)
class Inhibitor:
    """A logind inhibitor lock: what it blocks (``idle``, ``sleep``...), who holds it and why."""

    what: str
    who: str
    why: str
    mode: str
    uid: int
    pid: int

    @property
    def blocks_idle(self) -> bool:
        return "idle" in self.what.split(":")


@dataclass
class Signal:
    """A logind signal we follow. ``kind``: new, removed, changed, lock, unlock, restarted."""

    kind: str
    path: str
    session_id: str = ""
    changed: dict[str, Any] = field(default_factory=dict)
    invalidated: tuple[str, ...] = ()


def session_id_from_path(path: str) -> str:
    """logind escapes session ids in object paths (``_31`` is ``1``); undo that."""
    label = path.rsplit("/", 1)[-1]
    out: list[str] = []
    i = 0
    while i < len(label):
        if label[i] == "_" and _is_hex(label[i + 1:i + 3]):
            out.append(chr(int(label[i + 1:i + 3], 16)))
            i += 3
        else:
            out.append(label[i])
            i += 1
    return "".join(out)


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789abcdefABCDEF" for c in text)


_RULES = (
    MatchRule(type="signal", sender=BUS_NAME, interface=MANAGER_IFACE, member="SessionNew",
              path=MANAGER_PATH),
    MatchRule(type="signal", sender=BUS_NAME, interface=MANAGER_IFACE,
              member="SessionRemoved", path=MANAGER_PATH),
    MatchRule(type="signal", sender=BUS_NAME, interface=PROPS_IFACE,
              member="PropertiesChanged", path_namespace="/org/freedesktop/login1/session"),
    MatchRule(type="signal", sender=BUS_NAME, interface=SESSION_IFACE, member="Lock"),
    MatchRule(type="signal", sender=BUS_NAME, interface=SESSION_IFACE, member="Unlock"),
)


def _owner_rule() -> MatchRule:
    rule = MatchRule(type="signal", sender="org.freedesktop.DBus",
                     interface="org.freedesktop.DBus", member="NameOwnerChanged")
    rule.add_arg_condition(0, BUS_NAME)
    return rule


class _Reader:
    """The connection's receiving side on its own thread: replies to their callers,
    signals to a queue. Guarded: when it ends, pending calls fail and ``alive`` is False."""

    def __init__(self, conn: DBusConnection, signals: queue.Queue[Message]):
        self.conn = conn
        self.signals = signals
        self.error = ""
        self._pending: dict[int, Future[Message]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="logind-dbus", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def call(self, msg: Message, timeout: float) -> Message:
        fut: Future[Message] = Future()
        with self._lock:
            if not self._thread.is_alive():
                raise ConnectionError(self.error or "the connection is closed")
            serial = next(self.conn.outgoing_serial)
            self._pending[serial] = fut
        try:
            self.conn.send(msg, serial=serial)
            return fut.result(timeout)
        except FutureTimeout:
            raise TimeoutError(f"no answer within {timeout:g}s") from None
        finally:
            with self._lock:
                self._pending.pop(serial, None)

    def _run(self) -> None:
        try:
            while True:
                msg = self.conn.receive()
                reply_to = msg.header.fields.get(HeaderFields.reply_serial)
                if reply_to is not None:
                    with self._lock:
                        fut = self._pending.get(reply_to)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
                elif msg.header.message_type == MessageType.signal:
                    self.signals.put(msg)
        except ReceiveStopped:
            self.error = "the connection was closed"
        except Exception as exc:  # the bus went away, or sent something unreadable
            self.error = f"the system bus connection ended: {exc or type(exc).__name__}"
            if not self._closed:
                log.warning("lost the system bus", error=self.error)
        finally:
            with self._lock:
                pending = list(self._pending.values())
            for fut in pending:
                if not fut.done():
                    fut.set_exception(ConnectionError(self.error))

    def close(self) -> None:
        self._closed = True
        self.conn.interrupt()
        self._thread.join(timeout=5)
        self.conn.close()


class Logind:
    """A connection to logind. ``address`` defaults to ``DBUS_SYSTEM_BUS_ADDRESS`` (or the
    standard system bus socket)."""

    def __init__(self, address: str | None = None, *, subscribe: bool = True):
        self.address = address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") \
            or "unix:path=/run/dbus/system_bus_socket"
        try:
            conn = open_dbus_connection(self.address)
        except (OSError, ValueError, ConnectionError) as exc:
            raise LogindError(f"cannot connect to the system bus at {self.address}: {exc}. "
                              "Is dbus running (or DBUS_SYSTEM_BUS_ADDRESS right)?") from None
        self._signals: queue.Queue[Message] = queue.Queue()
        self._reader = _Reader(conn, self._signals)
        self._manager = DBusAddress(MANAGER_PATH, bus_name=BUS_NAME, interface=MANAGER_IFACE)
        try:
            self._call(new_method_call(self._bus_proxy(), "GetNameOwner", "s", (BUS_NAME,)))
        except LogindError:
            self.close()
            raise LogindError(f"logind ({BUS_NAME}) is not on the system bus at "
                              f"{self.address}: is systemd-logind running?") from None
        if subscribe:
            self._subscribe()

    # -- plumbing ------------------------------------------------------------------------

    @staticmethod
    def _bus_proxy() -> DBusAddress:
        return DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus",
                           interface="org.freedesktop.DBus")

    def _call(self, msg: Message, timeout: float = CALL_TIMEOUT) -> tuple[Any, ...]:
        try:
            reply = self._reader.call(msg, timeout)
            return tuple(unwrap_msg(reply))
        except DBusErrorResponse as exc:
            raise LogindError(f"{exc.name}: {' '.join(str(a) for a in exc.data)}") from None
        except (OSError, TimeoutError, ConnectionError) as exc:
            raise LogindError(f"the system bus did not answer: {exc or type(exc).__name__}"
                              ) from None

    def _subscribe(self) -> None:
        # The reader queues every signal: the bus only routes to us what we asked for.
        for rule in (*_RULES, _owner_rule()):
            self._call(message_bus.AddMatch(rule))

    def close(self) -> None:
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()

    @property
    def alive(self) -> bool:
        return self._reader.alive

    @property
    def error(self) -> str:
        """Why the connection ended (empty while it is alive)."""
        return self._reader.error

    # -- reading -------------------------------------------------------------------------

    def list_sessions(self) -> list[tuple[str, int, str, str, str]]:
        """(id, uid, user, seat, object path) of every session."""
        (rows,) = self._call(new_method_call(self._manager, "ListSessions"))
        return [(str(r[0]), int(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows]

    def session(self, path: str, session_id: str | None = None) -> SessionInfo:
        addr = DBusAddress(path, bus_name=BUS_NAME, interface=PROPS_IFACE)
        (props,) = self._call(new_method_call(addr, "GetAll", "s", (SESSION_IFACE,)))
        info = SessionInfo(id=session_id or session_id_from_path(path), path=path)
        info.update(dict(props))
        return info

    def sessions(self) -> list[SessionInfo]:
        out = []
        for sid, _uid, _user, _seat, path in self.list_sessions():
            try:
                out.append(self.session(path, sid))
            except LogindError:
                continue  # gone between the list and the read
        return out

    def list_inhibitors(self) -> list[Inhibitor]:
        (rows,) = self._call(new_method_call(self._manager, "ListInhibitors"))
        return [Inhibitor(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]))
                for r in rows]

    def drain(self) -> list[Signal]:
        """Every signal received since the last call, parsed; never blocks."""
        out: list[Signal] = []
        while True:
            try:
                msg = self._signals.get_nowait()
            except queue.Empty:
                return out
            sig = _parse_signal(msg)
            if sig is not None:
                out.append(sig)

    # -- acting --------------------------------------------------------------------------

    def lock_session(self, session_id: str) -> None:
        """``Manager.LockSession``: logind asks the session's screen locker to lock."""
        self._call(new_method_call(self._manager, "LockSession", "s", (session_id,)))

    def lock_session_object(self, path: str) -> None:
        """``Session.Lock`` on the session object itself (the same request by another door)."""
        addr = DBusAddress(path, bus_name=BUS_NAME, interface=SESSION_IFACE)
        self._call(new_method_call(addr, "Lock"))

    def set_locked_hint(self, path: str, locked: bool) -> None:
        """``Session.SetLockedHint``: only the session's own locker may call this on real
        logind; kept for completeness and tests."""
        addr = DBusAddress(path, bus_name=BUS_NAME, interface=SESSION_IFACE)
        self._call(new_method_call(addr, "SetLockedHint", "b", (locked,)))

    def suspend(self, interactive: bool = False) -> None:
        self._call(new_method_call(self._manager, "Suspend", "b", (interactive,)))


def _parse_signal(msg: Message) -> Signal | None:
    fields = msg.header.fields
    member = fields.get(HeaderFields.member)
    iface = fields.get(HeaderFields.interface)
    path = str(fields.get(HeaderFields.path, ""))
    body = msg.body
    if iface == MANAGER_IFACE and member in ("SessionNew", "SessionRemoved") and len(body) >= 2:
        return Signal("new" if member == "SessionNew" else "removed", str(body[1]),
                      str(body[0]))
    if iface == PROPS_IFACE and member == "PropertiesChanged" and len(body) >= 2:
        if body[0] != SESSION_IFACE or not path.startswith(SESSION_PREFIX):
            return None
        invalidated = tuple(str(x) for x in body[2]) if len(body) > 2 else ()
        return Signal("changed", path, changed=dict(body[1]), invalidated=invalidated)
    if iface == SESSION_IFACE and member in ("Lock", "Unlock"):
        return Signal(member.lower(), path)
    if member == "NameOwnerChanged" and body and body[0] == BUS_NAME:
        return Signal("restarted", MANAGER_PATH)
    return None
