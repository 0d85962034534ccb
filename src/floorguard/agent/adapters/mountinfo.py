"""The mount table as the files control sees it: parsing, judging and noticing changes.

``/proc/self/mountinfo`` is read in the agent's own mount namespace. Its file descriptor
reports a change of the table through ``poll`` (POLLPRI), so a new mount is noticed at
once without re-reading the table on a timer; the files control re-reads it on its
periodic check as well, in case a notice is ever lost.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from floorguard.agent.guarded import GuardedThread

log = structlog.get_logger("floorguard.files")

MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo, unescaped."""

    mount_id: int
    device: str  # major:minor
    point: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    if "\\" not in field:
        return field
    out, i = bytearray(), 0
    raw = field.encode("utf-8", "surrogateescape")
    while i < len(raw):
        digits = raw[i + 1:i + 4]
        if raw[i] == 0x5C and len(digits) == 3 and digits.isdigit():
            out.append(int(raw[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse mountinfo text; malformed lines are skipped (the kernel writes it, but a
    test or an odd kernel must not stop the control)."""
    mounts = []
    for line in text.splitlines():
        parts = line.split(" ")
        try:
            sep = parts.index("-", 6)
            mounts.append(Mount(mount_id=int(parts[0]), device=parts[2],
                                point=_unescape(parts[4]), fstype=parts[sep + 1],
                                source=_unescape(parts[sep + 2])))
        except (ValueError, IndexError):
            continue
    return mounts


def block_removable(device: str, sys_root: str = "/sys") -> bool:
    """Whether the block device ``major:minor`` is removable: the kernel's ``removable``
    flag on the disk, or a USB device anywhere on its path (USB disks often say 0)."""
    link = Path(sys_root) / "dev" / "block" / device
    try:
        real = link.resolve(strict=True)
    except OSError:
        return False
    if "/usb" in str(real):
        return True
    for candidate in (real, real.parent):
        try:
            return (candidate / "removable").read_text().strip() == "1"
        except OSError:
            continue
    return False


def read_mounts(path: str = MOUNTINFO) -> list[Mount]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


class MountWatcher:
    """Calls ``on_change`` (on its own thread) whenever the mount table changes."""

    def __init__(self, on_change: Callable[[], None], path: str = MOUNTINFO):
        self._on_change = on_change
        self._path = path
        self._thread: GuardedThread | None = None
        self._stop_r, self._stop_w = -1, -1
        self._file: int = -1

    def start(self) -> None:
        self._file = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        # No stop event: _run returns only when stop() writes to the pipe.
        self._thread = GuardedThread("files-mounts", self._run)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        self._thread = None
        for fd in (self._file, self._stop_r, self._stop_w):
            os.close(fd)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._file, select.POLLPRI | select.POLLERR)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            events = poller.poll()
            if any(fd == self._stop_r for fd, _ in events):
                return
            try:
                self._on_change()
            except Exception:  # one bad pass must not end the watching
                log.exception("mount table change handling failed")
