"""sd_notify(3) without libsystemd: one datagram to ``$NOTIFY_SOCKET`` per message."""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, address: str | None = None):
        addr = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + addr[1:] if addr.startswith("@") else addr
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, message: str) -> bool:
        if self._sock is None:
            return False
        try:
            self._sock.sendto(message.encode(), self.address)
        except OSError:
            return False  # systemd went away; nothing to tell
        return True

    def watchdog_interval(self) -> float | None:
        """Half of WATCHDOG_USEC, when systemd asks for keep-alives for this process."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 2_000_000
        except ValueError:
            return None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
