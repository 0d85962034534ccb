"""Facts the report needs that are kept outside the events table, behind small adapters.

Each adapter answers ``None`` when its source is not kept by this console, and the report
then says "not recorded" rather than guessing:

- ``floor_settings``: a floor's time zone and SV ratio, from the policy the console holds
  for the floor, else from the floor policy files the console is pointed at
  (``FLOORGUARD_REPORT_POLICIES``, the same files the agents run).
- ``acknowledgements``: which violations an SV acknowledged, and who and when.
- ``sv_on_duty``: how many SVs were on duty on a floor in each hour.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from floorguard.policy import FloorSettings as PolicyFloor
from floorguard.policy import Policy

DEFAULT_TIMEZONE = PolicyFloor().timezone
POLICIES_ENV = "FLOORGUARD_REPORT_POLICIES"


@dataclass(frozen=True)
class FloorSettings:
    timezone: str = DEFAULT_TIMEZONE
    max_operators_per_sv: int | None = None
    source: str = ""  # the policy file they came from, or "" for the defaults


@dataclass(frozen=True)
class Acknowledgement:
    by: str
    at_us: int


def policies_dir() -> Path | None:
    value = os.environ.get(POLICIES_ENV, "").strip()
    return Path(value) if value else None


def _from_policy(policy: Policy, source: str) -> FloorSettings:
    floor = policy.settings(PolicyFloor)
    return FloorSettings(timezone=floor.timezone,
                         max_operators_per_sv=floor.max_operators_per_sv, source=source)


def floor_settings(floor: str, policies: Path | None = None,
                   conn: Connection | None = None) -> FloorSettings:
    """The floor's ``[floor]`` table: from the policy the console holds for the floor
    (what its agents fetch), else from the first policy file whose name matches.

    A policy that does not load is an error naming the file (a report in the wrong
    time zone would be silently wrong)."""
    from floorguard.policy import load_policy, parse_policy, policy_files

    if conn is not None:
        from floorguard.console.floor_policy import for_floor

        held = for_floor(conn, floor)
        if held is not None:
            policy = parse_policy(str(held["text"]), str(held["source"]))
            if policy.has("floor"):
                return _from_policy(policy, f"console: {held['source']}")
    folder = policies if policies is not None else policies_dir()
    if folder is None:
        return FloorSettings()
    for path in policy_files([folder]):
        policy = load_policy(path)
        if policy.has("floor") and policy.get("floor").get("name", "") == floor:
            return _from_policy(policy, str(path))
    return FloorSettings()


def acknowledgements(conn: Connection, keys: list[tuple[str, int]]
                     ) -> dict[tuple[str, int], Acknowledgement] | None:
    """The first acknowledgement of each violation ``(agent, seq)`` by an SV."""
    import sqlalchemy as sa

    from floorguard.console.store.schema import violation_acks

    out: dict[tuple[str, int], Acknowledgement] = {}
    for i in range(0, len(keys), 400):
        chunk = keys[i:i + 400]
        rows = conn.execute(
            sa.select(violation_acks.c.agent, violation_acks.c.seq, violation_acks.c.actor,
                      violation_acks.c.ts_us)
            .where(sa.tuple_(violation_acks.c.agent, violation_acks.c.seq).in_(chunk))
            .order_by(violation_acks.c.ts_us))
        for agent, seq, actor, ts_us in rows:
            out.setdefault((str(agent), int(seq)), Acknowledgement(by=str(actor),
                                                                    at_us=int(ts_us)))
    return out


def sv_on_duty(conn: Connection, floor: str, hour_starts_us: list[int]
               ) -> list[int] | None:
    """How many SVs were on duty on ``floor`` at any time during each hour starting at
    ``hour_starts_us`` (from the on/off duty stints SVs record in the console)."""
    import sqlalchemy as sa

    from floorguard.console.store.schema import sv_duty

    if not hour_starts_us:
        return []
    hour = 3_600_000_000
    first, last = min(hour_starts_us), max(hour_starts_us) + hour
    stints = conn.execute(
        sa.select(sv_duty.c.user_name, sv_duty.c.on_us, sv_duty.c.off_us)
        .where(sv_duty.c.floor == floor, sv_duty.c.on_us < last,
               sa.or_(sv_duty.c.off_us.is_(None), sv_duty.c.off_us > first))).all()
    counts = []
    for start in hour_starts_us:
        end = start + hour
        counts.append(len({s.user_name for s in stints
                           if s.on_us < end and (s.off_us is None or s.off_us > start)}))
    return counts


def describe_sources(acks: Any, duty: Any) -> dict[str, str]:
    return {"acknowledgements": "not recorded" if acks is None else "console",
            "sv_on_duty": "not recorded" if duty is None else "console"}
