"""The floor as the console sees it: every floor's seat tiles, operators logged in and
SVs on duty, and whether the SV ratio is exceeded. The floor page and the ratio check
both read it."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from floorguard.console.auth import User
from floorguard.console.duty import svs_on_duty
from floorguard.console.floors import FloorPolicy, all_floor_policies
from floorguard.console.ingest.seats import SILENT, Tile, tile_state
from floorguard.console.presence import STOPPED, interval_of, is_silent, liveness, silent_after_us
from floorguard.console.store.schema import agent_link, agents, seat_state


def ratio_exceeded(operators: int, svs: int, max_per_sv: int | None) -> bool:
    """More operators than the SVs on duty may watch. No limit set: never. Pure."""
    if max_per_sv is None or operators == 0:
        return False
    return operators > max_per_sv * svs


@dataclass
class FloorView:
    name: str
    policy: FloorPolicy
    tiles: list[Tile] = field(default_factory=list)
    svs: list[str] = field(default_factory=list)

    @property
    def operators(self) -> int:
        return sum(1 for t in self.tiles if t.user and t.state not in (SILENT, STOPPED))

    @property
    def exceeded(self) -> bool:
        return ratio_exceeded(self.operators, len(self.svs), self.policy.max_operators_per_sv)

    def count(self, state: str) -> int:
        return sum(1 for t in self.tiles if t.state == state)


def load_floor(conn: Connection, now: int, viewer: User | None = None) -> list[FloorView]:
    """Every floor with its seat tiles, operators and SVs on duty (two small queries);
    with ``viewer``, only the viewer's floors (each of them, even one without agents yet)."""
    policies = all_floor_policies(conn)
    duty = svs_on_duty(conn)
    views: dict[str, FloorView] = {}
    rows = conn.execute(
        sa.select(agents.c.id, agents.c.seat, agents.c.floor, agents.c.last_seen_us,
                  agents.c.status, seat_state.c.seat.label("event_seat"), seat_state.c.user,
                  seat_state.c.last_violation_us, seat_state.c.last_violation_kind,
                  seat_state.c.idle_since_us, seat_state.c.locked,
                  agent_link.c.heartbeat_us, agent_link.c.interval_s,
                  agent_link.c.stopped_us)
        .select_from(agents.outerjoin(seat_state, seat_state.c.agent == agents.c.id)
                     .outerjoin(agent_link, agent_link.c.agent == agents.c.id))
        .where(agents.c.revoked_us.is_(None),
               sa.true() if viewer is None else viewer.floor_clause(agents.c.floor)))
    for r in rows:
        policy = policies.get(r.floor) or FloorPolicy(floor=r.floor)
        view = views.setdefault(r.floor, FloorView(r.floor, policy))
        status = r.status if isinstance(r.status, dict) else None
        # Silent or stopped comes from the one definition (the Coverage and Agents pages
        # use it too); tile_state, given the same threshold, orders the rest.
        interval = interval_of(r.heartbeat_us, r.interval_s, policy.heartbeat_interval_s)
        live = liveness(now_us=now, heard_us=r.last_seen_us, interval_s=interval,
                        stopped=r.stopped_us is not None)
        if live == STOPPED:
            state = STOPPED
        elif is_silent(live):
            state = SILENT
        else:
            state = tile_state(now=now, last_seen_us=r.last_seen_us,
                               silent_after_us=silent_after_us(interval), status=status,
                               last_violation_us=r.last_violation_us,
                               idle_since_us=r.idle_since_us, locked=bool(r.locked),
                               idle_unlocked_after_us=int(policy.idle_unlocked_after_s
                                                          * 1e6))
        user = status.get("user") if status and "user" in status else r.user
        view.tiles.append(Tile(agent=r.id, seat=r.event_seat or r.seat or r.id[:8],
                               floor=r.floor, user=user, state=state,
                               last_heard_us=r.last_seen_us,
                               violation_kind=r.last_violation_kind))
    for floor in sorted(viewer.floors or ()) if viewer is not None else ():
        views.setdefault(floor, FloorView(floor, policies.get(floor) or FloorPolicy(floor)))
    for floor, names in duty.items():
        if viewer is not None and not viewer.sees(floor):
            continue
        view = views.setdefault(floor, FloorView(floor, policies.get(floor)
                                                 or FloorPolicy(floor=floor)))
        view.svs = names
    for view in views.values():
        view.tiles.sort(key=lambda t: (t.seat, t.agent))
    return [views[k] for k in sorted(views)]
