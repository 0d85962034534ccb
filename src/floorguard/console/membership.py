"""Floor memberships: the floors each account works on.

An SV reads and acts only on the floors they are a member of; an auditor with
memberships reads only those floors, and an auditor without any reads every floor (an
auditor checks the whole site unless told otherwise); an admin always sees every floor.
``auth.require`` attaches the floors to the signed-in ``User`` and ``auth`` holds the one
check every route uses. Admins set memberships with ``floorguard console user floors``.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from floorguard.console.store.schema import (
    user_floors,
    users,
)

MAX_FLOOR = 255  # agents.floor


class MembershipError(ValueError):
    pass


def parse_floors(values: list[str]) -> list[str]:
    """``["F1,F2", "3F north"]`` -> sorted unique names; each value may hold a comma list."""
    out: set[str] = set()
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if not name:
                continue
            if len(name) > MAX_FLOOR or any(ord(c) < 0x20 for c in name):
                raise MembershipError(f"floor {name[:40]!r}: a floor name is 1-{MAX_FLOOR} "
                                      "printable characters, as in 'enroll-code --floor'")
            out.add(name)
    return sorted(out)


def floors_of(conn: Connection, user_id: int) -> frozenset[str]:
    rows = conn.execute(sa.select(user_floors.c.floor).where(user_floors.c.user_id == user_id))
    return frozenset(str(r.floor) for r in rows)


def all_memberships(conn: Connection) -> dict[str, list[str]]:
    """User name -> floors (only users with at least one)."""
    out: dict[str, list[str]] = {}
    for name, floor in conn.execute(
            sa.select(users.c.name, user_floors.c.floor)
            .join(users, users.c.id == user_floors.c.user_id)
            .order_by(users.c.name, user_floors.c.floor)):
        out.setdefault(str(name), []).append(str(floor))
    return out


def set_floors(conn: Connection, name: str, floors: list[str], now: int) -> list[str]:
    """Replace the account's floors; returns those it lost. An SV on duty for a floor they
    lost goes off duty, since duty is only for one's own floors."""
    from floorguard.console.duty import duty_floor, go_off_duty

    uid = conn.execute(sa.select(users.c.id).where(users.c.name == name)).scalar()
    if uid is None:
        raise MembershipError(f"no user {name!r} (see 'floorguard console user list')")
    before = floors_of(conn, int(uid))
    conn.execute(user_floors.delete().where(user_floors.c.user_id == uid))
    if floors:
        conn.execute(user_floors.insert(), [{"user_id": uid, "floor": f} for f in floors])
    lost = sorted(before - set(floors))
    if duty_floor(conn, name) in lost:
        go_off_duty(conn, name, now)
    return lost
