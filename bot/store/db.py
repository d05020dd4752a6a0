"""The database: engine set-up for SQLite and PostgreSQL, migrations, transactions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.expression import Executable

from bot.service.deadline import commit_starting, in_request, others_answering
from bot.store import inline
from bot.store.pool import FairPool

log = logging.getLogger(__name__)
T = TypeVar("T")

_MIGRATIONS = Path(__file__).parent / "migrations"
# Held while migrating so that several replicas starting at once do not race (PostgreSQL).
_MIGRATION_LOCK_KEY = 0x1C1DE7B0
# Advisory-lock class of worker liveness: each worker holds (class, hashtext(its name)).
WORKER_LOCK_CLASS = 0x1C1D
# PostgreSQL: bounds on connecting and on any one statement (client side, so they also hold
# when the server is frozen rather than down).
CONNECT_SECONDS = 5.0
STATEMENT_SECONDS = 15.0


# Execution option marking a connection whose transaction only reads.
READ_ONLY = "incident_bot_read_only"


# SQLite's readers (and in-memory writers): how long SQLite itself waits for a lock.
_BUSY_TIMEOUT_MS = 10000


def _sqlite_setup(engine: AsyncEngine) -> None:
    """WAL, a busy timeout, foreign keys, and `BEGIN IMMEDIATE` for every writing transaction.

    Taking the write lock at BEGIN means a reader never has to upgrade to a writer (which
    fails with "database is locked"). Writers of this process queue in `WriterQueue` before
    they get there, so the busy timeout only matters against another program holding the
    file. A read-only transaction begins deferred: in WAL mode it reads a snapshot while a
    writer writes.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in inline.PRAGMAS:
            cursor.execute(pragma)
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Connection) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class WriterQueue:
    """SQLite's single writer, handed out in order: a Slack request's transaction first.

    SQLite lets one transaction write at a time. Left to itself, every other writer sleeps
    in SQLite's busy handler (sleeps growing to 100 ms, no order), so under a burst some
    requests wait a second or more while the database is idle between the sleeps. Here
    the writers of the process queue instead: first come, first served, except that a
    transaction made for someone waiting on a Slack request (`deadline.in_request`) goes
    ahead of the worker's background transactions. Handing over is immediate.
    """

    def __init__(self) -> None:
        self._held = False
        self._holder: asyncio.Task[Any] | None = None
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._background: deque[asyncio.Future[None]] = deque()
        # Called when the writer is let go with nobody waiting for it (`Database.writing`).
        self.on_idle: Callable[[], None] | None = None

    async def acquire(self, *, urgent: bool) -> None:
        me = asyncio.current_task()
        if self._held and self._holder is me:
            # It would wait for itself forever: a write transaction opened inside another.
            raise RuntimeError("a write transaction was opened inside another one")
        if not self._held and not self._urgent and not self._background:
            self._held, self._holder = True, me
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._background).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            # Handed over just as the waiter was cancelled: pass it on. (A waiter cancelled
            # before its turn stays queued as a cancelled future, which `release` skips.)
            if turn.done() and not turn.cancelled():
                self.release()
            raise
        self._holder = me

    def release(self) -> None:
        self._holder = None
        for queue in (self._urgent, self._background):
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)  # still held: it passes straight to that waiter
                    return
        self._held = False
        if self.on_idle is not None:
            self.on_idle()

    @property
    def waiting(self) -> int:
        return sum(not turn.done() for turn in (*self._urgent, *self._background))

    def someone_waits(self, *, urgent: bool) -> bool:
        """Whether a writer waits for its turn (with `urgent`, one made for a request)."""
        queues = (self._urgent,) if urgent else (self._urgent, self._background)
        return any(not turn.done() for queue in queues for turn in queue)


# SQLite: the most writers whose work one commit carries (`Database.writing`).
GROUP_MOST = 50
# Commits of transactions left behind (`Database._commit_left_behind`), while they run.
_left_behind: set[asyncio.Task[None]] = set()


