"""Login throttling, shared through the store so that every console process agrees.

Each failed sign-in is a row (user name, client address, time). A name with
``MAX_PER_NAME`` failures, or an address with ``MAX_PER_IP`` failures, within ``WINDOW``
is refused with 429 before the password is even checked, until the oldest of those
failures leaves the window. A successful sign-in clears the name's failures.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .schema import metadata

WINDOW_US = 15 * 60 * 1_000_000
MAX_PER_NAME = 5
# Several SVs may sign in from behind one NAT address: a wider allowance per address.
MAX_PER_IP = 20

login_failures = sa.Table(
    "login_failures", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("ip", sa.String(64), nullable=False),
    sa.Column("ts_us", sa.BigInteger, nullable=False),
    sa.Index("login_failures_name_ts", "name", "ts_us"),
    sa.Index("login_failures_ip_ts", "ip", "ts_us"),
)


@dataclass(frozen=True)
class Throttled:
    retry_after_s: int
    by: str  # "name" or "ip"


def _blocked(conn: Connection, column: sa.Column, value: str, limit: int, now: int
             ) -> int | None:
    """Microseconds until ``value`` may try again, or None when it may now."""
    rows = conn.execute(
        sa.select(login_failures.c.ts_us)
        .where(column == value, login_failures.c.ts_us > now - WINDOW_US)
        .order_by(login_failures.c.ts_us.desc()).limit(limit)).scalars().all()
    if len(rows) < limit:
        return None
    return int(rows[-1]) + WINDOW_US - now


def check(conn: Connection, name: str, ip: str, now: int) -> Throttled | None:
    for by, column, value, limit in (("name", login_failures.c.name, name, MAX_PER_NAME),
                                     ("ip", login_failures.c.ip, ip, MAX_PER_IP)):
        wait = _blocked(conn, column, value, limit, now)
        if wait is not None:
            return Throttled(retry_after_s=max(1, (wait + 999_999) // 1_000_000), by=by)
    return None


def record_failure(conn: Connection, name: str, ip: str, now: int) -> None:
    conn.execute(login_failures.insert().values(name=name[:64], ip=ip[:64], ts_us=now))
    # Keep the table small: rows older than the window decide nothing.
    conn.execute(login_failures.delete().where(login_failures.c.ts_us < now - 2 * WINDOW_US))


def clear(conn: Connection, name: str) -> None:
    conn.execute(login_failures.delete().where(login_failures.c.name == name))
