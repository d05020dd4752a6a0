"""Alerts open incidents: the alert an incident was declared from, and the alert keys.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.store.tables import Json, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("alert", Json))
    op.create_table(
        "alert_keys",
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("incident_id", sa.String(32), nullable=True),
        sa.Column("firing", sa.Boolean, nullable=False),
        sa.Column("starts_at", UTCDateTime),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_alert_keys"),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name="fk_alert_keys_incident_id_incidents"
        ),
    )
    op.create_index("ix_alert_keys_incident_id", "alert_keys", ["incident_id"])


def downgrade() -> None:
    op.drop_index("ix_alert_keys_incident_id", table_name="alert_keys")
    op.drop_table("alert_keys")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("alert")
