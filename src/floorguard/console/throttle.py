"""Login throttling, shared through the store so that every console process agrees.

Each sign-in attempt first *reserves* a row (user name, client address, time) in its own
committed transaction, and only then counts the rows of its buckets; the password is
checked only when the count, its own row included, is within the limit. Because each
attempt counts after its own insert is committed, the k-th attempt to commit sees at
least k rows, so however many arrive at once (and at however many console processes,
on SQLite or PostgreSQL alike) no more than the limit ever reach the password check. A
wrong password leaves its row as the failure; a right one, or a refused attempt that
checked nothing, removes it.

The buckets, each over ``WINDOW_US``, are keyed so that a stranger cannot lock a real
user out from elsewhere:

- ``MAX_PER_ACCOUNT_ADDRESS`` failures for one account from one address;
- ``MAX_PER_ACCOUNT`` failures for one account from anywhere (a spread-out guesser);
- ``MAX_UNKNOWN_PER_ADDRESS`` failures under names that are no account, from one
  address. Those rows are stored under the empty name, so made-up names count against
  the address they came from and never against an account.

An admin lifts a lock at once with ``floorguard console user unlock NAME`` (or
``--address IP`` for an address's made-up-name bucket).

``PasswordChecks`` caps how many argon2 checks (64 MiB each) run at once in a process;
an attempt that finds no free slot within ``QUEUE_S`` is answered 503 without hashing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from floorguard.console.store.schema import (
    login_failures,
    users,
)

WINDOW_US = 15 * 60 * 1_000_000
MAX_PER_ACCOUNT_ADDRESS = 5
# Several SVs may share one NAT address, and a guesser may spread over many: an account
# takes more failures in all before it is locked everywhere.
MAX_PER_ACCOUNT = 20
MAX_UNKNOWN_PER_ADDRESS = 20
# Kept for callers that name the per-account-and-address limit by its old name.
MAX_PER_NAME = MAX_PER_ACCOUNT_ADDRESS

CONCURRENT_CHECKS = 4
QUEUE_S = 1.0

UNKNOWN = ""  # the name under which made-up names' failures are kept


@dataclass(frozen=True)
class Throttled:
    retry_after_s: int
    by: str  # "account_address", "account" or "address"


@dataclass(frozen=True)
class Attempt:
    """A reserved attempt: its row id and the key it counts under."""

    row_id: int
    key: str  # the account name, or UNKNOWN


def reserve(engine: Engine, name: str, ip: str, now: int) -> Attempt:
    """Insert this attempt's row and commit it, before anything is counted."""
    with engine.begin() as conn:
        known = conn.execute(sa.select(users.c.id).where(users.c.name == name[:64])
                             ).first() is not None
        key = name[:64] if known else UNKNOWN
        res = conn.execute(login_failures.insert().values(name=key, ip=ip[:64], ts_us=now))
        # Keep the table small: rows older than the window decide nothing.
        conn.execute(login_failures.delete().where(login_failures.c.ts_us < now - 2 * WINDOW_US))
    return Attempt(int(res.inserted_primary_key[0]), key)  # type: ignore[index]


def _wait(conn: Connection, where: list[sa.ColumnElement[bool]], limit: int, now: int
          ) -> int | None:
    """Microseconds until this bucket is under ``limit`` again, or None when it is now
    (counting the attempt's own row)."""
    rows = conn.execute(
        sa.select(login_failures.c.ts_us)
        .where(*where, login_failures.c.ts_us > now - WINDOW_US)
        .order_by(login_failures.c.ts_us.desc()).limit(limit + 1)).scalars().all()
    if len(rows) <= limit:
        return None
    return max(1, int(rows[-1]) + WINDOW_US - now)


def check(conn: Connection, attempt: Attempt, ip: str, now: int) -> Throttled | None:
    """Whether the reserved ``attempt`` may check its password."""
    c = login_failures.c
    if attempt.key == UNKNOWN:
        buckets = [("address", [c.name == UNKNOWN, c.ip == ip[:64]], MAX_UNKNOWN_PER_ADDRESS)]
    else:
        buckets = [("account_address", [c.name == attempt.key, c.ip == ip[:64]],
                    MAX_PER_ACCOUNT_ADDRESS),
                   ("account", [c.name == attempt.key], MAX_PER_ACCOUNT)]
    for by, where, limit in buckets:
        wait = _wait(conn, where, limit, now)
        if wait is not None:
            return Throttled(retry_after_s=max(1, (wait + 999_999) // 1_000_000), by=by)
    return None


def release(conn: Connection, attempt: Attempt) -> None:
    """The attempt checked no password, or the right one: it is no failure."""
    conn.execute(login_failures.delete().where(login_failures.c.id == attempt.row_id))


def clear(conn: Connection, name: str, ip: str) -> None:
    """A successful sign-in forgives this account's failures from this address."""
    conn.execute(login_failures.delete().where(login_failures.c.name == name,
                                               login_failures.c.ip == ip[:64]))


def unlock(conn: Connection, name: str | None = None, ip: str | None = None) -> int:
    """Forget failures (an admin's decision): an account's from everywhere, an
    address's made-up-name bucket, or both. Returns how many rows went."""
    where: list[sa.ColumnElement[bool]] = []
    if name is not None:
        where.append(login_failures.c.name == name)
    if ip is not None:
        where.append(login_failures.c.ip == ip)
        if name is None:
            where.append(login_failures.c.name == UNKNOWN)
    if not where:
        raise ValueError("name an account or an address to unlock")
    return int(conn.execute(login_failures.delete().where(*where)).rowcount)


class PasswordChecks:
    """At most ``limit`` password checks at once in this process."""

    def __init__(self, limit: int = CONCURRENT_CHECKS, queue_s: float = QUEUE_S):
        self._slots = threading.BoundedSemaphore(limit)
        self.queue_s = queue_s

    @contextmanager
    def slot(self) -> Iterator[bool]:
        """Yields True holding a slot, or False when none came free in time."""
        got = self._slots.acquire(timeout=self.queue_s)
        try:
            yield got
        finally:
            if got:
                self._slots.release()
