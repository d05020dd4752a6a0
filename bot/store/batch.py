"""PostgreSQL: a transaction's writes sent to the server together, as one statement.

A declaration writes the incident, its timeline, its Slack work and its timers; a change
saves the incident, adds events and jobs, moves its timers. One statement each is one
round trip each: a wait for the server, and under a burst a wait for the event loop to
come round again, with a pooled connection held all the while. On PostgreSQL the writes
of a transaction wait in a `Batch` instead, and go to the server as one statement of
data-modifying common table expressions when something needs them: a read of a table
they wrote, a statement the batch cannot hold, or the commit. A declaration is then two
round trips (its number, then everything else, committed as it runs), a change four
(BEGIN, the incident's row locked and its timers read, everything else, COMMIT).

What one statement can hold faithfully is checked as writes arrive. The sub-statements of
one statement all see the database as it was when the statement began, so a write joins
the batch only if it does not read a table the batch wrote, and does not update a table
the batch wrote: two inserts into one table are fine (new rows never meet), and so are
two updates that each name their rows by primary key (`Prepared.key`), for other rows.
Otherwise the batch is sent first and the write starts the next one. Constraints
(foreign keys included) are checked as they are for separate statements; an error is the
same error, raised when the batch is sent, and the transaction is rolled back as before.
A write whose number of rows is checked (saving an incident at the version it was read at)
says how many it expects, and the batch raises its error when the count differs.

Each shape of batch (which statements, with which columns, how many rows) is compiled by
SQLAlchemy once: the SQL with its parameters in order, each with its type's conversion.
A new shape costs a few milliseconds to compile, so only statements whose mixes repeat
(a declaration's, a change's) are batched; the worker's varied records are not.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import bindparam, func, insert, literal_column, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import visitors
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.expression import ClauseElement

from bot.store.prepared import Plan, Prepared, send

# PostgreSQL accepts at most 32,767 parameters in one statement; a batch is sent before
# it would need more than this.
MAX_PARAMETERS = 30_000
# Compiled shapes kept (a declaration, each kind of change, the worker's records: a few
# dozen in practice); the least recently used is dropped past this.
_SHAPES_KEPT = 256


@dataclass(frozen=True)
class _Write:
    prepared: Prepared
    rows: Sequence[Mapping[str, Any]]
    expect: int | None
    error: Callable[[], Exception] | None


class Batch:
    """The writes of one transaction not yet sent (PostgreSQL)."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._writes: list[_Write] = []
        self._written: set[str] = set()
        # for each table written: the rows named by key (updates with `Prepared.key`), or
        # None when it was written otherwise (inserts, other updates)
        self._rows: dict[str, set[Any] | None] = {}
        self._parameters = 0

    def __bool__(self) -> bool:
        return bool(self._writes)

    def takes(self, prepared: Prepared, rows: Sequence[Mapping[str, Any]]) -> bool:
        """Whether `prepared` can ever wait in a batch (a plain insert, or an update with
        no expanding list and nothing returned), and can join this one now."""
        if not prepared.batchable:
            return False
        if self._parameters + len(rows) * len(rows[0]) > MAX_PARAMETERS:
            return False
        if prepared.reads & self._written:
            return False
        if prepared.target not in self._written:
            return True
        if prepared.plain_insert:  # new rows never meet
            return all(
                write.prepared.plain_insert
                for write in self._writes
                if write.prepared.target == prepared.target
            )
        named = self._rows.get(prepared.target)
        if prepared.key is None or named is None:
            return False
        keys = {row[prepared.key] for row in rows}  # other rows than the batch's
        return len(keys) == len(rows) and named.isdisjoint(keys)

    def add(
        self,
        prepared: Prepared,
        rows: Sequence[Mapping[str, Any]],
        *,
        expect: int | None = None,
        error: Callable[[], Exception] | None = None,
    ) -> None:
        """Hold a write (`takes` said it may): `rows`, each with the same keys. `expect`:
        the rows it must write in all, else `error()` is raised when the batch is sent."""
        prepared.plan(self._dialect, rows[0])  # refuses what a plan cannot do faithfully
        self._writes.append(_Write(prepared, rows, expect, error))
        target = cast(str, prepared.target)
        named = self._rows.get(target, set()) if target in self._written else set()
        if prepared.key is None or named is None:
            self._rows[target] = None
        else:
            self._rows[target] = named | {row[prepared.key] for row in rows}
        self._written.add(target)
        self._parameters += len(rows) * len(rows[0])

    @property
    def checks_counts(self) -> bool:
        """Whether a write's count is checked once the batch has run: the batch must then
        not commit as it runs (the check could no longer undo it)."""
        return any(write.expect is not None for write in self._writes)

    def touches(self, tables: frozenset[str]) -> bool:
        """Whether a statement reading `tables` would see writes still held here."""
        return not self._written.isdisjoint(tables)

    async def send(self, connection: AsyncConnection, *, driver: Any = None) -> None:
        """Send the held writes as one statement, inside the connection's transaction (or,
        in autocommit, as a transaction of its own); check the counts; empty the batch.
        With the asyncpg `driver` under the connection, straight to it (`prepared.send`):
        in the transaction `prepared.begin` began, or where it commits as it runs."""
        writes, self._writes, self._written, self._parameters = self._writes, [], set(), 0
        self._rows = {}
        if not writes:
            return
        shape = tuple((write.prepared, tuple(write.rows[0]), len(write.rows)) for write in writes)
        plan, groups = _combined(shape, self._dialect)
        values: dict[str, Any] = {}
        for i, write in enumerate(writes):
            for r, row in enumerate(write.rows):
                for key, value in row.items():
                    values[f"w{i}_{r}_{key}"] = value
        if driver is not None:
            counts = (await send(connection, plan, values, driver=driver)).one()
        else:
            counts = (await connection.exec_driver_sql(plan.sql, plan.bind(values))).one()
        for write, columns in zip(writes, groups, strict=True):
            if write.expect is not None and sum(counts[j] for j in columns) != write.expect:
                raise (write.error or unexpected_count)()


