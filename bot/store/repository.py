"""The SQL implementation of the service's `Store` and `Tx` ports."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections import namedtuple
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    column,
    delete,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Dialect, RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import Executable

from bot.domain.actions import ActionItem
from bot.domain.clocks import Timer, TimerKind
from bot.domain.incident import Event, Incident
from bot.domain.policy import RESOLVED
from bot.domain.statuspage import PublicIncident, PublicUpdate
from bot.domain.timeline import TimelineEntry
from bot.service.deadline import commit_starting
from bot.service.ports import (
    AlertKey,
    ClaimedTimer,
    IncidentRecord,
    Job,
    JobKind,
    JobState,
    NewJob,
    SlackRefs,
)
from bot.store import prepared
from bot.store.batch import Batch, unexpected_count
from bot.store.db import WORKER_LOCK_CLASS, Database, WriteTransaction
from bot.store.prepared import Prepared
from bot.store.tables import (
    Json,
    UTCDateTime,
    alert_keys,
    incident_days,
    incidents,
    once_keys,
    slack_jobs,
    status_incidents,
    status_updates,
    timeline,
    timers,
)


class ConcurrentUpdate(Exception):
    """The incident changed under us (version mismatch); the transaction is rolled back."""


_INCIDENT_FIELDS = [
    "title",
    "severity",
    "status",
    "declared_at",
    "declared_by",
    "services",
    "impact",
    "drill",
    "tags",
    "acknowledged_at",
    "acknowledged_by",
    "commander",
    "roles",
    "last_update_at",
    "escalation_level",
    "resolved_at",
    "resolved_by",
    "resolution_summary",
    "root_cause",
    "snoozed_until",
    "done",
    "paged",
    "playbook",
    "ticks",
    "alert",
    "public_title",
    "components",
]
_REF_FIELDS = [
    "playbook_ts",
    "origin_channel_id",
    "channel_id",
    "channel_name",
    "alert_ts",
    "announce_channel_id",
    "announce_ts",
]


def _next_number_statement(*, postgres: bool) -> Any:
    """The upsert that takes the day's next incident number (`b_day`: YYYYMMDD)."""
    dialect_insert = postgresql.insert if postgres else sqlite.insert
    return (
        dialect_insert(incident_days)
        .values(day=bindparam("b_day", type_=String()), last_seq=1)
        .on_conflict_do_update(
            index_elements=[incident_days.c.day],
            set_={"last_seq": incident_days.c.last_seq + 1},
        )
        .returning(incident_days.c.last_seq)
    )


# What a request runs on every declaration and every change, built once: SQLAlchemy then
# compiles each of them once, instead of building and hashing the expression every time.
_NEXT_NUMBER = {
    postgres: Prepared(_next_number_statement(postgres=postgres)) for postgres in (False, True)
}
_ADD_INCIDENT = Prepared(insert(incidents), batch=True)
_SAVE_INCIDENT = Prepared(
    update(incidents).where(
        incidents.c.id == bindparam("b_id", type_=String()),
        incidents.c.version == bindparam("b_version", type_=Integer()),
    ),
    batch=True,
    key="b_id",
)
_BY_ID = select(incidents).where(incidents.c.id == bindparam("b_key", type_=String()))
_BY_CHANNEL = select(incidents).where(incidents.c.channel_id == bindparam("b_key", type_=String()))
_LOOKUPS = {
    (column, lock): Prepared(statement.with_for_update() if lock else statement)
    for column, statement in (("id", _BY_ID), ("channel", _BY_CHANNEL))
    for lock in (False, True)
}


def _timers_alongside(statement: Any) -> Any:
    """PostgreSQL: the incident's row locked, and its timers read in the same round trip
    (a change re-plans them next): one array per column, in the order of their ids, all
    of text (asyncpg reads a text array as it is; any other kind of array would first
    cost each connection two round trips to look its type up). `_timer_rows` reads them."""
    of = timers.alias("timers_of")
    due = func.to_char(func.timezone("UTC", of.c.due_at), 'YYYY-MM-DD"T"HH24:MI:SS.US')
    texts = {
        "id": of.c.id.cast(Text),
        "key": of.c.key.cast(Text),
        "state": of.c.state.cast(Text),
        "due_at": due,
    }

    def column(name: str) -> Any:
        return (
            select(func.array_agg(aggregate_order_by(texts[name], of.c.id)))
            .where(of.c.incident_id == incidents.c.id)
            .scalar_subquery()
            .label(f"timer_{name}")
        )

    return statement.add_columns(*map(column, _TIMER_COLUMNS)).with_for_update(of=incidents)


def _timer_rows(row: RowMapping) -> list[Any]:
    """The timers `_timers_alongside` read, as `_TIMERS_OF` gives them."""
    ids, keys, states, dues = (row[f"timer_{name}"] or [] for name in _TIMER_COLUMNS)
    return [
        _TimerRow(int(i), k, state, datetime.fromisoformat(due).replace(tzinfo=UTC))
        for i, k, state, due in zip(ids, keys, states, dues, strict=True)
    ]


_TIMER_COLUMNS = ("id", "key", "state", "due_at")
_LOCKED_WITH_TIMERS = {
    column: Prepared(_timers_alongside(statement))
    for column, statement in (("id", _BY_ID), ("channel", _BY_CHANNEL))
}
_ADD_EVENTS = Prepared(insert(timeline), batch=True)
_ENQUEUE = Prepared(insert(slack_jobs), batch=True)
_ADD_TIMERS = Prepared(insert(timers), batch=True)
_MOVE_TIMER = Prepared(
    update(timers).where(timers.c.id == bindparam("b_id", type_=Integer())).values(state="pending"),
    batch=True,
    key="b_id",
)
_CANCEL_TIMER = Prepared(
    update(timers)
    .where(timers.c.id == bindparam("b_id", type_=Integer()))
    .values(state="cancelled"),
    batch=True,
    key="b_id",
)
# A job's outcome written on the incident (its channel, the alert's ts…): one per set of
# references written (`set_slack_refs`). Not batched: the worker records a varying mix of
# them (which references, how many incidents), and each new mix would be a new statement
# for SQLAlchemy to compile, which cost more than the round trips it saved.
_SET_REFS = Prepared(update(incidents).where(incidents.c.id == bindparam("b_id", type_=String())))
_TIMERS_OF = Prepared(
    select(timers.c.id, timers.c.key, timers.c.state, timers.c.due_at).where(
        timers.c.incident_id == bindparam("b_incident", type_=String())
    )
)
_TimerRow = namedtuple("_TimerRow", ["id", "key", "state", "due_at"])  # as _TIMERS_OF's rows
_REMEMBER = {
    postgres: Prepared(
        (postgresql.insert if postgres else sqlite.insert)(once_keys).on_conflict_do_nothing(
            index_elements=[once_keys.c.key]
        )
    )
    for postgres in (False, True)
}


