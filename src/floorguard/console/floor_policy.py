"""The policy each floor runs, held by the console and fetched by its agents.

An admin uploads policy text for a floor; it is validated with the same parser the agent
and ``floorguard check`` use, so the page shows the same ``FILE:LINE: message`` lines, and
an invalid one is refused with nothing stored. Agents learn the hash in force for their
floor from each heartbeat reply and fetch the text when it differs from theirs.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from floorguard.console.store.db import now_us
from floorguard.console.store.schema import (
    floor_policies,
)
from floorguard.policy import Policy, PolicyError, parse_policy

MAX_POLICY = 256 * 1024


def validate(text: str, source: str) -> Policy:
    """Parse as the agent would; raises PolicyError with ``FILE:LINE`` problems."""
    return parse_policy(text, source)


def store(conn: Connection, floor: str, text: str, source: str, actor: str) -> tuple[
        Policy | None, list[str]]:
    """Validate and keep the floor's policy; returns (policy, problems)."""
    try:
        policy = validate(text, source)
    except PolicyError as exc:
        return None, [str(p) for p in exc.problems]
    values = {"text": text, "hash": policy.hash, "source": source, "uploaded_by": actor,
              "uploaded_us": now_us()}
    done = conn.execute(floor_policies.update().where(floor_policies.c.floor == floor)
                        .values(**values))
    if not done.rowcount:
        conn.execute(floor_policies.insert().values(floor=floor, **values))
    return policy, []


def for_floor(conn: Connection, floor: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(floor_policies).where(floor_policies.c.floor == floor)
                       ).first()
    return dict(row._mapping) if row else None


def all_floors(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(floor_policies.c.floor, floor_policies.c.hash,
                                  floor_policies.c.source, floor_policies.c.uploaded_by,
                                  floor_policies.c.uploaded_us)
                        .order_by(floor_policies.c.floor))
    return [dict(r._mapping) for r in rows]
