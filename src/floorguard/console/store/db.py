"""Opening the store: engine set-up per dialect and Alembic migrations at start."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

DEFAULT_DB = "sqlite:////var/lib/floorguard-console/console.db"


class StoreError(Exception):
    pass


def default_url() -> str:
    return os.environ.get("FLOORGUARD_DB", DEFAULT_DB)


def now_us() -> int:
    return int(time.time() * 1_000_000)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against crashes
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Keep as many connections as the worker threads use at once: an overflow
        # connection is closed on return, and opening one (with its pragmas) again for
        # every request is what a busy console would spend its time on.
        engine = sa.create_engine(url, connect_args={"check_same_thread": False,
                                                      "timeout": 30},
                                  pool_size=40, max_overflow=10)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql"):
        return sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    raise StoreError(f"unsupported database URL {url!r}: use sqlite:///PATH or "
                     "postgresql+psycopg://USER@HOST/DB")


def migrate(engine: Engine) -> None:
    """Bring the schema to every head (features add their own branches off the base)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_store(url: str | None = None) -> Engine:
    url = url or default_url()
    engine = make_engine(url)
    try:
        migrate(engine)
    except sa.exc.OperationalError as exc:
        raise StoreError(f"cannot open the console database {engine.url!r}: "
                         f"{exc.orig}") from None
    return engine
