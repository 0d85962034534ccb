"""Console: floor memberships of accounts (``user_floors``), which scope what SVs and
auditors read and do.

Revision ID: membership_0001
Revises: console_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "membership_0001"
down_revision = "console_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_floors",
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("floor", sa.String(255), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("user_floors")
