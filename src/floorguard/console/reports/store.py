"""The report tables: rollups kept at ingest, and the archive of generated reports.

Rollups are keyed by 15-minute slots in UTC (``slot_us``) rather than by a local day, so
one set of counters serves every floor's time zone (every real UTC offset is a multiple
of 15 minutes) and the hourly charts come from the same rows.
"""

from __future__ import annotations

import sqlalchemy as sa

from floorguard.console.store.schema import metadata

SLOT_US = 15 * 60 * 1_000_000

report_counts = sa.Table(
    "report_counts", metadata,
    sa.Column("floor", sa.String(255), primary_key=True),
    sa.Column("slot_us", sa.BigInteger, primary_key=True),
    sa.Column("seat", sa.String(255), primary_key=True),
    sa.Column("user", sa.String(255), primary_key=True),  # "" when nobody was logged in
    sa.Column("control", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(64), primary_key=True),
    sa.Column("severity", sa.String(16), primary_key=True),
    sa.Column("sub", sa.String(255), primary_key=True),  # e.g. USB recognition, approver
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Column("pages", sa.BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

report_slots = sa.Table(
    "report_slots", metadata,
    sa.Column("agent", sa.String(64), primary_key=True),
    sa.Column("slot_us", sa.BigInteger, primary_key=True),
    sa.Column("floor", sa.String(255), nullable=False),
    sa.Column("events", sa.BigInteger, nullable=False),
    sa.Column("heartbeats", sa.BigInteger, nullable=False),
    sa.Column("min_seq", sa.BigInteger),
    sa.Column("max_seq", sa.BigInteger),
    sa.Column("bad_hash", sa.BigInteger, nullable=False),
    sa.Column("bad_link", sa.BigInteger, nullable=False),
    sa.Column("first_bad_seq", sa.BigInteger),
    sa.Index("report_slots_floor_slot", "floor", "slot_us"),
)

# Events to list that their kind alone does not select (a usb.allowed let in by a device
# rule, among the many allowed by class), marked at ingest so the report finds them by
# floor and time without reading every usb.allowed of the day.
report_marks = sa.Table(
    "report_marks", metadata,
    sa.Column("agent", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("floor", sa.String(255), nullable=False),
    sa.Column("mark", sa.String(32), nullable=False),
    sa.Column("ts_us", sa.BigInteger, nullable=False),
    sa.Index("report_marks_floor_mark_ts", "floor", "mark", "ts_us"),
)

report_archive = sa.Table(
    "report_archive", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("day", sa.String(10), nullable=False),
    sa.Column("floor", sa.String(255), nullable=False),
    sa.Column("format", sa.String(8), nullable=False),
    sa.Column("lang", sa.String(8), nullable=False),
    sa.Column("path", sa.String(1024), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Index("report_archive_day", "day"),
    sa.Index("report_archive_sha256", "sha256"),
)