# Jobs that talk to something other than Slack, each in a lane of its own.
_OWN_LANES = (JobKind.PAGERDUTY.value, JobKind.EMAIL.value)


# The unfinished jobs, as the partial indexes over them say it (migration 0008): written
# out, not bound, so that PostgreSQL's planner can match the predicate in every plan.
_UNFINISHED = "state IN ('pending', 'running')"
_PENDING = "state = 'pending'"  # migration 0009's


def _blocked() -> Any:
    """True for a job with an unfinished earlier job of the same incident and lane.

    Three lanes per incident: Slack work in order, paging in order, email in order; a
    PagerDuty or SMTP outage never holds up the messages in the channel (nor the other way
    round). A job of no incident matches no earlier job (NULL equals nothing).
    """
    earlier = slack_jobs.alias("earlier")
    same_lane = or_(
        *(and_(slack_jobs.c.kind == lane, earlier.c.kind == lane) for lane in _OWN_LANES),
        and_(slack_jobs.c.kind.not_in(_OWN_LANES), earlier.c.kind.not_in(_OWN_LANES)),
    )
    return exists().where(
        earlier.c.incident_id == slack_jobs.c.incident_id,
        earlier.c.id < slack_jobs.c.id,
        text(f"earlier.{_UNFINISHED}"),
        same_lane,
    )


def _abandoned(locked_by: Any, locked_until: Any, now: Any, *, postgres: bool) -> Any:
    """A claimed row whose claimant is gone: lease expired, or (PostgreSQL) the worker's
    liveness lock is free because its process died. The transaction-level probe lock is
    released at commit."""
    expired = locked_until < now
    if not postgres:
        return expired
    probe = func.pg_try_advisory_xact_lock(WORKER_LOCK_CLASS, func.hashtext(locked_by))
    return or_(expired, probe)


# A claim reads at most this many unfinished jobs in one look (`claim_jobs`).
CLAIM_WINDOW = 256


@functools.cache
def _claim_statement(*, postgres: bool) -> Prepared:
    """`claim_jobs`' one statement, built once (building it took more of the worker's time
    than running it): choose the claimable jobs among the `CLAIM_WINDOW` unfinished jobs
    after `b_after` (in id order), and claim them, returning their rows.

    Claimable: pending and due; or running and either its own while not running here
    (`b_running`: a run whose outcome could not be recorded, the database gone, to run again
    now, not after its lease, since the worker's liveness lock says it is alive) or
    abandoned (lease expired, or on PostgreSQL its claimant's liveness lock free: the
    transaction-level probe lock is released at commit). Never one of `b_running`, and at
    most one per incident and lane (`_blocked`).
    """
    now: Any = bindparam("b_now", type_=UTCDateTime())
    worker: Any = bindparam("b_worker", type_=String())
    running: Any = bindparam("b_running", type_=Integer(), expanding=True)
    jobs = slack_jobs.c
    claimable = or_(
        and_(jobs.state == JobState.PENDING, jobs.run_after <= now),
        and_(
            jobs.state == JobState.RUNNING,
            or_(
                jobs.locked_by == worker,  # not running here: `b_running` is left out below
                _abandoned(jobs.locked_by, jobs.locked_until, now, postgres=postgres),
            ),
        ),
    )
    chosen = (
        select(jobs.id)
        .where(
            jobs.id.in_(_window()),
            # Said again out here: PostgreSQL then starts its walk of the outer rows at the
            # window, not at the first unfinished job.
            jobs.id > bindparam("b_after", type_=Integer()),
            claimable,
            jobs.id.not_in(running),
            ~_blocked(),  # a job of no incident has no earlier job: never blocked
        )
        .order_by(jobs.id)
        .limit(bindparam("b_limit"))
    )
    if postgres:
        chosen = chosen.with_for_update(skip_locked=True, of=slack_jobs)
    return Prepared(
        update(slack_jobs)
        .where(jobs.id.in_(chosen.scalar_subquery()))
        .values(
            state=JobState.RUNNING,
            locked_by=worker,
            locked_until=bindparam("b_until", type_=UTCDateTime()),
            attempts=jobs.attempts + 1,
        )
        .returning(*slack_jobs.c)
    )


def _after() -> Any:
    """The unfinished jobs after `b_after`, in id order (the index of unfinished jobs)."""
    return (
        select(slack_jobs.c.id)
        .where(
            text(f"slack_jobs.{_UNFINISHED}"),  # literal: the partial indexes' predicate
            slack_jobs.c.id > bindparam("b_after", type_=Integer()),
        )
        .order_by(slack_jobs.c.id)
    )


def _window() -> Any:
    """What one look of a claim reads: the ids of the `CLAIM_WINDOW` unfinished jobs after
    `b_after`."""
    return _after().limit(CLAIM_WINDOW)


# The last id of a full window (`_window`); no row when fewer jobs follow `b_after`.
_WINDOW_END = Prepared(_after().offset(CLAIM_WINDOW - 1).limit(1))
# Where each worker of this process looks next past a front too busy to hold its claims
# (`claim_jobs`), by worker name.
_looked_up_to: dict[str, int] = {}


_INCIDENTS_IN = Prepared(
    select(incidents).where(incidents.c.id.in_(bindparam("b_ids", type_=String(), expanding=True)))
)
_OF_INCIDENT = "incident__"  # the prefix of an incident's columns in `_claim_with_incidents`


@functools.cache
def _claim_with_incidents() -> Prepared:
    """PostgreSQL: `claim_jobs`' three statements in one, so a claim is one round trip, not
    three: the claim (`_claim_statement`), where the window after `b_after` ends
    (`_WINDOW_END`, as `window_end`) and each claimed job's incident (its columns prefixed
    `_OF_INCIDENT`). One row at least, its job's columns empty when nothing was claimed.

    The claim runs once, as a statement of its own would (a data-modifying WITH query); the
    look at the window and the incidents see the database as the statement found it: the
    jobs it claimed are unfinished either way, and each incident is the one its job was
    claimed with."""
    claimed = _claim_statement(postgres=True).statement.cte("claimed")  # type: ignore[attr-defined]
    one = select(literal_column("1").label("one")).subquery("one")
    window_end = _WINDOW_END.statement.scalar_subquery()  # type: ignore[attr-defined]
    return Prepared(
        select(
            window_end.label("window_end"),
            *claimed.c,
            *(column.label(f"{_OF_INCIDENT}{column.name}") for column in incidents.c),
        ).select_from(
            one.outerjoin(claimed, true()).outerjoin(
                incidents, incidents.c.id == claimed.c.incident_id
            )
        )
    )


