"""What the service needs from the outside world, as protocols (the store implements them)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from bot.domain.clocks import Timer
from bot.domain.incident import Event, Incident
from bot.domain.statuspage import PublicIncident
from bot.domain.timeline import TimelineEntry


@dataclass
class SlackRefs:
    """Where an incident lives in Slack, as Slack reported it (ids and message timestamps)."""

    origin_channel_id: str | None = None
    channel_id: str | None = None
    channel_name: str | None = None
    alert_ts: str | None = None
    announce_channel_id: str | None = None
    announce_ts: str | None = None
    playbook_ts: str | None = None


@dataclass
class IncidentRecord:
    incident: Incident
    slack: SlackRefs = field(default_factory=SlackRefs)


class JobKind(enum.StrEnum):
    """Slack work recorded with the state change that causes it, done later by the worker."""

    CREATE_CHANNEL = "create_channel"  # conversations.create (+ name_taken suffixes)
    INVITE = "invite"  # conversations.invite {users}
    POST_ALERT = "post_alert"  # the alert in the incident channel, then the topic
    ANNOUNCE = "announce"  # the alert in the announcement channel
    SYNC = "sync"  # re-render the alert messages and the topic from the current state
    POST = "post"  # a message {template, data, to: [channel|announce]}
    RESPOND = "respond"  # a follow-up to a response_url {url, template, data}
    PAGERDUTY = "pagerduty"  # Events API v2 {routing_key, action: trigger|resolve, summary}
    POST_PLAYBOOK = "post_playbook"  # the matched playbook as a checklist {others: [ids]}
    SYNC_PLAYBOOK = "sync_playbook"  # re-render the checklist (who ticked what)
    CAPTURE = "capture"  # fetch a 📌 message and add it to the timeline {channel, ts, by}
    POSTMORTEM = "postmortem"  # build the post-mortem draft and upload it to the channel
    # Reach people: invite users and user-group members to the channel and send each a
    # direct message {targets, why, level, after, minutes}.
    PAGE = "page"
    # An email to the severity's addresses {to, what, incident, public, internal}; its own
    # lane: an SMTP outage holds up nothing else.
    EMAIL = "email"


class JobState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class NewJob:
    kind: JobKind
    incident_id: str | None
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    id: int
    kind: JobKind
    incident_id: str | None
    payload: dict[str, Any]
    attempts: int
    result: dict[str, Any] = field(default_factory=dict)  # steps done so far, kept on retry
    worker: str = ""  # who holds the claim: only it may record the outcome
    created_at: datetime | None = None
    # The incident as the claim found it (read in the claim's transaction, so running the
    # job needs no transaction of its own to know it); None: read it when running.
    incident: IncidentRecord | None = None
    # The incident's Slack references this run made (its channel, its one message's ts):
    # saved with the job's outcome, in the transaction that records it, whatever it is.
    refs: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class AlertKey:
    """An alert (or an Alertmanager group) as the database knows it: the incident it belongs
    to (None: claimed just now, no incident yet), whether it fires, since when."""

    key: str
    incident_id: str | None
    firing: bool
    starts_at: datetime | None = None


@dataclass(frozen=True)
class ClaimedTimer:
    id: int
    incident_id: str
    timer: Timer


class Tx(Protocol):
    """One transaction: everything written through it commits together or not at all."""

    async def next_sequence(self, day: date) -> int: ...
    async def add_incident(self, record: IncidentRecord) -> None: ...
    async def get(self, incident_id: str, *, lock: bool = False) -> IncidentRecord | None: ...
    async def by_channel(self, channel_id: str, *, lock: bool = False) -> IncidentRecord | None: ...
    async def save(self, incident: Incident) -> None: ...
    async def set_slack_refs(self, incident_id: str, **refs: str | None) -> None: ...
    async def add_events(self, incident_id: str, events: list[Event]) -> None: ...
    async def timeline(self, incident_id: str) -> list[TimelineEntry]: ...
    async def add_entry(self, entry: TimelineEntry, *, source_key: str) -> bool: ...
    async def remove_entry(self, source_key: str) -> bool: ...
    async def edit_entry(self, source_key: str, **data: Any) -> bool: ...
    async def declared_since(self, since: datetime) -> list[IncidentRecord]: ...
    async def timelines(self, incident_ids: list[str]) -> dict[str, list[TimelineEntry]]: ...
    async def counts(self) -> dict[str, Any]: ...
    async def open_incidents(self) -> list[IncidentRecord]: ...
    async def enqueue(self, jobs: list[NewJob], *, now: datetime) -> None: ...
    async def claim_jobs(
        self,
        *,
        now: datetime,
        worker: str,
        limit: int,
        lease_seconds: int,
        running: Sequence[int] = (),
    ) -> list[Job]: ...
    async def finish_job(
        self, job_id: int, *, worker: str, now: datetime, result: dict[str, Any]
    ) -> bool: ...
    async def finish_jobs(
        self, finished: Sequence[tuple[int, dict[str, Any]]], *, worker: str, now: datetime
    ) -> set[int]: ...
    async def retry_job(
        self,
        job_id: int,
        *,
        worker: str,
        run_after: datetime,
        error: str,
        spend_attempt: bool = True,
        result: dict[str, Any] | None = None,
    ) -> bool: ...
    async def fail_job(self, job_id: int, *, worker: str, now: datetime, error: str) -> bool: ...
    async def save_job_result(
        self, job_id: int, result: dict[str, Any], *, worker: str
    ) -> bool: ...
    async def renew_jobs(
        self, job_ids: list[int], *, worker: str, now: datetime, lease_seconds: int
    ) -> int: ...
    async def channel_refused(self, incident_id: str) -> str | None: ...
    async def next_job_due(self) -> datetime | None: ...
    async def replan_timers(
        self, incident_id: str, planned: list[Timer], *, now: datetime, new: bool = False
    ) -> None: ...
    async def claim_timers(
        self, *, now: datetime, worker: str, limit: int, lease_seconds: int
    ) -> list[ClaimedTimer]: ...
    async def mark_fired(self, timer_id: int, *, worker: str, now: datetime) -> bool: ...
    async def fail_timer(
        self, timer_id: int, *, worker: str, now: datetime, error: str
    ) -> bool: ...
    async def next_timer_due(self) -> datetime | None: ...
    async def pending_timer_count(self) -> int: ...
    async def recover_single_process(self) -> int: ...
    async def pending_job_count(self) -> int: ...
    async def job_backlog(self, *, now: datetime) -> tuple[int, float]: ...
    async def remember(self, key: str, *, now: datetime) -> bool:
        """Record `key` (a form submission's view id…) once: False if it was already recorded,
        so the work it guards is done once however often it arrives."""
        ...

    async def forget_once_keys(self, *, before: datetime) -> int:
        """Drop the keys recorded before `before` (long past any repeat); returns how many."""
        ...

    async def claim_alert_keys(self, keys: list[str], *, now: datetime) -> dict[str, AlertKey]:
        """Each key's row, created (with no incident) where there was none, and locked until
        the transaction ends: a second transaction claiming the same keys waits for this one
        and then sees what it recorded."""
        ...

    async def set_alert_keys(self, keys: list[AlertKey], *, now: datetime) -> None:
        """Record each key's incident, state and start."""
        ...

    async def drop_unclaimed_alert_keys(self, keys: list[str]) -> None:
        """Delete the rows of `keys` that belong to no incident (claimed, then ignored)."""
        ...

    async def firing_alerts(self, incident_id: str) -> int:
        """How many alerts of the incident fire now (groups not counted)."""
        ...

    async def publish(self, incident_id: str, data: dict[str, Any], *, at: datetime) -> None:
        """Record a published update on the status page (a PUBLISHED event's data)."""
        ...

    async def public_incidents(self, *, since: datetime, limit: int = 50) -> list[PublicIncident]:
        """The status page's incidents: open, or updated since `since`; newest first."""
        ...


class Store(Protocol):
    def transaction(
        self, *, read_only: bool = False, autocommit: bool = False
    ) -> AbstractAsyncContextManager[Tx]:
        """One unit of work; `read_only` promises it only reads (it may then run beside a
        writer instead of after it). `autocommit`: each of its statements is atomic and
        committed as it runs, and need not be atomic with the others (PostgreSQL: no BEGIN
        and COMMIT, two round trips fewer); SQLite runs them in one transaction anyway."""
        ...

    def declaring(self, day: date) -> AbstractAsyncContextManager[tuple[int | None, Tx]]:
        """A declaration's unit of work: (the day's next incident number, taken in a
        transaction of its own on the same connection just before; or None when the
        declaration takes it inside its own, `Tx.next_sequence`), a write transaction."""
        ...

    async def ping(self) -> bool: ...


class JobRetry(Exception):
    """Transient failure (429, 5xx, network): run the job again after `after` seconds.
    `paced` marks a rate limit: Slack pacing us, which does not count as an attempt."""

    def __init__(self, error: str, *, after: float | None = None, paced: bool = False) -> None:
        super().__init__(error)
        self.after = after
        self.paced = paced


class JobFailed(Exception):
    """Permanent failure: retrying cannot help (a refused scope, an unknown channel)."""


class LookupFailed(Exception):
    """The workspace directory (Slack) could not answer in time."""


class Directory(Protocol):
    """Who belongs to which user group, as the workspace says (cached by the adapter)."""

    async def group_members(self, group: str) -> set[str]:
        """The members of user group `group`; LookupFailed when Slack cannot say now."""
        ...
