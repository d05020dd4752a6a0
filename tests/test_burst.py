"""A burst of requests: SQLite's writers take turns in the process, requests first.

The figures (how long a burst waits) are the benchmark's (`python -m bench.load`); these
tests pin down the behaviour behind them: nobody waits in SQLite's busy handler, and a
request is never queued behind the worker's background transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import re
import sqlite3
import statistics
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from slack_bolt.kwargs_injection import async_utils
from sqlalchemy import event, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util.queue import Empty

from bot import worker as worker_module
from bot.service import deadline
from bot.service.deadline import answering, give_way, within
from bot.service.ports import Job
from bot.slack.app import Background
from bot.slack.directory import SlackDirectory, Standing
from bot.store import db as db_module
from bot.store import repository as repository_module
from bot.store import tables
from bot.store.db import Database, WriterQueue
from bot.store.inline import CHECKPOINT_EVERY, WRITER_CHECKPOINT_PAGES
from bot.store.pool import FairPool, FairQueue
from bot.store.repository import _TAKE_NUMBER, SqlStore, SqlTx, _take_number
from tests.conftest import _postgres_param
from tests.harness import Slack, ThroughSQLAlchemy


async def test_writers_take_turns_in_order_requests_first() -> None:
    queue = WriterQueue()
    order: list[str] = []
    await queue.acquire(urgent=False)  # held by someone already

    async def take(name: str, *, urgent: bool) -> None:
        await queue.acquire(urgent=urgent)
        order.append(name)
        await asyncio.sleep(0)
        queue.release()

    tasks = [
        asyncio.create_task(take("worker 1", urgent=False)),
        asyncio.create_task(take("worker 2", urgent=False)),
        asyncio.create_task(take("request 1", urgent=True)),
        asyncio.create_task(take("request 2", urgent=True)),
    ]
    await asyncio.sleep(0)
    assert queue.waiting == 4
    queue.release()
    await asyncio.gather(*tasks)
    assert order == ["request 1", "request 2", "worker 1", "worker 2"]
    assert queue.waiting == 0
    await asyncio.wait_for(queue.acquire(urgent=False), 1)  # free again


async def test_a_waiter_that_gives_up_never_holds_the_queue() -> None:
    queue = WriterQueue()
    await queue.acquire(urgent=True)
    gave_up = asyncio.create_task(queue.acquire(urgent=True))
    waits = asyncio.create_task(queue.acquire(urgent=False))
    await asyncio.sleep(0)
    gave_up.cancel()  # a request past its deadline, before its turn
    queue.release()
    await asyncio.wait_for(waits, 1)
    # Handed the turn in the very moment it is cancelled: the turn passes on.
    handed = asyncio.create_task(queue.acquire(urgent=True))
    after = asyncio.create_task(queue.acquire(urgent=False))
    await asyncio.sleep(0)
    queue.release()  # `handed` now holds it …
    handed.cancel()  # … and is cancelled before it ran
    with pytest.raises(asyncio.CancelledError):
        await handed
    await asyncio.wait_for(after, 1)


def _no_busy_wait(database: Database) -> None:
    """Make every new connection fail at once ("database is locked") instead of sleeping in
    SQLite's busy handler when another connection holds the write lock."""

    @event.listens_for(database.engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.close()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_burst_of_declarations_never_waits_on_sqlites_lock(slack: Slack) -> None:
    """Twenty people declaring in the same moment: all twenty are declared, with twenty
    different ids, and none of them met SQLite's write lock held by another (each waited
    its turn in the process instead, so the busy handler never had to sleep; the writer's
    own connection has no busy handler at all)."""
    database = slack.bot.database
    _no_busy_wait(database)
    await database.engine.dispose()  # new connections, without the busy handler
    replies = await asyncio.gather(
        *(slack.command(f"sev3 burst {n}", settle=False) for n in range(20))
    )
    texts = [reply.text or "" for reply in replies]
    assert all("declared" in text for text in texts), texts
    ids = {match.group(0) for text in texts if (match := re.search(r"INC-\d{8}-\d{3}", text))}
    assert len(ids) == 20
    await slack.settle()
    assert len([c for c in slack.fake.channels.values() if c.name.startswith("inc-")]) == 20


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_worker_waits_behind_a_request_not_the_other_way_round(slack: Slack) -> None:
    """While a transaction holds SQLite's writer, a request's transaction queued after three
    of the worker's still goes first; the worker's then go in the order they came."""
    database = slack.bot.database
    order: list[str] = []
    holding = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with database.transaction():
            holding.set()
            await release.wait()

    async def background(n: int) -> None:
        async with database.transaction():
            order.append(f"worker {n}")

    async def request() -> None:
        async with database.transaction():
            order.append("request")

    held = asyncio.create_task(holder())
    await holding.wait()
    workers = []
    for n in range(3):
        workers.append(asyncio.create_task(background(n)))
        await asyncio.sleep(0.01)
    answered = asyncio.create_task(within(request))
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(held, *workers, answered)
    assert order == ["request", "worker 0", "worker 1", "worker 2"]


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_reading_does_not_wait_for_the_writer(slack: Slack) -> None:
    """A read-only transaction (the worker looking for due work, /healthz) reads beside a
    writer instead of queueing behind it."""
    database = slack.bot.database
    release = asyncio.Event()
    holding = asyncio.Event()

    async def holder() -> None:
        async with database.transaction():
            holding.set()
            await release.wait()

    held = asyncio.create_task(holder())
    await holding.wait()
    try:
        assert await asyncio.wait_for(database.ping(), 2)
        due = await asyncio.wait_for(slack.bot.service.next_timer_due(), 2)
        assert due is None
        page = await asyncio.wait_for(slack.bot.service.status_view(), 2)  # the public page
        assert page is not None
    finally:
        release.set()
        await held


class SlowFirstDeclaration:
    """The store, but the first declaration stops inside its transaction, after it has its
    number, until told to go on (a declaration whose transaction takes long)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.inside = asyncio.Event()
        self.go_on = asyncio.Event()

    @contextlib.asynccontextmanager
    async def declaring(self, day: date) -> AsyncIterator[Any]:
        async with self.store.declaring(day) as (number, tx):
            if not self.inside.is_set():
                real = tx.add_incident

                async def add_incident(record: Any) -> None:
                    self.inside.set()
                    await self.go_on.wait()
                    await real(record)

                tx.add_incident = add_incident
            yield number, tx

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.mark.parametrize("backend", [_postgres_param()])
async def test_a_slow_declaration_does_not_hold_up_the_next(slack: Slack) -> None:
    """PostgreSQL: while one declaration's transaction is still open, the next declaration
    gets its number and is committed; the ids differ. (Taking the number inside the
    transaction would make the second wait on the day's row until the first ends.)"""
    service = slack.bot.service
    slow = SlowFirstDeclaration(service.store)
    service.store = slow
    first = asyncio.create_task(service.declare(severity="sev3", title="first", by="U0ALICE"))
    await slow.inside.wait()
    try:
        async with asyncio.timeout(3):
            second = await service.declare(severity="sev3", title="second", by="U0BOB")
    finally:
        slow.go_on.set()
    done = await first
    assert (done.record.incident.id, second.record.incident.id) == (
        "INC-20261122-001",
        "INC-20261122-002",
    )


@pytest.mark.parametrize("backend", [_postgres_param()])
async def test_a_failed_declaration_leaves_a_gap_never_a_repeat(database: Database) -> None:
    """PostgreSQL: a number is taken in a transaction of its own; a declaration that fails
    after taking it leaves it unused, and the next one gets the next number."""
    store = SqlStore(database)

    class Failed(Exception):
        pass

    async def take_number(day: date) -> int | None:
        """The number a declaration takes, the declaration then failing."""
        taken = None
        with contextlib.suppress(Failed):
            async with store.declaring(day) as (number, _):
                taken = number
                raise Failed
        return taken

    day = date(2026, 11, 23)
    assert await take_number(day) == 1
    assert await take_number(day) == 2  # 1's declaration failed: 1 stays unused
    assert await take_number(date(2026, 11, 24)) == 1  # each day starts again


async def test_the_worker_gives_way_to_requests_waiting_on_their_work(slack: Slack) -> None:
    """Before it starts more jobs the worker lets a Slack request under way be answered
    (the process has one event loop), and when none is under way it does not wait."""
    order: list[str] = []

    async def request() -> None:
        with answering():
            await asyncio.sleep(0.01)
            order.append("request answered")

    under_way = asyncio.create_task(request())
    await asyncio.sleep(0)
    await slack.bot.worker.give_way()
    order.append("worker goes on")
    await under_way
    assert order == ["request answered", "worker goes on"]
    async with asyncio.timeout(0.5):
        await slack.bot.worker.give_way()  # nobody waiting: at once


async def test_background_work_waits_out_a_stream_of_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Requests that follow each other closely (at 1 in flight the next arrives a fraction
    of a millisecond after an answer) are one stream: background work is not let through
    in the instant between an answer and the next request, which would then wait behind
    it, but once no answer has come for `QUIET_SECONDS`."""
    monkeypatch.setattr(deadline, "QUIET_SECONDS", 0.3)  # no machine is that slow

    async def answer() -> None:
        with answering():
            await asyncio.sleep(0)

    await answer()
    waiting = asyncio.create_task(give_way(seconds=5))
    for _ in range(5):
        await asyncio.sleep(0)
        assert not waiting.done()
        await answer()  # the next request, right after the answer before
    await asyncio.wait_for(waiting, 2)  # then quiet: it goes on, well before its 5 s


async def test_a_write_transaction_inside_another_is_refused_not_a_hang() -> None:
    """One task opening a second write transaction while it holds the writer would wait for
    itself forever; it is refused at once instead."""
    queue = WriterQueue()
    await queue.acquire(urgent=False)
    with pytest.raises(RuntimeError, match="inside another"):
        async with asyncio.timeout(1):  # the same task, as a nested `async with` would be
            await queue.acquire(urgent=False)
    queue.release()
    await asyncio.wait_for(queue.acquire(urgent=True), 1)  # free for the next one


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_another_programs_write_lock_never_stops_the_event_loop(slack: Slack) -> None:
    """SQLite's writes run on the event loop's thread. While another program holds the
    write lock, a declaration waits for it with asyncio sleeps, not inside SQLite's busy
    handler: the loop keeps running meanwhile (here, a ticker every 5 ms), and the
    declaration is made once the lock is let go."""
    path = make_url(slack.bot.database.url).database
    assert path
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another program's write lock
    try:
        declaring = asyncio.create_task(slack.command("sev3 locked out", settle=False))
        gaps: list[float] = []
        last = time.monotonic()
        for _ in range(40):
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
        assert not declaring.done()
    finally:
        other.execute("COMMIT")
        other.close()
    reply = await asyncio.wait_for(declaring, 5)
    assert "declared" in (reply.text or ""), reply.text
    # A loop stuck in the busy handler would show one gap as long as the whole wait.
    assert max(gaps) < 0.15, max(gaps)


async def test_the_workers_slack_calls_wait_while_a_request_is_answered(slack: Slack) -> None:
    """The worker's Web API client lets a Slack request being answered go first: a call it
    makes meanwhile leaves once the answer is made (or after `GIVE_WAY_SECONDS`)."""
    client = slack.bot.executor.client
    await slack.settle()
    await asyncio.sleep(0.05)  # the bot's own start-up calls are done
    before = len(slack.fake.calls_to("auth.test"))
    with answering():
        call = asyncio.create_task(client.auth_test())
        await asyncio.sleep(0.02)
        assert len(slack.fake.calls_to("auth.test")) == before  # still waiting
    await asyncio.wait_for(call, 2)
    assert len(slack.fake.calls_to("auth.test")) == before + 1
    # With no request under way it does not wait at all.
    async with asyncio.timeout(0.5):
        await client.auth_test()
    started = time.monotonic()
    with answering():  # an answer that takes long: the worker waits no longer than its bound
        await asyncio.wait_for(client.auth_test(), 2)
    assert time.monotonic() - started < 1.0


async def test_follow_ups_wait_while_a_request_is_answered() -> None:
    """A follow-up message (a button's confirmation) is background work: spawned while a
    Slack request is being answered, it starts once the answer is made."""
    background = Background()
    sent: list[str] = []

    async def follow_up() -> None:
        sent.append("follow-up")

    with answering():
        background.spawn(follow_up(), what="test")
        await asyncio.sleep(0.02)
        assert sent == []  # still waiting for the answer
    await asyncio.wait_for(background.wait(), 1)
    assert sent == ["follow-up"]


@pytest.mark.parametrize("backend", [_postgres_param()])
async def test_a_declaration_takes_one_connection_from_the_pool(slack: Slack) -> None:
    """PostgreSQL: the day's number and the declaration are two transactions on one
    connection: one checkout (and one liveness ping) per declaration, not two."""
    database = slack.bot.database
    checkouts: list[int] = []

    @event.listens_for(database.engine.sync_engine, "checkout")
    def _checkout(*_: Any) -> None:
        checkouts.append(1)

    try:
        outcome = await slack.bot.service.declare(severity="sev3", title="one", by="U0ALICE")
    finally:
        event.remove(database.engine.sync_engine, "checkout", _checkout)
    assert outcome.record.incident.id.endswith("-001")
    assert len(checkouts) == 1


@pytest.mark.parametrize("backend", [_postgres_param()])
async def test_the_numbers_commit_alone_does_not_wait_for_the_disk(database: Database) -> None:
    """PostgreSQL: the transaction that takes the day's number commits without waiting for
    the disk (safe: see `SqlStore.declaring`); the declaration's own, on the same
    connection right after, waits for it as every other commit does."""
    store = SqlStore(database)
    seen: list[str] = []
    async with store.declaring(date(2026, 11, 23)) as (number, tx):
        seen.append((await tx.c.execute(text("SHOW synchronous_commit"))).scalar_one())
    assert number == 1
    async with database.transaction() as connection:  # the same statement, then a look
        statement = _TAKE_NUMBER.statement
        taken = (await connection.execute(statement, {"b_day": "20261123"})).scalar_one()
        seen.append((await connection.execute(text("SHOW synchronous_commit"))).scalar_one())
    assert taken == 2
    assert seen == ["on", "off"]


@pytest.mark.parametrize("backend", [_postgres_param()])
async def test_the_days_row_is_free_as_soon_as_the_number_is_taken(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: the day's number is taken by one statement that commits as it runs.
    Under a burst the process takes a while to get back to a connection (its one event
    loop has other requests to answer); had the number's own transaction waited for the
    process to send its COMMIT, every other declaration would queue on the day's row for
    that long. Here a second declaration takes its number while the first one's process
    is still busy."""
    store = SqlStore(database)
    day = date(2026, 11, 23)
    taken = asyncio.Event()

    async def take_then_stay_busy(connection: Any, day: date) -> int:
        number = await _take_number(connection, day)
        taken.set()
        await asyncio.sleep(1.0)  # the process busy before it goes on with this one
        return number

    async def first_declaration() -> int | None:
        async with store.declaring(day) as (number, _):
            return number

    monkeypatch.setattr(repository_module, "_take_number", take_then_stay_busy)
    first = asyncio.create_task(first_declaration())
    await taken.wait()
    other = database.reopen()  # another process, on the same schema
    try:
        started = time.monotonic()
        async with other.transaction() as connection:
            await connection.execute(text("SET LOCAL lock_timeout = '500ms'"))
            second = await _take_number(connection, day)
        waited = time.monotonic() - started
    finally:
        await other.dispose()
    assert (await first, second) == (1, 2)
    assert waited < 0.5


@pytest.mark.parametrize("backend", [_postgres_param()])
async def test_a_pooled_connection_the_database_dropped_is_replaced_not_failed(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: a connection in use a moment ago is handed out without a check (a round
    trip saved on every transaction); one idle for a while is checked first, so a
    connection the server dropped meanwhile (a restart, a failover) is replaced and the
    transaction works."""
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 0.05)
    async with database.transaction() as connection:
        pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    admin = Database(database.url)
    try:
        async with admin.transaction() as connection:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await admin.dispose()
    await asyncio.sleep(0.1)
    async with database.transaction() as connection:
        again = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    assert again != pid  # a new connection, and no error


async def test_while_requests_keep_coming_the_worker_runs_fewer_jobs_at_once(
    slack: Slack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each running job takes its next step between a request's steps: while requests keep
    coming the worker runs a quarter of its jobs at once, and all of them once they stop."""
    monkeypatch.setattr(worker_module, "BUSY_SECONDS", 0.05)
    worker = slack.bot.worker
    await asyncio.sleep(0.06)
    assert worker._slots() == worker.concurrency == 16
    with answering():
        assert worker._slots() == 4
    assert worker._slots() == 4  # answered a moment ago: more may follow
    await asyncio.sleep(0.06)
    assert worker._slots() == 16


def _size(path: str) -> int:
    return os.path.getsize(path)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_log_is_copied_back_on_a_thread_not_in_a_commit(database: Database) -> None:
    """SQLite's writer leaves copying the write-ahead log back into the database file to a
    thread (in a commit it would stop the event loop for milliseconds), and does it itself
    only past `WRITER_CHECKPOINT_PAGES`, so the log stays bounded even when writes never
    pause; the database file receives what was written."""
    path = make_url(database.url).database or ""
    store = SqlStore(database)
    now = datetime(2026, 11, 23, tzinfo=UTC)
    async with database.transaction() as connection:
        pages = await connection.exec_driver_sql("PRAGMA wal_autocheckpoint")
        assert pages.scalar_one() == WRITER_CHECKPOINT_PAGES
    size_before = _size(path)
    checkpointer = database._checkpointer
    assert checkpointer is not None
    for round_ in range(3):
        for n in range(CHECKPOINT_EVERY):
            async with store.transaction() as tx:
                await tx.remember(f"key {round_} {n} " + "x" * 150, now=now)
        running = checkpointer._running  # the round's checkpoint, on its thread
        assert running is not None
        await asyncio.wait_for(running, 5)
        assert checkpointer.done == round_ + 1
    assert _size(path) > size_before + 3 * CHECKPOINT_EVERY * 150
    wal = f"{path}-wal"
    assert _size(wal) < (WRITER_CHECKPOINT_PAGES + CHECKPOINT_EVERY * 4) * 4096


_NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


async def _declared(database: Database, numbers: range, *, done_below: int) -> None:
    """Incidents `numbers` with their Slack work recorded: six jobs each, all due, each
    behind the one before. Below `done_below` it is all done; the four incidents from
    `done_below` on have their first job running (another worker's)."""
    kinds = ("create_channel", "invite", "post_alert", "post_playbook", "announce", "post")
    incident = {
        "day": "20261123", "title": "t", "severity": "sev3", "status": "open",
        "declared_at": _NOW, "declared_by": "U1", "services": [], "impact": "",
        "drill": False, "tags": [], "roles": {}, "escalation_level": 0,
        "resolution_summary": "", "root_cause": "", "version": 1,
    }  # fmt: skip
    job = {
        "payload": {}, "attempts": 1, "run_after": _NOW, "created_at": _NOW,
        "locked_by": "other", "locked_until": _NOW + timedelta(minutes=5),
    }  # fmt: skip
    incident_rows, job_rows = [], []
    for n in numbers:
        incident_id = f"INC-20261123-{n:04d}"
        incident_rows.append({**incident, "id": incident_id, "seq": n})
        for k, kind in enumerate(kinds):
            if n < done_below:
                state = "done"
            else:
                state = "running" if n < done_below + 4 and k == 0 else "pending"
            job_rows.append({**job, "incident_id": incident_id, "kind": kind, "state": state})
    async with database.transaction() as connection:
        await connection.execute(insert(tables.incidents), incident_rows)
        await connection.execute(insert(tables.slack_jobs), job_rows)
    if not database.is_sqlite:
        async with database.engine.connect() as connection:  # as autovacuum does in time
            await connection.execute(text("ANALYZE slack_jobs"))
            await connection.commit()


async def _claim(database: Database) -> list[str]:
    async with SqlStore(database).transaction() as tx:
        jobs = await tx.claim_jobs(
            now=_NOW + timedelta(seconds=1), worker="worker", limit=4, lease_seconds=60
        )
    return [f"{job.incident_id} {job.kind}" for job in jobs]


async def _work_of_a_claim(database: Database) -> int:
    """How much a claim of 4 jobs reads: SQLite's virtual machine steps, or the rows
    PostgreSQL reads from slack_jobs. The claim is captured, then run again (rolled back)
    to be measured."""
    claims: list[tuple[str, Any]] = []
    engine = (database._writer_engine or database.engine).sync_engine

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        # SQLite's claim; PostgreSQL's, with the look at the window and the incidents
        if statement.startswith(("UPDATE slack_jobs SET state", "WITH claimed AS")):
            claims.append((statement, parameters))

    class Undo(Exception):
        pass

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with contextlib.suppress(Undo):  # SQLAlchemy runs it here, to be captured
            async with ThroughSQLAlchemy(database).transaction() as tx:
                await tx.claim_jobs(
                    now=_NOW + timedelta(seconds=1), worker="worker", limit=4, lease_seconds=60
                )
                raise Undo
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    statement, parameters = claims[0]
    if database.is_sqlite:
        raw = sqlite3.connect(make_url(database.url).database or "", isolation_level=None)
        steps = [0]

        def step() -> int:
            steps[0] += 1
            return 0

        raw.set_progress_handler(step, 1)
        raw.execute("BEGIN")
        raw.execute(statement, parameters).fetchall()
        raw.execute("ROLLBACK")
        raw.close()
        return steps[0]
    async with database.engine.connect() as connection:
        await connection.begin()
        plan = (
            await connection.exec_driver_sql(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters
            )
        ).scalar_one()
        await connection.rollback()
    rows = 0
    nodes = [(json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]]
    while nodes:
        node = nodes.pop()
        nodes.extend(node.get("Plans", []))
        if "Scan" in node["Node Type"] and node.get("Relation Name") == "slack_jobs":
            read = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
            rows += int(read) * int(node["Actual Loops"])
    return rows


async def test_a_claim_reads_the_front_of_the_backlog_not_all_of_it(database: Database) -> None:
    """The worker claims its next jobs many times a second (on SQLite, on the event loop's
    thread): a claim reads the oldest unfinished jobs until it has enough, so its cost does
    not grow with the work waiting behind them (a burst of declarations, or Slack back
    after an outage). It takes the first job of each waiting incident in the order they
    were declared, never one behind another of its incident, nor another worker's."""
    await database.hold_liveness("other")  # PostgreSQL: the other worker is alive
    await _declared(database, range(0, 300), done_below=200)
    behind_100 = await _work_of_a_claim(database)
    await _declared(database, range(300, 1200), done_below=200)
    behind_1000 = await _work_of_a_claim(database)
    assert behind_1000 < 2 * behind_100, (behind_100, behind_1000)
    assert await _claim(database) == [
        f"INC-20261123-{n:04d} create_channel" for n in (204, 205, 206, 207)
    ]


async def _queued_behind_one_job(database: Database, depth: int) -> None:
    """Incident 0001: its first job under way (another worker's, alive), then `depth`
    messages and a page waiting behind it. Incident 0002, declared after: one job, due."""
    await _declared(database, range(1, 3), done_below=1)  # 0001 done, 0002 all waiting
    job = {
        "incident_id": "INC-20261123-0001", "kind": "post", "payload": {}, "attempts": 0,
        "run_after": _NOW, "created_at": _NOW, "state": "pending",
        "locked_by": None, "locked_until": None,
    }  # fmt: skip
    rows = [{**job, "state": "running", "locked_by": "other",
             "locked_until": _NOW + timedelta(minutes=5)}]  # fmt: skip
    rows += [job] * depth + [{**job, "kind": "pagerduty"}]
    async with database.transaction() as connection:
        # 0002's jobs go after 0001's: ids in the order of this list
        await connection.execute(
            tables.slack_jobs.update()
            .where(tables.slack_jobs.c.incident_id == "INC-20261123-0002")
            .values(state="done")
        )
        await connection.execute(insert(tables.slack_jobs), rows)
        await connection.execute(
            insert(tables.slack_jobs),
            [{**job, "incident_id": "INC-20261123-0002", "kind": "create_channel"}],
        )
    if not database.is_sqlite:
        async with database.engine.connect() as connection:
            await connection.execute(text("ANALYZE slack_jobs"))
            await connection.commit()


async def _claim_and_count(database: Database, running: list[int]) -> tuple[list[Job], int]:
    """One claim of up to 4 jobs (never one of `running`), committed: what it took, and how
    much it read (SQLite's virtual machine steps, or the rows PostgreSQL read from
    slack_jobs)."""
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    async def rows_read(tx: SqlTx) -> int:  # PostgreSQL: by this connection, not yet reported
        read = await tx.c.execute(
            text(
                "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
                "FROM pg_stat_xact_user_tables "
                "WHERE relname = 'slack_jobs' AND schemaname = current_schema()"
            )
        )
        return int(read.scalar_one())

    writer = database._writer
    if writer is not None:
        writer.connection.set_progress_handler(step, 1)
    try:
        async with SqlStore(database).transaction() as tx:
            before = 0 if writer is not None else await rows_read(tx)
            jobs = await tx.claim_jobs(
                now=_NOW + timedelta(seconds=1),
                worker="worker",
                limit=4,
                lease_seconds=60,
                running=running,
            )
            if writer is None:
                steps[0] = await rows_read(tx) - before
    finally:
        if writer is not None:
            writer.connection.set_progress_handler(None, 1)
    return jobs, steps[0]


@pytest.mark.parametrize("depth", [300, 3000])
async def test_a_long_queue_behind_one_job_neither_slows_claims_nor_holds_up_others(
    database: Database, depth: int
) -> None:
    """One incident's messages can pile up behind its job under way (a chatty incident,
    Slack slow for its channel). A claim reads a bounded window of the waiting jobs, so
    its cost does not grow with that queue; it looks one window further at each claim,
    so another incident's work, and the same incident's page (a lane of its own), are
    still taken within a few claims."""
    await database.hold_liveness("other")  # PostgreSQL: the other worker is alive
    await _queued_behind_one_job(database, depth)
    taken: list[Job] = []
    works: list[int] = []
    for _ in range(depth // repository_module.CLAIM_WINDOW + 3):
        jobs, work = await _claim_and_count(database, [job.id for job in taken])
        taken += jobs
        works.append(work)
    assert sorted(f"{job.incident_id} {job.kind}" for job in taken) == [
        "INC-20261123-0001 pagerduty",
        "INC-20261123-0002 create_channel",
    ]
    # Two windows' worth, however deep the queue (reading all 3,000 would be some 100 VM
    # steps or 2 rows read for each).
    per_job = {"sqlite": 150, "postgresql": 5}[database.dialect]
    assert statistics.median(works) < 2 * repository_module.CLAIM_WINDOW * per_job, works


async def test_a_batch_of_outcomes_is_recorded_in_one_statement(database: Database) -> None:
    """The worker records the jobs that ended together in one transaction; on PostgreSQL
    the finished ones in one statement (one round trip, not one each). Only the jobs whose
    claim it still holds are recorded: one taken over by another worker is left to it."""
    await _declared(database, range(0, 1), done_below=0)
    async with database.transaction() as connection:
        await connection.execute(
            tables.slack_jobs.update()
            .where(tables.slack_jobs.c.id.in_([2, 3, 4]))
            .values(state="running", locked_by="worker")
        )
        await connection.execute(
            tables.slack_jobs.update().where(tables.slack_jobs.c.id == 1).values(state="done")
        )
    statements: list[str] = []
    engine = (database._writer_engine or database.engine).sync_engine

    def capture(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().startswith("UPDATE slack_jobs"):
            statements.append(statement)

    def logger_on(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(
            lambda query: capture(None, None, query.query)
        )

    through_sqlalchemy: list[str] = []

    def cursor(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().startswith("UPDATE slack_jobs"):
            through_sqlalchemy.append(statement)
        if database.is_sqlite:
            capture(None, None, statement)

    event.listen(engine, "before_cursor_execute", cursor)
    if database._writer is not None:  # SQLite: these statements go to sqlite3 directly
        database._writer.connection.set_trace_callback(lambda sql: capture(None, None, sql))
    elif not database.is_sqlite:  # PostgreSQL: straight to asyncpg, on new connections
        await database.engine.dispose()  # that log what they send
        event.listen(engine, "connect", logger_on)
    try:
        async with SqlStore(database).transaction() as tx:
            held = await tx.finish_jobs(
                [(2, {"ts": "2"}), (3, {"ts": "3"}), (5, {"ts": "5"})],
                worker="worker",
                now=_NOW + timedelta(seconds=1),
            )
    finally:
        event.remove(engine, "before_cursor_execute", cursor)
        if database._writer is not None:
            database._writer.connection.set_trace_callback(None)
        elif not database.is_sqlite:
            event.remove(engine, "connect", logger_on)
    assert held == {2, 3}  # 5 is not a claim of this worker
    async with database.transaction(read_only=True) as connection:
        rows = (
            await connection.execute(
                select(
                    tables.slack_jobs.c.id,
                    tables.slack_jobs.c.state,
                    tables.slack_jobs.c.locked_by,
                    tables.slack_jobs.c.result,
                ).order_by(tables.slack_jobs.c.id)
            )
        ).all()
    assert [tuple(row) for row in rows[1:5]] == [
        (2, "done", "worker", {"ts": "2"}),
        (3, "done", "worker", {"ts": "3"}),
        (4, "running", "worker", None),
        (5, "pending", "other", None),
    ]
    if not database.is_sqlite:  # sent straight to asyncpg (a statement of a fixed shape)
        assert through_sqlalchemy == []
    assert len(statements) == (3 if database.is_sqlite else 1)


@pytest.mark.parametrize("backend", [_postgres_param()])
async def test_a_burst_opens_its_connections_once(database: Database) -> None:
    """Twenty transactions at once, twice: the second burst opens no new connection (the
    pool keeps what the first opened, instead of closing those beyond its size)."""
    kept = Database(database.url, **database._engine_kwargs)
    opened: list[int] = []
    event.listen(kept.engine.sync_engine, "connect", lambda *_: opened.append(1))

    async def hold() -> None:
        async with kept.transaction() as connection:
            await connection.execute(text("SELECT pg_sleep(0.05)"))

    try:
        await asyncio.gather(*(hold() for _ in range(20)))
        assert len(opened) == 20
        await asyncio.gather(*(hold() for _ in range(20)))
        assert len(opened) == 20
    finally:
        await kept.dispose()


def _pool_of_one_in_use() -> tuple[
    FairQueue, str, list[str], Callable[[], Coroutine[Any, Any, None]]
]:
    """A pool's queue of one connection, taken; what waiters got; a waiter, to start."""
    queue = FairQueue(maxsize=1)
    queue.put_nowait("the connection")
    got: list[str] = []

    async def waiter() -> None:
        got.append(await greenlet_spawn(queue.get, True, 5.0))

    return queue, queue.get_nowait(), got, waiter


async def test_a_connection_given_back_goes_to_whoever_waited_longest() -> None:
    """PostgreSQL's pool (`bot.store.pool`), every connection in use: one given back goes
    to the task that has waited longest, not to one that asks just after (a request that
    has just arrived, the worker between two steps), which would send the waiter to the
    back of the line; and while anyone waits, whoever asks waits behind them."""
    queue, held, got, waiter = _pool_of_one_in_use()
    waiting = asyncio.create_task(waiter())
    for _ in range(5):
        await asyncio.sleep(0)  # it asks, and waits
    queue.put_nowait(held)  # given back: the waiter's turn, though it has not run yet
    with pytest.raises(Empty):
        await greenlet_spawn(queue.get, False)  # one asking meanwhile does not take it
    await waiting
    assert got == ["the connection"]
    queue.put_nowait(got.pop())  # nobody waits: it is there for the next to ask
    assert await greenlet_spawn(queue.get, False) == "the connection"


async def test_a_connection_handed_over_as_its_waiter_gives_up_goes_to_the_next() -> None:
    """A waiter cancelled (its request ran out of time) just as a connection was handed to
    it passes the connection on: none is lost to the pool."""
    queue, held, got, waiter = _pool_of_one_in_use()
    first, second = asyncio.create_task(waiter()), asyncio.create_task(waiter())
    for _ in range(5):
        await asyncio.sleep(0)  # both wait, the first in front
    queue.put_nowait(held)  # handed to the first...
    first.cancel()  # ...which gives up before it runs
    await asyncio.gather(first, second, return_exceptions=True)
    assert first.cancelled()
    assert got == ["the connection"]  # the second has it


@pytest.mark.parametrize("backend", [_postgres_param()])
async def test_the_pool_hands_connections_out_in_turn(database: Database) -> None:
    assert isinstance(database.engine.sync_engine.pool, FairPool)


@pytest.mark.parametrize("backend", [_postgres_param()])
async def test_the_pool_is_opened_at_start_up(slack: Slack) -> None:
    """The first burst after start-up finds the pool's connections open: none of its
    requests waits for a connection to be opened."""
    database = slack.bot.database
    pool = database.engine.sync_engine.pool
    assert isinstance(pool, QueuePool)
    opened: list[int] = []
    event.listen(database.engine.sync_engine, "connect", lambda *_: opened.append(1))

    async def hold() -> None:
        async with database.transaction() as connection:
            await connection.execute(text("SELECT pg_sleep(0.05)"))

    await asyncio.gather(*(hold() for _ in range(pool.size() - 1)))  # one keeps a lock
    assert opened == []


@pytest.mark.parametrize("backend", ["sqlite"])  # the worker's logic; SQLite counts exactly
async def test_working_through_one_incidents_queue_costs_the_same_per_message(
    slack: Slack,
) -> None:
    """A hundred notes made while the worker was busy elsewhere wait behind each other in
    their incident's queue. Once a claim has taken all there was, the worker claims only
    the next message behind each one it finished (until something new is recorded), so
    each message's turn costs a few statements, not a walk of the queue behind it."""
    channel = await slack.declare("sev2 checkout slow")
    for n in range(100):
        await slack.command(f"note step {n}", channel=channel.id, settle=False)
    writer = slack.bot.database._writer
    assert writer is not None
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    writer.connection.set_progress_handler(step, 1)
    try:
        await slack.settle()
    finally:
        writer.connection.set_progress_handler(None, 1)
    posted = [m.text for m in channel.messages if "step" in m.text]
    assert len(posted) == 100
    assert "step 0" in posted[0]
    assert "step 99" in posted[-1]
    # Each turn's statements take some 800 VM steps; walking the rest of the queue at each
    # turn took some 3,500.
    assert steps[0] / 100 < 1_500, steps[0] / 100


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_bolt_builds_a_requests_arguments_once(
    slack: Slack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command is answered with the arguments of its listener built once. The check that
    only full members act is a middleware class, so Bolt does not build every argument a
    listener could ask for (a say, a respond, a dozen more) a second time for it."""
    built: list[list[str]] = []
    original = async_utils.build_async_required_kwargs

    def counting(**kwargs: Any) -> dict[str, Any]:
        built.append(list(kwargs["required_arg_names"]))
        return original(**kwargs)

    for name in (
        "slack_bolt.middleware.async_custom_middleware",
        "slack_bolt.listener.async_listener",
        "slack_bolt.listener_matcher.async_builtins",
        "slack_bolt.listener_matcher.async_listener_matcher",
    ):
        module = importlib.import_module(name)
        if hasattr(module, "build_async_required_kwargs"):
            monkeypatch.setattr(module, "build_async_required_kwargs", counting)
    channel = await slack.declare("sev3 cost of a note")
    built.clear()
    reply = await slack.command("note the cache is cold", channel=channel.id, settle=False)
    assert "Note added" in (reply.text or "")
    # the listener's arguments, once; none for a middleware (Bolt's matchers ask for the body)
    assert built.count(["ack", "body", "respond", "client"]) == 1, built
    assert not [names for names in built if "next_" in names or "next" in names], built


async def test_a_known_member_is_let_through_without_waiting() -> None:
    """Whether someone may act is answered from the cache without a task, a timer or a turn
    of the event loop; only a look-up Slack must answer waits (bounded)."""

    class Users:
        calls = 0

        async def users_info(self, *, user: str) -> dict[str, Any]:
            self.calls += 1
            return {"user": {"id": user, "team_id": "T1"}}

    users = Users()
    directory = SlackDirectory(users, team_id=lambda: "T1")  # type: ignore[arg-type]
    assert await directory.standing("U1") == Standing.MEMBER  # asks Slack, then caches
    looking = directory.standing("U1")
    with pytest.raises(StopIteration) as answered:
        looking.send(None)  # done on its first step: it never waited
    assert answered.value.value == Standing.MEMBER
    assert users.calls == 1
