"""A floor's settings as the console uses them: its SV ratio, time zone, idle and
heartbeat values, from the central policy held for the floor, else the row an admin
edits on the Floors page, else the policy's defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from floorguard.console.store.schema import (
    agents,
    floor_settings,
)
from floorguard.policy import AgentSettings, FloorSettings

_FLOOR, _AGENT = FloorSettings(), AgentSettings()  # the policy's defaults


@dataclass(frozen=True)
class FloorPolicy:
    """A floor's values, with the policy schema's defaults ([floor] and [agent])."""

    floor: str
    max_operators_per_sv: int | None = None  # None: no SV ratio check
    timezone: str = _FLOOR.timezone
    idle_unlocked_after_s: float = _FLOOR.idle_unlocked_after
    heartbeat_interval_s: float = _AGENT.heartbeat_interval

    @property
    def silent_after_us(self) -> int:
        """How long an agent on this floor may go unheard before its first heartbeat
        (``presence.liveness`` is the definition of silent)."""
        from floorguard.console.presence import silent_after_us

        return silent_after_us(self.heartbeat_interval_s)


def _from_row(row: sa.Row[Any]) -> FloorPolicy:
    return FloorPolicy(floor=row.floor, max_operators_per_sv=row.max_operators_per_sv,
                       timezone=row.timezone, idle_unlocked_after_s=row.idle_unlocked_after_s,
                       heartbeat_interval_s=row.heartbeat_interval_s)


_parsed: dict[str, FloorPolicy] = {}


def _from_central(floor: str, held: dict[str, Any]) -> FloorPolicy | None:
    """Values from the policy the console holds for the floor (what its agents run)."""
    key = f"{floor}\0{held['hash']}"
    if key not in _parsed:
        from floorguard.policy import PolicyError, parse_policy

        try:
            policy = parse_policy(str(held["text"]), str(held["source"]))
        except PolicyError:  # refused at upload; a stored one that fails is not trusted
            return None
        if not policy.has("floor") and not policy.has("agent"):
            return None
        fl, ag = policy.settings(FloorSettings), policy.settings(AgentSettings)
        _parsed[key] = FloorPolicy(
            floor=floor, max_operators_per_sv=fl.max_operators_per_sv,
            timezone=fl.timezone, idle_unlocked_after_s=fl.idle_unlocked_after,
            heartbeat_interval_s=ag.heartbeat_interval)
    return _parsed[key]


def floor_policy(conn: Connection, floor: str) -> FloorPolicy:
    """The floor's max_operators_per_sv, time zone, idle and heartbeat settings: from the
    central policy held for the floor when there is one (the values its agents run),
    else from the row an admin edits on the Floors page, else the schema's defaults."""
    from floorguard.console.floor_policy import for_floor

    held = for_floor(conn, floor)
    if held is not None:
        central = _from_central(floor, held)
        if central is not None:
            return central
    row = conn.execute(sa.select(floor_settings)
                       .where(floor_settings.c.floor == floor)).first()
    return _from_row(row) if row is not None else FloorPolicy(floor=floor)


def all_floor_policies(conn: Connection) -> dict[str, FloorPolicy]:
    """Every floor that has agents or settings, by name."""
    from floorguard.console.store.schema import floor_policies

    names = {r.floor for r in conn.execute(sa.select(floor_settings.c.floor))}
    names |= {r.floor for r in conn.execute(sa.select(floor_policies.c.floor))}
    names |= {r.floor for r in conn.execute(sa.select(agents.c.floor).distinct())}
    return {name: floor_policy(conn, name) for name in sorted(names)}
