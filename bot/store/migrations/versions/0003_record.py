"""Action items, the playbook checklist and its message, on the incident.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.store.tables import Json

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("actions", Json, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("playbook", sa.String(120)))
        batch.add_column(sa.Column("ticks", Json, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("playbook_ts", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("playbook_ts")
        batch.drop_column("ticks")
        batch.drop_column("playbook")
        batch.drop_column("actions")
