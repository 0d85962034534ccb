"""Commands from the console to one agent: print decisions, "lock this seat now",
"reload policy".

A command is a row: queued by an SV or admin action (``enqueue``), delivered to the agent
by the link, and closed by the agent's acknowledgement with its result. Features react to
results through hooks per command name, which the app's wiring hands to ``complete``.
Every command and its result is kept: it is part of the record an auditor reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from floorguard.console.store.db import now_us
from floorguard.console.store.schema import (
    commands,
)
from floorguard.events import COMMANDS

# ``hook(conn, command_row, result)``, run inside the transaction that stores an agent's
# result for a command; the app's wiring (app.py) says which hooks follow which command.
ResultHook = Callable[[Connection, dict[str, Any], dict[str, Any]], None]


def enqueue(conn: Connection, agent_id: str, name: str, args: dict[str, Any],
            actor: str) -> int:
    if name not in COMMANDS:  # the table in events.py is the contract with the agents
        raise ValueError(f"{name!r} is not a command in floorguard.events.COMMANDS")
    res = conn.execute(commands.insert().values(agent=agent_id, name=name, args=args,
                                                created_by=actor, created_us=now_us()))
    return int(res.inserted_primary_key[0])  # type: ignore[index]


def pending(conn: Connection, agent_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """Commands not yet acknowledged by the agent, oldest first (re-sent until acked)."""
    rows = conn.execute(
        sa.select(commands.c.id, commands.c.name, commands.c.args)
        .where(commands.c.agent == agent_id, commands.c.state.in_(("queued", "delivered")))
        .order_by(commands.c.id).limit(limit))
    return [dict(r._mapping) for r in rows]


def mark_delivered(conn: Connection, ids: list[int]) -> None:
    if ids:
        conn.execute(commands.update().where(commands.c.id.in_(ids),
                                             commands.c.state == "queued")
                     .values(state="delivered", delivered_us=now_us()))


def complete(conn: Connection, agent_id: str, command_id: int, result: dict[str, Any],
             hooks: Mapping[str, Sequence[ResultHook]]) -> bool:
    """Store the agent's result once, running ``hooks[name]`` for the command's name;
    returns False for an unknown or foreign command."""
    row = conn.execute(sa.select(commands).where(commands.c.id == command_id,
                                                 commands.c.agent == agent_id)).first()
    if row is None:
        return False
    if row.state in ("done", "failed"):
        return True  # a repeated acknowledgement changes nothing
    state = "done" if result.get("ok") else "failed"
    conn.execute(commands.update().where(commands.c.id == command_id)
                 .values(state=state, done_us=now_us(), result=result))
    for hook in hooks.get(row.name, ()):
        hook(conn, dict(row._mapping), result)
    return True
