"""The auditor's daily compliance summary: rollups at ingest, the report, its formats, the
console page, scheduled archiving and digest checks."""

from __future__ import annotations

from typing import Any


def install(app: Any) -> None:
    """Wire the reports into a console app: ingest rollups, the page, the schedule."""
    from floorguard.console.reports import schedule, web
    from floorguard.console.reports.rollup import ingest_hook

    app.state.ingest_hooks.append(ingest_hook)
    app.include_router(web.router)
    app.state.on_start.append(schedule.start)
    app.state.on_stop.append(schedule.stop)
