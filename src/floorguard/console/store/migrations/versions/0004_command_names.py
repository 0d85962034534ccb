"""Commands are named like the kinds (control, then what it does): ``lock_seat`` is now
``idle.lock_seat`` and ``reload_policy`` is ``agent.reload_policy``. Rows of the old
names are renamed so that commands still waiting reach agents by their new names.

Revision ID: 0004_command_names
Revises: 0003_one_history
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_command_names"
down_revision = "0003_one_history"
branch_labels = None
depends_on = None

RENAMED = {"lock_seat": "idle.lock_seat", "reload_policy": "agent.reload_policy"}


def upgrade() -> None:
    for old, new in RENAMED.items():
        op.execute(sa.text("UPDATE commands SET name = :new WHERE name = :old")
                   .bindparams(new=new, old=old))


def downgrade() -> None:
    for old, new in RENAMED.items():
        op.execute(sa.text("UPDATE commands SET name = :old WHERE name = :new")
                   .bindparams(new=new, old=old))
