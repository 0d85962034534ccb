"""The processes control: programs the floor forbids (screen recorders, cloud sync).

Policy table ``[processes]``:

- ``forbid``: program names (globs allowed, e.g. ``"obs*"``), matched against the process
  name and the file name of its executable.
- ``forbid_paths``: executable paths (globs allowed, e.g. ``"/opt/dropbox/*"``).
- ``forbid_sha256``: SHA-256 digests of executables. The running executable is hashed
  through ``/proc/PID/exe``, so a renamed or moved copy is still recognised.
- ``action``: ``report`` records ``processes.flagged`` (warning); ``kill`` ends the
  process with SIGKILL and records ``processes.killed`` (violation). Either event names
  the process's user, pid, executable and command line, and the operator at the seat.
- ``check_interval`` (default ``"1s"``) and ``full_check_interval`` (default ``"30s"``).

Cheap by design: every ``check_interval`` the control compares the list of pids with the
last one (and skips even that when the kernel has handed out no pid since) and inspects
only new processes, plus, for a few seconds, recent ones again, to see the program a new
process ``exec``s into. At most every ``full_check_interval`` it looks at every process
again, with one readlink of its executable each, and inspects those that ``exec``'d
since: that catches a long-lived process turning into a forbidden program. Digests are
cached by (device, inode, mtime, size) of the executable, so a program is hashed once
however many copies run. A new policy has every running process inspected again.

The agent never kills itself, its ancestors or PID 1; when such a process matches, it is
reported with the reason instead. Each process is reported once.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import psutil
import structlog

from floorguard.agent.adapters.desktop import notify_user
from floorguard.agent.controls.base import Control, ControlContext
from floorguard.agent.controls.processes.rules import YOUNG, forbidden, scan_plan
from floorguard.agent.periodic import Periodic
from floorguard.events import rfc3339
from floorguard.policy import Policy, ProcessesSettings

log = structlog.get_logger("floorguard.processes")

CMDLINE_MAX = 4096


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    name: str
    exe: str
    cmdline: tuple[str, ...]
    username: str
    create_time: float
    ppid: int


# --- pure decisions -----------------------------------------------------------------------


def protected_pids() -> set[int]:
    """The agent, its ancestors and PID 1: never killed, whatever the policy says."""
    out, pid = {1}, os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            pid = psutil.Process(pid).ppid()
        except psutil.Error:
            break
    return out


# --- OS adapters --------------------------------------------------------------------------


class ExeHashes:
    """SHA-256 of executables through ``/proc/PID/exe``, cached by file identity."""

    def __init__(self, limit: int = 4096):
        self._cache: OrderedDict[tuple[int, int, int, int], str] = OrderedDict()
        self._limit = limit

    def of(self, pid: int) -> str | None:
        path = f"/proc/{pid}/exe"
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                while chunk := f.read(1024 * 1024):
                    h.update(chunk)
        except OSError:
            return None
        digest = h.hexdigest()
        self._cache[key] = digest
        while len(self._cache) > self._limit:
            self._cache.popitem(last=False)
        return digest


@dataclass(frozen=True)
class Seen:
    """What a scan reads of every process: two small reads of /proc, no more."""

    pid: int
    comm: str
    start: int  # start time in clock ticks since boot: with the pid, a process's identity
    exe: str


def read_proc(pid: int, proc: str = "/proc") -> Seen | None:
    """The process's name (``comm``), start time and executable; None for a process that
    is gone, a zombie, or unreadable. psutil reads the same files, but through several
    opens per field; a full scan of hundreds of processes must stay this cheap."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        # comm may hold spaces and parentheses: it ends at the last ")"
        left, right = data.index(b"("), data.rindex(b")")
        rest = data[right + 2:].split()
        state, start = rest[0], int(rest[19])
    except (ValueError, IndexError):
        return None
    if state in (b"Z", b"X"):
        return None
    comm = data[left + 1:right].decode("utf-8", "surrogateescape")
    try:
        exe = os.readlink(f"{proc}/{pid}/exe")
    except OSError:
        exe = ""  # a kernel thread, or it just ended
    exe = exe.removesuffix(" (deleted)")
    return Seen(pid=pid, comm=comm, start=start, exe=exe)


