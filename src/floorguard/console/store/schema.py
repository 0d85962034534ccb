"""The console's tables (SQLAlchemy Core). Alembic migrations in ``migrations/`` create
them; this module is what the code queries through.

Times are stored as integers of microseconds since the epoch (``*_us``), which sort and
range-scan the same on SQLite and PostgreSQL. An event's ``ts`` is also kept as the exact
RFC 3339 text the agent hashed, so the chain can be re-verified from the store.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

agents = sa.Table(
    "agents", metadata,
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

events = sa.Table(
    "events", metadata,
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
    # The console's list indexes (migration console_0001): each walks in page order.
    sa.Index("events_sev_ts_key", "severity", "ts_us", "agent", "seq"),
    sa.Index("events_seat_sev_ts", "seat", "severity", "ts_us", "agent", "seq"),
    sa.Index("events_user_sev_ts", "user", "severity", "ts_us", "agent", "seq"),
    sa.Index("events_kind_ts", "kind", "ts_us", "agent", "seq"),
    sa.Index("events_control_sev_ts", "control", "severity", "ts_us", "agent", "seq"),
)

users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("pw_hash", sa.String(255), nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("lang", sa.String(8)),
    sa.Column("created_us", sa.BigInteger, nullable=False),
)

sessions = sa.Table(
    "sessions", metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("last_seen_us", sa.BigInteger, nullable=False),
    sa.Column("expires_us", sa.BigInteger, nullable=False),
)

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts_us", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(255), nullable=False, server_default=""),
    sa.Column("ip", sa.String(64), nullable=False, server_default=""),
    sa.Column("details", JSONType),
    sa.Index("audit_ts", "ts_us"),
    sa.Index("audit_action_ts", "action", "ts_us"),
)

enrollment_codes = sa.Table(
    "enrollment_codes", metadata,
    sa.Column("code_hash", sa.String(64), primary_key=True),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("expires_us", sa.BigInteger, nullable=False),
    sa.Column("floor", sa.String(255), nullable=False, server_default=""),
    sa.Column("used_us", sa.BigInteger),
    sa.Column("agent_id", sa.String(64)),
)
