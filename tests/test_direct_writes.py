"""SQLite: a declaration's and a change's statements run on the writer's sqlite3 connection
directly (`bot.store.prepared`), and store exactly what SQLAlchemy would have stored.

How much faster that answers a burst is the benchmark's (`python -m bench.load`)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import IntegrityError

from bot.clock import FakeClock
from bot.domain.policy import default_policy
from bot.service.deadline import answering, within
from bot.service.incidents import IncidentService, Where
from bot.store import prepared, tables
from bot.store.db import Database
from bot.store.repository import SqlStore, SqlTx
from tests.harness import ThroughSQLAlchemy


async def _migrated(path: Path) -> Database:
    database = Database(f"sqlite+aiosqlite:///{path}")
    await database.migrate()
    return database


async def _journey(store: SqlStore) -> None:
    """A declaration from the form (services, tags, its once-key), then what people do."""
    clock = FakeClock()
    service = IncidentService(store=store, policy=default_policy(), clock=clock)
    declared = await service.declare(
        severity="sev2",
        title="checkout <errors> & timeouts",
        by="U1",
        origin_channel_id="C1",
        response_url="https://hooks.slack.com/commands/1",
        services=["payments", "api"],
        impact="EU customers cannot pay",
        tags=["eu"],
        once="V1",
    )
    where = Where(incident_id=declared.incident.id)
    clock.advance(timedelta(minutes=3))
    await service.add_note(where, by="U2", text="retries are piling up")
    await service.acknowledge(where, by="U2")
    clock.advance(timedelta(minutes=10))
    await service.post_update(where, by="U2", text="rolled back", status="monitoring")
    await service.declare(severity="sev4", title="second", by="U3")
    clock.advance(timedelta(minutes=20))
    await service.resolve(where, by="U2", summary="fixed by the rollback")


async def _contents(database: Database) -> dict[str, list[tuple[Any, ...]]]:
    found = {}
    async with database.transaction(read_only=True) as connection:
        for table in tables.metadata.sorted_tables:
            rows = await connection.execute(select(table).order_by(*table.primary_key.columns))
            found[table.name] = [tuple(row) for row in rows]
    return found


async def test_direct_writes_store_what_sqlalchemy_stores(tmp_path: Path) -> None:
    direct = await _migrated(tmp_path / "direct.db")
    through = await _migrated(tmp_path / "through.db")
    try:
        await _journey(SqlStore(direct))
        await _journey(ThroughSQLAlchemy(through))
        stored = await _contents(direct)
        assert stored == await _contents(through)
        assert len(stored["incidents"]) == 2
        assert len(stored["timeline"]) > 5
        assert len(stored["slack_jobs"]) > 10
        assert stored["timers"]
        assert stored["once_keys"]
    finally:
        await direct.dispose()
        await through.dispose()


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated SQLite file: its writes go straight to sqlite3."""
    database = await _migrated(tmp_path / "incidents.db")
    assert database.writes_directly
    yield database
    await database.dispose()


async def test_a_declaration_and_a_note_run_no_statement_through_sqlalchemy(
    database: Database,
) -> None:
    """Every statement of a declaration and of a note goes straight to sqlite3: SQLAlchemy's
    execution path, which cost more than SQLite itself, runs none of them."""
    through_sqlalchemy: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        through_sqlalchemy.append(statement)

    engines = [database.engine.sync_engine]
    if database._writer_engine is not None:
        engines.append(database._writer_engine.sync_engine)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", seen)
    service = IncidentService(store=SqlStore(database), policy=default_policy(), clock=FakeClock())
    try:
        declared = await service.declare(severity="sev1", title="payments down", by="U1")
        await service.add_note(Where(incident_id=declared.incident.id), by="U1", text="a note")
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", seen)
    assert through_sqlalchemy == []
    record = await service.find(Where(incident_id=declared.incident.id))
    assert record.incident.title == "payments down"
    timeline = await service.timeline(record.incident.id)
    assert [entry.kind for entry in timeline][-1] == "note_added"


