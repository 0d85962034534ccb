"""The agent's journal: an append-only, hash-chained SQLite file in WAL mode.

One writer thread owns the write connection; any thread hands it events through a queue.
A warning or violation is committed (and fsync'd: ``synchronous=FULL``) on its own at once;
info events are group-committed, at most ``group_window`` seconds after the first of them
arrived. ``append`` returns a ticket whose ``wait()`` returns the stored record only once
it is durable, so a control reports an action done only after its evidence is on disk.
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

from .events import GENESIS, SEVERITIES, canonical_json, new_id, record_hash, rfc3339

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


@dataclass
class Entry:
    """What a control hands over; the writer adds seq, id, ts, prev and hash."""

    fields: dict[str, Any]
    done: threading.Event
    record: dict[str, Any] | None = None
    error: BaseException | None = None

    def wait(self, timeout: float | None = 10.0) -> dict[str, Any]:
        if not self.done.wait(timeout):
            raise JournalError("the journal did not store the event in time")
        if self.error is not None:
            raise JournalError(f"the journal could not store the event: {self.error}")
        assert self.record is not None
        return self.record


@dataclass
class _Task:
    """Work that must run in the writer thread, between commits (journal compaction)."""

    fn: Callable[[], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        if not path.exists():
            raise JournalError(f"no journal at {path}: is the state directory right?")
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30,
                               check_same_thread=False)
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
    ):
        self.dir = Path(state_dir)
        self.path = self.dir / self.FILE
        self.clock = clock
        self.group_window = group_window
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
        """Queue an event. ``fields`` holds every record field but seq, id, ts, prev, hash."""
        if fields.get("severity") not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}: {fields.get('severity')}")
        # Fail the caller, not the writer thread: a record that cannot be hashed (a set, a
        # NaN, bytes in its details) must not stop the journal for every other control.
        try:
            canonical_json(fields)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the event cannot be written as JSON: {exc}") from None
        if self._thread is None or self._closed.is_set():
            raise JournalClosed("the journal is closed")
        entry = Entry(fields=fields, done=threading.Event())
        self._q.put(entry)
        return entry

    def record(self, fields: dict[str, Any], timeout: float | None = 10.0) -> dict[str, Any]:
        """Append and wait until the event is durable."""
        return self.append(fields).wait(timeout)

    def _writer(self) -> None:
        stop = False
        while not stop:
            first = self._q.get()
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

    def _commit(self, batch: list[Entry]) -> None:
        seq, prev = self.last_seq, self.last_hash
        rows = []
        try:
            for entry in batch:
                now = self.clock()
                rec = dict(entry.fields)
                rec.update(id=new_id(now), seq=seq + 1, ts=rfc3339(now), prev=prev)
                rec.setdefault("details", {})
                rec["hash"] = record_hash(rec)
                rows.append((rec["seq"], rec["id"], rec["ts"], rec["severity"], rec["kind"],
                             canonical_json(rec), rec["hash"]))
                entry.record = rec
                seq, prev = rec["seq"], rec["hash"]
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                "INSERT INTO journal (seq, id, ts, severity, kind, record, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            # The head moves in the same transaction, so a record cut off the end of the
            # journal is as visible to ``verify`` as one cut from the middle.
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES ('head', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (f"{seq} {prev}",))
            self._conn.execute("COMMIT")
        except Exception as exc:  # the writer thread must outlive any one bad commit
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            for entry in batch:
                entry.record, entry.error = None, exc
                entry.done.set()
            return
        self.last_seq, self.last_hash = seq, prev
        self.commits += 1
        for entry in batch:
            entry.done.set()

    def _build_rows(self, batch: list[Entry]) -> tuple[int, str, list[tuple[Any, ...]]]:
        """Chain the entries after the current head; returns (last seq, last hash, rows)."""
        seq, prev = self.last_seq, self.last_hash
        rows = []
        for entry in batch:
            seq += 1
            now = self.clock()
            rec = dict(entry.fields)
            rec.update(id=new_id(now), seq=seq, ts=rfc3339(now), prev=prev)
            rec.setdefault("details", {})
            rec["hash"] = record_hash(rec)
            prev = rec["hash"]
            entry.record = rec
            rows.append((seq, rec["id"], rec["ts"], rec["severity"], rec["kind"],
                         canonical_json(rec), rec["hash"]))
        return seq, prev, rows

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
                seq, prev, rows_out = self._build_rows([entry])
                c.executemany("INSERT INTO journal (seq, id, ts, severity, kind, record, hash) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?)", rows_out)
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
        return {"reason": "journal size cap reached with records not yet shipped",
                "max_mb": round(max_bytes / 1_048_576, 3), "dropped": len(dropped),
                "first_seq": dropped[0][0], "last_seq": dropped[-1][0],
                "ranges": [[r[0], r[1]] for r in runs[:100]],
                "ranges_total": len(runs), "severity_dropped": "info", "kinds": kinds}


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
        from .events import verify_chain

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
        if head is not None:
            head_seq, _, head_hash = head.partition(" ")
            last_seq = rows[-1]["seq"] if rows else start - 1
            last_hash = rows[-1]["hash"] if rows else prev
            if int(head_seq) > last_seq:
                return last_seq + 1, (f"records {last_seq + 1} to {head_seq} were written "
                                      "but are missing")
            if int(head_seq) < last_seq:
                return int(head_seq) + 1, "records after the journal's head were added"
            if head_hash != last_hash:
                return last_seq, "the last record is not the one the journal wrote"
        return None, "intact"
