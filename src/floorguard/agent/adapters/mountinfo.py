"""The mount table as the files control sees it: parsing, judging and noticing changes.

``/proc/self/mountinfo`` is read in the agent's own mount namespace. Its file descriptor
reports a change of the table through ``poll`` (POLLPRI), so a new mount is noticed at
once without re-reading the table on a timer; the files control re-reads it on its
periodic check as well, in case a notice is ever lost.
"""

from __future__ import annotations

import fnmatch
import os
import select
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from floorguard.agent.guarded import GuardedThread

log = structlog.get_logger("floorguard.files")

MOUNTINFO = "/proc/self/mountinfo"

# File systems whose data lives on another machine.
NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "afs", "ncpfs",
    "coda", "lustre", "davfs", "ocfs2", "gfs2",
})
# FUSE file systems that are network clients whatever their subtype says.
NETWORK_FUSE = frozenset({
    "sshfs", "davfs2", "rclone", "s3fs", "gcsfuse", "curlftpfs", "goofys", "smbnetfs",
    "onedriver", "google-drive-ocamlfuse", "dropbox",
})
# Kernel-internal file systems that are never a way out.
PSEUDO_FS = frozenset({"fusectl"})

# Classes of mount that are a way for data to leave the PC.
EXIT_CLASSES = ("network", "fuse", "removable", "block", "removable-root")


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


def under(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or inside it (plain path logic, no symlinks)."""
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root if root == "/" else root + "/")


def path_matches(path: str, pattern: str) -> bool:
    """A mount point against an ``approved_mounts`` entry: the glob itself or below it."""
    pattern = pattern.rstrip("/") or "/"
    return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern + "/*")


def mount_class(mount: Mount, removable_roots: Iterable[str],
                block_removable: Callable[[str], bool]) -> str | None:
    """What kind of way out a mount is, or None for one that is not a way out.

    ``network`` (NFS, CIFS, sshfs...), ``fuse`` (any other FUSE file system: it can be
    anything, including a network client), ``removable`` (a block device the kernel calls
    removable or that hangs off USB), ``block`` (any other block device), and
    ``removable-root`` (anything mounted under a policy ``removable`` root).
    """
    fstype = mount.fstype
    if fstype in PSEUDO_FS:
        return None
    if fstype in NETWORK_FS:
        return "network"
    if fstype.startswith("fuse"):
        subtype = fstype.partition(".")[2]
        if subtype in NETWORK_FUSE or os.path.basename(mount.source) in NETWORK_FUSE:
            return "network"
        return "fuse"
    major = mount.device.split(":")[0]
    if mount.source.startswith("/dev/") and major not in ("0", ""):
        return "removable" if block_removable(mount.device) else "block"
    if any(under(mount.point, root) for root in removable_roots):
        return "removable-root"
    return None


def judge_mount(mount: Mount, cls: str | None, *, present_at_start: bool,
                approved: Iterable[str]) -> bool:
    """Whether a mount is a ``files.mounted`` violation.

    Mounts found when the agent starts are judged too (as USBGuard judges devices present
    at start), except the PC's own fixed disks and what sits under the removable roots
    (those roots are exits whatever is mounted there). Anything mounted later is judged
    whatever its class. Mount points matching ``approved_mounts`` are never violations.
    """
    if cls is None:
        return False
    if any(path_matches(mount.point, pat) for pat in approved):
        return False
    if present_at_start:
        return cls in ("network", "fuse", "removable")
    return True


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