async def test_a_failed_direct_write_leaves_nothing_and_the_writer_free(
    database: Database,
) -> None:
    """An error raised by sqlite3 reaches the caller as SQLAlchemy's (callers catch those),
    the whole transaction is rolled back, and the next writer writes."""
    store = SqlStore(database)
    service = IncidentService(store=store, policy=default_policy(), clock=FakeClock())
    declared = await service.declare(severity="sev3", title="first", by="U1")

    async def twice() -> None:
        async with store.transaction() as tx:
            await tx.remember("a key", now=FakeClock().now())
            await tx.add_incident(declared.record)  # the same id again

    with pytest.raises(IntegrityError):
        await twice()
    async with store.transaction() as tx:
        assert await tx.remember("a key", now=FakeClock().now())  # rolled back above
    await service.declare(severity="sev3", title="second", by="U1")
    assert len((await _contents(database))["incidents"]) == 2


async def test_a_write_cancelled_midway_leaves_no_transaction_open(database: Database) -> None:
    """A request past its deadline is cancelled wherever it is: what it wrote is rolled
    back, and the writer's connection is handed on with no transaction open."""
    store = SqlStore(database)
    started = asyncio.Event()

    async def stuck() -> None:
        async with store.transaction() as tx:
            await tx.remember("cancelled", now=FakeClock().now())
            await tx.c.execute(text("SELECT 1"))  # SQLAlchemy's view checked out too
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(stuck())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5), store.transaction() as tx:
        assert await tx.remember("cancelled", now=FakeClock().now())
    assert [row[0] for row in (await _contents(database))["once_keys"]] == ["cancelled"]


def test_what_a_plan_cannot_do_faithfully_is_refused_when_prepared() -> None:
    """A column default computed at execution time would be silently left out."""
    statement = prepared.Prepared(tables.incidents.insert())
    database = Database("sqlite+aiosqlite:///:memory:")
    with pytest.raises(ValueError, match="defaults"):
        statement.plan(database.engine.dialect, {"id": "INC-1", "title": "t"})


# ---- group commit ------------------------------------------------------------------------
_AT = FakeClock().now()


async def _writers_queued_behind_one(
    database: Database, writes: list[Callable[[SqlTx], Awaitable[None]]]
) -> tuple[list[asyncio.Task[None]], asyncio.Event]:
    """The first of `writes` holds the writer (until the event is set) while the others
    queue for it, as a burst's transactions do."""
    store = SqlStore(database)
    go = asyncio.Event()

    async def run(write: Callable[[SqlTx], Awaitable[None]], hold: bool) -> None:
        async with store.transaction() as tx:
            await write(tx)
            if hold:
                await go.wait()

    tasks = [asyncio.create_task(run(writes[0], True))]
    await asyncio.sleep(0.01)
    tasks += [asyncio.create_task(run(write, False)) for write in writes[1:]]
    await asyncio.sleep(0.01)
    assert database._writers is not None
    assert database._writers.waiting == len(writes) - 1
    return tasks, go


def _remember(key: str) -> Callable[[SqlTx], Awaitable[None]]:
    async def write(tx: SqlTx) -> None:
        assert await tx.remember(key, now=_AT)

    return write


def _stored_keys(path: Path) -> list[str]:
    """What a connection of its own reads: only what was committed."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return sorted(row[0] for row in connection.execute("SELECT key FROM once_keys"))


def _commits(database: Database) -> list[str]:
    commits: list[str] = []
    assert database._writer is not None
    database._writer.connection.set_trace_callback(
        lambda sql: commits.append(sql) if sql == "COMMIT" else None
    )
    return commits


async def test_writers_waiting_together_share_one_commit(tmp_path: Path) -> None:
    """Twenty transactions queued behind one are committed together, and each returns only
    once its work is committed (a connection of its own reads it right then)."""
    database = await _migrated(tmp_path / "incidents.db")
    commits = _commits(database)
    seen: dict[int, bool] = {}
    tasks, go = await _writers_queued_behind_one(
        database, [_remember(f"key {n:02d}") for n in range(20)]
    )

    async def check(n: int, task: asyncio.Task[None]) -> None:
        await task
        seen[n] = f"key {n:02d}" in _stored_keys(tmp_path / "incidents.db")

    go.set()
    await asyncio.gather(*(check(n, task) for n, task in enumerate(tasks)))
    assert seen == dict.fromkeys(range(20), True)
    assert len(commits) == 1
    await database.dispose()


async def test_a_failing_writer_leaves_its_group_untouched(tmp_path: Path) -> None:
    """A transaction of the group that fails is rolled back alone: its error reaches it,
    and the others' work is committed."""
    database = await _migrated(tmp_path / "incidents.db")

    async def fails(tx: SqlTx) -> None:
        await tx.remember("failed", now=_AT)
        raise ValueError("the work failed")

    writes = [_remember("a"), _remember("b"), fails, _remember("c")]
    tasks, go = await _writers_queued_behind_one(database, writes)
    go.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert [type(outcome).__name__ for outcome in outcomes] == [
        "NoneType",
        "NoneType",
        "ValueError",
        "NoneType",
    ]
    assert _stored_keys(tmp_path / "incidents.db") == ["a", "b", "c"]
    await database.dispose()


