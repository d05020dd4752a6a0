"""The status page: an incident's public title and components, the public incidents and
their published updates.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.store.tables import Json, UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("public_title", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("components", Json, nullable=False, server_default="{}"))
    op.create_table(
        "status_incidents",
        sa.Column("incident_id", sa.String(32), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("impact", sa.String(16), nullable=False),
        sa.Column("components", Json, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("resolved_at", UTCDateTime),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name="fk_status_incidents_incident_id_incidents",
        ),
        sa.PrimaryKeyConstraint("incident_id", name="pk_status_incidents"),
    )
    op.create_index("ix_status_incidents_updated_at", "status_incidents", ["updated_at"])
    op.create_table(
        "status_updates",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("incident_id", sa.String(32), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("components", Json, nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["status_incidents.incident_id"],
            name="fk_status_updates_incident_id_status_incidents",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_status_updates"),
    )
    op.create_index("ix_status_updates_incident_id", "status_updates", ["incident_id"])


def downgrade() -> None:
    op.drop_index("ix_status_updates_incident_id", table_name="status_updates")
    op.drop_table("status_updates")
    op.drop_index("ix_status_incidents_updated_at", table_name="status_incidents")
    op.drop_table("status_incidents")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("components")
        batch.drop_column("public_title")