# A job's row while `b_worker` holds its claim (fencing: a worker whose lease was taken
# over records nothing); the two statements every job runs, built once.
_HELD = and_(
    slack_jobs.c.id == bindparam("b_job", type_=Integer()),
    slack_jobs.c.state == JobState.RUNNING,
    slack_jobs.c.locked_by == bindparam("b_worker", type_=String()),
)
_FINISH = Prepared(
    update(slack_jobs)
    .where(_HELD)
    .values(
        state=JobState.DONE,
        result=bindparam("b_result", type_=Json),
        finished_at=bindparam("b_now", type_=UTCDateTime()),
        locked_until=None,
    )
)
_SAVE_RESULT = Prepared(
    update(slack_jobs).where(_HELD).values(result=bindparam("b_result", type_=Json))
)
# PostgreSQL: jobs done, each with its result, in one statement of a fixed shape (the ids
# and the results as two arrays, `unnest`ed side by side), so it is compiled once and sent
# straight to asyncpg however many jobs it records.
_FINISHED = (
    func.unnest(
        bindparam("b_ids", type_=postgresql.ARRAY(BigInteger())),
        bindparam("b_results", type_=postgresql.ARRAY(Text())),
    )
    .table_valued(column("id", BigInteger()), column("result", Text()))
    .render_derived(name="finished")
)
_FINISH_MANY = Prepared(
    update(slack_jobs)
    .where(
        slack_jobs.c.id == _FINISHED.c.id,
        slack_jobs.c.state == JobState.RUNNING,
        slack_jobs.c.locked_by == bindparam("b_worker"),
    )
    .values(
        state=JobState.DONE,
        result=_FINISHED.c.result.cast(Json),
        finished_at=bindparam("b_now", type_=UTCDateTime()),
        locked_until=None,
    )
    .returning(slack_jobs.c.id)
)


def _action(data: dict[str, Any]) -> ActionItem:
    def moment(value: Any) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    return ActionItem(
        id=int(data["id"]),
        text=str(data["text"]),
        owner=data.get("owner"),
        due=date.fromisoformat(data["due"]) if data.get("due") else None,
        done=bool(data.get("done")),
        added_by=str(data.get("added_by", "")),
        added_at=datetime.fromisoformat(str(data["added_at"])),
        done_by=data.get("done_by"),
        done_at=moment(data.get("done_at")),
    )


def _action_json(item: ActionItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "text": item.text,
        "owner": item.owner,
        "due": item.due.isoformat() if item.due else None,
        "done": item.done,
        "added_by": item.added_by,
        "added_at": item.added_at.isoformat(),
        "done_by": item.done_by,
        "done_at": item.done_at.isoformat() if item.done_at else None,
    }


def _entry(row: RowMapping) -> TimelineEntry:
    return TimelineEntry(
        incident_id=row["incident_id"],
        at=row["at"],
        kind=row["kind"],
        actor=row["actor"],
        data=dict(row["data"] or {}),
        id=row["id"],
    )


def _values(incident: Incident) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(incident, name) for name in _INCIDENT_FIELDS}
    values["actions"] = [_action_json(item) for item in incident.actions]
    return values


def _record(row: Mapping[str, Any]) -> IncidentRecord:
    incident = Incident(
        id=row["id"],
        version=row["version"],
        **{name: row[name] for name in _INCIDENT_FIELDS},
    )
    incident.services = list(incident.services or [])
    incident.tags = list(incident.tags or [])
    incident.roles = dict(incident.roles or {})
    incident.done = list(incident.done or [])
    incident.paged = list(incident.paged or [])
    incident.ticks = dict(incident.ticks or {})
    incident.alert = dict(incident.alert) if incident.alert else None
    incident.public_title = incident.public_title or ""
    incident.components = dict(incident.components or {})
    incident.actions = [_action(item) for item in row["actions"] or []]
    return IncidentRecord(incident, SlackRefs(**{name: row[name] for name in _REF_FIELDS}))


