"""The files control: data leaving on removable and network mounts, exports in watched folders.

Policy table ``[files]``:

- ``removable`` (absolute paths): roots where removable media appear (``/media``,
  ``/run/media``, ``/mnt``). Any file created in or moved into them is a ``files.copied``
  violation naming the file, its size, its SHA-256 and its owner.
- Besides those roots, the control reads the mount table (``/proc/self/mountinfo``) and
  notices every mount as it appears. A new mount of a network file system (NFS, CIFS,
  sshfs and other FUSE network clients), of any other FUSE file system, or of a block device
  (a USB disk, an SD card, a loop-mounted image) is a ``files.mounted`` violation, and its
  mount point becomes an exit too: files written there are ``files.copied`` violations.
  Network, FUSE and removable mounts already present when the agent starts are judged the
  same way; the PC's own fixed disks are not.
- ``approved_mounts`` (absolute paths or globs, e.g. ``"/run/user/*/doc"``): mount points
  that are neither reported nor treated as exits (a home directory on NFS, a desktop
  portal).
- ``watch`` (absolute globs such as ``"/home/*/Downloads"``) and ``flag`` (file-name globs,
  matched case-insensitively, e.g. ``"*.csv"``): a file matching ``flag`` created in or moved
  into a watched folder (or below it) is a ``files.flagged`` warning. The globs follow home
  folders as they appear: a new folder on the way to a match is noticed at once, and the
  globs are expanded again on every periodic check.
- ``hash_limit`` (bytes, default 256 MiB; 0 never hashes): files larger than this are
  reported without a SHA-256 (the event says why), so a huge copy cannot keep the agent busy.

A file is judged once its writer has closed it and it has stayed untouched for 0.2 s (or
a second after it appeared, when no close is seen, as for a hard link or a directory moved
in whole); hashing happens on the control's own worker thread, never on the thread that
receives file-system events. The same file with the same size and modification time is
reported once.

**Files written while the agent was down.** The control keeps what it last saw of every
file it watches (a digest of path, size, modification time and inode; at most
``SEEN_LIMIT`` files) in ``STATE_DIR/files-seen.bin``, written atomically every check and
at stop. At start it walks the removable roots and watched folders and reports every file
that is new or changed since then as the usual ``files.copied`` / ``files.flagged`` event,
with ``"found": "at_start"`` and the file's ``mtime``. A file seen unchanged is not
reported again. The very first start (no such file yet) takes the files present as
seen without reporting them. After a crash, a file reported in the last few seconds
before it may be reported once more: evidence twice rather than never.

The control only observes: it never deletes or blocks a file (the USB
control blocks the device itself).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import queue
import stat
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from floorguard.agent.adapters.mountinfo import (
    MOUNTINFO,
    Mount,
    MountWatcher,
    block_removable,
    read_mounts,
)
from floorguard.agent.controls.base import Control, ControlContext, ControlUnavailable
from floorguard.agent.controls.files.rules import (
    containing,
    flag_match,
    glob_scaffold,
    judge_mount,
    mount_class,
    path_matches,
)
from floorguard.agent.guarded import GUARDS, GuardedThread
from floorguard.events import rfc3339
from floorguard.policy import FilesSettings, Policy

log = structlog.get_logger("floorguard.files")

SETTLE = 1.0  # seconds to wait for a close before judging a file anyway
CLOSE_SETTLE = 0.2  # seconds a closed file must stay untouched before it is judged
TREE_LIMIT = 10000  # files judged from one directory moved in whole
SEEN_FILE = "files-seen.bin"
SEEN_LIMIT = 200_000  # files remembered across restarts (16 bytes each on disk)


# --- pure decisions -----------------------------------------------------------------------


def expand_dirs(patterns: tuple[str, ...]) -> set[str]:
    out = set()
    for pat in patterns:
        for p in glob.glob(pat):
            if os.path.isdir(p) and not os.path.islink(p):
                out.add(os.path.normpath(p))
    return out


# --- OS adapters --------------------------------------------------------------------------


def sha256_bounded(path: str, limit: int) -> tuple[str | None, int, os.stat_result]:
    """Hash a regular file without following a symlink; None past ``limit`` bytes.
    Returns (hex digest or None, bytes read, the stat of the opened file)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(path)
        if limit <= 0 or st.st_size > limit:
            return None, 0, st
        h, total = hashlib.sha256(), 0
        while chunk := f.read(1024 * 1024):
            total += len(chunk)
            if total > limit:  # it grew while we read
                return None, total, st
            h.update(chunk)
        return h.hexdigest(), total, st


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


