"""Daily report: list events by kind on the console's (kind, ts_us, agent, seq) index.

``reports_events_kind_ts`` (kind, ts_us) starts with the same columns as
``events_kind_ts`` (console_0001) and serves no query that one does not; every index on
events is written for every stored event.

Revision ID: reports_0002
Revises: reports_0001
"""

from alembic import op

revision = "reports_0002"
down_revision = "reports_0001"
branch_labels = None
depends_on = "console_0001"  # makes events_kind_ts, which takes over


def upgrade() -> None:
    op.drop_index("reports_events_kind_ts", table_name="events")


def downgrade() -> None:
    op.create_index("reports_events_kind_ts", "events", ["kind", "ts_us"])
