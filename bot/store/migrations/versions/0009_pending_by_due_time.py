"""The pending jobs by due time, in place of an index led by the job's state.

`ix_slack_jobs_state_run_after` (state, run_after) let both databases answer a claim by
fetching every pending job, checking each against its incident's earlier jobs, and sorting
them all to keep the oldest few: the claim's cost grew with the backlog (4 ms for 1,200
pending jobs, on the event loop's thread for SQLite's writer). Without an index led by the
state, the claim walks `ix_slack_jobs_unfinished` in id order and stops as soon as it has
its few jobs. When the next job is due is read from this partial index.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

PENDING = sa.text("state = 'pending'")


def upgrade() -> None:
    op.drop_index("ix_slack_jobs_state_run_after", table_name="slack_jobs")
    op.create_index(
        "ix_slack_jobs_pending_run_after",
        "slack_jobs",
        ["run_after"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_slack_jobs_pending_run_after", table_name="slack_jobs")
    op.create_index("ix_slack_jobs_state_run_after", "slack_jobs", ["state", "run_after"])
