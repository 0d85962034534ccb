"""The files control's rules: which files are flagged, which mounts are ways out, and
what a new mount means. Plain functions on plain data: nothing here touches the OS."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable

from floorguard.agent.adapters.mountinfo import Mount

_MAGIC = set("*?[")


def flag_match(name: str, patterns: tuple[str, ...]) -> str | None:
    """The first ``flag`` pattern the file name matches (case-insensitive), or None."""
    low = name.lower()
    for pat in patterns:
        if fnmatch.fnmatchcase(low, pat.lower()):
            return pat
    return None


def containing(path: str, roots: frozenset[str]) -> str | None:
    """The innermost of ``roots`` that holds ``path``."""
    best = None
    for root in roots:
        if under(path, root) and (best is None or len(root) > len(best)):
            best = root
    return best


def glob_scaffold(pattern: str) -> list[str]:
    """The globs of the folders on the way to ``pattern``'s matches, from the parent of its
    first wildcard part: ``/home/*/Desktop`` -> ``["/home", "/home/*"]``. Watching these
    (not recursively) shows a new home folder, or a new Desktop in it, the moment it
    appears."""
    parts = pattern.rstrip("/").split("/")
    first = next((i for i, p in enumerate(parts) if _MAGIC & set(p)), len(parts) - 1)
    start = max(first, 2)  # never watch "/" itself
    return ["/".join(parts[:i]) for i in range(start, len(parts))]


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
