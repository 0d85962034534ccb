"""The agent's journal: an append-only, hash-chained SQLite file in WAL mode.

One writer thread owns the write connection; any thread hands it events through a queue.
A warning or violation is committed (and fsync'd: ``synchronous=FULL``) on its own at once;
info events are group-committed, at most ``group_window`` seconds after the first of them
arrived. ``append`` returns a ticket whose ``wait()`` returns the stored record only once
it is durable, so a control reports an action done only after its evidence is on disk.

Every string an event carries from the OS (``details``, keys included, and ``user``,
``seat``, ``host``) is escaped by ``osbytes.escape`` in ``append``, so bytes that are not
UTF-8 are recorded visibly rather than failing the event. One entry that still cannot be
stored never costs the others in its group commit: it alone fails, and a chained
``agent.gap`` says what was lost.

When ``state_dir`` is full (SQLite reports SQLITE_FULL or an I/O error), warnings and
violations are held in memory, in order, up to ``HOLD_MAX`` entries and ``HOLD_MAX_BYTES``
bytes, and written when space returns; info events, and whatever does not fit, are
counted per severity and kind and declared by one chained ``agent.gap`` written first
when space returns. ``condition()`` says ``degraded: ...`` meanwhile (the heartbeat
carries it to the console).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from floorguard.events import GENESIS, SEVERITIES, canonical_json, new_id, record_hash, rfc3339
from floorguard.osbytes import escape, escape_tree

log = structlog.get_logger("floorguard.journal")

# What the writer holds in memory while state_dir is full (warnings and violations only).
HOLD_MAX = 10_000
HOLD_MAX_BYTES = 16 * 1_048_576
# The record fields whose strings come from the OS (the rest are the agent's own).
_OS_FIELDS = ("host", "seat", "user")

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    seq      INTEGER PRIMARY KEY,
    id       TEXT NOT NULL,
    ts       TEXT NOT NULL,
    severity TEXT NOT NULL,
    kind     TEXT NOT NULL,
    record   TEXT NOT NULL,
    hash     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_ts ON journal (ts);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS gaps (
    from_seq  INTEGER PRIMARY KEY,
    to_seq    INTEGER NOT NULL,
    last_hash TEXT NOT NULL,
    count     INTEGER NOT NULL
);
"""


class JournalError(Exception):
    pass


class JournalClosed(JournalError):
    pass


class JournalHeld(JournalError):
    """The disk is full: the event is held in memory and written when space returns."""


def _storage_full(exc: BaseException) -> bool:
    """SQLite could not write for lack of space (or the device failing under it)."""
    if not isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)
    text = str(exc)
    return "disk is full" in text or "disk I/O error" in text


@dataclass
class Entry:
    """What a control hands over; the writer adds seq, id, ts, prev and hash."""

    fields: dict[str, Any]
    done: threading.Event
    record: dict[str, Any] | None = None
    error: BaseException | None = None
    at: float | None = None  # when it was handed over: its ts, even if written later
    size: int = 0  # bytes of its canonical JSON, for the bound on held entries

    def wait(self, timeout: float | None = 10.0) -> dict[str, Any]:
        if not self.done.wait(timeout):
            raise JournalError("the journal did not store the event in time")
        if isinstance(self.error, JournalHeld):  # not lost: the caller may tell apart
            raise JournalHeld(f"the event is not stored yet: {self.error}")
        if self.error is not None:
            raise JournalError(f"the journal could not store the event: {self.error}")
        assert self.record is not None
        return self.record


@dataclass
class _Lost:
    """Counts of the events not kept while state_dir was full, for their agent.gap."""

    count: int = 0
    severities: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    first: float | None = None
    last: float | None = None
    sample: dict[str, Any] = field(default_factory=dict)  # who: agent, host, seat, user

    def add(self, entry: Entry) -> None:
        self.count += 1
        sev, kind = str(entry.fields.get("severity")), str(entry.fields.get("kind"))
        self.severities[sev] = self.severities.get(sev, 0) + 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if entry.at is not None:
            self.first = entry.at if self.first is None else min(self.first, entry.at)
            self.last = entry.at if self.last is None else max(self.last, entry.at)
        self.sample = {k: entry.fields.get(k) for k in ("agent", "host", "seat", "user",
                                                         "policy")}


