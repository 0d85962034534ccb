"""The print approval queue's jobs, kept from print.* events.

Revision ID: print_0001
Revises: 0002_commands
"""

import sqlalchemy as sa
from alembic import op

revision = "print_0001"
down_revision = "0002_commands"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "print_jobs",
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
        sa.Column("thumbnail_seq", sa.BigInteger),
        sa.Column("placeholder", sa.String(32)),
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
    )
    op.create_index("print_jobs_state_held", "print_jobs", ["state", "held_us"])


def downgrade() -> None:
    op.drop_table("print_jobs")
