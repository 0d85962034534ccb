"""The report archive: files written once, read-only (mode 0444), each with a row naming
its SHA-256 so that any later copy can be checked against it."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from floorguard.console.reports.daily import build_report
from floorguard.console.reports.render import SUFFIXES, render
from floorguard.console.store.schema import report_archive


@dataclass(frozen=True)
class Archived:
    id: int
    path: Path
    sha256: str
    size: int


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "floor"


def write_read_only(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file (never over an existing one), fsync it, make it 0444."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o444)
        os.link(tmp, path)  # fails if the name exists: an archived file is never replaced
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def archive_report(engine: Engine, day: date, fmt: str, lang: str, directory: Path, *,
                   floor: str | None = None, actor: str = "schedule", deep: bool = True,
                   now_us: int | None = None) -> Archived:
    """Generate one report, write it read-only into ``directory`` and record its digest."""
    from floorguard.console.store.db import now_us as clock

    now = now_us if now_us is not None else clock()
    with engine.connect() as conn:
        doc = build_report(conn, day, [floor] if floor else None, lang=lang, deep=deep,
                           now_us=lambda: now)
    data = render(doc, fmt)
    stamp = datetime.fromtimestamp(now / 1e6, UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = (f"floorguard-daily-{day.isoformat()}-{_slug(floor) if floor else 'all'}-{lang}-"
            f"{stamp}{SUFFIXES[fmt]}")
    path = directory / day.isoformat() / name
    write_read_only(path, data)
    digest = sha256_bytes(data)
    with engine.begin() as conn:
        rid = conn.execute(report_archive.insert().values(
            day=day.isoformat(), floor=floor or "", format=fmt, lang=lang,
            path=str(path), sha256=digest, size=len(data), created_us=now,
            created_by=actor)).inserted_primary_key
    return Archived(int(rid[0]) if rid else 0, path, digest, len(data))


def archived(conn: Connection, limit: int = 200) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(report_archive).order_by(
        report_archive.c.day.desc(), report_archive.c.id.desc()).limit(limit))
    return [dict(r._mapping) for r in rows]


def find_digest(conn: Connection, digest: str) -> list[dict[str, Any]]:
    """Archived reports whose SHA-256 is ``digest`` (a copy is genuine if one matches)."""
    digest = digest.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        return []
    rows = conn.execute(sa.select(report_archive).where(report_archive.c.sha256 == digest)
                        .order_by(report_archive.c.id))
    return [dict(r._mapping) for r in rows]


def archived_file(conn: Connection, rid: int) -> dict[str, Any] | None:
    row = conn.execute(sa.select(report_archive).where(report_archive.c.id == rid)).first()
    return dict(row._mapping) if row else None
