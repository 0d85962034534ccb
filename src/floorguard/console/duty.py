from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from floorguard.console.store.schema import (
    sv_duty,
)


def svs_on_duty(conn: Connection) -> dict[str, list[str]]:
    """SV names on duty now, by floor."""
    out: dict[str, list[str]] = {}
    for name, floor in conn.execute(sa.select(sv_duty.c.user_name, sv_duty.c.floor)
                                    .where(sv_duty.c.off_us.is_(None))
                                    .order_by(sv_duty.c.user_name)):
        out.setdefault(floor, []).append(name)
    return out


def duty_floor(conn: Connection, user_name: str) -> str | None:
    row = conn.execute(sa.select(sv_duty.c.floor).where(sv_duty.c.user_name == user_name,
                                                        sv_duty.c.off_us.is_(None))).first()
    return None if row is None else str(row.floor)


def go_on_duty(conn: Connection, user_name: str, floor: str, now: int) -> None:
    """On duty for ``floor`` (ending any stint on another floor first)."""
    go_off_duty(conn, user_name, now)
    conn.execute(sv_duty.insert().values(user_name=user_name, floor=floor, on_us=now))


def go_off_duty(conn: Connection, user_name: str, now: int) -> bool:
    res = conn.execute(sv_duty.update().where(sv_duty.c.user_name == user_name,
                                              sv_duty.c.off_us.is_(None)).values(off_us=now))
    return bool(res.rowcount)
