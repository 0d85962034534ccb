"""Every table of the console, in one place (SQLAlchemy Core). Alembic migrations in
``migrations/`` create them, and a test compares the two; this module is what the code
queries through.

Times are stored as integers of microseconds since the epoch (``*_us``), which sort and
range-scan the same on SQLite and PostgreSQL. An event's ``ts`` is also kept as the exact
RFC 3339 text the agent hashed, so the chain can be re-verified from the store.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from floorguard.events import GENESIS
from floorguard.policy import FloorSettings

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


sv_duty = sa.Table(
    "sv_duty", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_name", sa.String(64), nullable=False),
    sa.Column("floor", sa.String(255), nullable=False),
    sa.Column("on_us", sa.BigInteger, nullable=False),
    sa.Column("off_us", sa.BigInteger),
    sa.Index("sv_duty_open", "off_us", "floor"),
    sa.Index("sv_duty_user", "user_name", "off_us"),
)


print_jobs = sa.Table(
    "print_jobs", metadata,
    sa.Column("agent", sa.String(64), primary_key=True),
    sa.Column("job_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seat", sa.String(255), nullable=False, server_default=""),
    sa.Column("host", sa.String(255), nullable=False, server_default=""),
    sa.Column("operator", sa.String(255), nullable=False, server_default=""),
    sa.Column("queue", sa.String(255), nullable=False, server_default=""),
    sa.Column("title", sa.Text, nullable=False, server_default=""),
    sa.Column("pages", sa.Integer),
    sa.Column("pages_source", sa.String(16), nullable=False, server_default="unknown"),
    sa.Column("size", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("format", sa.String(128), nullable=False, server_default=""),
    sa.Column("needs_note", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("thumbnail_seq", sa.BigInteger),  # the print.held event holding the picture
    sa.Column("placeholder", sa.String(32)),
    # held -> approving | denying -> approved -> released; denied; expired; failed
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("held_us", sa.BigInteger, nullable=False),
    sa.Column("decided_by", sa.String(64)),
    sa.Column("decided_us", sa.BigInteger),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("outcome", sa.String(64), nullable=False, server_default=""),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Column("command_id", sa.Integer),
    sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
    sa.Index("print_jobs_state_held", "state", "held_us"),
)


floor_policies = sa.Table(
    "floor_policies", metadata,
    sa.Column("floor", sa.String(255), primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("source", sa.String(255), nullable=False),
    sa.Column("uploaded_by", sa.String(64), nullable=False),
    sa.Column("uploaded_us", sa.BigInteger, nullable=False),
)


commands = sa.Table(
    "commands", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("agent", sa.String(64), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("args", JSONType, nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    # queued -> delivered -> done | failed
    sa.Column("state", sa.String(16), nullable=False, server_default="queued"),
    sa.Column("delivered_us", sa.BigInteger),
    sa.Column("done_us", sa.BigInteger),
    sa.Column("result", JSONType),
    sa.Index("commands_agent_state", "agent", "state", "id"),
)


login_failures = sa.Table(
    "login_failures", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("ip", sa.String(64), nullable=False),
    sa.Column("ts_us", sa.BigInteger, nullable=False),
    sa.Index("login_failures_name_ts", "name", "ts_us"),
    sa.Index("login_failures_ip_ts", "ip", "ts_us"),
)


agent_link = sa.Table(
    "agent_link", metadata,
    sa.Column("agent", sa.String(64), primary_key=True),
    sa.Column("chain_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("chain_hash", sa.String(64), nullable=False, server_default=GENESIS),
    sa.Column("heartbeat_us", sa.BigInteger),
    sa.Column("interval_s", sa.Float, nullable=False, server_default="30"),
    sa.Column("state", sa.String(16), nullable=False, server_default=""),
    sa.Column("silent_us", sa.BigInteger),
    sa.Column("stopped_us", sa.BigInteger),
)


chain_breaks = sa.Table(
    "chain_breaks", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("agent", sa.String(64), nullable=False),
    sa.Column("from_seq", sa.BigInteger, nullable=False),
    sa.Column("to_seq", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("explained", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("details", sa.Text, nullable=False, server_default=""),
    sa.Column("recorded_us", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("agent", "from_seq", "reason", name="chain_breaks_once"),
)


seat_state = sa.Table(
    "seat_state", metadata,
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


floor_ratio_state = sa.Table(
    "floor_ratio_state", metadata,
    sa.Column("floor", sa.String(255), primary_key=True),
    sa.Column("exceeded_since_us", sa.BigInteger),
    sa.Column("reported", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("checked_us", sa.BigInteger, nullable=False),
)


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


floor_settings = sa.Table(
    "floor_settings", metadata,
    sa.Column("floor", sa.String(255), primary_key=True),
    sa.Column("max_operators_per_sv", sa.Integer),
    sa.Column("timezone", sa.String(64), nullable=False, server_default=FloorSettings.timezone),
    sa.Column("idle_unlocked_after_s", sa.Float, nullable=False, server_default="300"),
    sa.Column("heartbeat_interval_s", sa.Float, nullable=False, server_default="30"),
    sa.Column("updated_by", sa.String(64), nullable=False, server_default=""),
    sa.Column("updated_us", sa.BigInteger, nullable=False, server_default="0"),
)


violation_acks = sa.Table(
    "violation_acks", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("agent", sa.String(64), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("ts_us", sa.BigInteger, nullable=False),
    sa.Index("violation_acks_event", "agent", "seq"),
)


console_chain = sa.Table(
    "console_chain", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("hash", sa.String(64), nullable=False, server_default=GENESIS),
)


user_floors = sa.Table(
    "user_floors", metadata,
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("floor", sa.String(255), primary_key=True),
)


# Report rollups are keyed by 15-minute slots in UTC (``slot_us``) rather than by a local
# day, so one set of counters serves every floor's time zone (every real UTC offset is a
# multiple of 15 minutes) and the hourly charts come from the same rows.
SLOT_US = 15 * 60 * 1_000_000