@asynccontextmanager
async def _autocommitting(connection: AsyncConnection) -> AsyncIterator[None]:
    """Within the block, each statement on `connection` commits as it runs; then the
    connection is as it was."""
    default = connection.default_isolation_level
    await connection.execution_options(isolation_level="AUTOCOMMIT")
    try:
        yield
        await connection.commit()  # SQLAlchemy's bookkeeping: nothing is sent
    finally:
        await connection.execution_options(isolation_level=default)


def _retrieved(outcome: asyncio.Future[None]) -> None:
    if not outcome.cancelled():
        outcome.exception()


# SQLite: how long a write waits for another program's write lock before it fails.
SQLITE_BUSY_SECONDS = 10.0


def create_writer(url: str) -> inline.Writer | None:
    """SQLite on a file: the process's one writing connection, run on the event loop's
    thread (see `inline`). None for an in-memory database, whose writes stay on the one
    engine that can see them."""
    parsed = make_url(url)
    path = parsed.database or ""
    if path in ("", ":memory:") or parsed.query.get("mode") == "memory":
        return None
    # The busy timeout stays 0 there: the wait for another program's lock is an asyncio
    # sleep in `inline`, never a sleep of the loop's thread.
    return inline.Writer(path, busy_seconds=SQLITE_BUSY_SECONDS)


def create_writer_engine(url: str, writer: inline.Writer) -> AsyncEngine:
    """SQLAlchemy's view of `writer`'s connection, for the statements of a write
    transaction that are not `prepared`: it neither begins nor ends transactions."""
    return create_async_engine(
        url, async_creator=writer.creator(), pool_size=1, max_overflow=0, pool_reset_on_return=None
    )


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(url, **kwargs)
        _sqlite_setup(engine)
        return engine
    # Twenty connections, kept: a burst's requests each hold one from their number to their
    # commit. Connections beyond the pool's size ("overflow") would be opened for a burst
    # and closed after each use, and under a burst every opening (a TCP connection, the
    # login, the connection's statements prepared again) is a wait for everyone.
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 0)
    # Handed out first come, first served (`pool`): under a burst, no request loses its
    # turn for a connection to those that asked after it.
    kwargs.setdefault("poolclass", FairPool)
    # A database that stops answering (frozen, or the network gone) must not hold a
    # request or the worker forever: connecting and each statement have a bound. A Slack
    # request has its own, shorter deadline (bot.service.deadline).
    connect_args = kwargs.setdefault("connect_args", {})
    connect_args.setdefault("timeout", CONNECT_SECONDS)
    connect_args.setdefault("command_timeout", STATEMENT_SECONDS)
    engine = create_async_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine)
    return engine