def list_pids(proc: str = "/proc") -> set[int]:
    return {int(n) for n in os.listdir(proc) if n.isdigit()}


def read_last_pid(proc: str = "/proc") -> int | None:
    """The pid the kernel handed out last (the fifth field of /proc/loadavg): unchanged
    means no process or thread was started since it was last read."""
    try:
        with open(f"{proc}/loadavg", "rb") as f:
            return int(f.read().split()[4])
    except (OSError, ValueError, IndexError):
        return None


def long_name(pid: int) -> str:
    """The program name from the command line, for a ``comm`` the kernel cut at 15 bytes."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read(4096).split(b"\0", 1)[0]
    except OSError:
        return ""
    return os.path.basename(argv0.decode("utf-8", "surrogateescape"))


def describe(p: psutil.Process, name: str, exe: str) -> ProcInfo | None:
    """Everything an event says about a process: read only for one that matched."""
    try:
        with p.oneshot():
            return ProcInfo(pid=p.pid, name=name, exe=exe, cmdline=tuple(p.cmdline()),
                            username=p.username(), create_time=p.create_time(),
                            ppid=p.ppid())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None
    except KeyError:  # a uid with no name
        return ProcInfo(pid=p.pid, name=name, exe=exe, cmdline=(), username=str(
            p.uids().real), create_time=p.create_time(), ppid=p.ppid())


def _cmdline(parts: tuple[str, ...]) -> list[str]:
    out, total = [], 0
    for part in parts:
        total += len(part)
        if total > CMDLINE_MAX:
            out.append(part[: max(0, CMDLINE_MAX - (total - len(part)))] + "...")
            break
        out.append(part)
    return out


# --- the control --------------------------------------------------------------------------


class ProcessesControl(Control):
    """Forbidden programs, reported or killed."""

    name: ClassVar[str] = "processes"
    check_interval: ClassVar[float] = 60.0

    def __init__(self, ctx: ControlContext):
        super().__init__(ctx)
        self.rules = ProcessesSettings()
        self.hashes = ExeHashes()
        self._known: set[int] = set()
        self._first_seen: dict[int, float] = {}
        self._last_full: float | None = None
        self._reported: set[tuple[int, int]] = set()
        self._exe_seen: dict[int, str] = {}
        self._last_pid: int | None = None
        self._rejudge = False
        self._protected: set[int] = set()
        self._loop = Periodic("processes-scan", self.scan, lambda: self.rules.check_interval,
                              wait_first=True)
        self.scans = 0

    def start(self, policy: Policy) -> None:
        super().start(policy)
        self.rules = policy.settings(ProcessesSettings)
        self._protected = protected_pids()
        # The first, full scan runs before the agent reports itself ready: what runs at
        # start is judged at once, and what starts later is new.
        self.scan()
        self._loop.start()

    def apply_policy(self, policy: Policy) -> None:
        super().apply_policy(policy)
        self.rules = policy.settings(ProcessesSettings)
        self._rejudge = True  # every running process, by the new rules, on the next round
        self._loop.wake()

    def stop(self) -> None:
        self._loop.stop()

    def status(self) -> dict[str, Any]:
        return {"processes": len(self._known), "scans": self.scans,
                "action": self.rules.action}

    def scan(self) -> None:
        """One round: inspect new (and recent) processes, or all of them when due."""
        rules = self.rules
        if not (rules.forbid or rules.forbid_paths or rules.forbid_sha256):
            return
        now = self.ctx.clock()
        if self._rejudge:
            self._rejudge = False
            self._last_full = None
            self._exe_seen.clear()
        last_pid = read_last_pid()
        full_due = self._last_full is None or now - self._last_full >= rules.full_check_interval
        if full_due or last_pid is None or last_pid != self._last_pid:
            pids = list_pids()
        else:
            # No pid was handed out since the last round, so no process is new: skip the
            # listing of /proc, the one costly read of a quiet round.
            pids = self._known
        self._last_pid = last_pid
        todo, full = scan_plan(now, pids, self._known, self._first_seen, self._last_full,
                               rules.full_check_interval)
        if full:
            self._last_full = now
        if self.scans:  # processes running when the agent started are not young
            for pid in pids - self._known:
                self._first_seen[pid] = now
        for pid in list(self._first_seen):
            if pid not in pids or now - self._first_seen[pid] >= YOUNG:
                del self._first_seen[pid]
        for pid in sorted(todo):
            if pid in self._known and self._same_program(pid):
                continue
            self._check(pid, rules)
        self._known = pids
        if full:
            self._reported = {k for k in self._reported if k[0] in pids}
            self._exe_seen = {p: e for p, e in self._exe_seen.items() if p in pids}
        self.scans += 1

    def _same_program(self, pid: int) -> bool:
        """Whether a known process still runs what it ran when last inspected: only
        ``exec`` changes that, and one readlink tells."""
        try:
            exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
        except OSError:
            exe = ""
        return self._exe_seen.get(pid) == exe

    def _check(self, pid: int, rules: ProcessesSettings) -> None:
        seen = read_proc(pid)
        if seen is None:
            return
        self._exe_seen[pid] = seen.exe
        if (pid, seen.start) in self._reported:
            return
        digest = self.hashes.of(pid) if rules.forbid_sha256 else None
        why = forbidden(seen.comm, seen.exe, rules, digest)
        if why is None and len(seen.comm) == 15:
            why = forbidden(long_name(pid), seen.exe, rules, digest)
        if why is None:
            return
        self._reported.add((pid, seen.start))
        try:
            proc = psutil.Process(pid)
        except psutil.Error:
            return
        again = read_proc(pid)
        if again is None or again.start != seen.start:
            return  # it ended and the pid was taken again between two reads
        info = describe(proc, seen.comm, seen.exe)
        if info is None:
            return
        if pid in self._protected:
            self._report(info, digest, why, "processes.flagged", "warning",
                         {"not_killed": "the agent never kills itself, its ancestors "
                                        "or PID 1"})
            return
        self._act(proc, info, digest, why, rules)

    def _act(self, proc: psutil.Process, info: ProcInfo, digest: str | None, why: str,
             rules: ProcessesSettings) -> None:
        if rules.action != "kill":
            self._report(info, digest, why, "processes.flagged", "warning", {})
            return
        try:
            # psutil checks the pid still names the same process (create time) first.
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            self._report(info, digest, why, "processes.flagged", "warning",
                         {"not_killed": "it ended before it could be killed"})
            return
        except psutil.AccessDenied as exc:
            self._report(info, digest, why, "processes.flagged", "violation",
                         {"not_killed": f"kill refused: {exc}"})
            return
        self._report(info, digest, why, "processes.killed", "violation",
                     {"signal": "SIGKILL"})
        notify_user(info.username, "Program closed by floor policy",
                    f"{info.name} is not allowed on this floor and was closed.")

    def _report(self, info: ProcInfo, digest: str | None, why: str, kind: str,
                severity: str, extra: dict[str, Any]) -> None:
        self.record(kind, severity, {
            "pid": info.pid, "ppid": info.ppid, "name": info.name, "exe": info.exe,
            "cmdline": _cmdline(info.cmdline), "user": info.username, "sha256": digest,
            "matched": why, "started": rfc3339(info.create_time),
            "operator": self.ctx.operator.current(), **extra,
        }, user=info.username)
