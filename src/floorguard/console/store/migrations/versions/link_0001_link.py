"""Agent-console link: console event chain, per-agent chain and presence state, chain
breaks, floor policies.

Revision ID: link_0001
Revises: 0002_commands
"""

import sqlalchemy as sa
from alembic import op

revision = "link_0001"
down_revision = "0002_commands"
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def upgrade() -> None:
    chain = op.create_table(
        "console_chain",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("hash", sa.String(64), nullable=False, server_default=GENESIS),
    )
    op.bulk_insert(chain, [{"id": 1, "seq": 0, "hash": GENESIS}])
    op.create_table(
        "agent_link",
        sa.Column("agent", sa.String(64), primary_key=True),
        sa.Column("chain_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("chain_hash", sa.String(64), nullable=False, server_default=GENESIS),
        sa.Column("heartbeat_us", sa.BigInteger),
        sa.Column("interval_s", sa.Float, nullable=False, server_default="30"),
        sa.Column("state", sa.String(16), nullable=False, server_default=""),
        sa.Column("silent_us", sa.BigInteger),
        sa.Column("stopped_us", sa.BigInteger),
    )
    op.create_table(
        "chain_breaks",
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
    op.create_table(
        "floor_policies",
        sa.Column("floor", sa.String(255), primary_key=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("uploaded_by", sa.String(64), nullable=False),
        sa.Column("uploaded_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("floor_policies", "chain_breaks", "agent_link", "console_chain"):
        op.drop_table(table)
