"""Tables (SQLAlchemy Core). The Alembic migrations in `migrations/versions` create them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both databases (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Json: Any = JSON().with_variant(JSON(none_as_null=True), "postgresql")

incident_days = Table(
    "incident_days",
    metadata,
    Column("day", String(8), primary_key=True),
    Column("last_seq", Integer, nullable=False),
)

incidents = Table(
    "incidents",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("day", String(8), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("title", Text, nullable=False),
    Column("severity", String(32), nullable=False),
    Column("status", String(32), nullable=False),
    Column("declared_at", UTCDateTime, nullable=False),
    Column("declared_by", String(32), nullable=False),
    Column("services", Json, nullable=False),
    Column("impact", Text, nullable=False),
    Column("drill", Boolean, nullable=False),
    Column("tags", Json, nullable=False),
    Column("acknowledged_at", UTCDateTime),
    Column("acknowledged_by", String(32)),
    Column("commander", String(32)),
    Column("roles", Json, nullable=False),
    Column("last_update_at", UTCDateTime),
    Column("escalation_level", Integer, nullable=False),
    Column("resolved_at", UTCDateTime),
    Column("resolved_by", String(32)),
    Column("resolution_summary", Text, nullable=False),
    Column("root_cause", Text, nullable=False),
    Column("snoozed_until", UTCDateTime),
    Column("done", Json, nullable=False, default=list),
    Column("paged", Json, nullable=False, default=list),
    Column("actions", Json, nullable=False, default=list),
    Column("playbook", String(120)),
    Column("ticks", Json, nullable=False, default=dict),
    Column("playbook_ts", String(32)),
    Column("version", Integer, nullable=False),
    # Where the incident lives in Slack: written by the worker from what Slack returned.
    Column("origin_channel_id", String(32)),
    Column("channel_id", String(32), unique=True),
    Column("channel_name", String(80)),
    Column("alert_ts", String(32)),
    Column("announce_channel_id", String(32)),
    Column("announce_ts", String(32)),
    # Declared from an alert: the alert's details (null: declared by a person).
    Column("alert", Json),
    # The status page: the public title ('' until published) and the components' states.
    Column("public_title", Text, nullable=False, default=""),
    Column("components", Json, nullable=False, default=dict),
    UniqueConstraint("day", "seq"),
    Index("ix_incidents_status", "status"),
)

timeline = Table(
    "timeline",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("incident_id", String(32), ForeignKey("incidents.id"), nullable=False, index=True),
    Column("at", UTCDateTime, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("actor", String(32)),
    Column("data", Json, nullable=False),
    Column("source_key", String(200), unique=True),
)

slack_jobs = Table(
    "slack_jobs",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("incident_id", String(32), ForeignKey("incidents.id"), index=True),
    Column("kind", String(32), nullable=False),
    Column("payload", Json, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("run_after", UTCDateTime, nullable=False),
    Column("locked_until", UTCDateTime),
    Column("locked_by", String(64)),
    Column("result", Json),
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    # When the next job is due (see migration 0009: no index here is led by the state).
    Index(
        "ix_slack_jobs_pending_run_after",
        "run_after",
        postgresql_where=text("state = 'pending'"),
        sqlite_where=text("state = 'pending'"),
    ),
    # What every claim reads: the unfinished jobs (see migration 0008).
    Index(
        "ix_slack_jobs_unfinished",
        "id",
        postgresql_where=text("state IN ('pending', 'running')"),
        sqlite_where=text("state IN ('pending', 'running')"),
    ),
    Index(
        "ix_slack_jobs_unfinished_by_incident",
        "incident_id",
        "id",
        postgresql_where=text("state IN ('pending', 'running')"),
        sqlite_where=text("state IN ('pending', 'running')"),
    ),
)

timers = Table(
    "timers",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("incident_id", String(32), ForeignKey("incidents.id"), nullable=False),
    Column("key", String(120), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("data", Json, nullable=False),
    Column("state", String(16), nullable=False),  # pending|firing|fired|cancelled|failed
    Column("locked_by", String(64)),
    Column("locked_until", UTCDateTime),
    Column("fired_at", UTCDateTime),
    Column("last_error", Text),  # why a timer failed (state `failed`)
    UniqueConstraint("incident_id", "key"),
    Index("ix_timers_state_due_at", "state", "due_at"),
)

# Keys of work to be done once however often it arrives (a form submitted twice: its view id).
once_keys = Table(
    "once_keys",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("at", UTCDateTime, nullable=False),
)

# Alerts from monitoring and the incident each belongs to. The primary key is the
# de-duplication: an alert (`alert:am:<fingerprint>`, `alert:generic:<key>`) or an
# Alertmanager group (`group:<hash of groupKey>`) has one row, claimed with an insert that
# does nothing on conflict, then locked; so two replicas receiving the same group at once
# make one incident. A key whose incident was resolved is pointed at the next one.
alert_keys = Table(
    "alert_keys",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("incident_id", String(32), ForeignKey("incidents.id"), index=True),
    Column("firing", Boolean, nullable=False),
    Column("starts_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
)


# The status page's read model, written in the transaction of each publish: one row per
# public incident and one per published update, so the page is one small read.
status_incidents = Table(
    "status_incidents",
    metadata,
    Column("incident_id", String(32), ForeignKey("incidents.id"), primary_key=True),
    Column("title", Text, nullable=False),
    Column("status", String(32), nullable=False),
    Column("impact", String(16), nullable=False),
    Column("components", Json, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime),
    Index("ix_status_incidents_updated_at", "updated_at"),
)

status_updates = Table(
    "status_updates",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column(
        "incident_id",
        String(32),
        ForeignKey("status_incidents.incident_id"),
        nullable=False,
        index=True,
    ),
    Column("at", UTCDateTime, nullable=False),
    Column("status", String(32), nullable=False),
    Column("body", Text, nullable=False),
    Column("components", Json, nullable=False),
)
