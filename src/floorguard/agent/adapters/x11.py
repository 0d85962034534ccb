"""The X server's own idle time: ``XScreenSaverQueryInfo`` through ctypes (libX11 + libXss).

The X server counts milliseconds since the last keyboard or pointer input on the display,
whatever the desktop reports to logind; that makes it the witness for a desktop that does
not maintain logind's IdleHint. One connection is kept open per display (a query then
costs tens of microseconds). The agent runs as root and the display belongs to the
operator, so the connection authenticates with the session's MIT-MAGIC-COOKIE-1, read
from its Xauthority file and handed to Xlib with ``XSetAuthorization`` rather than by
changing the process environment.

Xlib's default handlers call ``exit()`` when the server goes away or answers an error;
this module installs handlers that only take note, so a vanished X server costs one
failed query (``X11Error``) and a reconnect, never the agent.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import pwd
import re
import struct
import threading
from pathlib import Path
from typing import Any


class X11Error(Exception):
    """The X idle time cannot be read; the message says why and what to install or fix."""


class _XScreenSaverInfo(ctypes.Structure):
    _fields_ = [
        ("window", ctypes.c_ulong),
        ("state", ctypes.c_int),
        ("kind", ctypes.c_int),
        ("til_or_since", ctypes.c_ulong),
        ("idle", ctypes.c_ulong),
        ("event_mask", ctypes.c_ulong),
    ]


_IOErrorHandler = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_IOErrorExitHandler = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
_ErrorHandler = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class _Xlib:
    """libX11 and libXss, loaded once per process."""

    def __init__(self) -> None:
        x11_name = ctypes.util.find_library("X11")
        xss_name = ctypes.util.find_library("Xss")
        if not x11_name:
            raise X11Error("libX11 is not installed (Debian package libx11-6)")
        if not xss_name:
            raise X11Error("libXss is not installed (Debian package libxss1)")
        try:
            self.x11 = ctypes.CDLL(x11_name)
            self.xss = ctypes.CDLL(xss_name)
        except OSError as exc:
            raise X11Error(f"cannot load the X libraries: {exc}") from None
        x11, xss = self.x11, self.xss
        x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        x11.XOpenDisplay.restype = ctypes.c_void_p
        x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
        x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        x11.XDefaultRootWindow.restype = ctypes.c_ulong
        x11.XFree.argtypes = [ctypes.c_void_p]
        x11.XSetAuthorization.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                          ctypes.c_int]
        x11.XSetIOErrorHandler.argtypes = [_IOErrorHandler]
        x11.XSetIOErrorHandler.restype = ctypes.c_void_p
        x11.XSetErrorHandler.argtypes = [_ErrorHandler]
        x11.XSetErrorHandler.restype = ctypes.c_void_p
        self.has_exit_handler = hasattr(x11, "XSetIOErrorExitHandler")
        if self.has_exit_handler:
            x11.XSetIOErrorExitHandler.argtypes = [ctypes.c_void_p, _IOErrorExitHandler,
                                                   ctypes.c_void_p]
        xss.XScreenSaverQueryExtension.argtypes = [ctypes.c_void_p,
                                                   ctypes.POINTER(ctypes.c_int),
                                                   ctypes.POINTER(ctypes.c_int)]
        xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(_XScreenSaverInfo)
        xss.XScreenSaverQueryInfo.argtypes = [ctypes.c_void_p, ctypes.c_ulong,
                                              ctypes.POINTER(_XScreenSaverInfo)]
        self.broken: set[int] = set()  # displays whose connection died
        self.errors: dict[int, int] = {}  # display -> last protocol error code
        # Kept on the instance: ctypes callbacks must outlive every display.
        self._on_io_error = _IOErrorHandler(self._io_error)
        self._on_io_exit = _IOErrorExitHandler(self._io_exit)
        self._on_error = _ErrorHandler(self._error)
        x11.XSetIOErrorHandler(self._on_io_error)
        x11.XSetErrorHandler(self._on_error)

    def _io_error(self, dpy: Any) -> int:
        self.broken.add(int(dpy or 0))
        return 0

    def _io_exit(self, dpy: Any, _data: Any) -> None:
        # Returning instead of exiting leaves the connection dead but the process alive.
        self.broken.add(int(dpy or 0))

    def _error(self, dpy: Any, event: Any) -> int:
        code = ctypes.cast(event, ctypes.POINTER(ctypes.c_ubyte * 32)).contents[16]
        self.errors[int(dpy or 0)] = int(code)
        return 0


_lib: _Xlib | None = None
_lib_lock = threading.Lock()  # XSetAuthorization is process-wide: one open at a time


def _xlib() -> _Xlib:
    global _lib
    with _lib_lock:
        if _lib is None:
            _lib = _Xlib()
        return _lib


_DISPLAY = re.compile(r"^(?:unix)?:(\d+)(?:\.\d+)?$")


def display_number(display: str) -> int:
    """``:0``, ``:0.0`` or ``unix:0`` -> 0. Remote displays (``host:0``) are refused: the
    idle time of a display on another machine says nothing about this seat."""
    m = _DISPLAY.match(display.strip())
    if not m:
        raise X11Error(f'"{display}" is not a local X display (expected ":N")')
    return int(m.group(1))


def read_cookie(path: str | Path, display: str) -> bytes:
    """The MIT-MAGIC-COOKIE-1 for ``display`` in an Xauthority file."""
    number = str(display_number(display)).encode()
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise X11Error(f"cannot read the X authority file {path}: {exc.strerror}") from None
    entries: list[tuple[int, bytes, bytes, bytes]] = []
    pos = 0
    try:
        while pos < len(data):
            (family,) = struct.unpack_from(">H", data, pos)
            pos += 2
            fields = []
            for _ in range(4):
                (n,) = struct.unpack_from(">H", data, pos)
                pos += 2
                if pos + n > len(data):
                    raise struct.error("truncated field")
                fields.append(data[pos:pos + n])
                pos += n
            _addr, num, name, cookie = fields
            if name == b"MIT-MAGIC-COOKIE-1":
                entries.append((family, num, name, cookie))
    except struct.error:
        raise X11Error(f"the X authority file {path} is damaged at byte {pos}") from None
    # 256 = FamilyLocal, 65535 = FamilyWild: the ones a local connection uses.
    for family, num, _name, cookie in entries:
        if num == number and family in (256, 65535):
            return cookie
    for _family, num, _name, cookie in entries:
        if num in (number, b""):
            return cookie
    raise X11Error(f"the X authority file {path} has no MIT-MAGIC-COOKIE-1 for {display}")


def find_xauthority(display: str, uid: int, session_id: str = "",
                    proc: str = "/proc") -> str | None:
    """Where the Xauthority file of a session's display is: the XAUTHORITY of a process of
    that session (its XDG_SESSION_ID) or of that user on that display, then the X server's
    ``-auth`` argument, then ``~user/.Xauthority``. None when there is none to be found."""
    number = display_number(display)
    same_user: str | None = None
    server_auth: str | None = None
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            owner = entry.stat().st_uid
            if owner == uid:
                env = _environ(Path(entry.path) / "environ")
                disp = env.get("DISPLAY", "")
                auth = env.get("XAUTHORITY", "")
                if auth and _same_display(disp, number) and os.path.exists(auth):
                    if session_id and env.get("XDG_SESSION_ID") == session_id:
                        return auth
                    same_user = same_user or auth
            if server_auth is None:
                server_auth = _server_auth(Path(entry.path) / "cmdline", number)
        except OSError:
            continue  # the process went away while we looked
    if same_user:
        return same_user
    if server_auth and os.path.exists(server_auth):
        return server_auth
    with contextlib.suppress(KeyError):
        home = Path(pwd.getpwuid(uid).pw_dir) / ".Xauthority"
        if home.exists():
            return str(home)
    return None


def _same_display(text: str, number: int) -> bool:
    try:
        return display_number(text) == number
    except X11Error:
        return False


def _environ(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in path.read_bytes().split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def _server_auth(cmdline: Path, number: int) -> str | None:
    args = [a.decode(errors="replace") for a in cmdline.read_bytes().split(b"\0") if a]
    if not args or not re.search(r"(^|/)(X|Xorg|Xwayland|Xvfb|Xephyr)$", args[0]):
        return None
    if f":{number}" not in args or "-auth" not in args:
        return None
    i = args.index("-auth")
    return args[i + 1] if i + 1 < len(args) else None


class X11Idle:
    """Idle milliseconds of one X display; opens (and reopens) its connection on demand."""

    def __init__(self, display: str, xauthority: str | None = None):
        display_number(display)  # refuse a remote display up front
        self.display = display
        self.xauthority = xauthority
        self._dpy: int | None = None
        self._info: Any = None

    def _open(self) -> int:
        lib = _xlib()
        with _lib_lock:
            cookie = read_cookie(self.xauthority, self.display) if self.xauthority else None
            if cookie is not None:
                name = b"MIT-MAGIC-COOKIE-1"
                lib.x11.XSetAuthorization(name, len(name), cookie, len(cookie))
            try:
                dpy = lib.x11.XOpenDisplay(self.display.encode())
            finally:
                if cookie is not None:
                    lib.x11.XSetAuthorization(None, 0, None, 0)
        if not dpy:
            how = f"with the cookie from {self.xauthority}" if self.xauthority \
                else "without an X authority file"
            raise X11Error(f"cannot open X display {self.display} {how}: is the server "
                           "running and does this user have access?")
        # A freed Display's address can come back from malloc: a fresh one is not broken.
        lib.broken.discard(int(dpy))
        if lib.has_exit_handler:
            lib.x11.XSetIOErrorExitHandler(dpy, lib._on_io_exit, None)
        ev, err = ctypes.c_int(), ctypes.c_int()
        if not lib.xss.XScreenSaverQueryExtension(dpy, ctypes.byref(ev), ctypes.byref(err)):
            lib.x11.XCloseDisplay(dpy)
            raise X11Error(f"X display {self.display} has no MIT-SCREEN-SAVER extension")
        self._info = lib.xss.XScreenSaverAllocInfo()
        self._dpy = int(dpy)
        return self._dpy

    def idle_ms(self) -> int:
        """Milliseconds since the last input on this display."""
        lib = _xlib()
        dpy = self._dpy if self._dpy is not None else self._open()
        root = lib.x11.XDefaultRootWindow(dpy)
        ok = lib.xss.XScreenSaverQueryInfo(dpy, root, self._info)
        if dpy in lib.broken or not ok:
            self._forget()
            raise X11Error(f"lost the connection to X display {self.display}")
        return int(self._info.contents.idle)

    def _forget(self) -> None:
        lib = _xlib()
        if self._info is not None:
            lib.x11.XFree(self._info)
            self._info = None
        if self._dpy is not None:
            # Safe on a dead connection too (our handlers return); it frees the socket.
            lib.x11.XCloseDisplay(self._dpy)
            lib.broken.discard(self._dpy)
        self._dpy = None

    def close(self) -> None:
        self._forget()
