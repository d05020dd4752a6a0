"""PostgreSQL: a transaction's writes go to the server together, as one statement
(`bot.store.batch`), and store exactly what one statement each would have stored.

How much sooner that answers a burst is the benchmark's (`python -m bench.load`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import bindparam, event, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.clock import FakeClock
from bot.domain import clocks
from bot.domain.incident import EventKind
from bot.domain.policy import default_policy
from bot.service import deadline as deadline_module
from bot.service.deadline import TooSlow, within
from bot.service.incidents import IncidentService, Where
from bot.store import prepared as prepared_module
from bot.store import tables
from bot.store.db import Database
from bot.store.prepared import Prepared
from bot.store.repository import _TIMERS_OF, ConcurrentUpdate, SqlStore, SqlTx
from tests.conftest import _postgres_param
from tests.harness import Slack
from tests.test_direct_writes import _contents, _journey

POSTGRES = pytest.mark.parametrize("backend", [_postgres_param()])


class _NeverKept(dict[str, list[Any]]):
    def __setitem__(self, key: str, value: list[Any]) -> None:
        pass


class OneStatementEach(SqlStore):
    """The store with every write sent on its own, and an incident's timers read on their
    own before they are re-planned, as before batches."""

    @asynccontextmanager
    async def transaction(
        self, *, read_only: bool = False, autocommit: bool = False
    ) -> AsyncIterator[SqlTx]:
        async with super().transaction(read_only=read_only, autocommit=autocommit) as tx:
            tx._batch = None
            tx._timers_read = _NeverKept()
            yield tx

    @asynccontextmanager
    async def declaring(self, day: Any) -> AsyncIterator[tuple[int | None, SqlTx]]:
        async with super().declaring(day) as (number, tx):
            tx._batch = None
            tx._timers_read = _NeverKept()
            yield number, tx


@contextmanager
def round_trips(database: Database) -> Iterator[list[str]]:
    """What the process sends to the server: every statement, BEGIN and COMMIT."""
    sent: list[str] = []
    engine = database.engine.sync_engine

    def statement(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        sent.append(" ".join(sql.split()))

    def connected(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(
            lambda q: sent.append(" ".join(q.query.split()))
        )

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "connect", connected)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "connect", connected)


def _one_connection(database: Database) -> Database:
    """The same database through a pool of one connection: each test sees what that one
    connection is left like by the transaction before."""
    kwargs = dict(database._engine_kwargs, pool_size=1, max_overflow=0)
    return Database(database.url, **kwargs)


@POSTGRES
async def test_batched_writes_store_what_one_statement_each_stores(database: Database) -> None:
    await _journey(OneStatementEach(database))
    separately = await _contents(database)
    async with database.transaction() as connection:
        names = ", ".join(table.name for table in tables.metadata.sorted_tables)
        await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    await _journey(SqlStore(database))
    together = await _contents(database)
    assert together == separately
    assert len(together["incidents"]) == 2
    assert len(together["timeline"]) > 5
    assert len(together["slack_jobs"]) > 10
    assert any("cancelled" in row for row in together["timers"])  # the ack's cancellations


@POSTGRES
async def test_a_declaration_is_two_statements_and_a_change_one_write(
    database: Database,
) -> None:
    """A declaration: its number, then everything else in one statement that commits as
    it runs (no BEGIN, no COMMIT). A note, an acknowledgement: their writes in one."""
    one = _one_connection(database)
    service = IncidentService(store=SqlStore(one), policy=default_policy(), clock=FakeClock())
    try:
        with round_trips(one) as sent:
            first = await service.declare(severity="sev3", title="warm-up", by="U1")
            sent.clear()
            declared = await service.declare(severity="sev1", title="payments down", by="U1")
            declaration = list(sent)
            sent.clear()
            await service.add_note(Where(incident_id=declared.incident.id), by="U2", text="hm")
            note = list(sent)
            sent.clear()
            await service.acknowledge(Where(incident_id=declared.incident.id), by="U2")
            acknowledgement = list(sent)
        assert len(declaration) == 2, declaration
        assert declaration[0].startswith("INSERT INTO incident_days")
        assert declaration[1].startswith("WITH w0 AS (INSERT INTO incidents")
        assert not any(sql.startswith(("BEGIN", "COMMIT")) for sql in declaration)
        writes = [sql for sql in note if sql.startswith(("INSERT", "UPDATE", "WITH"))]
        assert len(writes) == 1, note
        assert [sql.split()[0] for sql in note if sql.startswith(("BEGIN", "COMMIT"))] == [
            "BEGIN",
            "COMMIT;",
        ]
        assert len(note) == 4, note  # BEGIN, the incident locked with its timers, writes, COMMIT
        # the acknowledgement cancels the escalation chain's timers, row by row
        assert len(acknowledgement) == 4, acknowledgement
        assert len([sql for sql in acknowledgement if sql.startswith("WITH")]) == 1
        timeline = await service.timeline(declared.incident.id)
        assert [entry.kind for entry in timeline][-2:] == ["note_added", "acknowledged"]
        async with one.transaction(read_only=True) as connection:
            states = await connection.execute(select(tables.timers.c.state))
            assert "cancelled" in set(states.scalars())
        assert first.incident.id != declared.incident.id
    finally:
        await one.dispose()


@POSTGRES
async def test_timers_moved_and_cancelled_go_in_one_statement(database: Database) -> None:
    """Updates of other rows of a table than the batch's join it: a re-plan that moves one
    timer and cancels others sends them together, and each row ends as planned."""
    one = _one_connection(database)
    store = SqlStore(one)
    clock = FakeClock()
    service = IncidentService(store=store, policy=default_policy(), clock=clock)
    try:
        with round_trips(one) as sent:
            declared = await service.declare(severity="sev1", title="payments down", by="U1")
            planned = clocks.plan(declared.incident, default_policy(), clock.now())
            assert len(planned) >= 3
            kept, moved = planned[0], replace(planned[1], due=planned[1].due + timedelta(hours=1))
            sent.clear()
            async with store.transaction() as tx:
                await tx.replan_timers(declared.incident.id, [kept, moved], now=clock.now())
        assert len(sent) == 4, sent  # BEGIN, the timers read, the writes, COMMIT
        assert sent[2].count("UPDATE timers") == len(planned) - 1, sent[2]
        async with one.transaction(read_only=True) as connection:
            rows = await connection.execute(select(tables.timers))
            stored = {row.key: (row.state, row.due_at) for row in rows}
        assert stored[kept.key] == ("pending", kept.due)
        assert stored[moved.key] == ("pending", moved.due)
        assert {stored[timer.key][0] for timer in planned[2:]} == {"cancelled"}
    finally:
        await one.dispose()


@POSTGRES
async def test_the_timers_read_with_the_locked_row_are_the_timers_stored(
    database: Database,
) -> None:
    """A change locks the incident's row and reads its timers in the same round trip: the
    same rows, to the microsecond, as reading the timers table on its own."""
    clock = FakeClock()
    clock.advance(timedelta(microseconds=123_457))
    store = SqlStore(database)
    service = IncidentService(store=store, policy=default_policy(), clock=clock)
    declared = await service.declare(severity="sev1", title="payments down", by="U1")
    clock.advance(timedelta(minutes=2, microseconds=5))
    await service.acknowledge(Where(incident_id=declared.incident.id), by="U2")
    async with store.transaction() as tx:
        assert await tx.get(declared.incident.id, lock=True) is not None
        with_row = tx._timers_read[declared.incident.id]
        alone = (await tx._run(_TIMERS_OF, {"b_incident": declared.incident.id})).all()
    assert [tuple(row) for row in with_row] == sorted(tuple(row) for row in alone)
    assert {row.state for row in with_row} >= {"pending", "cancelled"}
    assert any(row.due_at.microsecond for row in with_row)


@POSTGRES
async def test_a_read_sees_the_writes_held_before_it(database: Database) -> None:
    store = SqlStore(database)
    service = IncidentService(store=store, policy=default_policy(), clock=FakeClock())
    declared = await service.declare(severity="sev3", title="first", by="U1")
    record = declared.record
    record.incident.id = record.incident.id[:-3] + "999"
    async with store.transaction() as tx:
        await tx.add_incident(record)
        found = await tx.get(record.incident.id)
    assert found is not None
    assert found.incident.title == "first"


@POSTGRES
async def test_two_updates_of_one_row_in_a_transaction_both_stay(database: Database) -> None:
    """The sub-statements of one statement see the database as it was before it: two
    updates of the same row would keep only one. A second update of a table waits for
    the first to be sent."""
    store = SqlStore(database)
    service = IncidentService(store=store, policy=default_policy(), clock=FakeClock())
    declared = await service.declare(severity="sev3", title="before", by="U1")
    async with store.transaction() as tx:
        record = await tx.get(declared.incident.id, lock=True)
        assert record is not None
        record.incident.title = "after"
        await tx.save(record.incident)
        await tx.set_slack_refs(record.incident.id, channel_id="C123")
    found = await service.find(Where(incident_id=declared.incident.id))
    assert (found.incident.title, found.slack.channel_id) == ("after", "C123")


@POSTGRES
async def test_a_stale_save_is_refused_and_nothing_of_its_transaction_stays(
    database: Database,
) -> None:
    store = SqlStore(database)
    service = IncidentService(store=store, policy=default_policy(), clock=FakeClock())
    declared = await service.declare(severity="sev3", title="kept", by="U1")
    stale = declared.incident
    stale.version -= 1
    stale.title = "lost"

    async def change() -> None:
        async with store.transaction() as tx:
            await tx.add_events(stale.id, declared.events)
            await tx.save(stale)

    with pytest.raises(ConcurrentUpdate):
        await change()
    found = await service.find(Where(incident_id=stale.id))
    assert found.incident.title == "kept"
    assert len(await service.timeline(stale.id)) == len(declared.events)


@POSTGRES
async def test_a_failed_batch_leaves_nothing_and_the_connection_as_it_was(
    database: Database,
) -> None:
    """A batch that commits as it runs fails as a whole; the connection goes back to
    transactions that commit at their end, so the next one's partial work is rolled back."""
    one = _one_connection(database)
    store = SqlStore(one)
    service = IncidentService(store=store, policy=default_policy(), clock=FakeClock())
    declared = await service.declare(severity="sev3", title="first", by="U1")

    async def twice() -> None:
        async with store.transaction() as tx:
            await tx.add_events(declared.incident.id, declared.events)
            await tx.add_incident(declared.record)  # the same id again

    async def then_fails() -> None:
        async with store.transaction() as tx:
            assert await tx.remember("rolled back", now=FakeClock().now())
            raise RuntimeError("after a write")

    try:
        with pytest.raises(IntegrityError):
            await twice()
        with pytest.raises(RuntimeError, match="after a write"):
            await then_fails()
        async with one.transaction(read_only=True) as connection:
            keys = (await connection.execute(select(tables.once_keys.c.key))).scalars().all()
            events = await connection.execute(select(tables.timeline.c.id))
            assert keys == []
            assert len(events.all()) == len(declared.events)
    finally:
        await one.dispose()


