"""Scheduled generation: every day at a configured time the console archives the previous
day's report (APScheduler's BackgroundScheduler, owned by the console's lifespan).

Configured by environment variables read when the console starts:

- ``FLOORGUARD_REPORT_TIME``: ``HH:MM`` to run at; unset means no scheduled reports.
- ``FLOORGUARD_REPORT_TZ``: the time zone of that time and of "the previous day"
  (default Asia/Tokyo).
- ``FLOORGUARD_REPORT_DIR``: the archive folder (default
  /var/lib/floorguard-console/reports).
- ``FLOORGUARD_REPORT_FORMATS``: comma-separated formats (default ``pdf,json,csv``).
- ``FLOORGUARD_REPORT_LANGS``: comma-separated languages (default ``en``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from sqlalchemy.engine import Engine

from floorguard.console.reports.render import FORMATS, LANGS
from floorguard.console.reports.sources import DEFAULT_TIMEZONE

log = structlog.get_logger("floorguard.reports")
DEFAULT_DIR = "/var/lib/floorguard-console/reports"


class ScheduleError(ValueError):
    pass


@dataclass(frozen=True)
class ScheduleConfig:
    hour: int
    minute: int
    timezone: str
    directory: Path
    formats: tuple[str, ...]
    langs: tuple[str, ...]


def _list(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]
          ) -> tuple[str, ...]:
    items = tuple(x.strip() for x in env.get(name, default).split(",") if x.strip())
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise ScheduleError(f"{name}={env.get(name)!r}: use a comma-separated list of "
                            f"{', '.join(allowed)}")
    return items


def schedule_config(env: Mapping[str, str] | None = None) -> ScheduleConfig | None:
    """The schedule from the environment; None when no time is set."""
    env = os.environ if env is None else env
    text = env.get("FLOORGUARD_REPORT_TIME", "").strip()
    if not text:
        return None
    m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text)
    if not m:
        raise ScheduleError(f"FLOORGUARD_REPORT_TIME={text!r}: write HH:MM, e.g. 06:30")
    tz = env.get("FLOORGUARD_REPORT_TZ", DEFAULT_TIMEZONE).strip()
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"FLOORGUARD_REPORT_TZ={tz!r}: use an IANA name such as "
                            "Asia/Tokyo") from None
    directory = Path(env.get("FLOORGUARD_REPORT_DIR", DEFAULT_DIR))
    if not directory.is_absolute():
        raise ScheduleError(f"FLOORGUARD_REPORT_DIR={str(directory)!r}: give an absolute "
                            "path")
    return ScheduleConfig(int(m.group(1)), int(m.group(2)), tz, directory,
                          _list(env, "FLOORGUARD_REPORT_FORMATS", "pdf,json,csv", FORMATS),
                          _list(env, "FLOORGUARD_REPORT_LANGS", "en", LANGS))


def previous_day(cfg: ScheduleConfig, now: datetime) -> date:
    return (now.astimezone(ZoneInfo(cfg.timezone)) - timedelta(days=1)).date()


def run_daily(engine: Engine, cfg: ScheduleConfig, day: date) -> list[Path]:
    """Archive ``day``'s report in every configured format and language."""
    from floorguard.console.reports.archive import archive_report

    written = []
    for lang in cfg.langs:
        for fmt in cfg.formats:
            try:
                a = archive_report(engine, day, fmt, lang, cfg.directory, actor="schedule")
            except Exception:
                # One format failing (e.g. a full disk) must not stop the others.
                log.exception("report.archive_failed", day=day.isoformat(), format=fmt,
                              lang=lang)
                continue
            log.info("report.archived", day=day.isoformat(), format=fmt, lang=lang,
                     path=str(a.path), sha256=a.sha256)
            written.append(a.path)
    return written


def make_scheduler(engine: Engine, cfg: ScheduleConfig,
                   clock: Callable[[], datetime] | None = None) -> Any:
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger

    tz = ZoneInfo(cfg.timezone)
    now = clock or (lambda: datetime.now(tz))

    def job() -> None:
        run_daily(engine, cfg, previous_day(cfg, now()))

    scheduler = BackgroundScheduler(timezone=tz)
    scheduler.add_job(job, CronTrigger(hour=cfg.hour, minute=cfg.minute, timezone=tz),
                      id="daily-report", coalesce=True, misfire_grace_time=3600,
                      max_instances=1)
    return scheduler


def start(app: Any) -> None:
    cfg = schedule_config()
    app.state.report_schedule = cfg
    app.state.report_scheduler = None
    if cfg is None:
        return
    cfg.directory.mkdir(parents=True, exist_ok=True)
    scheduler = make_scheduler(app.state.engine, cfg)
    scheduler.start()
    app.state.report_scheduler = scheduler
    log.info("report.scheduled", at=f"{cfg.hour:02d}:{cfg.minute:02d}",
             timezone=cfg.timezone, directory=str(cfg.directory))


def stop(app: Any) -> None:
    scheduler = getattr(app.state, "report_scheduler", None)
    if scheduler is not None:
        scheduler.shutdown(wait=True)
        app.state.report_scheduler = None


def next_run(app: Any) -> str | None:
    scheduler = getattr(app.state, "report_scheduler", None)
    if scheduler is None:
        return None
    job = scheduler.get_job("daily-report")
    return job.next_run_time.isoformat(timespec="minutes") if job and job.next_run_time \
        else None


def archive_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where on-demand archiving writes when no schedule is configured."""
    env = os.environ if env is None else env
    return Path(env.get("FLOORGUARD_REPORT_DIR", DEFAULT_DIR))