async def test_the_same_form_twice_in_one_group_acts_once(tmp_path: Path) -> None:
    """A repeated submission whose transaction lands in the same group as the first sees
    the first's once-key (uncommitted, in the same transaction), so it changes nothing."""
    database = await _migrated(tmp_path / "incidents.db")
    repeated: list[bool] = []

    async def again(tx: SqlTx) -> None:
        repeated.append(await tx.remember("view V1", now=_AT))

    tasks, go = await _writers_queued_behind_one(database, [_remember("view V1"), again])
    go.set()
    await asyncio.gather(*tasks)
    assert repeated == [False]
    assert _stored_keys(tmp_path / "incidents.db") == ["view V1"]
    await database.dispose()


async def test_a_writer_cancelled_while_its_group_commits_leaves_it_to_commit(
    tmp_path: Path,
) -> None:
    """A request past its deadline while its group is still at work: its work stays in the
    group (it is told it may have been done), the group commits, and the writer is free."""
    database = await _migrated(tmp_path / "incidents.db")
    store = SqlStore(database)
    second_in = asyncio.Event()
    second_go = asyncio.Event()

    async def second(tx: SqlTx) -> None:
        await tx.remember("second", now=_AT)
        second_in.set()
        await second_go.wait()

    tasks, go = await _writers_queued_behind_one(database, [_remember("first"), second])
    go.set()
    await asyncio.wait_for(second_in.wait(), 5)  # the first handed on, waits for the commit
    tasks[0].cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await tasks[0]
    second_go.set()
    await asyncio.wait_for(tasks[1], 5)
    assert _stored_keys(tmp_path / "incidents.db") == ["first", "second"]
    async with asyncio.timeout(5), store.transaction() as tx:
        assert await tx.remember("after", now=_AT)
    await database.dispose()


async def test_a_commit_that_fails_fails_every_writer_of_its_group(tmp_path: Path) -> None:
    """A commit refused (here a foreign key checked only at the commit) leaves nothing of
    any of the group's writers, each of which is told."""
    database = await _migrated(tmp_path / "incidents.db")

    async def orphan(tx: SqlTx) -> None:
        await tx.remember("orphan", now=_AT)
        assert database._writer is not None
        database._writer.connection.execute("PRAGMA defer_foreign_keys=ON")
        await tx.c.execute(
            tables.slack_jobs.insert().values(
                incident_id="INC-20261123-9999",
                kind="post",
                payload={},
                state="pending",
                attempts=0,
                run_after=_AT,
                created_at=_AT,
            )
        )

    tasks, go = await _writers_queued_behind_one(database, [orphan, _remember("innocent")])
    go.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(outcome, sqlite3.IntegrityError) for outcome in outcomes), outcomes
    assert _stored_keys(tmp_path / "incidents.db") == []
    async with asyncio.timeout(5), SqlStore(database).transaction() as tx:
        assert await tx.remember("after", now=_AT)
    await database.dispose()


async def test_a_burst_of_requests_is_committed_in_groups(tmp_path: Path) -> None:
    """Declarations answered at the same time (as Bolt runs twenty requests at once) wait
    for each other's transactions at the commit: far fewer commits than declarations, and
    every declaration stored."""
    database = await _migrated(tmp_path / "incidents.db")
    commits = _commits(database)
    service = IncidentService(store=SqlStore(database), policy=default_policy(), clock=FakeClock())

    async def request(n: int) -> None:
        with answering():
            await within(lambda: service.declare(severity="sev3", title=f"burst {n}", by="U1"))

    await asyncio.gather(*(request(n) for n in range(20)))
    assert len((await _contents(database))["incidents"]) == 20
    assert len(commits) <= 5, len(commits)
    await database.dispose()
