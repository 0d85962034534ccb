"""Console: seat states, violation acknowledgements, login throttling, SV duty, floor
settings and ratio tracking; indexes that keep the violations list fast at 10M events.

Revision ID: console_0001
Revises: 0002_commands
"""

import sqlalchemy as sa
from alembic import op

revision = "console_0001"
down_revision = "0002_commands"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "seat_state",
        sa.Column("agent", sa.String(64), primary_key=True),
        sa.Column("seat", sa.String(255), nullable=False, server_default=""),
        sa.Column("host", sa.String(255), nullable=False, server_default=""),
        sa.Column("user", sa.String(255)),
        sa.Column("last_event_us", sa.BigInteger),
        sa.Column("last_kind", sa.String(64)),
        sa.Column("last_violation_us", sa.BigInteger),
        sa.Column("last_violation_kind", sa.String(64)),
        sa.Column("idle_since_us", sa.BigInteger),
        sa.Column("locked", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "violation_acks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("agent", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("ts_us", sa.BigInteger, nullable=False),
    )
    op.create_index("violation_acks_event", "violation_acks", ["agent", "seq"])
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("ip", sa.String(64), nullable=False),
        sa.Column("ts_us", sa.BigInteger, nullable=False),
    )
    op.create_index("login_failures_name_ts", "login_failures", ["name", "ts_us"])
    op.create_index("login_failures_ip_ts", "login_failures", ["ip", "ts_us"])
    op.create_table(
        "sv_duty",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("floor", sa.String(255), nullable=False),
        sa.Column("on_us", sa.BigInteger, nullable=False),
        sa.Column("off_us", sa.BigInteger),
    )
    op.create_index("sv_duty_open", "sv_duty", ["off_us", "floor"])
    op.create_index("sv_duty_user", "sv_duty", ["user_name", "off_us"])
    op.create_table(
        "floor_settings",
        sa.Column("floor", sa.String(255), primary_key=True),
        sa.Column("max_operators_per_sv", sa.Integer),
        sa.Column("timezone", sa.String(64), nullable=False, server_default="Asia/Tokyo"),
        sa.Column("idle_unlocked_after_s", sa.Float, nullable=False, server_default="300"),
        sa.Column("heartbeat_interval_s", sa.Float, nullable=False, server_default="30"),
        sa.Column("updated_by", sa.String(64), nullable=False, server_default=""),
        sa.Column("updated_us", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "floor_ratio_state",
        sa.Column("floor", sa.String(255), primary_key=True),
        sa.Column("exceeded_since_us", sa.BigInteger),
        sa.Column("reported", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("checked_us", sa.BigInteger, nullable=False),
    )
    # The violations list pages by (ts_us, agent, seq) under each filter; these indexes
    # let every filter combination the page offers walk an index in that order instead
    # of sorting the matches.
    op.create_index("events_sev_ts_key", "events", ["severity", "ts_us", "agent", "seq"])
    op.create_index("events_seat_sev_ts", "events",
                    ["seat", "severity", "ts_us", "agent", "seq"])
    op.create_index("events_user_sev_ts", "events",
                    ["user", "severity", "ts_us", "agent", "seq"])
    op.create_index("events_kind_ts", "events", ["kind", "ts_us", "agent", "seq"])
    op.create_index("events_control_sev_ts", "events",
                    ["control", "severity", "ts_us", "agent", "seq"])
    op.create_index("events_ts_key", "events", ["ts_us", "agent", "seq"])
    # The two *_key indexes start with the same columns as these, and serve every query
    # these did: two indexes less to write per event.
    op.drop_index("events_severity_ts", table_name="events")
    op.drop_index("events_ts", table_name="events")


def downgrade() -> None:
    op.create_index("events_severity_ts", "events", ["severity", "ts_us"])
    op.create_index("events_ts", "events", ["ts_us"])
    for index in ("events_ts_key", "events_sev_ts_key", "events_seat_sev_ts", "events_user_sev_ts",
                  "events_kind_ts", "events_control_sev_ts"):
        op.drop_index(index, table_name="events")
    for table in ("floor_ratio_state", "floor_settings", "sv_duty", "login_failures",
                  "violation_acks", "seat_state"):
        op.drop_table(table)
