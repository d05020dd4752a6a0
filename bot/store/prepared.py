"""The statements of every declaration and every change, run on SQLite's writer directly.

A declaration is five statements. Through SQLAlchemy's execution path each of them costs
more than SQLite spends running it: an execution context, the bound values processed one
by one through generic machinery, a result object, and two greenlet switches to reach the
connection, which here is a plain sqlite3 connection on the loop's own thread (`inline`).
Under a burst every request waits for the event loop, so that cost is what each waiting
request pays, times the number of requests ahead of it.

A `Prepared` statement is a fixed SQLAlchemy Core statement, still written as one and
still run by SQLAlchemy wherever there is no direct connection (PostgreSQL, an in-memory
SQLite database). On SQLite's writer it is compiled by SQLAlchemy once per set of columns
given (`Plan`): the SQL text, the order of its parameters with their types' conversions
to the database, and its result columns with their conversions back. Running it is then
one call to sqlite3, and its rows come back as named tuples: what SQLAlchemy's compiler
and type system would do, without its per-call bookkeeping.

Only what a plan can do faithfully is accepted, and is refused when it is prepared: no
column defaults computed in Python at execution time (every insert here names every such
column), no RETURNING from a batch. An expanding `IN` list is written out by SQLAlchemy,
once for each length it comes with.

On PostgreSQL the same plans are sent straight to asyncpg (`send`): a statement that
commits as it runs (autocommit), or one inside a transaction that `begin` began the way
SQLAlchemy's first statement would have (its asyncpg adapter holds the transaction, so
SQLAlchemy still commits it or rolls it back, and statements it runs itself join it).
Through SQLAlchemy's execution path a statement costs the loop about twice the CPU asyncpg
spends sending it and reading its answer (an execution context, a cursor, a greenlet
switch each way, the adapter's own statement cache); `python -m bench.declare` shows what
that is per declaration.
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import (
    DatabaseError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import operators, visitors
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList
from sqlalchemy.sql.expression import ClauseElement, Executable

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None


class Prepared:
    """A Core statement run by SQLAlchemy, or directly on a sqlite3 connection (`run`).

    `batch`: on PostgreSQL the statement may wait with the transaction's other writes and
    go to the server with them (`bot.store.batch`); only a plain insert, or an update that
    returns nothing and has no expanding list. `key`: the parameter that names the one row
    such an update changes by its primary key (`WHERE id = :key`). `tables` are the tables
    it reads or writes, `target` the one it writes.
    """

    __slots__ = (
        "_compiled",
        "_plans",
        "batchable",
        "key",
        "plain_insert",
        "reads",
        "statement",
        "tables",
        "target",
    )

    def __init__(
        self, statement: Executable, *, batch: bool = False, key: str | None = None
    ) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, tuple[str, ...]], tuple[SQLCompiler, list[str]]] = {}
        self._plans: dict[tuple[str, tuple[str, ...], tuple[int, ...]], Plan] = {}
        elements = list(visitors.iterate(cast(ClauseElement, statement)))
        self.tables = frozenset(e.name for e in elements if isinstance(e, Table))
        written = (
            getattr(statement, "table", None) if isinstance(statement, Insert | Update) else None
        )
        self.target: str | None = written.name if isinstance(written, Table) else None
        self.plain_insert = isinstance(statement, Insert) and self.tables == {self.target}
        if batch:
            # a batch writes the rows with insert(table).values(rows): nothing else may differ
            plain = type(statement) is Insert and str(statement) == str(
                insert(cast(Table, written))
            )
            if not (plain or type(statement) is Update):
                raise ValueError(f"only a plain insert or an update waits in a batch: {statement}")
            if getattr(statement, "exported_columns", None):
                raise ValueError(f"a statement returning rows is run at once: {statement}")
            if any(isinstance(e, BindParameter) and e.expanding for e in elements):
                raise ValueError(f"an expanding list is not batched: {statement}")
        if key is not None and not (batch and _pins_by_primary_key(statement, key)):
            raise ValueError(f"{key!r} does not name the row by its primary key: {statement}")
        self.batchable = batch
        self.key = key
        # What it reads of what other writes in its statement may have written: a plain
        # insert nothing; an update by key its own table only at the row it names.
        self.reads: frozenset[str] = (
            frozenset()
            if self.plain_insert
            else self.tables - {self.target}
            if key is not None
            else self.tables
        )

    def plan(self, dialect: Dialect, values: Mapping[str, Any]) -> Plan:
        """The statement compiled for `dialect` with the parameters `values` name (and as
        many elements in each expanding `IN` list as they give)."""
        keys = tuple(values)
        found = self._compiled.get((dialect.name, keys))
        if found is None:
            found = self._compiled[dialect.name, keys] = _compile(self.statement, dialect, keys)
        compiled, expanding = found
        lengths = tuple(
            len(values[name] if name in values else compiled.binds[name].effective_value or ())
            for name in expanding
        )
        plan = self._plans.get((dialect.name, keys, lengths))
        if plan is None:
            plan = Plan(self.statement, compiled, dialect, expanding, values)
            self._plans[dialect.name, keys, lengths] = plan
        return plan


def _pins_by_primary_key(statement: Any, key: str) -> bool:
    """Whether the update's WHERE clause says `<primary key> = :key`, alone or ANDed with
    anything else (an OR could reach other rows)."""
    table, where = statement.table, statement.whereclause
    primary = list(table.primary_key.columns)
    if where is None or len(primary) != 1:
        return False
    conjuncts = where.clauses if isinstance(where, BooleanClauseList) else [where]
    if isinstance(where, BooleanClauseList) and where.operator is not operators.and_:
        return False
    return any(
        isinstance(element, BinaryExpression)
        and element.operator is operators.eq
        and element.left is primary[0]
        and isinstance(element.right, BindParameter)
        and element.right.key == key
        for element in conjuncts
    )


def _compile(
    statement: Executable, dialect: Dialect, keys: tuple[str, ...]
) -> tuple[SQLCompiler, list[str]]:
    clause = cast(ClauseElement, statement)
    compiled = cast(SQLCompiler, clause.compile(dialect=dialect, column_keys=list(keys)))
    if compiled.insert_prefetch or compiled.update_prefetch:
        raise ValueError(f"column defaults are computed at execution: {compiled}")
    # `binds` also holds each anonymous parameter under its label; the names used in the
    # SQL are `bind_names`'.
    return compiled, [name for bind, name in compiled.bind_names.items() if bind.expanding]


class Plan:
    """A compiled statement: its SQL, how to bind a row of values, how to read its rows."""

    def __init__(
        self,
        statement: Executable,
        compiled: SQLCompiler,
        dialect: Dialect,
        expanding: list[str],
        values: Mapping[str, Any],
    ) -> None:
        names: Sequence[str] = compiled.positiontup or ()
        self.sql = compiled.string
        if expanding:  # SQLAlchemy writes out each IN list, one parameter per element
            state = compiled.construct_expanded_state(dict(values))
            self.sql, names = state.statement, state.positiontup or ()
        # (where the value comes from: parameter name, element of its list or None), whether
        # it must be given, its value otherwise, its type's conversion to the database
        self._binds: list[tuple[str, int | None, bool, Any, Callable[[Any], Any] | None]] = []
        for name in names:
            source, element = name, None
            if name not in compiled.binds:
                source, _, number = name.rpartition("_")
                if source not in expanding or not number.isdigit():
                    raise ValueError(f"a parameter SQLAlchemy added is not understood: {name}")
                element = int(number) - 1
            bind = compiled.binds[source]
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            self._binds.append(
                (
                    source,
                    element,
                    bind.required,
                    bind.effective_value,
                    processor,
                )
            )
        columns = list(getattr(statement, "exported_columns", ()))
        self.returns_rows = bool(columns)
        self._readers = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        ]
        self._row = namedtuple("Row", [column.key for column in columns])  # type: ignore[misc]

    def bind(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        bound = []
        for name, element, required, fixed, processor in self._binds:
            if name in values:
                value = values[name]
            elif fixed is None and required:
                raise KeyError(f"no value for the parameter {name!r} of: {self.sql}")
            else:
                value = fixed
            if element is not None:
                value = value[element]
            bound.append(processor(value) if processor is not None else value)
        return tuple(bound)

    def read(self, rows: list[Any]) -> list[Any]:
        readers = self._readers
        return [
            self._row(
                *(
                    reader(value) if reader is not None else value
                    for reader, value in zip(readers, row, strict=True)
                )
            )
            for row in rows
        ]


class Ran:
    """What a prepared statement gave: the part of SQLAlchemy's result the store reads."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return list(self._rows)

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise ValueError(f"expected one row, got {len(self._rows)}")
        return self._rows[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def mappings(self) -> Ran:
        return Ran([row._asdict() for row in self._rows], self.rowcount)


def _split(params: Params) -> tuple[Sequence[Mapping[str, Any]] | None, Mapping[str, Any]]:
    """(the batch, or None for one set of parameters; the first set)."""
    if params is None or isinstance(params, Mapping):
        return None, params or {}
    return params, params[0] if params else {}


def run(
    connection: sqlite3.Connection, dialect: Dialect, prepared: Prepared, params: Params = None
) -> Ran:
    """Run `prepared` on `connection` (inside the caller's transaction). A list of
    parameter sets runs as one batch; errors are raised as SQLAlchemy raises them."""
    batch, first = _split(params)
    if batch is not None and not batch:
        return Ran([], 0)
    plan = prepared.plan(dialect, first)
    try:
        if batch is not None:
            if plan.returns_rows:
                raise ValueError(f"rows returned by a batch are not read: {plan.sql}")
            cursor = connection.executemany(plan.sql, [plan.bind(row) for row in batch])
            return Ran([], cursor.rowcount)
        cursor = connection.execute(plan.sql, plan.bind(first))
        rows = plan.read(cursor.fetchall()) if plan.returns_rows else []
        return Ran(rows, cursor.rowcount)
    except sqlite3.Error as error:
        raise DBAPIError.instance(plan.sql, params, error, sqlite3.Error) from error


async def driver_of(connection: AsyncConnection) -> Any:
    """`connection`'s asyncpg connection (asking SQLAlchemy for it costs a greenlet switch:
    a caller sending several statements asks once and passes it to `send`)."""
    driver = (await connection.get_raw_connection()).driver_connection
    if driver is None:
        raise RuntimeError("the connection was closed")
    return driver


async def begin(connection: AsyncConnection) -> Any | None:
    """PostgreSQL, in a transaction SQLAlchemy began (`connection.begin()`): make sure the
    server's transaction has begun, as SQLAlchemy's first statement would have begun it
    (its asyncpg adapter sends BEGIN, with the connection's isolation and read-only
    settings, and holds the transaction: SQLAlchemy's commit and rollback end it, and
    statements it runs itself join it); return the asyncpg connection, for `send`.

    None where the adapter is not the one this knows (another SQLAlchemy version): the
    caller then runs its statements through SQLAlchemy, which begins the transaction
    itself. A BEGIN that fails is raised as `send` raises a statement's error."""
    raw = await connection.get_raw_connection()
    adapter: Any = raw.dbapi_connection
    driver = raw.driver_connection
    start = getattr(adapter, "_start_transaction", None)
    if start is None or driver is None or not hasattr(adapter, "_transaction"):
        return None
    if adapter._transaction is None:
        try:
            await start()
        except Exception as error:
            raise await _translated(connection, driver, "BEGIN", (), error) from error
        if adapter._transaction is None:  # the connection is in autocommit
            return None
    return driver


async def send(
    connection: AsyncConnection,
    plan: Plan,
    values: Mapping[str, Any] | None = None,
    *,
    driver: Any = None,
) -> Ran:
    """PostgreSQL: run `plan` with `values` straight on `connection`'s asyncpg connection.

    Only where SQLAlchemy's transaction bookkeeping has nothing to do: on a connection in
    autocommit, before anything was sent in its transaction (SQLAlchemy begins one at the
    first statement it sends itself), so the statement commits as it runs, or after
    `begin`. The values are bound as SQLAlchemy binds them and rows read as it reads them
    (the same conversions, on the connection SQLAlchemy set asyncpg's JSON codecs up on);
    asyncpg's errors are raised as the SQLAlchemy errors they would be, and a connection
    that broke is invalidated, so the pool never hands it out again. `driver`:
    `driver_of(connection)` or `begin(connection)`, if the caller has it."""
    arguments = plan.bind(values or {})
    if driver is None:
        driver = await driver_of(connection)
    try:
        if plan.returns_rows:
            records = await driver.fetch(plan.sql, *arguments)
            return Ran(plan.read(records), len(records))
        return Ran([], _count(await driver.execute(plan.sql, *arguments)))
    except Exception as error:
        raise await _translated(connection, driver, plan.sql, arguments, error) from error


async def _translated(
    connection: AsyncConnection, driver: Any, sql: str, arguments: Any, error: Exception
) -> Exception:
    """The SQLAlchemy error asyncpg's `error` would have been raised as; a connection that
    broke (closed, reset, timed out) is invalidated first."""
    import asyncpg  # type: ignore[import-untyped]  # PostgreSQL's driver

    # The adapter's own errors (a BEGIN it sent) carry asyncpg's as their cause.
    cause = error.__cause__ if not isinstance(error, asyncpg.PostgresError) else error
    if isinstance(cause, asyncpg.IntegrityConstraintViolationError):
        return IntegrityError(sql, arguments, cause)
    if isinstance(cause, asyncpg.SyntaxOrAccessError):
        return ProgrammingError(sql, arguments, cause)
    if isinstance(cause, asyncpg.PostgresError):
        return DatabaseError(sql, arguments, cause)
    broken = driver.is_closed()
    if broken:
        await connection.invalidate()
    return OperationalError(sql, arguments, error, connection_invalidated=broken)


def _count(status: str) -> int:
    """The rows a command changed, from its status ("UPDATE 3", "INSERT 0 1", "DELETE 0")."""
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else -1
