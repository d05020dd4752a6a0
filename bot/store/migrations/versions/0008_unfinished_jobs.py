"""Partial indexes over the unfinished Slack jobs, which every claim reads.

Done and failed jobs are kept (they hold what Slack returned), so the table only grows;
the claim looks at the few unfinished ones (pending or running) and, for each, whether an
earlier one of its incident is unfinished. Without these indexes both scanned every job
ever recorded, and the worker slowed down as the history grew.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UNFINISHED = sa.text("state IN ('pending', 'running')")


def upgrade() -> None:
    for name, columns in (
        ("ix_slack_jobs_unfinished", ["id"]),
        ("ix_slack_jobs_unfinished_by_incident", ["incident_id", "id"]),
    ):
        op.create_index(
            name, "slack_jobs", columns, postgresql_where=UNFINISHED, sqlite_where=UNFINISHED
        )


def downgrade() -> None:
    op.drop_index("ix_slack_jobs_unfinished_by_incident", table_name="slack_jobs")
    op.drop_index("ix_slack_jobs_unfinished", table_name="slack_jobs")
