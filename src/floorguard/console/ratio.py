"""The SV span of control: operators logged in against SVs on duty, per floor.

When a floor has more operators than ``max_operators_per_sv`` times the SVs on duty for
longer than ``GRACE`` (a shift change or a short break is not a violation), the console
records one ``floor.sv_ratio_exceeded`` event for that episode. A periodic check runs in
the console (APScheduler); ``check_ratios`` takes the time as an argument so it can be
driven by tests.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from floorguard.console.store.schema import (
    floor_ratio_state,
)
from floorguard.events import rfc3339

log = logging.getLogger(__name__)

GRACE_US = 3 * 60 * 1_000_000
CHECK_EVERY_S = 20.0


def check_ratios(engine: Engine, now: int) -> list[dict[str, Any]]:
    """Update each floor's episode; return the events recorded by this check.

    One transaction: the event and the episode's "reported" mark commit together, and
    the conditional update lets only one console process report an episode.
    """
    from floorguard.console.console_events import record_console_event
    from floorguard.console.floor_state import load_floor

    recorded: list[dict[str, Any]] = []
    t = floor_ratio_state
    with engine.begin() as conn:
        views = load_floor(conn, now)
        state = {r.floor: r for r in conn.execute(sa.select(t))}
        for view in views:
            row = state.get(view.name)
            if not view.exceeded:
                if row is not None and row.exceeded_since_us is not None:
                    conn.execute(t.update().where(t.c.floor == view.name)
                                 .values(exceeded_since_us=None, reported=False,
                                         checked_us=now))
                continue
            if row is None:
                conn.execute(t.insert().values(floor=view.name, exceeded_since_us=now,
                                               reported=False, checked_us=now))
                continue
            since = row.exceeded_since_us if row.exceeded_since_us is not None else now
            conn.execute(t.update().where(t.c.floor == view.name)
                         .values(exceeded_since_us=since, checked_us=now))
            if row.reported or now - since < GRACE_US:
                continue
            won = conn.execute(t.update().where(t.c.floor == view.name,
                                                t.c.reported == sa.false())
                               .values(reported=True)).rowcount
            if won:
                recorded.append(record_console_event(
                    conn, "floor.sv_ratio_exceeded", "violation",
                    {"floor": view.name, "operators": view.operators,
                     "svs_on_duty": len(view.svs), "svs": view.svs,
                     "max_operators_per_sv": view.policy.max_operators_per_sv,
                     "exceeded_since": rfc3339(since / 1_000_000)},
                    control="floor", now=now / 1_000_000))
    return recorded


def start_scheduler(app: Any) -> None:
    """Lifespan start: run ``check_ratios`` every ``CHECK_EVERY_S`` seconds."""
    from apscheduler.schedulers.background import BackgroundScheduler

    from floorguard.console.store.db import now_us

    def job() -> None:
        try:
            check_ratios(app.state.engine, now_us())
        except Exception:  # the next run tries again; never let the scheduler die
            log.exception("SV ratio check failed")

    scheduler = BackgroundScheduler(daemon=True)
    scheduler.add_job(job, "interval", seconds=CHECK_EVERY_S, id="sv_ratio",
                      max_instances=1, coalesce=True)
    scheduler.start()
    app.state.ratio_scheduler = scheduler


def stop_scheduler(app: Any) -> None:
    scheduler = getattr(app.state, "ratio_scheduler", None)
    if scheduler is not None:
        scheduler.shutdown(wait=False)
