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

DEFAULT_TIMEZONE = "Asia/Tokyo"
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


def _from_policy(policy: Any, source: str) -> FloorSettings:
    table = policy.get("floor")
    return FloorSettings(timezone=str(table.get("timezone") or DEFAULT_TIMEZONE),
                         max_operators_per_sv=table.get("max_operators_per_sv"),
                         source=source)


def floor_settings(floor: str, policies: Path | None = None,
                   conn: Connection | None = None) -> FloorSettings:
    """The floor's ``[floor]`` table: from the policy the console holds for the floor
    (what its agents fetch), else from the first policy file whose name matches.

    A policy that does not load is an error naming the file (a report in the wrong
    time zone would be silently wrong)."""
    from ...policy import load_policy, parse_policy, policy_files

    if conn is not None:
        from ..floor_policy import for_floor

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
    """Acknowledgements of the violations ``(agent, seq)``; None when none are kept."""
    return None


def sv_on_duty(conn: Connection, floor: str, hour_starts_us: list[int]
               ) -> list[int] | None:
    """SVs on duty on ``floor`` during each hour starting at ``hour_starts_us``."""
    return None


def describe_sources(acks: Any, duty: Any) -> dict[str, str]:
    return {"acknowledgements": "not recorded" if acks is None else "console",
            "sv_on_duty": "not recorded" if duty is None else "console"}