def test_a_key_that_does_not_name_one_row_is_refused() -> None:
    """Updates join a batch that updated the same table only for other rows than its own:
    the parameter said to name the row must be compared with the primary key."""
    by_key = update(tables.timers).where(tables.timers.c.key == bindparam("b_id"))
    with pytest.raises(ValueError, match="primary key"):
        Prepared(by_key, batch=True, key="b_id")
    by_id = update(tables.timers).where(tables.timers.c.id == bindparam("b_id"))
    assert Prepared(by_id, batch=True, key="b_id").key == "b_id"


@POSTGRES
async def test_posting_a_note_costs_the_worker_few_round_trips(slack: Slack) -> None:
    """The worker's part of a note on PostgreSQL: the due timers and due jobs are each
    claimed by one statement that commits as it runs, and the message's `ts` is saved the
    same way; only recording the outcome (with the next claim) is a transaction."""
    channel = await slack.declare("sev2 checkout slow")
    await slack.command("note warm-up", channel=channel.id)
    database = slack.bot.database
    await database.engine.dispose()  # new connections: the round trips are all seen
    with round_trips(database) as sent:
        await slack.command("note the cache is cold", channel=channel.id, settle=False)
        sent.clear()
        await slack.settle()
    assert "the cache is cold" in channel.messages[-1].text
    assert [sql.split()[0] for sql in sent if sql.startswith(("BEGIN", "COMMIT"))] == [
        "BEGIN",
        "COMMIT;",
    ], sent
    # Two rounds: timers; jobs, each claim one statement with the look at the window and
    # the jobs' incidents; the message's ts; the outcome recorded with the next claim
    # (BEGIN, the outcome, the claim, COMMIT); then timers and jobs again.
    assert len(sent) <= 9, "\n".join(sent)


