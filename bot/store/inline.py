"""SQLite's writer connection, run on the event loop's own thread.

aiosqlite runs every statement on a thread of its own and hands the result back through
the event loop: two thread switches and a loop wake-up per statement, several times what
SQLite itself spends on a small indexed write. A declaration is about a dozen statements,
so most of the time a Slack request waited for its answer went to those hand-overs.

The process's write transactions already take turns (`db.WriterQueue`), so they need one
connection, and each of their statements is short: here they run directly, in the
calling task, without leaving the thread. This module gives SQLAlchemy's aiosqlite
dialect that connection through `async_creator`, in the shape it expects of aiosqlite's.

The one wait SQLite itself would block on is another program's write lock (the busy
handler sleeps inside the call). Here the busy timeout is zero, and a statement that
finds the database locked is tried again after an asyncio sleep, up to `busy_seconds`:
the loop keeps serving meanwhile, and a request's deadline can cancel the wait. A
statement refused as busy did nothing, so trying it again is safe.

Reads stay on aiosqlite's threads (`Database` uses this connection for writing
transactions only): a read of ten thousand open incidents must not hold the loop.

The writer's transactions are begun and ended on the sqlite3 connection itself
(`Writer`), not through SQLAlchemy: a declaration's statements run there directly
(`prepared`), and only other statements check out SQLAlchemy's view of the same
connection, on which SQLAlchemy's own commit and rollback do nothing (`Writer.commit`
and `Writer.rollback` decide).

SQLite copies the write-ahead log back into the database file (a checkpoint) inside the
commit that makes the log reach 1,000 pages: a few milliseconds of writing and syncing,
about once in thirty declarations, that would stop the loop. Here `Checkpointer` does it
on a thread of its own after every `CHECKPOINT_EVERY` commits; the writer checkpoints
itself only past `WRITER_CHECKPOINT_PAGES`, which happens when writes never pause long
enough for the thread to catch up (the log cannot start over while it is being written).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

log = logging.getLogger(__name__)

# Commits between two of `Checkpointer`'s checkpoints (a declaration adds about 30 pages).
CHECKPOINT_EVERY = 100
# The log's size at which the writer checkpoints in its commit after all (SQLite: 1,000).
WRITER_CHECKPOINT_PAGES = 4000

# What every connection to the file sets, the writer's and the readers': the write-ahead
# log, foreign keys enforced, a commit that waits for the disk only at checkpoints, and
# temporary data (a savepoint's journal of the pages it changed: group commit) in memory,
# not in a file written at every savepoint.
PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA temp_store=MEMORY",
)

# First waits when the database is locked by another program, then the longest one.
_BACKOFF = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
_LONGEST = 0.1


def _busy(error: sqlite3.OperationalError) -> bool:
    message = str(error).lower()
    return "database is locked" in message or "database is busy" in message


async def _patiently(call: Callable[[], Any], busy_seconds: float) -> Any:
    """`call()`, tried again after a sleep while another program holds the lock."""
    give_up = time.monotonic() + busy_seconds
    attempt = 0
    while True:
        try:
            return call()
        except sqlite3.OperationalError as error:
            if not _busy(error) or time.monotonic() >= give_up:
                raise
        pause = _BACKOFF[attempt] if attempt < len(_BACKOFF) else _LONGEST
        attempt += 1
        await asyncio.sleep(min(pause, max(0.0, give_up - time.monotonic())))


class InlineCursor:
    """A cursor with aiosqlite's awaitable methods, executed in place."""

    def __init__(self, cursor: sqlite3.Cursor, busy_seconds: float) -> None:
        self._cursor = cursor
        self._busy_seconds = busy_seconds

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        if parameters is None:
            await _patiently(lambda: self._cursor.execute(sql), self._busy_seconds)
        else:
            await _patiently(lambda: self._cursor.execute(sql, parameters), self._busy_seconds)
        return self

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> InlineCursor:
        listed = list(rows)  # an iterator could not be read twice if the first try was busy
        await _patiently(lambda: self._cursor.executemany(sql, listed), self._busy_seconds)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class _RunAtOnce:
    """What SQLAlchemy's aiosqlite adapter puts on aiosqlite's queue (to set the isolation
    level) is run at once."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except Exception as error:  # handed to the awaiting adapter, as aiosqlite would
            if future is not None:
                future.set_exception(error)
            return
        if future is not None:
            future.set_result(result)


class InlineConnection:
    """The writer's sqlite3 connection with the part of aiosqlite's `Connection` SQLAlchemy
    uses. Its transaction is `Writer`'s: SQLAlchemy's commit, rollback and close do
    nothing (SQLAlchemy rolls back whatever it returns to its pool)."""

    def __init__(self, connection: sqlite3.Connection, busy_seconds: float) -> None:
        self._conn = connection
        self._busy_seconds = busy_seconds
        self._tx = _RunAtOnce()

    @property
    def _connection(self) -> sqlite3.Connection | None:
        # SQLAlchemy's adapter commits and rolls back only while this is set.
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: Any) -> None:
        self._conn.isolation_level = value

    def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor(), self._busy_seconds)

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        return await self.cursor().execute(sql, parameters)

    async def commit(self) -> None:
        """`Writer.commit` commits."""

    async def rollback(self) -> None:
        """`Writer.rollback` rolls back."""

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def close(self) -> None:
        """`Writer.close` closes."""

    def stop(self) -> None:
        """`Writer.close` closes."""


class Writer:
    """The process's one writing connection to the file at `path`, opened on first use.

    Used on the loop's thread only, one transaction at a time (`db.WriterQueue`):
    `begin` takes SQLite's write lock (`BEGIN IMMEDIATE`, waiting out another program's
    lock with asyncio sleeps), `commit` or `rollback` ends it. SQLAlchemy reaches the same
    connection through `creator`.
    """

    def __init__(self, path: str, *, busy_seconds: float) -> None:
        self._path = path
        self.busy_seconds = busy_seconds
        self._connection: sqlite3.Connection | None = None

    @property
    def connection(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            for pragma in PRAGMAS:
                connection.execute(pragma)
            connection.execute("PRAGMA busy_timeout=0")
            connection.execute(f"PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES}")
            self._connection = connection
        return self._connection

    async def begin(self) -> sqlite3.Connection:
        connection = self.connection
        await _patiently(lambda: connection.execute("BEGIN IMMEDIATE"), self.busy_seconds)
        return connection

    async def commit(self) -> None:
        connection = self.connection
        await _patiently(lambda: connection.execute("COMMIT"), self.busy_seconds)

    def commit_at_once(self) -> bool:
        """Commit now if nothing is in the way (True); False if another program's lock is,
        and `commit` must wait for it."""
        try:
            self.connection.execute("COMMIT")
        except sqlite3.OperationalError as error:
            if _busy(error):
                return False
            raise
        return True

    def rollback(self) -> None:
        """Ends whatever transaction is open (none after a commit): never leaves one for
        the next writer, whatever interrupted this one."""
        if self._connection is not None and self._connection.in_transaction:
            self._connection.rollback()

    def creator(self) -> Callable[[], Any]:
        """SQLAlchemy's `async_creator`: its view of this connection."""

        async def connect() -> InlineConnection:
            return InlineConnection(self.connection, self.busy_seconds)

        return connect

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class Checkpointer:
    """Copies the write-ahead log back into the database file on a thread, never on the
    event loop: after every `CHECKPOINT_EVERY` commits, one at a time. PASSIVE: it takes
    what no reader still needs and waits for nobody (the writer goes on meanwhile)."""

    def __init__(self, path: str, every: int = CHECKPOINT_EVERY) -> None:
        self._path = path
        self._every = every
        self._commits = 0
        self._running: asyncio.Future[None] | None = None
        self._connection: sqlite3.Connection | None = None
        self.done = 0  # checkpoints made

    def committed(self) -> None:
        self._commits += 1
        if self._commits < self._every:
            return
        if self._running is not None and not self._running.done():
            return
        self._commits = 0
        self._running = asyncio.ensure_future(asyncio.to_thread(self._checkpoint))
        self._running.add_done_callback(_logged)

    def _checkpoint(self) -> None:
        if self._connection is None:
            self._connection = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False
            )
            self._connection.execute("PRAGMA busy_timeout=1000")
        self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        self.done += 1

    async def close(self) -> None:
        if self._running is not None:
            await asyncio.gather(self._running, return_exceptions=True)
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _logged(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("a checkpoint failed (the next one takes it on): %s", future.exception())