def _gap_details(reason: str, severities: dict[str, int], kinds: dict[str, int]
                 ) -> dict[str, Any]:
    """The details every ``agent.gap`` carries: why, and what was lost by severity and
    kind (the size cap and a full disk declare their losses the same way)."""
    return {"reason": reason, "dropped": sum(severities.values()),
            "severities": dict(sorted(severities.items())), "kinds": dict(sorted(kinds.items()))}


@dataclass
class _Task:
    """Work that must run in the writer thread, between commits (journal compaction)."""

    fn: Callable[[], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        try:
            present = path.exists()
            uri = f"{path.resolve().as_uri()}?mode=ro"
        except OSError as exc:  # a folder this user may not enter
            raise JournalError(f"cannot reach {path}: {exc.strerror or exc}; run as a user "
                               "who may read the state directory (root)") from None
        if not present:
            raise JournalError(f"no journal at {path}: is the state directory right?")
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open {path}: {exc}") from None
    else:
        conn = sqlite3.connect(str(path), timeout=30, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
    return conn


class Journal:
    """The single writer of ``STATE_DIR/journal.db``."""

    FILE = "journal.db"

    def __init__(
        self,
        state_dir: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        group_window: float = 0.1,
        retry_interval: float = 1.0,
        hold_max: int = HOLD_MAX,
        hold_max_bytes: int = HOLD_MAX_BYTES,
    ):
        self.dir = Path(state_dir)
        self.path = self.dir / self.FILE
        self.clock = clock
        self.group_window = group_window
        self.retry_interval = retry_interval
        self.hold_max = hold_max
        self.hold_max_bytes = hold_max_bytes
        # While state_dir is full: the entries held in memory (in order), their bytes,
        # and what could not be kept (declared by an agent.gap when space returns).
        self._held: list[Entry] = []
        self._held_bytes = 0
        self._lost = _Lost()
        self._full_since: float | None = None
        self._full_error = ""
        self._next_try = 0.0  # monotonic time of the next write attempt while full
        self._q: queue.Queue[Entry | _Task | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lockfile: Any = None
        self._closed = threading.Event()
        self.last_seq = 0
        self.last_hash = GENESIS
        self.commits = 0  # transactions written: group commit keeps this low

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> Journal:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lockfile = open(self.dir / "journal.lock", "w")  # noqa: SIM115 held while open
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockfile.close()
            raise JournalError(
                f"another floorguard agent is writing {self.path}; stop it first") from None
        self._conn = connect(self.path)
        # Metadata goes through its own connection so that it never joins a transaction
        # the writer thread has open.
        self._meta_conn = connect(self.path)
        self._meta_lock = threading.Lock()
        with contextlib.suppress(OSError):
            os.chmod(self.path, 0o600)
        row = self._conn.execute("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1") \
            .fetchone()
        if row:
            self.last_seq, self.last_hash = int(row[0]), str(row[1])
        else:
            base = self.get_meta("base_seq")
            if base is not None:  # every record was pruned after shipping
                self.last_seq = int(base)
                self.last_hash = self.get_meta("base_prev") or GENESIS
        self._thread = threading.Thread(target=self._writer, name="journal-writer",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self._q.put(None)
        self._thread.join(timeout)
        self._thread = None
        self._conn.close()
        self._meta_conn.close()
        if self._lockfile is not None:
            self._lockfile.close()

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Journal:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------

    def append(self, fields: dict[str, Any]) -> Entry:
        """Queue an event. ``fields`` holds every record field but seq, id, ts, prev, hash.

        Strings from the OS are escaped here (see ``osbytes``), once for every control."""
        if fields.get("severity") not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}: {fields.get('severity')}")
        fields = dict(fields)
        if "details" in fields:
            fields["details"] = escape_tree(fields["details"])
        for key in _OS_FIELDS:
            if isinstance(fields.get(key), str | bytes):
                fields[key] = escape(fields[key])
        # Fail the caller, not the writer thread: a record that cannot be hashed (a set, a
        # NaN in its details) must not stop the journal for every other control.
        try:
            size = len(canonical_json(fields).encode("utf-8"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the event cannot be written as JSON: {exc}") from None
        if self._thread is None or self._closed.is_set():
            raise JournalClosed("the journal is closed")
        entry = Entry(fields=fields, done=threading.Event(), at=self.clock(), size=size)
        self._q.put(entry)
        return entry

    def record(self, fields: dict[str, Any], timeout: float | None = 10.0) -> dict[str, Any]:
        """Append and wait until the event is durable."""
        return self.append(fields).wait(timeout)

    def condition(self) -> str:
        """``ok``, or ``degraded: ...`` while events wait in memory for disk space."""
        since = self._full_since
        if since is None:
            return "ok"
        return (f"degraded: disk full ({self._full_error}) since {rfc3339(since)}; "
                f"{len(self._held)} warnings/violations held in memory, "
                f"{self._lost.count} events not kept")

    def _writer(self) -> None:
        stop = False
        while not stop:
            try:
                # While events are held for want of space, wake up to try again.
                first = self._q.get(timeout=max(self._next_try - time.monotonic(), 0.001)
                                    if self._full_since is not None else None)
            except queue.Empty:
                self._commit([])
                continue
            if first is None:
                break
            if isinstance(first, _Task):
                self._run_task(first)
                continue
            batch = [first]
            task: _Task | None = None
            urgent = first.fields["severity"] != "info"
            deadline = time.monotonic() + (0 if urgent else self.group_window)
            while not urgent:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    nxt = self._q.get(timeout=remaining)
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if isinstance(nxt, _Task):
                    task = nxt
                    break
                batch.append(nxt)
                urgent = nxt.fields["severity"] != "info"
            # Take whatever else is already waiting into the same commit.
            while not stop and task is None:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if isinstance(nxt, _Task):
                    task = nxt
                    break
                batch.append(nxt)
            self._commit(batch)
            if task is not None:
                self._run_task(task)
        if self._full_since is not None:
            self._commit([])  # a last try: space may have come back
        self._closed.set()
        # Anything queued after close gets an error rather than silence.
        while True:
            try:
                left = self._q.get_nowait()
            except queue.Empty:
                break
            if left is not None:
                left.error = JournalClosed("the journal closed before storing the event")
                left.done.set()

    def _run_task(self, task: _Task) -> None:
        try:
            task.result = task.fn()
        except BaseException as exc:  # handed to the waiting caller, never lost
            task.error = exc
        task.done.set()

    def _chain(self, entries: list[Entry]) -> tuple[
            list[tuple[Entry, dict[str, Any], tuple[Any, ...]]], list[Entry]]:
        """Chain the entries after the current head, one at a time: an entry that cannot
        be made into a record is set aside (returned second), never failing the rest."""
        seq, prev = self.last_seq, self.last_hash
        out: list[tuple[Entry, dict[str, Any], tuple[Any, ...]]] = []
        bad: list[Entry] = []
        for entry in entries:
            try:
                now = entry.at if entry.at is not None else self.clock()
                rec = dict(entry.fields)
                rec.update(id=new_id(now), seq=seq + 1, ts=rfc3339(now), prev=prev)
                rec.setdefault("details", {})
                rec["hash"] = record_hash(rec)
                text = canonical_json(rec)
                text.encode("utf-8")  # sqlite3 would refuse it at bind time, for the batch
            except Exception as exc:
                entry.error = exc
                bad.append(entry)
                continue
            out.append((entry, rec, (rec["seq"], rec["id"], rec["ts"], rec["severity"],
                                     rec["kind"], text, rec["hash"])))
            seq, prev = rec["seq"], rec["hash"]
        return out, bad

    def _insert(self, chained: list[tuple[Entry, dict[str, Any], tuple[Any, ...]]]) -> None:
        """One transaction: the rows and the head that moves with them."""
        last = chained[-1][1]
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(
                "INSERT INTO journal (seq, id, ts, severity, kind, record, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", [row for _e, _r, row in chained])
            # The head moves in the same transaction, so a record cut off the end of the
            # journal is as visible to ``verify`` as one cut from the middle.
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES ('head', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (f"{last['seq']} {last['hash']}",))
            self._conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise
        self.last_seq, self.last_hash = int(last["seq"]), str(last["hash"])
        self.commits += 1

    def _gap_entry(self, failed: list[Entry]) -> Entry | None:
        """The chained ``agent.gap`` declaring events that could not be stored: those not
        kept while state_dir was full, and ``failed`` (entries no record could be made of
        or that SQLite refused)."""
        lost = self._lost
        if not lost.count and not failed:
            return None
        severities = dict(lost.severities)
        kinds = dict(lost.kinds)
        times = [t for t in (lost.first, lost.last) if t is not None]
        for e in failed:
            sev, kind = str(e.fields.get("severity")), str(e.fields.get("kind"))
            severities[sev] = severities.get(sev, 0) + 1
            kinds[kind] = kinds.get(kind, 0) + 1
            if e.at is not None:
                times.append(e.at)
        reasons = []
        if lost.count:
            reasons.append(f"state_dir was full ({self._full_error}): events not kept in "
                           f"memory (at most {self.hold_max} warnings and violations are)")
        if failed:
            reasons.append("events that could not be stored: " + "; ".join(sorted(
                {f"{type(e.error).__name__}: {e.error}"[:200] for e in failed})))
        details = _gap_details(" and ".join(reasons), severities, kinds)
        if times:
            details.update(first_ts=rfc3339(min(times)), last_ts=rfc3339(max(times)))
        sample = failed[-1].fields if failed else lost.sample
        fields: dict[str, Any] = {k: sample.get(k) or "" for k in ("agent", "host", "seat",
                                                                   "policy")}
        fields.update(user=sample.get("user"), control="agent", kind="agent.gap",
                      severity="warning", details=details)
        return Entry(fields=fields, done=threading.Event())

    def _commit(self, batch: list[Entry]) -> None:
        if batch and self._full_since is not None and time.monotonic() < self._next_try:
            # Still full a moment ago: hold without trying (and re-chaining every held
            # entry) for each new event; the writer tries again every retry_interval.
            self._hold(batch, None)
            return
        chained, failed = self._chain(self._held + batch)
        gap = self._gap_entry(failed)
        if gap is not None:
            # Events not kept while the disk was full came before what is stored now, so
            # their gap goes first; a gap for entries of this batch follows the batch.
            kept = [e for e, _r, _w in chained]
            chained, failed_again = self._chain(
                [gap, *kept] if self._lost.count else [*kept, gap])
            failed += failed_again
        if chained:
            try:
                self._insert(chained)
            except Exception as exc:  # the writer thread must outlive any one bad commit
                if _storage_full(exc):
                    bad = {id(e) for e in failed}
                    self._hold([e for e in batch if id(e) not in bad], exc)
                    for e in failed:
                        if e is not gap:
                            self._lost.add(e)  # declared by the gap when space returns
                    self._finish_failed(failed)
                    return
                # Something in one row: store each alone, so it costs no other event;
                # one that fails alone is declared by a gap of its own.
                log.warning("a group commit failed; storing its events one by one",
                            error=f"{type(exc).__name__}: {exc}", events=len(chained))
                self._held, self._held_bytes = [], 0
                for entry, _rec, _row in chained:
                    if entry is gap:
                        with contextlib.suppress(Exception):
                            self._insert(self._chain([gap])[0])
                            self._lost = _Lost()
                    else:
                        self._commit_alone(entry)
                self._finish_failed(failed)
                return
        for entry, rec, _row in chained:
            entry.record, entry.error = rec, None
            entry.done.set()
        if chained and self._full_since is not None:
            log.warning("journal writable again; held events written",
                        held=len(self._held), not_kept=self._lost.count,
                        full_for_s=round(self.clock() - self._full_since, 3))
            self._full_since, self._full_error = None, ""
        if chained or gap is None:
            self._held, self._held_bytes, self._lost = [], 0, _Lost()
        self._finish_failed(failed)

    def _commit_alone(self, entry: Entry) -> None:
        """Store one entry in its own transaction; if it fails, a gap says so instead."""
        chained, failed = self._chain([entry])
        if chained:
            try:
                self._insert(chained)
            except Exception as exc:
                entry.error = exc
                failed.append(entry)
            else:
                entry.record, entry.error = chained[0][1], None
        if failed:
            gap = self._gap_entry(failed)
            g_chained, _ = self._chain([gap]) if gap is not None else ([], [])
            if g_chained:
                try:
                    self._insert(g_chained)
                except Exception as exc:
                    log.error("could not record the gap for an event that failed",
                              error=str(exc), kind=entry.fields.get("kind"))
        self._finish_failed(failed)
        entry.done.set()

    def _finish_failed(self, failed: list[Entry]) -> None:
        for entry in failed:
            entry.record = None
            entry.error = entry.error or JournalError("the event could not be stored")
            entry.done.set()

    def _hold(self, batch: list[Entry], exc: BaseException | None) -> None:
        """State_dir is full: keep the new warnings and violations in memory while the
        bound allows; count everything else for the gap declared when space returns."""
        if exc is not None:
            self._next_try = time.monotonic() + self.retry_interval
        if self._full_since is None:
            self._full_since = self.clock()
            self._full_error = str(exc)
            log.error("state_dir is full: holding warnings and violations in memory",
                      path=str(self.path), error=str(exc), hold_max=self.hold_max)
        for entry in batch:
            keep = (entry.fields.get("severity") != "info"
                    and len(self._held) < self.hold_max
                    and self._held_bytes + entry.size <= self.hold_max_bytes)
            if keep:
                self._held.append(entry)
                self._held_bytes += entry.size
                entry.error = JournalHeld(
                    f"{self.dir} is full: the event is held in memory and written when "
                    "space returns")
            else:
                self._lost.add(entry)
                entry.error = JournalError(
                    f"{self.dir} is full and the event could not be kept: an agent.gap "
                    "will count it")
            entry.record = None
            entry.done.set()

    # -- metadata (acknowledged seq, agent id) -----------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._meta_lock:
            row = self._meta_conn.execute("SELECT value FROM meta WHERE key = ?",
                                          (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._meta_lock:
            self._meta_conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                                    (key, value))


    # -- retention -----------------------------------------------------------------------

    def compact(self, acked_seq: int, max_bytes: int, max_age_s: float,
                gap_fields: Callable[[dict[str, Any]], dict[str, Any]],
                timeout: float | None = 60.0) -> dict[str, Any]:
        """Keep the journal within ``max_bytes`` (run in the writer thread).

        1. Records the console has acknowledged (seq <= ``acked_seq``) and older than
           ``max_age_s`` are pruned; ``base_seq``/``base_prev`` keep the chain's anchor so
           ``floorguard verify`` still checks what is left.
        2. Over the cap, acknowledged records go next, oldest first.
        3. Still over the cap, unshipped *info* records are dropped, oldest first; the
           hole is written to the ``gaps`` table (with the hash of its last record, so the
           chain still verifies across it) and an ``agent.gap`` warning made by
           ``gap_fields(details)`` is appended in the same transaction. Warnings and
           violations are never dropped.

        Returns ``{"pruned": N, "dropped": M, "used_bytes": B}``.
        """
        task = _Task(lambda: self._compact(acked_seq, max_bytes, max_age_s, gap_fields))
        if self._thread is None or self._closed.is_set():
            raise JournalClosed("the journal is closed")
        self._q.put(task)
        if not task.done.wait(timeout):
            raise JournalError("journal compaction did not finish in time")
        if task.error is not None:
            raise JournalError(f"journal compaction failed: {task.error}")
        return dict(task.result)

    def used_bytes(self) -> int:
        c = self._conn
        pages = int(c.execute("PRAGMA page_count").fetchone()[0])
        free = int(c.execute("PRAGMA freelist_count").fetchone()[0])
        return (pages - free) * int(c.execute("PRAGMA page_size").fetchone()[0])

    def _rows_to_free(self, max_bytes: int) -> int:
        used = self.used_bytes()
        if used <= max_bytes:
            return 0
        count = int(self._conn.execute("SELECT count(*) FROM journal").fetchone()[0])
        if count == 0:
            return 0
        per_row = used / count
        # Aim under the cap so that compaction does not run again at every append.
        return max(1, math.ceil((used - 0.9 * max_bytes) / per_row))

    def _prune_prefix(self, upto: int) -> int:
        """Delete records up to and including ``upto`` (an existing, acknowledged seq)."""
        c = self._conn
        row = c.execute("SELECT hash FROM journal WHERE seq = ?", (upto,)).fetchone()
        if row is None:
            return 0
        n = c.execute("DELETE FROM journal WHERE seq <= ?", (upto,)).rowcount
        c.execute("DELETE FROM gaps WHERE to_seq <= ?", (upto,))
        for key, value in (("base_seq", str(upto)), ("base_prev", str(row[0]))):
            c.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                      "DO UPDATE SET value = excluded.value", (key, value))
        return int(n)

    def _compact(self, acked: int, max_bytes: int, max_age_s: float,
                 gap_fields: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        c = self._conn
        out: dict[str, Any] = {"pruned": 0, "dropped": 0}
        cutoff = rfc3339(self.clock() - max_age_s)
        c.execute("BEGIN IMMEDIATE")
        try:
            (old,) = c.execute("SELECT max(seq) FROM journal WHERE seq <= ? AND ts < ?",
                               (acked, cutoff)).fetchone()
            if old:
                out["pruned"] += self._prune_prefix(int(old))
            for _ in range(4):  # the per-row size is an estimate: measure again
                need = self._rows_to_free(max_bytes)
                if need == 0:
                    break
                row = c.execute("SELECT seq FROM journal WHERE seq <= ? ORDER BY seq "
                                "LIMIT 1 OFFSET ?", (acked, need - 1)).fetchone()
                if row is None:
                    row = c.execute("SELECT max(seq) FROM journal WHERE seq <= ?",
                                    (acked,)).fetchone()
                if row is None or row[0] is None:
                    break
                out["pruned"] += self._prune_prefix(int(row[0]))
            dropped: list[tuple[int, str, str]] = []
            for _ in range(4):
                need = self._rows_to_free(max_bytes)
                if need == 0:
                    break
                rows = c.execute("SELECT seq, hash, kind FROM journal WHERE seq > ? AND "
                                 "severity = 'info' ORDER BY seq LIMIT ?",
                                 (acked, need)).fetchall()
                if not rows:
                    break
                c.executemany("DELETE FROM journal WHERE seq = ?", [(r[0],) for r in rows])
                dropped.extend((int(r[0]), str(r[1]), str(r[2])) for r in rows)
            if dropped:
                out["dropped"] = len(dropped)
                details = self._record_gaps(dropped, max_bytes)
                entry = Entry(fields=gap_fields(details), done=threading.Event())
                gap_rows, gap_bad = self._chain([entry])
                if gap_bad:
                    raise JournalError(f"cannot record the gap: {entry.error}")
                entry.record = gap_rows[0][1]
                seq, prev = entry.record["seq"], entry.record["hash"]
                c.executemany("INSERT INTO journal (seq, id, ts, severity, kind, record, hash) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?)", [r for _e, _r, r in gap_rows])
                c.execute("INSERT INTO meta (key, value) VALUES ('head', ?) "
                          "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                          (f"{seq} {prev}",))
            c.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                c.execute("ROLLBACK")
            raise
        if dropped:
            self.last_seq, self.last_hash = seq, prev
            entry.done.set()
            out["gap"] = entry.record
        out["used_bytes"] = self.used_bytes()
        return out

    def _record_gaps(self, dropped: list[tuple[int, str, str]], max_bytes: int
                     ) -> dict[str, Any]:
        """Merge the dropped seqs into the ``gaps`` table; return the event's details."""
        c = self._conn
        holes = {int(a): (int(b), str(h), int(n)) for a, b, h, n in
                 c.execute("SELECT from_seq, to_seq, last_hash, count FROM gaps")}
        runs: list[list[Any]] = []  # [from, to, last_hash, count] of this drop
        for seq, h, _kind in dropped:
            if runs and runs[-1][1] == seq - 1:
                runs[-1][1], runs[-1][2] = seq, h
                runs[-1][3] += 1
            else:
                runs.append([seq, seq, h, 1])
        for a, b, h, n in runs:
            holes[a] = (b, h, n)
        merged: list[list[Any]] = []
        for a in sorted(holes):
            b, h, n = holes[a]
            if merged and merged[-1][1] == a - 1:
                merged[-1][1], merged[-1][2] = b, h
                merged[-1][3] += n
            else:
                merged.append([a, b, h, n])
        c.execute("DELETE FROM gaps")
        c.executemany("INSERT INTO gaps (from_seq, to_seq, last_hash, count) "
                      "VALUES (?, ?, ?, ?)", merged)
        kinds: dict[str, int] = {}
        for _seq, _h, kind in dropped:
            kinds[kind] = kinds.get(kind, 0) + 1
        details = _gap_details("journal size cap reached with records not yet shipped",
                               {"info": len(dropped)}, kinds)
        details.update(max_mb=round(max_bytes / 1_048_576, 3),
                       first_seq=dropped[0][0], last_seq=dropped[-1][0],
                       ranges=[[r[0], r[1]] for r in runs[:100]], ranges_total=len(runs),
                       severity_dropped="info")
        return details


class JournalReader:
    """Read access for the CLI, the link and the tests; safe beside the running writer."""

    def __init__(self, state_dir: str | Path, *, readonly: bool = True):
        self.path = Path(state_dir) / Journal.FILE
        self._conn = connect(self.path, readonly=readonly)
        try:
            found = self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'journal'"
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise JournalError(f"{self.path} is not a journal: {exc}") from None
        if found is None:  # an agent is creating it right now, or it is some other file
            self._conn.close()
            raise JournalError(f"{self.path} holds no journal (yet)")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def meta(self, key: str) -> str | None:
        try:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError:
            return None
        return None if row is None else str(row[0])

    def records(self, after_seq: int = 0, limit: int | None = None,
                since_ts: str | None = None) -> Iterator[dict[str, Any]]:
        sql = "SELECT record FROM journal WHERE seq > ?"
        args: list[Any] = [after_seq]
        if since_ts is not None:
            sql += " AND ts >= ?"
            args.append(since_ts)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        for (text,) in self._conn.execute(sql, args):
            yield json.loads(text)

    def gaps(self, after_seq: int = 0, upto: int | None = None) -> list[dict[str, Any]]:
        """Documented holes (info records dropped at the size cap) starting after
        ``after_seq`` (and at or before ``upto``)."""
        sql = "SELECT from_seq, to_seq, last_hash, count FROM gaps WHERE from_seq > ?"
        args: list[Any] = [after_seq]
        if upto is not None:
            sql += " AND from_seq <= ?"
            args.append(upto)
        try:
            rows = self._conn.execute(sql + " ORDER BY from_seq", args).fetchall()
        except sqlite3.OperationalError:  # a journal from before gaps existed
            return []
        return [{"from_seq": int(a), "to_seq": int(b), "last_hash": str(h), "count": int(n)}
                for a, b, h, n in rows]

    def last_seq(self) -> int:
        row = self._conn.execute("SELECT max(seq) FROM journal").fetchone()
        return int(row[0] or 0)

    def verify(self) -> tuple[int | None, str]:
        """Recompute the chain over the stored records (after any pruned prefix).

        Reads rows in storage order rather than by seq, so that rows swapped on disk
        are caught as well as rows altered or removed; the indexed columns must match the
        record, and the last record must be the head the writer committed with it.
        """
        # One read transaction: a commit by the running agent between reading the rows
        # and reading the head must not look like a missing record.
        self._conn.execute("BEGIN")
        try:
            return self._verify()
        finally:
            self._conn.execute("ROLLBACK")

    def _verify(self) -> tuple[int | None, str]:
        from floorguard.events import verify_chain

        base = self.meta("base_seq")
        start = int(base) + 1 if base else 1
        prev = self.meta("base_prev") or GENESIS
        rows = []
        for seq, ident, ts, severity, kind, text, stored_hash in self._conn.execute(
            "SELECT seq, id, ts, severity, kind, record, hash FROM journal ORDER BY rowid"
        ):
            try:
                rec = json.loads(text)
            except ValueError:
                return int(seq), "the record is not valid JSON"
            if not isinstance(rec, dict) or (
                rec.get("seq"), rec.get("id"), rec.get("ts"), rec.get("severity"),
                rec.get("kind"), rec.get("hash")
            ) != (seq, ident, ts, severity, kind, stored_hash):
                return int(seq), "the record's columns do not match its content"
            rows.append(rec)
        holes = {g["from_seq"]: (g["to_seq"], g["last_hash"]) for g in self.gaps()}
        bad, why = verify_chain(rows, start, prev, holes)
        if bad is not None:
            return bad, why
        head = self.meta("head")
        last_seq = rows[-1]["seq"] if rows else start - 1
        last_hash = rows[-1]["hash"] if rows else prev
        if head is None and rows:
            # Every commit writes the head with its records (since the journal's first
            # release), so records without one mean the head was deleted, most likely
            # together with records after it.
            return last_seq + 1, ("the journal's head mark is missing: records after "
                                  f"seq {last_seq} may have been cut off")
        # The console's acknowledgement is a second, independent mark: it never passes
        # what the journal wrote, so a journal ending below it lost its tail.
        acked = self.meta("acked_seq")
        if acked is not None and acked.isdigit() and int(acked) > last_seq:
            return last_seq + 1, (f"the console acknowledged records up to seq {acked}, "
                                  f"but the journal ends at seq {last_seq}")
        if head is not None:
            head_seq, _, head_hash = head.partition(" ")
            if int(head_seq) > last_seq:
                return last_seq + 1, (f"records {last_seq + 1} to {head_seq} were written "
                                      "but are missing")
            if int(head_seq) < last_seq:
                return int(head_seq) + 1, "records after the journal's head were added"
            if head_hash != last_hash:
                return last_seq, "the last record is not the one the journal wrote"
        return None, "intact"
