"""Commands from the console to agents.

Revision ID: 0002_commands
Revises: 0001_base
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_commands"
down_revision = "0001_base"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "commands",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("agent", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("args", JSONType, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="queued"),
        sa.Column("delivered_us", sa.BigInteger),
        sa.Column("done_us", sa.BigInteger),
        sa.Column("result", JSONType),
    )
    op.create_index("commands_agent_state", "commands", ["agent", "state", "id"])


def downgrade() -> None:
    op.drop_table("commands")
