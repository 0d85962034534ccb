"""Daily report: ingest rollups, an index for listing events by kind, the report archive.

Revision ID: reports_0001
Revises: 0002_commands
"""

import sqlalchemy as sa
from alembic import op

revision = "reports_0001"
down_revision = "0002_commands"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report_counts",
        sa.Column("floor", sa.String(255), primary_key=True),
        sa.Column("slot_us", sa.BigInteger, primary_key=True),
        sa.Column("seat", sa.String(255), primary_key=True),
        sa.Column("user", sa.String(255), primary_key=True),
        sa.Column("control", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(64), primary_key=True),
        sa.Column("severity", sa.String(16), primary_key=True),
        sa.Column("sub", sa.String(255), primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("pages", sa.BigInteger, nullable=False),
        # SQLite keeps the rows in key order, so a floor's day is one contiguous range.
        sqlite_with_rowid=False,
    )
    op.create_table(
        "report_slots",
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
    )
    op.create_index("report_slots_floor_slot", "report_slots", ["floor", "slot_us"])
    op.create_table(
        "report_marks",
        sa.Column("agent", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("floor", sa.String(255), nullable=False),
        sa.Column("mark", sa.String(32), nullable=False),
        sa.Column("ts_us", sa.BigInteger, nullable=False),
    )
    op.create_index("report_marks_floor_mark_ts", "report_marks", ["floor", "mark", "ts_us"])
    op.create_table(
        "report_archive",
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
    )
    op.create_index("report_archive_day", "report_archive", ["day"])
    op.create_index("report_archive_sha256", "report_archive", ["sha256"])
    # The report lists the rarer kinds (prints, policy loads, silences, chain breaks) of
    # one day; this index makes that a range scan instead of a pass over the whole day.
    op.create_index("reports_events_kind_ts", "events", ["kind", "ts_us"])


def downgrade() -> None:
    op.drop_index("reports_events_kind_ts", "events")
    op.drop_table("report_archive")
    op.drop_table("report_marks")
    op.drop_table("report_slots")
    op.drop_table("report_counts")