def unexpected_count() -> Exception:
    """A write changed another number of rows than it said it would."""
    return RuntimeError("a write changed an unexpected number of rows")


_Shape = tuple[tuple[Prepared, tuple[str, ...], int], ...]
_shapes: OrderedDict[tuple[str, _Shape], tuple[Plan, list[list[int]]]] = OrderedDict()


def _combined(shape: _Shape, dialect: Dialect) -> tuple[Plan, list[list[int]]]:
    """The batch's statement for `shape`, and for each write the columns of the result
    that count its rows."""
    key = (dialect.name, shape)
    found = _shapes.get(key)
    if found is not None:
        _shapes.move_to_end(key)
        return found
    ctes: list[Any] = []
    groups: list[list[int]] = []
    for i, (prepared, keys, count) in enumerate(shape):
        statement: Any = prepared.statement
        columns = []
        if isinstance(statement, Insert):
            table = statement.table
            rows = [
                {key: bindparam(f"w{i}_{r}_{key}", type_=table.c[key].type) for key in keys}
                for r in range(count)
            ]
            columns.append(len(ctes))
            ctes.append(insert(table).values(rows).returning(literal_column("1")).cte(f"w{i}"))
        else:
            update = cast(Update, statement)
            named = {bind.key for bind in _binds(update)}
            target: Any = update.table
            setting = {
                key: bindparam(key, type_=target.c[key].type) for key in keys if key not in named
            }
            for r in range(count):
                renamed = _renamed(update.values(setting) if setting else update, f"w{i}_{r}_")
                columns.append(len(ctes))
                ctes.append(renamed.returning(literal_column("1")).cte(f"w{i}_{r}"))
        groups.append(columns)
    combined = select(
        *(
            select(func.count()).select_from(cte).scalar_subquery().label(f"n{j}")
            for j, cte in enumerate(ctes)
        )
    )
    compiled = cast(SQLCompiler, cast(ClauseElement, combined).compile(dialect=dialect))
    plan = Plan(combined, compiled, dialect, [], {})
    _shapes[key] = (plan, groups)
    if len(_shapes) > _SHAPES_KEPT:
        _shapes.popitem(last=False)
    return plan, groups


def _binds(statement: Any) -> list[BindParameter[Any]]:
    """The statement's named parameters (not the anonymous ones holding fixed values)."""
    return [
        element
        for element in visitors.iterate(statement)
        if isinstance(element, BindParameter) and not element.unique
    ]


def _renamed(statement: Any, prefix: str) -> Any:
    """`statement` with each named parameter `name` renamed `prefix + name`."""

    def rename(element: Any, **_: Any) -> Any:
        if isinstance(element, BindParameter) and not element.unique:
            return bindparam(
                prefix + element.key,
                type_=element.type,
                value=element.value,
                required=element.required,
            )
        return None

    return visitors.replacement_traverse(
        cast(visitors.ExternallyTraversible, statement), {}, rename
    )
