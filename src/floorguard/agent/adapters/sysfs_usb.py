"""The thin adapter over USB in sysfs and libudev: enumerate, read, write, monitor.

No policy and no events: the USB control decides, this module only touches the kernel's
files and the uevent socket. Every value read from sysfs is text from the OS; the small
parsers at the end turn it into numbers and never raise.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("floorguard.usb")

_INTERFACE_NAME = re.compile(r"^(?P<dev>[0-9.\-]+):(?P<cfg>\d+)\.(?P<num>\d+)$")
RECEIVE_BUFFER = 64 * 1024 * 1024


class SysfsUsb:
    """The thin adapter over sysfs and libudev: enumerate, read, write, monitor."""

    def __init__(self, sysfs_root: str = "/sys"):
        import pyudev

        self.pyudev = pyudev
        self.context = pyudev.Context()
        self.root = sysfs_root.rstrip("/") or "/"
        self._udev_root = self.context.sys_path.rstrip("/")

    def available(self) -> str | None:
        """Why USB cannot be controlled here, or None."""
        bus = Path(self.root) / "bus" / "usb"
        if not bus.is_dir():
            return f"{bus} does not exist: no USB support in this kernel or sysfs not mounted"
        return None

    def path(self, sys_path: str) -> str:
        """libudev names devices under its /sys; map them to the configured sysfs root."""
        if self.root == self._udev_root or not sys_path.startswith(self._udev_root):
            return sys_path
        return self.root + sys_path[len(self._udev_root):]

    def usb_devices(self) -> list[Any]:
        return list(self.context.list_devices(subsystem="usb", DEVTYPE="usb_device"))

    def read(self, path: str, attr: str) -> str | None:
        try:
            raw = self._read(f"{path}/{attr}")
        except OSError:
            return None
        return raw.decode("utf-8", "replace").strip()

    def read_descriptors(self, path: str) -> bytes:
        # Raw bytes: the attribute holds NULs, where libudev's attribute getter stops.
        return self._read(f"{path}/descriptors")

    @staticmethod
    def _read(name: str) -> bytes:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def write(self, path: str, attr: str, value: str) -> None:
        # One open and one write, as the kernel's attribute store expects; no O_TRUNC
        # (meaningless on sysfs, and a costly path under umockdev).
        fd = os.open(f"{path}/{attr}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode("ascii"))
        finally:
            os.close(fd)

    def interfaces(self, path: str) -> list[tuple[int, int, str]]:
        """(configuration, interface number, path) of the interfaces sysfs has now."""
        out = []
        try:
            names = os.listdir(path)
        except OSError:
            return []
        for name in names:
            m = _INTERFACE_NAME.match(name)
            if m:
                out.append((int(m["cfg"]), int(m["num"]), f"{path}/{name}"))
        return sorted(out)

    def monitor(self) -> Any:
        mon = self.pyudev.Monitor.from_netlink(self.context, source="kernel")
        mon.filter_by("usb")
        mon.filter_by("block")
        try:
            # A burst of plugs (a hub full of devices) must not overflow the socket.
            mon.set_receive_buffer_size(RECEIVE_BUFFER)
        except OSError as exc:
            log.warning("could not enlarge the uevent receive buffer", error=str(exc))
        return mon


def interface_slot(sys_name: str) -> tuple[int, int] | None:
    """(configuration, interface number) from an interface's kernel name (``1-2:1.0``),
    or None for anything else."""
    m = _INTERFACE_NAME.match(sys_name)
    return (int(m["cfg"]), int(m["num"])) if m else None


def is_root_hub(sys_name: str) -> bool:
    """A root hub's kernel name is ``usbN``; a device's is its port path (``1-2.3``)."""
    return sys_name.startswith("usb")


def devnum_of(text: str | None) -> int | None:
    """The device number from sysfs (``5``) or a uevent (``DEVNUM=005``)."""
    try:
        return int(text) if text else None
    except ValueError:
        return None


def decimal(text: str | None) -> int:
    """A decimal sysfs attribute; 0 when absent or not a number."""
    try:
        return int(text or "0")
    except ValueError:
        return 0


def hexadecimal(text: str | None) -> int:
    """A hexadecimal sysfs attribute (``idVendor``); 0 when absent or not hex."""
    try:
        return int(text or "0", 16)
    except ValueError:
        return 0
