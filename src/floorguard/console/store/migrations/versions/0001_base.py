"""Base tables: agents, events, users, sessions, audit log, enrollment codes.

Revision ID: 0001_base
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_base"
down_revision = None
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("token_hash", sa.String(64), unique=True),
        sa.Column("host", sa.String(255), nullable=False, server_default=""),
        sa.Column("seat", sa.String(255), nullable=False, server_default=""),
        sa.Column("floor", sa.String(255), nullable=False, server_default=""),
        sa.Column("version", sa.String(64), nullable=False, server_default=""),
        sa.Column("policy", sa.String(64), nullable=False, server_default=""),
        sa.Column("enrolled_us", sa.BigInteger, nullable=False),
        sa.Column("last_seen_us", sa.BigInteger),
        sa.Column("revoked_us", sa.BigInteger),
        sa.Column("acked_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_hash", sa.String(64), nullable=False, server_default=""),
        sa.Column("status", JSONType),
    )
    op.create_table(
        "events",
        sa.Column("agent", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("ts", sa.String(40), nullable=False),
        sa.Column("ts_us", sa.BigInteger, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("seat", sa.String(255), nullable=False),
        sa.Column("user", sa.String(255)),
        sa.Column("control", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("details", JSONType, nullable=False),
        sa.Column("prev", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("received_us", sa.BigInteger, nullable=False),
    )
    op.create_index("events_ts", "events", ["ts_us"])
    op.create_index("events_severity_ts", "events", ["severity", "ts_us"])
    op.create_index("events_seat_ts", "events", ["seat", "ts_us"])
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("pw_hash", sa.String(255), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("lang", sa.String(8)),
        sa.Column("created_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("last_seen_us", sa.BigInteger, nullable=False),
        sa.Column("expires_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts_us", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255), nullable=False, server_default=""),
        sa.Column("ip", sa.String(64), nullable=False, server_default=""),
        sa.Column("details", JSONType),
    )
    op.create_index("audit_ts", "audit_log", ["ts_us"])
    op.create_index("audit_action_ts", "audit_log", ["action", "ts_us"])
    op.create_table(
        "enrollment_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("expires_us", sa.BigInteger, nullable=False),
        sa.Column("floor", sa.String(255), nullable=False, server_default=""),
        sa.Column("used_us", sa.BigInteger),
        sa.Column("agent_id", sa.String(64)),
    )


def downgrade() -> None:
    for table in ("enrollment_codes", "audit_log", "sessions", "users", "events", "agents"):
        op.drop_table(table)
