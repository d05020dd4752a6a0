"""Durable timers for every clock, and the incident fields they need.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.store.tables import Json, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("snoozed_until", UTCDateTime))
        batch.add_column(sa.Column("done", Json, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("paged", Json, nullable=False, server_default="[]"))
    op.create_table(
        "timers",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("incident_id", sa.String(32), nullable=False),
        sa.Column("key", sa.String(120), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("due_at", UTCDateTime, nullable=False),
        sa.Column("data", Json, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("locked_by", sa.String(64)),
        sa.Column("locked_until", UTCDateTime),
        sa.Column("fired_at", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_timers"),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name="fk_timers_incident_id_incidents"
        ),
        sa.UniqueConstraint("incident_id", "key", name="uq_timers_incident_id_key"),
    )
    op.create_index("ix_timers_state_due_at", "timers", ["state", "due_at"])


def downgrade() -> None:
    op.drop_table("timers")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("paged")
        batch.drop_column("done")
        batch.drop_column("snoozed_until")
