"""Incidents, their per-day sequence, the timeline and the Slack outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.store.tables import Json, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "incident_days",
        sa.Column("day", sa.String(8), nullable=False),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("day", name="pk_incident_days"),
    )
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("day", sa.String(8), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("severity", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("declared_at", UTCDateTime, nullable=False),
        sa.Column("declared_by", sa.String(32), nullable=False),
        sa.Column("services", Json, nullable=False),
        sa.Column("impact", sa.Text, nullable=False),
        sa.Column("drill", sa.Boolean, nullable=False),
        sa.Column("tags", Json, nullable=False),
        sa.Column("acknowledged_at", UTCDateTime),
        sa.Column("acknowledged_by", sa.String(32)),
        sa.Column("commander", sa.String(32)),
        sa.Column("roles", Json, nullable=False),
        sa.Column("last_update_at", UTCDateTime),
        sa.Column("escalation_level", sa.Integer, nullable=False),
        sa.Column("resolved_at", UTCDateTime),
        sa.Column("resolved_by", sa.String(32)),
        sa.Column("resolution_summary", sa.Text, nullable=False),
        sa.Column("root_cause", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("origin_channel_id", sa.String(32)),
        sa.Column("channel_id", sa.String(32)),
        sa.Column("channel_name", sa.String(80)),
        sa.Column("alert_ts", sa.String(32)),
        sa.Column("announce_channel_id", sa.String(32)),
        sa.Column("announce_ts", sa.String(32)),
        sa.PrimaryKeyConstraint("id", name="pk_incidents"),
        sa.UniqueConstraint("day", "seq", name="uq_incidents_day_seq"),
        sa.UniqueConstraint("channel_id", name="uq_incidents_channel_id"),
    )
    op.create_index("ix_incidents_status", "incidents", ["status"])
    op.create_table(
        "timeline",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.String(32), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(32)),
        sa.Column("data", Json, nullable=False),
        sa.Column("source_key", sa.String(200)),
        sa.PrimaryKeyConstraint("id", name="pk_timeline"),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name="fk_timeline_incident_id_incidents"
        ),
        sa.UniqueConstraint("source_key", name="uq_timeline_source_key"),
    )
    op.create_index("ix_timeline_incident_id", "timeline", ["incident_id"])
    op.create_table(
        "slack_jobs",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.String(32)),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", Json, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("run_after", UTCDateTime, nullable=False),
        sa.Column("locked_until", UTCDateTime),
        sa.Column("locked_by", sa.String(64)),
        sa.Column("result", Json),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_slack_jobs"),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name="fk_slack_jobs_incident_id_incidents"
        ),
    )
    op.create_index("ix_slack_jobs_incident_id", "slack_jobs", ["incident_id"])
    op.create_index("ix_slack_jobs_state_run_after", "slack_jobs", ["state", "run_after"])


def downgrade() -> None:
    op.drop_table("slack_jobs")
    op.drop_table("timeline")
    op.drop_table("incidents")
    op.drop_table("incident_days")
