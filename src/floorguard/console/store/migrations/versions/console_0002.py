"""Console: lists at any severity merge one walk per severity, so (seat, ts_us) and
(ts_us, agent, seq) are no longer needed: two indexes less to write for every stored
event, and (ts_us, ...) took every event at its one rightmost leaf.

A list at any severity (the violations list, the recent events, the print trail) merges
one walk per severity of ``events_sev_ts_key`` or of the filter's
``events_*_sev_ts`` (see ``violations.list_events``); the seat timeline reads the
primary key.

Revision ID: console_0002
Revises: console_0001
"""

from alembic import op

revision = "console_0002"
down_revision = "console_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("events_seat_ts", table_name="events")
    op.drop_index("events_ts_key", table_name="events")


def downgrade() -> None:
    op.create_index("events_ts_key", "events", ["ts_us", "agent", "seq"])
    op.create_index("events_seat_ts", "events", ["seat", "ts_us"])