class _TimerMixin:
    c: AsyncConnection | WriteTransaction
    _raw: sqlite3.Connection | None
    _dialect: Dialect
    _postgres: bool

    _batch: Batch | None
    _sent: bool
    _autocommit: bool
    _driver: Any
    _began: bool
    _timers_read: dict[str, list[Any]]

    async def _direct(self) -> Any:
        """PostgreSQL: the asyncpg connection to send this transaction's prepared
        statements to (`prepared.send`), asked for once. In a transaction (not autocommit)
        it is begun first (`prepared.begin`); None: its statements go through SQLAlchemy."""
        if not self._began:
            connection = cast(AsyncConnection, self.c)
            if self._autocommit:
                self._driver = await prepared.driver_of(connection)
            else:
                self._driver = await prepared.begin(connection)
            self._began = True
        return self._driver

    def _forget_timers(self, statement: Prepared | None) -> None:
        """Timers read with an incident's row no longer stand for the table once a
        statement may have written it (`None`: a statement not prepared, any table)."""
        if self._timers_read and (statement is None or statement.target == "timers"):
            self._timers_read.clear()

    async def _run(self, statement: Prepared, params: prepared.Params = None) -> Any:
        """A statement of every declaration or change: directly on SQLite's writer, or on
        PostgreSQL's asyncpg connection after the held writes it would read (`prepared`);
        else (a batch of parameter sets, in-memory SQLite) through SQLAlchemy."""
        self._forget_timers(statement)
        if self._raw is not None:
            return prepared.run(self._raw, self._dialect, statement, params)
        if self._batch and self._batch.touches(statement.tables):
            await self.flush()
        self._sent = True
        if self._postgres and (params is None or isinstance(params, Mapping)):
            driver = await self._direct()
            if driver is not None:
                return await prepared.send(
                    cast(AsyncConnection, self.c),
                    statement.plan(self._dialect, params or {}),
                    params,
                    driver=driver,
                )
        return await self.c.execute(statement.statement, params)

    async def _execute(self, statement: Executable, params: Any = None) -> Any:
        """Any other statement: after the writes held so far."""
        self._forget_timers(None)
        await self.flush()
        self._sent = True
        return await self.c.execute(statement, params)

    async def _write(
        self,
        statement: Prepared,
        params: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        expect: int | None = None,
        error: Callable[[], Exception] | None = None,
    ) -> None:
        """A write whose outcome is not read, only (with `expect`) its number of rows
        checked, else `error()` raised: on PostgreSQL it waits in the transaction's batch
        when it can (`bot.store.batch`), else it runs now."""
        rows = [params] if isinstance(params, Mapping) else list(params)
        if not rows:
            return
        batch = self._batch
        if batch is not None:
            if not batch.takes(statement, rows):
                await self.flush()  # what it holds goes first (nothing, if it holds nothing)
            if batch.takes(statement, rows):
                self._forget_timers(statement)
                batch.add(statement, rows, expect=expect, error=error)
                return
        result = await self._run(statement, rows if len(rows) > 1 else rows[0])
        if expect is not None and result.rowcount != expect:
            raise (error or unexpected_count)()

    async def flush(self, *, commit: bool = False) -> None:
        """Send the writes held (PostgreSQL). `commit`: the transaction ends now; if
        nothing was sent in it yet and no count is to be checked, the writes go as one
        statement that commits as it runs, without BEGIN and COMMIT (two round trips)."""
        batch = self._batch
        if not batch:
            return
        connection = cast(AsyncConnection, self.c)
        if self._autocommit or not commit or self._sent or batch.checks_counts:
            self._sent = True
            # In autocommit, a statement of its own; else in the transaction, begun now.
            await batch.send(connection, driver=await self._direct())
            return
        # Nothing sent yet, so SQLAlchemy has not begun the transaction: sent straight to
        # asyncpg, the batch commits as it runs, and the transaction's COMMIT sends nothing.
        commit_starting()
        await batch.send(connection, driver=await prepared.driver_of(connection))

    async def recover_single_process(self) -> int:
        """SQLite serves one process: at start-up, whatever it left claimed is taken back."""
        jobs = await self._execute(
            update(slack_jobs)
            .where(text(f"slack_jobs.{_UNFINISHED}"), slack_jobs.c.state == JobState.RUNNING)
            .values(state=JobState.PENDING, locked_until=None)
        )
        fired = await self._execute(
            update(timers).where(timers.c.state == "firing").values(state="pending")
        )
        return int(jobs.rowcount or 0) + int(fired.rowcount or 0)

    async def replan_timers(
        self, incident_id: str, planned: list[Timer], *, now: datetime, new: bool = False
    ) -> None:
        """Make the incident's timers match the plan.

        New keys are added; a pending timer whose due time moved is moved; a pending timer
        no longer planned is cancelled unless it is already due (a due timer always fires,
        and `fire` decides whether it still matters); fired timers are never re-armed.
        `new`: the incident was added in this transaction, so it has no timers yet.
        """
        rows = [] if new else self._timers_read.pop(incident_id, None)
        if rows is None:
            rows = (await self._run(_TIMERS_OF, {"b_incident": incident_id})).all()
        existing = {row.key: row for row in rows}
        wanted = {timer.key: timer for timer in planned}
        added = [
            {
                "incident_id": incident_id,
                "key": timer.key,
                "kind": str(timer.kind),
                "due_at": timer.due,
                "data": timer.data,
                "state": "pending",
            }
            for key, timer in wanted.items()
            if key not in existing
        ]
        if added:
            await self._write(_ADD_TIMERS, added)
        moved: list[dict[str, Any]] = []
        cancelled: list[int] = []
        for key, row in existing.items():
            timer = wanted.get(key)
            if timer is not None and row.state in ("pending", "cancelled"):
                if row.state == "cancelled" or row.due_at != timer.due:
                    moved.append({"b_id": row.id, "due_at": timer.due, "data": timer.data})
            elif timer is None and row.state == "pending" and row.due_at > now:
                cancelled.append(row.id)
        # One batch each, however many timers (an acknowledgement cancels a chain).
        await self._write(_MOVE_TIMER, moved)
        await self._write(_CANCEL_TIMER, [{"b_id": timer_id} for timer_id in cancelled])

    async def claim_timers(
        self, *, now: datetime, worker: str, limit: int, lease_seconds: int
    ) -> list[ClaimedTimer]:
        """Claim due timers (and ones whose claimant died): marked `firing` for this worker.

        On PostgreSQL the claim skips rows another process holds, so each timer is claimed
        by one process; `fire_timer` then fires it under the incident's lock, once.
        """
        claimable = or_(
            and_(timers.c.state == "pending", timers.c.due_at <= now),
            and_(
                timers.c.state == "firing",
                or_(
                    # Its own: the worker fires one round at a time, so a timer it still
                    # holds when it claims was left by a round the database cut short.
                    timers.c.locked_by == worker,
                    _abandoned(
                        timers.c.locked_by, timers.c.locked_until, now, postgres=self._postgres
                    ),
                ),
            ),
        )
        chosen = select(timers.c.id).where(claimable).order_by(timers.c.due_at, timers.c.id)
        chosen = chosen.limit(limit)
        if self._postgres:
            chosen = chosen.with_for_update(skip_locked=True)
        # One statement: atomic by itself, so it may commit as it runs (`autocommit`).
        claimed = (
            update(timers)
            .where(timers.c.id.in_(chosen.scalar_subquery()))
            .values(
                state="firing",
                locked_by=worker,
                locked_until=now + timedelta(seconds=lease_seconds),
            )
            .returning(
                timers.c.id,
                timers.c.incident_id,
                timers.c.key,
                timers.c.kind,
                timers.c.due_at,
                timers.c.data,
            )
        )
        found = (await self._execute(claimed)).mappings()
        rows = sorted(found, key=lambda row: (row["due_at"], row["id"]))
        return [
            ClaimedTimer(
                id=row["id"],
                incident_id=row["incident_id"],
                timer=Timer(
                    key=row["key"],
                    kind=TimerKind(row["kind"]),
                    due=row["due_at"],
                    data=dict(row["data"] or {}),
                ),
            )
            for row in rows
        ]

    async def mark_fired(self, timer_id: int, *, worker: str, now: datetime) -> bool:
        """Mark a claimed timer fired; False if this worker no longer holds it."""
        result = await self._execute(
            update(timers)
            .where(
                timers.c.id == timer_id, timers.c.state == "firing", timers.c.locked_by == worker
            )
            .values(state="fired", fired_at=now, locked_until=None)
        )
        return bool(result.rowcount == 1)

    async def fail_timer(self, timer_id: int, *, worker: str, now: datetime, error: str) -> bool:
        """A timer whose firing raised: recorded as failed, with why, so it neither stalls
        the others nor is retried forever. False if this worker no longer held it."""
        outcome = await self._execute(
            update(timers)
            .where(timers.c.id == timer_id, timers.c.locked_by == worker)
            .values(state="failed", fired_at=now, locked_until=None, last_error=error[:2000])
        )
        return bool(outcome.rowcount)

    async def next_timer_due(self) -> datetime | None:
        statement = (
            select(timers.c.due_at)
            .where(timers.c.state == "pending")
            .order_by(timers.c.due_at)
            .limit(1)
        )
        value: datetime | None = (await self._execute(statement)).scalar_one_or_none()
        return value

    async def pending_timer_count(self) -> int:
        """Timers not fired yet (pending, or claimed and firing), drills included."""
        statement = select(func.count()).where(timers.c.state.in_(["pending", "firing"]))
        return int((await self._execute(statement)).scalar_one())