def seen_key(path: str) -> bytes:
    # os.fsencode undoes the surrogateescape of a non-UTF-8 name: the digest is of the
    # file's true bytes.
    return _digest(os.fsencode(path))


def seen_state(st: os.stat_result) -> bytes:
    return _digest(struct.pack("<qqq", st.st_size, st.st_mtime_ns, st.st_ino))


class SeenFiles:
    """What the control last saw of each file: path digest -> state digest, bounded, kept
    on disk as ``MAGIC``, a count, 16-byte entries and a checksum (a damaged file is
    refused as a whole, never half-read)."""

    MAGIC = b"FGSEEN1\n"

    def __init__(self, path: str, limit: int = SEEN_LIMIT):
        self.path = path
        self.limit = limit
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()
        self._dirty = False

    def load(self) -> dict[bytes, bytes] | None:
        """The snapshot on disk, or None when there is none (or it is damaged)."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("cannot read the files seen at the last run; taking the files present "
                      "as seen", path=self.path, error=str(exc))
            return None
        head = len(self.MAGIC) + 4
        if len(raw) < head + 8 or not raw.startswith(self.MAGIC):
            log.error("the files seen at the last run are unreadable (not a snapshot); "
                      "taking the files present as seen", path=self.path)
            return None
        (count,) = struct.unpack_from("<I", raw, len(self.MAGIC))
        body = raw[head:-8]
        if len(body) != 16 * count or _digest(raw[:-8]) != raw[-8:]:
            log.error("the files seen at the last run are damaged; taking the files present "
                      "as seen", path=self.path)
            return None
        return {body[i:i + 8]: body[i + 8:i + 16] for i in range(0, len(body), 16)}

    def note(self, path: str, st: os.stat_result) -> None:
        key, state = seen_key(path), seen_state(st)
        with self._lock:
            if self._entries.get(key) == state:
                return
            self._entries[key] = state
            self._entries.move_to_end(key)
            while len(self._entries) > self.limit:
                self._entries.popitem(last=False)
            self._dirty = True

    def forget(self, path: str) -> None:
        with self._lock:
            if self._entries.pop(seen_key(path), None) is not None:
                self._dirty = True

    def __len__(self) -> int:
        return len(self._entries)

    def save(self, *, force: bool = False) -> None:
        """Write the snapshot atomically (temp file, fsync, rename), if it changed."""
        with self._lock:
            if not (self._dirty or force):
                return
            parts = [self.MAGIC, struct.pack("<I", len(self._entries))]
            parts.extend(k + v for k, v in self._entries.items())
            self._dirty = False
        data = b"".join(parts)
        data += _digest(data)
        tmp = self.path + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            dfd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:  # next check tries again; only the restart catch-up is stale
            with self._lock:
                self._dirty = True
            log.error("cannot save the files seen", path=self.path, error=str(exc))


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# --- the control --------------------------------------------------------------------------


@dataclass
class _Layout:
    """Where the control looks, recomputed on every policy, mount or folder change."""

    exits: frozenset[str] = frozenset()
    targets: frozenset[str] = frozenset()
    scaffolds: frozenset[str] = frozenset()
    exit_mounts: dict[str, tuple[Mount, str]] = field(default_factory=dict)


class _Handler(FileSystemEventHandler):
    def __init__(self, control: FilesControl):
        self.control = control

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self.control._on_fs_event(event)
        except Exception:  # an exception here would silently end the observer thread
            log.exception("file event handling failed", path=str(event.src_path))


class FilesControl(Control):
    """Removable and network mounts, new mounts, and flagged files in watched folders."""

    name: ClassVar[str] = "files"
    check_interval: ClassVar[float] = 15.0

    def __init__(self, ctx: ControlContext, *, mountinfo: str = MOUNTINFO):
        super().__init__(ctx)
        self.settings = FilesSettings()
        self._mountinfo = mountinfo
        self._sys_root = ctx.config.sysfs_root
        self._layout = _Layout()
        self._mounts: dict[str, Mount] = {}  # mount point -> top mount, as last read
        self._lock = threading.RLock()
        self._observer: BaseObserver | None = None
        self._handler = _Handler(self)
        self._watches: dict[tuple[str, bool], tuple[ObservedWatch, int]] = {}
        self._unwatched: dict[str, str] = {}
        self._pending: dict[str, float] = {}
        self._pending_lock = threading.Lock()
        self._closed: set[str] = set()  # pending paths whose writer has closed them
        self._found_at_start: set[str] = set()  # pending paths the start catch-up found
        self._reported: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._tasks: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._worker: GuardedThread | None = None
        self._worker_stop = threading.Event()
        self._mount_watcher: MountWatcher | None = None
        self._seen = SeenFiles(os.path.join(ctx.config.state_dir, SEEN_FILE))
        self._last_seen: dict[bytes, bytes] | None = None
        self._caught_up = False  # the start catch-up ran: the snapshot may be rewritten

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, policy: Policy) -> None:
        super().start(policy)
        self.settings = policy.settings(FilesSettings)
        try:
            observer = Observer()
            observer.start()
        except OSError as exc:
            raise ControlUnavailable(f"cannot watch files (inotify): {exc}") from exc
        self._observer = observer
        try:
            mounts = read_mounts(self._mountinfo)
        except OSError as exc:
            observer.stop()
            raise ControlUnavailable(f"cannot read the mount table {self._mountinfo}: "
                                     f"{exc}") from exc
        # The observer's own threads end silently if inotify breaks under them: a probe
        # makes that a dead thread the watchdog sees.
        GUARDS.probe("files-observer", observer.is_alive)
        self._last_seen = self._seen.load()
        self._caught_up = False
        self._worker_stop.clear()
        self._worker = GuardedThread("files-worker", self._work, stop=self._worker_stop)
        self._worker.start()
        self._sync_mounts(mounts, present_at_start=True)
        # After the watches exist: a file written from now on is seen by inotify, one
        # written before by this catch-up (and the same version is not reported twice).
        self._tasks.put(("at_start", ""))
        self._mount_watcher = MountWatcher(self._mounts_changed, self._mountinfo)
        self._mount_watcher.start()

    def apply_policy(self, policy: Policy) -> None:
        super().apply_policy(policy)
        with self._lock:
            self.settings = policy.settings(FilesSettings)
            self._relayout()

    def check(self) -> None:
        """Re-read the mount table and re-expand the ``watch`` globs (a backstop for any
        notice the kernel or inotify did not deliver), and save the files seen."""
        self._mounts_changed()
        if self._caught_up:  # not while the start catch-up still needs the old one
            self._seen.save()

    def stop(self) -> None:
        if self._mount_watcher is not None:
            self._mount_watcher.stop()
            self._mount_watcher = None
        GUARDS.unprobe("files-observer")
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
            self._observer = None
        if self._worker is not None:
            self._worker_stop.set()
            self._tasks.put(None)
            self._worker.join(10)
            self._worker = None
        if self._caught_up:  # else the old snapshot stays, for the next start to compare
            self._seen.save()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"exits": sorted(self._layout.exits), "watched": sorted(self._layout.targets),
                    "unwatched": dict(self._unwatched)}

    # -- mounts ------------------------------------------------------------------------

    def _mounts_changed(self) -> None:
        try:
            mounts = read_mounts(self._mountinfo)
        except OSError:
            log.exception("cannot read the mount table")
            return
        self._sync_mounts(mounts, present_at_start=False)

    def _sync_mounts(self, mounts: list[Mount], *, present_at_start: bool) -> None:
        top: dict[str, Mount] = {}
        for m in mounts:  # later lines are mounted on top of earlier ones
            top[m.point] = m
        with self._lock:
            new = [m for p, m in top.items()
                   if p not in self._mounts or self._mounts[p].mount_id != m.mount_id]
            self._mounts = top
            for m in new:
                cls = mount_class(m, self.settings.removable, self._removable)
                if cls is None:
                    continue
                start = present_at_start
                if judge_mount(m, cls, present_at_start=start,
                               approved=self.settings.approved_mounts):
                    self._record_mount(m, cls, start)
                if not (start and cls == "block"):
                    self._layout.exit_mounts[m.point] = (m, cls)
            for point in list(self._layout.exit_mounts):
                if point not in top or top[point].mount_id != \
                        self._layout.exit_mounts[point][0].mount_id:
                    del self._layout.exit_mounts[point]
            self._relayout()

    def _removable(self, device: str) -> bool:
        return block_removable(device, self._sys_root)

    def _record_mount(self, m: Mount, cls: str, present_at_start: bool) -> None:
        operator = self.ctx.operator.current()
        self.record("files.mounted", "violation", {
            "mount_point": m.point, "fstype": m.fstype, "source": m.source, "class": cls,
            "present_at_start": present_at_start, "operator": operator,
        }, user=operator)

    # -- where to look -----------------------------------------------------------------

    def _relayout(self, *, catch_up: bool = False) -> None:
        """Recompute exits, watched folders and scaffolds; bring the watches in line.

        With ``catch_up`` (a folder just appeared), files already in a newly watched folder
        are judged too: they were written in the moment before its watch existed."""
        s = self.settings
        with self._lock:
            old_targets = self._layout.targets
            exits = {r for r in s.removable if os.path.isdir(r)}
            exits |= {p for p in self._layout.exit_mounts
                      if not any(path_matches(p, a) for a in s.approved_mounts)}
            scaffolds: set[str] = set()
            for pat in s.watch:
                scaffolds |= expand_dirs(tuple(glob_scaffold(pat)))
            self._layout.exits = frozenset(exits)
            self._layout.targets = frozenset(expand_dirs(s.watch))
            self._layout.scaffolds = frozenset(scaffolds)
            wanted = {(p, True) for p in exits | self._layout.targets}
            wanted |= {(p, False) for p in scaffolds}
            self._sync_watches(wanted)
            if catch_up:
                for t in sorted(self._layout.targets - old_targets):
                    self._tasks.put(("tree", t))

    def _sync_watches(self, wanted: set[tuple[str, bool]]) -> None:
        observer = self._observer
        if observer is None:
            return
        for key in list(self._watches):
            watch, ino = self._watches[key]
            if key in wanted and _inode(key[0]) == ino:
                continue
            with contextlib.suppress(Exception):  # the folder may be gone already
                observer.unschedule(watch)
            del self._watches[key]
        for key in sorted(wanted - set(self._watches)):
            path, recursive = key
            found = _inode(path)
            if found is None:
                continue
            try:
                watch = observer.schedule(self._handler, path, recursive=recursive)
            except OSError as exc:  # e.g. the inotify watch limit: say so, keep the rest
                self._unwatched[path] = str(exc)
                log.error("cannot watch a folder", path=path, error=str(exc))
                continue
            self._unwatched.pop(path, None)
            self._watches[key] = (watch, found)

    # -- file events (observer thread: classify and hand over, nothing slow) -------------

    def _relevant(self, path: str) -> bool:
        lay = self._layout
        if containing(path, lay.exits) is not None:
            return True
        return (containing(path, lay.targets) is not None
                and flag_match(os.path.basename(path), self.settings.flag) is not None)

    def _on_fs_event(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        if isinstance(event, (DirCreatedEvent, DirDeletedEvent, DirMovedEvent)):
            dest = os.fsdecode(event.dest_path) if isinstance(event, DirMovedEvent) else src
            lay = self._layout
            if os.path.dirname(src) in lay.scaffolds or os.path.dirname(dest) in lay.scaffolds \
                    or src in lay.targets:
                self._tasks.put(("relayout", dest))
            if isinstance(event, DirMovedEvent) and (
                    containing(dest, lay.exits) or containing(dest, lay.targets)):
                self._tasks.put(("tree", dest))
            return
        if isinstance(event, FileCreatedEvent):
            if self._relevant(src):
                with self._pending_lock:
                    first = not self._pending
                    self._pending.setdefault(src, self.ctx.clock())
                if first:  # the worker sleeps without a timeout while nothing is pending
                    self._tasks.put(("wake", src))
        elif isinstance(event, FileClosedEvent):
            # Judged once quiet: another writer may already be at the file again (a
            # truncate-and-rewrite), and the version to report is the one left behind.
            if self._relevant(src):
                with self._pending_lock:
                    first = not self._pending
                    self._pending[src] = self.ctx.clock()
                    self._closed.add(src)
                if first:
                    self._tasks.put(("wake", src))
        elif isinstance(event, FileMovedEvent):
            dest = os.fsdecode(event.dest_path)
            with self._pending_lock:
                self._pending.pop(src, None)
                self._closed.discard(src)
            self._seen.forget(src)
            if self._relevant(dest):
                self._tasks.put(("file", dest))
        elif isinstance(event, FileDeletedEvent):
            with self._pending_lock:
                self._pending.pop(src, None)
                self._closed.discard(src)
            self._seen.forget(src)

    # -- the worker: hashing and recording ---------------------------------------------

    def _work(self) -> None:
        while True:  # until the None that stop() queues: what is queued before it is done
            with self._pending_lock:
                timeout = CLOSE_SETTLE / 2 if self._pending else None
            try:
                task = self._tasks.get(timeout=timeout)
            except queue.Empty:
                task = ("sweep", "")
            if task is None:
                return
            try:
                self._do(*task)
            except Exception:
                log.exception("files worker task failed", task=task[0], path=task[1])

    def _do(self, what: str, path: str) -> None:
        if what == "file":
            self._judge_file(path)
        elif what == "tree":
            self._judge_tree(path)
        elif what == "relayout":
            self._relayout(catch_up=True)
        elif what == "at_start":
            self._catch_up()
        self._sweep()

    def _catch_up(self) -> None:
        """Report what was written while the agent was not running (module docstring)."""
        before = self._last_seen
        with self._lock:
            roots = sorted(self._layout.exits | self._layout.targets)
        now = self.ctx.clock()
        found = changed = 0
        for path in self._walk_relevant(roots):
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            found += 1
            if before is None:
                self._seen.note(path, st)  # the first run: a baseline, not a report
            elif before.get(seen_key(path)) != seen_state(st):
                changed += 1
                if now - st.st_mtime < SETTLE:
                    # Still being written, maybe: judged once quiet, like a new file.
                    with self._pending_lock:
                        self._pending.setdefault(path, now)
                        self._found_at_start.add(path)
                    continue
                try:
                    self._judge_file(path, found="at_start")
                except Exception:  # one file that cannot be recorded must not cost the rest
                    log.exception("reporting a file found at start failed", path=path)
            else:
                self._seen.note(path, st)
        self._last_seen = None
        self._caught_up = True
        self._seen.save(force=True)
        log.info("files written while the agent was not running checked", files=found,
                 new_or_changed=changed, first_run=before is None)

    def _walk_relevant(self, roots: list[str]) -> Iterator[str]:
        count = 0
        visited: set[str] = set()
        for root in roots:
            for folder, _dirs, names in os.walk(root):
                if folder in visited:
                    continue  # an exit inside a watched folder, or the other way round
                visited.add(folder)
                for n in names:
                    path = os.path.join(folder, n)
                    if not self._relevant(path):
                        continue
                    count += 1
                    if count > SEEN_LIMIT:
                        log.warning("too many files to check at start; the rest are not "
                                    "compared with the last run", limit=SEEN_LIMIT)
                        return
                    yield path

    def _sweep(self) -> None:
        """Judge files that appeared without a close: a hard link, a file moved in from
        elsewhere, a folder's contents. One still being written (modified within the last
        second: a long copy whose writer has not closed it yet) waits for its close."""
        now = self.ctx.clock()
        with self._pending_lock:
            due = [(p, CLOSE_SETTLE if p in self._closed else SETTLE)
                   for p, t in self._pending.items()
                   if now - t >= (CLOSE_SETTLE if p in self._closed else SETTLE)]
        for p, settle in due:
            try:
                busy = now - os.lstat(p).st_mtime < settle
            except OSError:
                busy = False
            with self._pending_lock:
                if p not in self._pending:
                    continue  # moved or deleted meanwhile
                if busy:
                    self._pending[p] = now
                    continue
                del self._pending[p]
                self._closed.discard(p)
                at_start = p in self._found_at_start
                self._found_at_start.discard(p)
            self._judge_file(p, found="at_start" if at_start else None)

    def _judge_tree(self, root: str) -> None:
        count = 0
        for folder, _dirs, names in os.walk(root):
            for n in names:
                path = os.path.join(folder, n)
                if self._relevant(path):
                    self._judge_file(path)
                count += 1
                if count >= TREE_LIMIT:
                    log.warning("directory too large to judge whole", path=root)
                    return

    def _judge_file(self, path: str, *, found: str | None = None) -> None:
        lay = self._layout
        exit_root = containing(path, lay.exits)
        target = containing(path, lay.targets)
        pattern = flag_match(os.path.basename(path), self.settings.flag) if target else None
        if exit_root is None and pattern is None:
            return
        try:
            st = os.lstat(path)
        except OSError:
            return  # gone again (a temporary file renamed away): its new name is judged
        if not stat.S_ISREG(st.st_mode):
            return
        key = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key in self._reported:
            self._seen.note(path, st)
            return
        self._reported[key] = None
        while len(self._reported) > 4096:
            self._reported.popitem(last=False)
        limit = self.settings.hash_limit
        try:
            digest, _n, st = sha256_bounded(path, limit)
        except OSError:
            return
        # The file may have changed while it was hashed (its writer still at work): what
        # is reported is what was read, and that version is not reported again when the
        # writer's close arrives.
        read_key = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if read_key != key:
            if read_key in self._reported:
                self._seen.note(path, st)
                return
            self._reported[read_key] = None
        try:
            self._report(path, st, digest, exit_root, target, pattern, found)
        except Exception:
            # Not recorded: neither reported nor seen, so a later event, or the next
            # start, tries again.
            self._reported.pop(key, None)
            self._reported.pop(read_key, None)
            raise
        self._seen.note(path, st)  # the version read is the one reported

    def _report(self, path: str, st: os.stat_result, digest: str | None,
                exit_root: str | None, target: str | None, pattern: str | None,
                found: str | None) -> None:
        lay = self._layout
        limit = self.settings.hash_limit
        owner = user_name(st.st_uid)
        details: dict[str, Any] = {
            "path": path, "size": st.st_size, "sha256": digest, "owner": owner,
            "operator": self.ctx.operator.current(),
        }
        if found is not None:
            # Written while the agent was not running: when it was written is evidence too.
            details["found"] = found
            details["mtime"] = rfc3339(st.st_mtime)
        if digest is None:
            details["hash_skipped"] = (f"larger than hash_limit ({limit} bytes)" if limit > 0
                                       else "hash_limit is 0")
        if exit_root is not None:
            mount = lay.exit_mounts.get(exit_root)
            self.record("files.copied", "violation", {
                **details, "exit": exit_root,
                "class": mount[1] if mount else "removable-root",
                "fstype": mount[0].fstype if mount else None,
            }, user=owner)
        if pattern is not None:
            self.record("files.flagged", "warning",
                        {**details, "folder": target, "pattern": pattern}, user=owner)


def _inode(path: str) -> int | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino if stat.S_ISDIR(st.st_mode) else None