# PostgreSQL: a pooled connection unused for longer than this is checked before it is
# handed out; one in use a moment ago is not (a round trip saved on every transaction).
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Check a pooled connection before use only when it has been idle a while: one that a
    restarted database (or a network that dropped it) left behind is replaced instead of
    failing a request. A connection that fails in use anyway (the database went away in
    the last second) invalidates the pool's older connections, so the next ones are new;
    the work it was for is retried (the worker) or answered "try again" (a request)."""
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dbapi_connection.ping()
        except Exception as error:  # the pool replaces it with a new connection
            raise DisconnectionError("a pooled connection did not answer") from error


class Database:
    """One engine for the process; `transaction()` is the unit of work."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self._engine_kwargs = engine_kwargs
        self.engine = create_engine(url, **engine_kwargs)
        self._liveness: AsyncConnection | None = None
        # SQLite: the process's writers take turns here (one process per file, see single.py),
        # on a connection of their own that runs on the loop's thread.
        self._writers = WriterQueue() if self.is_sqlite else None
        self._writer = create_writer(url) if self.is_sqlite else None
        self._writer_engine = (
            create_writer_engine(url, self._writer) if self._writer is not None else None
        )
        self._checkpointer = (
            inline.Checkpointer(make_url(url).database or "") if self._writer is not None else None
        )
        # SQLite: whether a write transaction is open on the writer, and the writers whose
        # work is in it, waiting for its commit (`writing`: group commit).
        self._open = False
        self._group: list[asyncio.Future[None]] = []
        if self._writers is not None and self._writer is not None:
            self._writers.on_idle = self._commit_left_behind

    def reopen(self) -> Database:
        """A new engine on the same database (as a restarted process would have)."""
        return Database(self.url, **self._engine_kwargs)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def transaction(self, *, read_only: bool = False) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed when the block ends (rolled back if it raises).

        `read_only`: the block only reads. On SQLite it then neither takes the write lock
        nor waits for a writer; without it, it waits its turn among the process's writers.
        """
        if self._writers is None or read_only:
            async with self._transaction(read_only=read_only) as connection:
                yield connection
            return
        if self._writer is None:  # SQLite in memory: one engine, writers in turn
            await self._writers.acquire(urgent=in_request())
            try:
                async with self._transaction(read_only=False) as connection:
                    yield connection
            finally:
                self._writers.release()
            return
        async with self.writing() as writing:
            yield await writing.connection()

    @property
    def writes_directly(self) -> bool:
        """Whether `writing()` is available: SQLite on a file."""
        return self._writer is not None

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[WriteTransaction]:
        """SQLite on a file: one write transaction, begun and ended on the writer's sqlite3
        connection, in turn with the process's other writers (a Slack request's first).
        Statements run there directly (`prepared.run`) or through SQLAlchemy's view of the
        same connection, checked out only if one is needed.

        Group commit: a commit writes every page the transaction changed to the log, two
        system calls a page (some 20 pages, 0.18 ms, for a declaration: 40 % of its cost).
        While other Slack requests are being answered, a writer done with its work lets
        them run one turn of the loop first. When another writer then waits for its turn
        (a request's transaction only hands on to another request's), the transaction is
        left open for it, and its own work follows under a savepoint of its own; the last
        of the group (at most `GROUP_MOST`) commits everyone's work at once. Each writer's
        block returns only once that commit is done, so nothing is "done" before it is
        durable; a writer whose work fails is rolled back to its savepoint alone, and a
        commit that fails fails every writer of the group.
        """
        writer, engine, writers = self._writer, self._writer_engine, self._writers
        if writer is None or engine is None or writers is None:
            raise RuntimeError("only SQLite on a file writes directly")
        urgent = in_request()
        await writers.acquire(urgent=urgent)
        # Under a savepoint only when others' work is in the transaction already: alone in
        # it, a writer that fails rolls it all back (a savepoint's journal costs a little).
        shared = bool(self._group)
        try:
            if not self._open:
                await writer.begin()
                self._open = True
            raw = writer.connection
            if shared:
                raw.execute("SAVEPOINT writer")
        except BaseException:
            await self._end_turn(writer, urgent=urgent)
            raise
        writing = WriteTransaction(raw, engine)
        try:
            try:
                yield writing
            finally:
                await writing.release()
            if shared:
                raw.execute("RELEASE writer")
        except BaseException:
            self._undo_own_work(writer, shared=shared)
            await self._end_turn(writer, urgent=urgent)
            raise
        committed = asyncio.get_running_loop().create_future()
        committed.add_done_callback(_retrieved)  # a writer cancelled meanwhile never reads it
        self._group.append(committed)
        commit_starting()
        try:
            if others_answering():
                # Let the requests under way that are ready to write queue for the writer
                # first: they then go on in this transaction, and one commit serves all.
                await asyncio.sleep(0)
        finally:
            await self._end_turn(writer, urgent=urgent)
        await committed

    def _undo_own_work(self, writer: inline.Writer, *, shared: bool) -> None:
        """Roll back one writer's failed or interrupted work, and only its own."""
        connection = writer.connection
        if not shared or not connection.in_transaction:
            writer.rollback()
            self._open = False
            return
        try:
            connection.execute("ROLLBACK TO writer")
            connection.execute("RELEASE writer")
        except sqlite3.Error as error:  # its savepoint is gone: the whole group fails
            writer.rollback()
            self._open = False
            self._tell_group(error)

    async def _end_turn(self, writer: inline.Writer, *, urgent: bool) -> None:
        """Hand the open transaction to the next writer waiting (a request's only to another
        request's), or commit it for the whole group; either way the writer is let go."""
        writers = self._writers
        assert writers is not None
        if self._open and len(self._group) < GROUP_MOST and writers.someone_waits(urgent=urgent):
            writers.release()  # the next writer goes on in the same transaction
            return
        if self._open:
            try:
                committed = writer.commit_at_once()
            except Exception as error:
                self._group_over(writer, error)
                return
            if not committed:  # another program holds a lock: wait for it
                # Shielded: a writer cancelled meanwhile leaves the commit to end, and the
                # writer to be let go, for the others.
                await asyncio.shield(self._commit_group(writer))
                return
        self._group_over(writer, None)

    async def _commit_group(self, writer: inline.Writer) -> None:
        try:
            await writer.commit()
        except Exception as error:
            self._group_over(writer, error)
        else:
            self._group_over(writer, None)

    def _group_over(self, writer: inline.Writer, error: Exception | None) -> None:
        """The open transaction is committed (or, with `error`, failed and rolled back): its
        writers are told, and the writer is let go."""
        if error is not None:
            writer.rollback()
        elif self._open and self._checkpointer is not None:
            self._checkpointer.committed()
        self._open = False
        self._tell_group(error)
        assert self._writers is not None
        self._writers.release()

    def _tell_group(self, error: Exception | None) -> None:
        """The writers waiting on the open transaction learn its outcome (`error`: it was
        rolled back)."""
        group, self._group = self._group, []
        for waiting in group:
            if waiting.done():
                continue
            if error is None:
                waiting.set_result(None)
            else:
                waiting.set_exception(error)

    def _commit_left_behind(self) -> None:
        """The writer was let go with a transaction open and nobody to carry it on (the
        writer it was handed to was cancelled first): commit it in a turn of its own."""
        if not self._open or self._writer is None or self._writers is None:
            return
        writer, writers = self._writer, self._writers

        async def commit() -> None:
            await writers.acquire(urgent=True)
            if self._open:
                await self._commit_group(writer)
            else:
                writers.release()

        task = asyncio.get_running_loop().create_task(commit())
        _left_behind.add(task)
        task.add_done_callback(_left_behind.discard)

    @asynccontextmanager
    async def _transaction(
        self, *, read_only: bool, engine: AsyncEngine | None = None
    ) -> AsyncIterator[AsyncConnection]:
        async with (engine or self.engine).connect() as connection:
            if read_only:
                await connection.execution_options(**{READ_ONLY: True})
            transaction = await connection.begin()
            try:
                yield connection
            except BaseException:
                await transaction.rollback()
                raise
            commit_starting()
            await transaction.commit()

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection whose statements each commit as they run (PostgreSQL): no BEGIN, no
        COMMIT. For work whose statements need not be atomic together."""
        if self._writers is not None:
            raise RuntimeError("SQLite writes in transactions of the writer")
        async with self.engine.connect() as connection, _autocommitting(connection):
            yield connection

    @asynccontextmanager
    async def transaction_after(
        self, first: Callable[[AsyncConnection], Awaitable[T]]
    ) -> AsyncIterator[tuple[T, AsyncConnection]]:
        """`first(connection)` outside any transaction, each of its statements committed
        by the server as it runs (autocommit); then a write transaction on the same
        connection, as `transaction()` gives (PostgreSQL: one checkout from the pool for
        both). Yields `first`'s result and the connection.

        Autocommit, not a short transaction: a transaction's locks last until its COMMIT
        arrives, and under a burst the process takes a while to send it (its one event
        loop is answering other requests), so everyone needing the same row would queue
        for that long. Until the second commit starts, a request's deadline still says
        nothing was done: what `first` committed is not the change the request asked for."""
        if self._writers is not None:
            raise RuntimeError("SQLite takes the day's number inside the declaration")
        async with self.engine.connect() as connection:
            async with _autocommitting(connection):
                value = await first(connection)
            transaction = await connection.begin()
            try:
                yield value, connection
            except BaseException:
                await transaction.rollback()
                raise
            commit_starting()
            await transaction.commit()

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (Alembic); safe with several replicas."""
        async with self.engine.connect() as connection:
            if self.dialect == "postgresql":
                # Polled rather than waited for, so the statement bound above never cuts
                # short the wait for another replica's long migration.
                while not (
                    await connection.execute(
                        text("SELECT pg_try_advisory_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                    )
                ).scalar_one():
                    await connection.commit()
                    await asyncio.sleep(0.5)
                await connection.commit()
            try:
                await connection.run_sync(_upgrade)
                await connection.commit()
            finally:
                if self.dialect == "postgresql":
                    await connection.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                    )
                    await connection.commit()

    async def open_pool(self) -> int:
        """PostgreSQL: open the pool's connections now, at start-up, rather than during
        the first burst, whose requests would each wait for a connection to be opened
        (a TCP connection, the login, its statements prepared again) on the busy event
        loop. Returns how many were opened; one that fails to open is left to be opened
        when needed."""
        if self.dialect != "postgresql":
            return 0
        size = getattr(self.engine.sync_engine.pool, "size", lambda: 0)()
        opened = await asyncio.gather(
            *(self.engine.connect() for _ in range(size)), return_exceptions=True
        )
        connections = [c for c in opened if isinstance(c, AsyncConnection)]
        for connection in connections:
            await connection.close()  # back to the pool, open
        return len(connections)

    async def hold_liveness(self, worker: str) -> None:
        """PostgreSQL: hold a session lock named after the worker for as long as it lives.

        When the process dies its connection closes and the lock is free: the rows it had
        claimed can be taken over at once instead of after their lease (see repository).
        """
        if self.dialect != "postgresql" or self._liveness is not None:
            return
        connection = await self.engine.connect()
        await connection.execute(
            text("SELECT pg_advisory_lock(:cls, hashtext(:name))"),
            {"cls": WORKER_LOCK_CLASS, "name": worker},
        )
        await connection.commit()
        self._liveness = connection

    async def ensure_liveness(self, worker: str) -> None:
        """After an outage: if the liveness connection died with the database, take the
        lock again on a new one (otherwise other replicas would think this worker dead)."""
        if self.dialect != "postgresql":
            return
        if self._liveness is not None:
            try:
                await self._liveness.execute(text("SELECT 1"))
                return
            except Exception:  # the old connection is gone; a new one takes the lock
                log.warning("worker liveness connection lost; taking the lock again")
                with contextlib.suppress(Exception):
                    await self._liveness.close()
                self._liveness = None
        await self.hold_liveness(worker)

    async def release_liveness(self) -> None:
        if self._liveness is not None:
            await self._liveness.close()
            self._liveness = None

    async def ping(self) -> bool:
        try:
            async with self.transaction(read_only=True) as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:  # the health check reports any failure as "unreachable"
            log.warning("database ping failed", exc_info=True)
            return False
        return True

    async def dispose(self) -> None:
        await self.release_liveness()
        if self._checkpointer is not None:
            await self._checkpointer.close()
        if self._writer_engine is not None:
            await self._writer_engine.dispose()
        if self._writer is not None:
            self._writer.close()
        await self.engine.dispose()


class WriteTransaction:
    """SQLite's write transaction in progress (`Database.writing`): the sqlite3 connection
    it runs on, and SQLAlchemy's view of it for statements that are not `prepared`."""

    def __init__(self, raw: sqlite3.Connection, engine: AsyncEngine) -> None:
        self.raw = raw
        self.dialect = engine.dialect
        self._engine = engine
        self._connection: AsyncConnection | None = None

    async def connection(self) -> AsyncConnection:
        if self._connection is None:
            self._connection = await self._engine.connect()
        return self._connection

    async def execute(self, statement: Executable, parameters: Any = None) -> Any:
        return await (await self.connection()).execute(statement, parameters)

    async def release(self) -> None:
        """Give SQLAlchemy's view back (its rollback does nothing: `inline`)."""
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.close()


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
