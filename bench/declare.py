"""What one declaration costs the event loop, in the process, on SQLite and PostgreSQL.

Under a burst every waiting request pays for the loop time of those ahead of it, so this
cost, not the database's, sets the acknowledgement latency of `bench.load`'s declare rows.
N declarations are made one after another through `IncidentService.declare` (no HTTP, no
Slack, no worker) on a new database, after a warm-up.

    python -m bench.declare [--declarations 2000] [--postgres-url URL] [--no-postgres]

To compare with an earlier commit, run this file against that commit's `bot` package:
`git worktree add /tmp/old <commit>`, then from a directory outside both checkouts
`PYTHONPATH=/tmp/old <this checkout>/.venv/bin/python <this checkout>/bench/declare.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from bench.load import machine
from bot.clock import FakeClock
from bot.domain.policy import default_policy
from bot.service.incidents import IncidentService
from bot.store.db import Database
from bot.store.repository import SqlStore

_WARM_UP = 200


async def _declarations(store: SqlStore, count: int) -> tuple[float, float]:
    """(wall, CPU) milliseconds per declaration, after a warm-up."""
    service = IncidentService(store=store, policy=default_policy(), clock=FakeClock())
    for n in range(_WARM_UP):
        await service.declare(severity="sev3", title=f"warm-up {n}", by="U1")
    wall, cpu = time.perf_counter(), time.process_time()
    for n in range(count):
        await service.declare(
            severity="sev3",
            title=f"bench {n}",
            by="U1",
            response_url="https://hooks.slack.com/commands/1",
        )
    return (
        (time.perf_counter() - wall) * 1000 / count,
        (time.process_time() - cpu) * 1000 / count,
    )


async def _row(name: str, url: str, count: int) -> tuple[str, float, float]:
    database = Database(url)
    await database.migrate()
    try:
        wall, cpu = await _declarations(SqlStore(database), count)
    finally:
        await database.dispose()
    return name, wall, cpu


async def _postgres(admin_url: str, count: int) -> tuple[str, float, float] | None:
    schema = f"bench_declare_{os.getpid()}"
    admin = Database(admin_url)
    try:
        async with admin.transaction() as connection:
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as error:  # no server: the row is left out, and said so
        print(f"PostgreSQL left out ({type(error).__name__}: {error})")
        await admin.dispose()
        return None
    database = Database(admin_url, connect_args={"server_settings": {"search_path": schema}})
    try:
        await database.migrate()
        wall, cpu = await _declarations(SqlStore(database), count)
    finally:
        await database.dispose()
        async with admin.transaction() as connection:
            await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()
    return "PostgreSQL", wall, cpu


async def measure(count: int, postgres_url: str | None) -> list[tuple[str, float, float]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(
            await _row(
                "SQLite",
                f"sqlite+aiosqlite:///{Path(tmp) / 'incidents.db'}",
                count,
            )
        )
    if postgres_url:
        row = await _postgres(postgres_url, count)
        if row is not None:
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--declarations", type=int, default=2000)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--no-postgres", action="store_true")
    options = parser.parse_args()
    rows = asyncio.run(
        measure(options.declarations, None if options.no_postgres else options.postgres_url)
    )
    print(
        f"\nOne declaration's cost to the event loop ({options.declarations} declarations one "
        "after another through IncidentService.declare, in the process; milliseconds each)."
    )
    print(f"Machine: {machine(None)}.\n")
    print("| store | wall | CPU |")
    print("|---|--:|--:|")
    for name, wall, cpu in rows:
        print(f"| {name} | {wall:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
