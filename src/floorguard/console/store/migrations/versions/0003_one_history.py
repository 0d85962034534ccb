"""One history: the link, print, report and account branches meet here, so a store has
one head and every later migration has one parent.

Revision ID: 0003_one_history
Revises: membership_0001, link_0001, print_0001, reports_0002
"""

revision = "0003_one_history"
down_revision = ("membership_0001", "link_0001", "print_0001", "reports_0002")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change: the merge only joins the histories."""


def downgrade() -> None:
    """Nothing to change: the merge only joins the histories."""
