"""Console: the violations list no longer needs (seat, ts_us); one index less to write
for every stored event.

A seat filtered at any severity is listed by merging one walk per severity of
``events_seat_sev_ts`` (see ``violations.list_events``), as are an operator and a
control; the seat timeline reads the primary key.

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


def downgrade() -> None:
    op.create_index("events_seat_ts", "events", ["seat", "ts_us"])