@POSTGRES
async def test_a_claim_is_one_round_trip(database: Database) -> None:
    """PostgreSQL: the worker's claim is one statement (the jobs claimed, where the window
    of jobs it looked at ends, and each job's incident), sent straight to asyncpg; the jobs
    come back with their incident as it was stored."""
    service = IncidentService(store=SqlStore(database), policy=default_policy(), clock=FakeClock())
    record = await service.declare(severity="sev3", title="claimed", by="U1")
    await database.engine.dispose()  # new connections: the round trips are all seen
    with round_trips(database) as sent:
        async with SqlStore(database).transaction(autocommit=True) as tx:
            jobs = await tx.claim_jobs(
                now=FakeClock().now() + timedelta(hours=1), worker="w", limit=5, lease_seconds=60
            )
    assert len(sent) == 1, sent
    assert jobs
    assert {job.incident_id for job in jobs} == {record.incident.id}
    for job in jobs:
        assert job.incident is not None
        assert job.incident.incident.title == "claimed"
        assert job.incident.incident.version == record.incident.version


@POSTGRES
async def test_a_transaction_asks_for_the_driver_connection_once(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: statements sent straight to asyncpg in one transaction ask SQLAlchemy for
    the asyncpg connection under its own once (each ask is a greenlet switch), and every
    statement still runs."""
    asked: list[object] = []
    original = AsyncConnection.get_raw_connection

    async def counting(connection: AsyncConnection) -> Any:
        asked.append(connection)
        return await original(connection)

    monkeypatch.setattr(AsyncConnection, "get_raw_connection", counting)
    async with SqlStore(database).transaction(autocommit=True) as tx:
        first = await tx.remember("first", now=FakeClock().now())
        again = await tx.remember("first", now=FakeClock().now())
        second = await tx.remember("second", now=FakeClock().now())
    assert (first, again, second) == (True, False, True)
    assert len(asked) == 1


@POSTGRES
async def test_a_declarations_statements_go_straight_to_the_driver(database: Database) -> None:
    """PostgreSQL: a declaration's two statements both commit as they run, so neither needs
    SQLAlchemy's execution path: the incident is stored, and nothing passed through it."""
    through_sqlalchemy: list[str] = []

    def statement(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        through_sqlalchemy.append(sql)

    service = IncidentService(store=SqlStore(database), policy=default_policy(), clock=FakeClock())
    await service.declare(severity="sev3", title="warm", by="U1")
    event.listen(database.engine.sync_engine, "before_cursor_execute", statement)
    try:
        await service.declare(severity="sev3", title="straight", by="U1")
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", statement)
    assert through_sqlalchemy == []
    async with database.transaction(read_only=True) as connection:
        titles = (await connection.execute(select(tables.incidents.c.title))).scalars().all()
    assert "straight" in titles


@POSTGRES
async def test_a_changes_statements_go_straight_to_the_driver(database: Database) -> None:
    """PostgreSQL: a change's statements (the locked read, the batch of writes) run in the
    transaction on asyncpg directly, none through SQLAlchemy's execution path; what they
    wrote is stored, as a user sees it: the note on the timeline, the incident acknowledged."""
    through_sqlalchemy: list[str] = []

    def statement(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        through_sqlalchemy.append(sql)

    service = IncidentService(store=SqlStore(database), policy=default_policy(), clock=FakeClock())
    declared = await service.declare(severity="sev2", title="payments down", by="U1")
    where = Where(incident_id=declared.incident.id)
    await service.add_note(where, by="U1", text="warm-up")
    event.listen(database.engine.sync_engine, "before_cursor_execute", statement)
    try:
        await service.add_note(where, by="U2", text="the cache is cold")
        await service.acknowledge(where, by="U2")
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", statement)
    assert through_sqlalchemy == []
    found = await service.find(where)
    assert found.incident.acknowledged_by == "U2"
    notes = [
        (entry.actor, entry.data.get("text"))
        for entry in await service.timeline(declared.incident.id)
        if entry.kind == EventKind.NOTE_ADDED
    ]
    assert ("U2", "the cache is cold") in notes, notes


@POSTGRES
async def test_statements_sent_directly_and_through_sqlalchemy_share_one_transaction(
    database: Database,
) -> None:
    """A statement sent straight to asyncpg begins the transaction as SQLAlchemy would have;
    one SQLAlchemy runs afterwards joins it (it sees the first one's write), and a failure
    rolls both back, leaving the pool's connection outside any transaction."""
    one = _one_connection(database)
    store = SqlStore(one)

    class Undo(Exception):
        pass

    seen: list[str] = []

    async def undone() -> None:
        async with store.transaction() as tx:
            assert await tx.remember("direct", now=FakeClock().now())  # straight to asyncpg
            read = await tx.c.execute(select(tables.once_keys.c.key))  # through SQLAlchemy
            seen.extend(read.scalars().all())
            raise Undo

    try:
        with pytest.raises(Undo):
            await undone()
        assert seen == ["direct"]
        async with one.transaction(read_only=True) as connection:
            keys = (await connection.execute(select(tables.once_keys.c.key))).scalars().all()
        assert keys == []
        async with one.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            assert raw.driver_connection is not None
            assert not raw.driver_connection.is_in_transaction()
    finally:
        await one.dispose()


@POSTGRES
async def test_a_change_goes_through_sqlalchemy_where_its_adapter_is_not_known(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where `prepared.begin` does not know SQLAlchemy's asyncpg adapter (another SQLAlchemy
    version: it answers None), a change's statements go through SQLAlchemy, which begins
    the transaction itself: the change is stored all the same."""
    through_sqlalchemy: list[str] = []

    def statement(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        through_sqlalchemy.append(sql)

    async def unknown(_connection: AsyncConnection) -> None:
        return None

    service = IncidentService(store=SqlStore(database), policy=default_policy(), clock=FakeClock())
    declared = await service.declare(severity="sev2", title="payments down", by="U1")
    where = Where(incident_id=declared.incident.id)
    monkeypatch.setattr(prepared_module, "begin", unknown)
    event.listen(database.engine.sync_engine, "before_cursor_execute", statement)
    try:
        await service.acknowledge(where, by="U2")
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", statement)
    assert any("FOR UPDATE" in sql for sql in through_sqlalchemy), through_sqlalchemy
    assert (await service.find(where)).incident.acknowledged_by == "U2"


@POSTGRES
async def test_a_change_cut_short_while_it_waits_for_a_lock_leaves_the_connection_clean(
    database: Database,
) -> None:
    """PostgreSQL: a note waits for its incident's row (another transaction holds it) past
    its request's deadline and is cut short, mid-statement on asyncpg. The request is
    told nothing was changed, nothing of the note is stored, and the pool's one connection
    comes back out of any transaction: the next note is stored."""
    one = _one_connection(database)
    service = IncidentService(store=SqlStore(one), policy=default_policy(), clock=FakeClock())
    declared = await service.declare(severity="sev2", title="payments down", by="U1")
    where = Where(incident_id=declared.incident.id)
    try:
        async with database.transaction() as holder:
            await holder.execute(
                select(tables.incidents.c.id)
                .where(tables.incidents.c.id == declared.incident.id)
                .with_for_update()
            )
            with pytest.raises(TooSlow) as cut:
                await within(
                    lambda: service.add_note(where, by="U2", text="cut short"), seconds=0.3
                )
            assert not cut.value.maybe_done
        for _ in range(200):  # the cut-short work rolls back, then lets the connection go
            if not deadline_module._abandoned:
                break
            await asyncio.sleep(0.01)
        await service.add_note(where, by="U2", text="after")
        timeline = await service.timeline(declared.incident.id)
        notes = [entry.data.get("text") for entry in timeline if entry.kind == EventKind.NOTE_ADDED]
        assert notes == ["after"]
    finally:
        await one.dispose()