class SqlTx(_TimerMixin):
    """`autocommit`: PostgreSQL, a connection whose statements each commit as they run;
    the prepared ones are then sent straight to asyncpg (`prepared.send`)."""

    def __init__(
        self, connection: AsyncConnection | WriteTransaction, *, autocommit: bool = False
    ) -> None:
        self.c = connection
        self._raw = connection.raw if isinstance(connection, WriteTransaction) else None
        self._dialect = connection.dialect
        self._postgres = connection.dialect.name == "postgresql"
        self._autocommit = autocommit and self._postgres
        # PostgreSQL: the writes waiting to go to the server together (`_write`)
        self._batch = Batch(self._dialect) if self._postgres else None
        self._sent = False
        self._driver: Any = None
        self._began = False
        # PostgreSQL: an incident's timers as read with its locked row, by its id, until
        # re-planned or until anything else may have written timers (`_forget_timers`)
        self._timers_read: dict[str, list[Any]] = {}

    # ---- incidents ---------------------------------------------------------------------
    async def next_sequence(self, day: date) -> int:
        """Atomically take the day's next number (an upsert: unique under concurrency).

        Inside this transaction: a declaration rolled back gives its number back. Where
        concurrent declarations would queue on the day's row for the length of their
        transactions (PostgreSQL), the store takes the number beforehand instead
        (`SqlStore.declaring`) and this is not called.
        """
        statement = _NEXT_NUMBER[self._postgres]
        return int((await self._run(statement, {"b_day": f"{day:%Y%m%d}"})).scalar_one())

    async def add_incident(self, record: IncidentRecord) -> None:
        incident = record.incident
        _, day, seq = incident.id.split("-")
        values = _values(incident)
        values |= {name: getattr(record.slack, name) for name in _REF_FIELDS}
        values |= {"id": incident.id, "day": day, "seq": int(seq), "version": 1}
        await self._write(_ADD_INCIDENT, values)
        incident.version = 1

    async def _lookup(self, column: str, key: str, lock: bool) -> IncidentRecord | None:
        if lock and self._postgres:
            row = (await self._run(_LOCKED_WITH_TIMERS[column], {"b_key": key})).mappings().first()
            if row is None:
                return None
            self._timers_read[row["id"]] = _timer_rows(row)
            return _record(row)
        statement = _LOOKUPS[column, lock and self._postgres]
        row = (await self._run(statement, {"b_key": key})).mappings().first()
        return _record(row) if row else None

    async def get(self, incident_id: str, *, lock: bool = False) -> IncidentRecord | None:
        return await self._lookup("id", incident_id.upper(), lock)

    async def by_channel(self, channel_id: str, *, lock: bool = False) -> IncidentRecord | None:
        return await self._lookup("channel", channel_id, lock)

    async def save(self, incident: Incident) -> None:
        values = _values(incident)
        values |= {
            "b_id": incident.id,
            "b_version": incident.version,
            "version": incident.version + 1,
        }
        await self._write(
            _SAVE_INCIDENT, values, expect=1, error=lambda: ConcurrentUpdate(incident.id)
        )
        incident.version += 1

    async def set_slack_refs(self, incident_id: str, **refs: str | None) -> None:
        unknown = set(refs) - set(_REF_FIELDS)
        if unknown:
            raise ValueError(f"unknown Slack reference(s): {sorted(unknown)}")
        if refs:
            await self._write(_SET_REFS, {"b_id": incident_id, **refs})

    async def open_incidents(self) -> list[IncidentRecord]:
        statement = (
            select(incidents)
            .where(incidents.c.status != RESOLVED)
            .order_by(incidents.c.declared_at)
        )
        return [_record(row) for row in (await self._execute(statement)).mappings()]

    # ---- timeline ----------------------------------------------------------------------
    async def add_events(self, incident_id: str, events: list[Event]) -> None:
        if not events:
            return
        await self._write(
            _ADD_EVENTS,
            [
                {
                    "incident_id": incident_id,
                    "at": event.at,
                    "kind": str(event.kind),
                    "actor": event.actor,
                    "data": event.data,
                    "source_key": None,
                }
                for event in events
            ],
        )

    async def add_entry(self, entry: TimelineEntry, *, source_key: str) -> bool:
        """Add a captured entry once per source (a 📌 on a message); False if already there."""
        dialect_insert = postgresql.insert if self._postgres else sqlite.insert
        statement = (
            dialect_insert(timeline)
            .values(
                incident_id=entry.incident_id,
                at=entry.at,
                kind=entry.kind,
                actor=entry.actor,
                data=entry.data,
                source_key=source_key,
            )
            .on_conflict_do_nothing(index_elements=[timeline.c.source_key])
        )
        result = await self._execute(statement)
        return bool(result.rowcount)

    async def remove_entry(self, source_key: str) -> bool:
        result = await self._execute(delete(timeline).where(timeline.c.source_key == source_key))
        return bool(result.rowcount)

    async def edit_entry(self, source_key: str, **data: Any) -> bool:
        row = (
            await self._execute(
                select(timeline.c.id, timeline.c.data).where(timeline.c.source_key == source_key)
            )
        ).first()
        if row is None:
            return False
        await self._execute(
            update(timeline)
            .where(timeline.c.id == row.id)
            .values(data={**(row.data or {}), **data})
        )
        return True

    async def declared_since(self, since: datetime) -> list[IncidentRecord]:
        statement = (
            select(incidents)
            .where(incidents.c.declared_at >= since)
            .order_by(incidents.c.declared_at)
        )
        return [_record(row) for row in (await self._execute(statement)).mappings()]

    async def timelines(self, incident_ids: list[str]) -> dict[str, list[TimelineEntry]]:
        found: dict[str, list[TimelineEntry]] = {i: [] for i in incident_ids}
        for start in range(0, len(incident_ids), 500):
            chunk = incident_ids[start : start + 500]
            statement = (
                select(timeline)
                .where(timeline.c.incident_id.in_(chunk))
                .order_by(timeline.c.at, timeline.c.id)
            )
            for row in (await self._execute(statement)).mappings():
                found[row["incident_id"]].append(_entry(row))
        return found

    async def counts(self) -> dict[str, Any]:
        """Figures for /metrics: incidents by severity and state, events by kind (no drills)."""
        real = incidents.c.drill.is_(False)
        by_severity = (
            await self._execute(
                select(incidents.c.severity, incidents.c.status, func.count())
                .where(real)
                .group_by(incidents.c.severity, incidents.c.status)
            )
        ).all()
        kinds = (
            await self._execute(
                select(timeline.c.kind, func.count())
                .select_from(timeline.join(incidents, timeline.c.incident_id == incidents.c.id))
                .where(real)
                .group_by(timeline.c.kind)
            )
        ).all()
        acks = (
            await self._execute(
                select(incidents.c.declared_at, incidents.c.acknowledged_at).where(
                    real, incidents.c.acknowledged_at.is_not(None)
                )
            )
        ).all()
        return {
            "by_severity": [(str(a), str(b), int(n)) for a, b, n in by_severity],
            "kinds": {str(kind): int(n) for kind, n in kinds},
            "tta_seconds": [(ack - declared).total_seconds() for declared, ack in acks],
        }

    async def timeline(self, incident_id: str) -> list[TimelineEntry]:
        statement = (
            select(timeline)
            .where(timeline.c.incident_id == incident_id)
            .order_by(timeline.c.at, timeline.c.id)
        )
        return [_entry(row) for row in (await self._execute(statement)).mappings()]

    # ---- Slack outbox ------------------------------------------------------------------
    async def enqueue(self, jobs: list[NewJob], *, now: datetime) -> None:
        if not jobs:
            return
        await self._write(
            _ENQUEUE,
            [
                {
                    "incident_id": job.incident_id,
                    "kind": str(job.kind),
                    "payload": job.payload,
                    "state": JobState.PENDING,
                    "attempts": 0,
                    "run_after": now,
                    "created_at": now,
                }
                for job in jobs
            ],
        )

    async def claim_jobs(
        self,
        *,
        now: datetime,
        worker: str,
        limit: int,
        lease_seconds: int,
        running: Sequence[int] = (),
    ) -> list[Job]:
        """Claim due jobs, at most one per incident and lane: the oldest unfinished of each.

        A job is claimable when pending and due, or running with an expired lease (its
        process died). Jobs of one incident run in the order they were recorded. On
        PostgreSQL the rows are locked with SKIP LOCKED, so replicas never share a job.
        `running`: the jobs this worker is running at this moment, never claimed again (it
        claims while they run). A job it holds and does not run (its outcome could not be
        recorded: the database went away) is claimed again at once.

        A claim reads the oldest `CLAIM_WINDOW` unfinished jobs, and stops there: its cost
        never grows with the work waiting. Only when that front is full and holds fewer
        claimable jobs than wanted (the rest wait behind their incident's job under way: a
        chatty incident, Slack slow for one channel) does it look at the next window, one
        further at each claim, from the front again after the last: every job waiting is
        looked at within a few claims, so no incident waits for another's queue.
        """
        statement = _claim_statement(postgres=self._postgres)
        values = {
            "b_now": now,
            "b_worker": worker,
            "b_running": list(running),
            "b_limit": limit,
            "b_until": now + timedelta(seconds=lease_seconds),
            "b_after": 0,
        }
        found: dict[str, IncidentRecord] = {}
        if self._postgres:
            rows, front = await self._claim_and_look(values, found)
        else:
            rows = list((await self._run(statement, values)).mappings())
            front = (
                (await self._run(_WINDOW_END, {"b_after": 0})).scalar()
                if len(rows) < limit
                else None
            )
        if len(rows) < limit and front is not None:
            # full: look further, where the last such look ended
            values["b_after"] = after = max(front, _looked_up_to.get(worker, 0))
            values["b_limit"] = limit - len(rows)
            if self._postgres:
                more, end = await self._claim_and_look(values, found)
            else:
                more = list((await self._run(statement, values)).mappings())
                end = (await self._run(_WINDOW_END, {"b_after": after})).scalar()
            rows += more
            _looked_up_to[worker] = end or 0  # past the last: after the front next time
        rows.sort(key=lambda row: row["id"])
        wanted = sorted({row["incident_id"] for row in rows if row["incident_id"]} - set(found))
        if wanted:
            read = await self._run(_INCIDENTS_IN, {"b_ids": wanted})
            found |= {row["id"]: _record(row) for row in read.mappings()}
        return [
            Job(
                id=row["id"],
                kind=JobKind(row["kind"]),
                incident_id=row["incident_id"],
                payload=dict(row["payload"] or {}),
                attempts=row["attempts"],
                result=dict(row["result"] or {}),
                worker=worker,
                created_at=row["created_at"],
                incident=found.get(row["incident_id"] or ""),
            )
            for row in rows
        ]

    async def _claim_and_look(
        self, values: dict[str, Any], found: dict[str, IncidentRecord]
    ) -> tuple[list[Any], int | None]:
        """PostgreSQL: one claim (`_claim_with_incidents`): the claimed jobs' rows and where
        the window ends; the jobs' incidents are added to `found`."""
        rows = (await self._run(_claim_with_incidents(), values)).mappings().all()
        start = len(_OF_INCIDENT)
        jobs = []
        for row in rows:
            if row["id"] is None:  # nothing claimed: the one row says where the window ends
                continue
            jobs.append(row)
            if row[f"{_OF_INCIDENT}id"] is not None and row["incident_id"] not in found:
                incident = {
                    key[start:]: value for key, value in row.items() if key.startswith(_OF_INCIDENT)
                }
                found[row["incident_id"]] = _record(incident)
        return jobs, rows[0]["window_end"]  # one row at least

    async def finish_job(
        self, job_id: int, *, worker: str, now: datetime, result: dict[str, Any]
    ) -> bool:
        values = {"b_job": job_id, "b_worker": worker, "b_result": result, "b_now": now}
        outcome = await self._run(_FINISH, values)
        return bool(outcome.rowcount)

    async def finish_jobs(
        self, finished: Sequence[tuple[int, dict[str, Any]]], *, worker: str, now: datetime
    ) -> set[int]:
        """Record these jobs done, each with its result; returns the ids whose claim
        `worker` still held (a job taken over is recorded by its new claimant).
        PostgreSQL: one statement for them all, so a batch of outcomes costs one round trip
        instead of one each. SQLite: one statement each, run in the process anyway."""
        if not self._postgres or len(finished) < 2:
            held = set()
            for job_id, result in finished:
                if await self.finish_job(job_id, worker=worker, now=now, result=result):
                    held.add(job_id)
            return held
        done = await self._run(
            _FINISH_MANY,
            {
                "b_ids": [job_id for job_id, _ in finished],
                "b_results": [json.dumps(result) for _, result in finished],
                "b_worker": worker,
                "b_now": now,
            },
        )
        return {int(job_id) for (job_id,) in done.all()}

    async def retry_job(
        self,
        job_id: int,
        *,
        worker: str,
        run_after: datetime,
        error: str,
        spend_attempt: bool = True,
        result: dict[str, Any] | None = None,
    ) -> bool:
        """Back to pending until `run_after`; `result`: the steps done so far, kept."""
        values: dict[str, Any] = {
            "state": JobState.PENDING,
            "run_after": run_after,
            "last_error": error[:2000],
            "locked_until": None,
        }
        if result is not None:
            values["result"] = result
        if not spend_attempt:  # a rate limit is Slack pacing us, not the job failing
            values["attempts"] = slack_jobs.c.attempts - 1
        outcome = await self._execute(
            update(slack_jobs).where(_HELD).values(**values), {"b_job": job_id, "b_worker": worker}
        )
        return bool(outcome.rowcount)

    async def fail_job(self, job_id: int, *, worker: str, now: datetime, error: str) -> bool:
        outcome = await self._execute(
            update(slack_jobs)
            .where(_HELD)
            .values(
                state=JobState.FAILED, last_error=error[:2000], finished_at=now, locked_until=None
            ),
            {"b_job": job_id, "b_worker": worker},
        )
        return bool(outcome.rowcount)

    async def save_job_result(self, job_id: int, result: dict[str, Any], *, worker: str) -> bool:
        values = {"b_job": job_id, "b_worker": worker, "b_result": result}
        outcome = await self._run(_SAVE_RESULT, values)
        return bool(outcome.rowcount)

    async def renew_jobs(
        self, job_ids: list[int], *, worker: str, now: datetime, lease_seconds: int
    ) -> int:
        """Keep the claims of jobs still running alive."""
        if not job_ids:
            return 0
        outcome = await self._execute(
            update(slack_jobs)
            .where(
                slack_jobs.c.id.in_(job_ids),
                slack_jobs.c.state == JobState.RUNNING,
                slack_jobs.c.locked_by == worker,
            )
            .values(locked_until=now + timedelta(seconds=lease_seconds))
        )
        return int(outcome.rowcount or 0)

    async def channel_refused(self, incident_id: str) -> str | None:
        """Why Slack refused to create the incident's channel, if it did (for good)."""
        statement = (
            select(slack_jobs.c.last_error)
            .where(
                slack_jobs.c.incident_id == incident_id,
                slack_jobs.c.kind == str(JobKind.CREATE_CHANNEL),
                slack_jobs.c.state == JobState.FAILED,
            )
            .limit(1)
        )
        value: str | None = (await self._execute(statement)).scalar_one_or_none()
        return value

    async def next_job_due(self) -> datetime | None:
        """When the next job can run: the earliest pending job not waiting behind another."""
        statement = (
            select(slack_jobs.c.run_after)
            .where(text(f"slack_jobs.{_PENDING}"), ~_blocked())
            .order_by(slack_jobs.c.run_after)
            .limit(1)
        )
        value: datetime | None = (await self._execute(statement)).scalar_one_or_none()
        return value

    async def pending_job_count(self) -> int:
        statement = select(func.count()).where(
            slack_jobs.c.state.in_([JobState.PENDING, JobState.RUNNING])
        )
        return int((await self._execute(statement)).scalar_one())

    async def job_backlog(self, *, now: datetime) -> tuple[int, float]:
        """Unfinished Slack jobs (pending or running): how many, and how long the oldest has
        waited since it was recorded, in seconds at `now` (0 when there is none)."""
        statement = select(func.count(), func.min(slack_jobs.c.created_at)).where(
            slack_jobs.c.state.in_([JobState.PENDING, JobState.RUNNING])
        )
        count, oldest = (await self._execute(statement)).one()
        if oldest is None:
            return int(count), 0.0
        return int(count), max(0.0, (now - oldest).total_seconds())

    async def remember(self, key: str, *, now: datetime) -> bool:
        result = await self._run(_REMEMBER[self._postgres], {"key": key[:200], "at": now})
        return bool(result.rowcount)

    async def forget_once_keys(self, *, before: datetime) -> int:
        result = await self._execute(delete(once_keys).where(once_keys.c.at < before))
        return int(result.rowcount or 0)

    # ---- alerts ------------------------------------------------------------------------
    async def claim_alert_keys(self, keys: list[str], *, now: datetime) -> dict[str, AlertKey]:
        """Insert-or-nothing, then lock (PostgreSQL: FOR UPDATE), in one order for everyone
        (sorted), so two transactions claiming overlapping keys queue instead of deadlocking.
        SQLite's BEGIN IMMEDIATE already lets one writer in at a time."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        dialect = postgresql if self._postgres else sqlite
        for start in range(0, len(wanted), 500):
            rows = [
                {"key": key, "incident_id": None, "firing": False, "updated_at": now}
                for key in wanted[start : start + 500]
            ]
            await self._execute(
                dialect.insert(alert_keys)
                .values(rows)
                .on_conflict_do_nothing(index_elements=[alert_keys.c.key])
            )
        found: dict[str, AlertKey] = {}
        for start in range(0, len(wanted), 500):
            statement = (
                select(alert_keys)
                .where(alert_keys.c.key.in_(wanted[start : start + 500]))
                .order_by(alert_keys.c.key)
            )
            if self._postgres:
                statement = statement.with_for_update()
            for row in (await self._execute(statement)).mappings():
                found[row["key"]] = AlertKey(
                    key=row["key"],
                    incident_id=row["incident_id"],
                    firing=bool(row["firing"]),
                    starts_at=row["starts_at"],
                )
        return found

    async def set_alert_keys(self, keys: list[AlertKey], *, now: datetime) -> None:
        if not keys:
            return
        await self._execute(
            update(alert_keys)
            .where(alert_keys.c.key == bindparam("b_key"))
            .values(
                incident_id=bindparam("b_incident"),
                firing=bindparam("b_firing"),
                starts_at=bindparam("b_starts"),
                updated_at=now,
            ),
            [
                {
                    "b_key": item.key,
                    "b_incident": item.incident_id,
                    "b_firing": item.firing,
                    "b_starts": item.starts_at,
                }
                for item in keys
            ],
        )

    async def drop_unclaimed_alert_keys(self, keys: list[str]) -> None:
        """Forget the keys this transaction claimed and gave no incident (ignored alerts)."""
        for start in range(0, len(keys), 500):
            await self._execute(
                delete(alert_keys).where(
                    alert_keys.c.key.in_(keys[start : start + 500]),
                    alert_keys.c.incident_id.is_(None),
                )
            )

    async def firing_alerts(self, incident_id: str) -> int:
        statement = select(func.count()).where(
            alert_keys.c.incident_id == incident_id,
            alert_keys.c.firing.is_(True),
            alert_keys.c.key.like("alert:%"),
        )
        return int((await self._execute(statement)).scalar_one())

    # ---- the status page ---------------------------------------------------------------
    async def publish(self, incident_id: str, data: dict[str, Any], *, at: datetime) -> None:
        """Record a published update (`data`: a PUBLISHED event's data) and the incident's
        public state, for the page to read."""
        resolved = data.get("status") == RESOLVED
        state = {
            "title": str(data["title"]),
            "status": str(data["status"]),
            "impact": str(data["impact"]),
            "components": dict(data.get("components") or {}),
            "updated_at": at,
            "resolved_at": at if resolved else None,
        }
        changed = await self._execute(
            update(status_incidents)
            .where(status_incidents.c.incident_id == incident_id)
            .values(**state)
        )
        if not changed.rowcount:
            await self._execute(
                insert(status_incidents).values(incident_id=incident_id, created_at=at, **state)
            )
        await self._execute(
            insert(status_updates).values(
                incident_id=incident_id,
                at=at,
                status=str(data["status"]),
                body=str(data["text"]),
                components=dict(data.get("components") or {}),
            )
        )

    async def public_incidents(self, *, since: datetime, limit: int = 50) -> list[PublicIncident]:
        """The public incidents still open or resolved since `since` (the open ones first),
        newest first, each with its updates newest first: what the status page shows."""
        rows = list(
            (
                await self._execute(
                    select(status_incidents)
                    .where(
                        or_(
                            status_incidents.c.resolved_at.is_(None),
                            status_incidents.c.updated_at >= since,
                        )
                    )
                    # Those still open first: however many were resolved since, an
                    # incident in progress is never cut off the page by the limit.
                    .order_by(
                        status_incidents.c.resolved_at.is_(None).desc(),
                        status_incidents.c.created_at.desc(),
                    )
                    .limit(limit)
                )
            ).mappings()
        )
        updates: dict[str, list[PublicUpdate]] = {row["incident_id"]: [] for row in rows}
        if rows:
            found = await self._execute(
                select(status_updates)
                .where(status_updates.c.incident_id.in_(list(updates)))
                .order_by(status_updates.c.at.desc(), status_updates.c.id.desc())
            )
            for update_row in found.mappings():
                updates[update_row["incident_id"]].append(
                    PublicUpdate(
                        id=int(update_row["id"]),
                        at=update_row["at"],
                        status=update_row["status"],
                        body=update_row["body"],
                        components=dict(update_row["components"] or {}),
                    )
                )
        return [
            PublicIncident(
                key=row["incident_id"],
                title=row["title"],
                status=row["status"],
                impact=row["impact"],
                components=dict(row["components"] or {}),
                created_at=row["created_at"],
                updated_at=row["updated_at"],
                resolved_at=row["resolved_at"],
                updates=updates[row["incident_id"]],
            )
            for row in rows
        ]


# PostgreSQL: the day's next number, and (`set_config(…, true)`, i.e. SET LOCAL) a commit
# that does not wait for the disk, in one statement: one round trip instead of two.
_TAKE_NUMBER = Prepared(
    text(
        """
        INSERT INTO incident_days (day, last_seq)
        SELECT :b_day, 1 FROM (SELECT set_config('synchronous_commit', 'off', true)) AS local
        ON CONFLICT (day) DO UPDATE SET last_seq = incident_days.last_seq + 1
        RETURNING last_seq
        """
    ).columns(column("last_seq", Integer()))
)


async def _take_number(connection: AsyncConnection, day: date) -> int:
    """PostgreSQL: the day's next number. Its transaction's commit (with autocommit, the
    statement's own) does not wait for the disk (see `SqlStore.declaring`)."""
    values = {"b_day": f"{day:%Y%m%d}"}
    plan = _TAKE_NUMBER.plan(connection.dialect, values)
    return int((await prepared.send(connection, plan, values)).scalar_one())


class SqlStore:
    """The `Store` port over a `Database`."""

    def __init__(self, database: Database) -> None:
        self.database = database

    @asynccontextmanager
    async def transaction(
        self, *, read_only: bool = False, autocommit: bool = False
    ) -> AsyncIterator[SqlTx]:
        if not read_only and self.database.writes_directly:
            async with self.database.writing() as writing:
                yield SqlTx(writing)
            return
        if autocommit and not self.database.is_sqlite:
            async with self.database.autocommit() as connection:
                tx = SqlTx(connection, autocommit=True)
                yield tx
                await tx.flush(commit=True)
            return
        async with self.database.transaction(read_only=read_only) as connection:
            tx = SqlTx(connection)
            yield tx
            await tx.flush(commit=True)

    @asynccontextmanager
    async def declaring(self, day: date) -> AsyncIterator[tuple[int | None, SqlTx]]:
        """A declaration's unit of work: (the day's number, its transaction).

        PostgreSQL: the day's next incident number is taken by one statement that commits
        as it runs (autocommit), just before the declaration's transaction and on the same
        connection (one checkout from the pool), so that concurrent declarations hold the
        day's row only while the server runs that statement: not for their whole
        transaction, nor until a busy process gets round to sending a COMMIT. A
        declaration that then fails leaves its number unused: ids stay unique and in
        order, and may skip a number. The number's commit does not wait for the disk: were
        it lost in a crash, the declaration that used the number was lost too
        (PostgreSQL's log is written in order), so no number is ever handed out twice.

        SQLite: None — the declaration takes its number inside its own transaction
        (`SqlTx.next_sequence`); writers take turns there anyway, and there are no gaps.
        """
        if self.database.is_sqlite:
            async with self.transaction() as tx:
                yield None, tx
            return
        first = functools.partial(_take_number, day=day)
        async with self.database.transaction_after(first) as (number, connection):
            tx = SqlTx(connection)
            yield number, tx
            await tx.flush(commit=True)

    async def ping(self) -> bool:
        return await self.database.ping()
