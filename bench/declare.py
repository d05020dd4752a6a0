"""What one declaration (or note) costs the event loop, in the process, on SQLite and
PostgreSQL.

Under a burst every waiting request pays for the loop time of those ahead of it, so this
cost, not the database's, sets the acknowledgement latency of `bench.load`'s declare rows.
N declarations are made through `IncidentService.declare` (no HTTP, no Slack, no worker) on
a new database, after a warm-up: one after another, then 20 and 50 at a time, each as a
Slack request is answered (`deadline.answering` and `within`), so that SQLite's writers
meet at the writer and commit in groups as they do under a burst. With `--request note`,
N notes are added instead (`IncidentService.add_note`), in turn to the warm-up's incidents:
a change, the path of every button and `/incident` subcommand that changes an incident.

    python -m bench.declare [--declarations 2000] [--request declare|note]
                            [--postgres-url URL] [--no-postgres]

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
from collections.abc import Awaitable
from pathlib import Path

from bench.load import machine
from bench.schema import postgres_schema
from bot.clock import FakeClock
from bot.domain.policy import default_policy
from bot.service.deadline import answering, within
from bot.service.incidents import IncidentService, Where
from bot.store.db import Database
from bot.store.repository import SqlStore

_WARM_UP = 200


IN_FLIGHT = (1, 20, 50)
Row = tuple[str, int, float, float]  # store, in flight, wall and CPU ms per declaration


async def _declarations(store: SqlStore, count: int, name: str, kind: str) -> list[Row]:
    """(wall, CPU) milliseconds per request (a declaration, or a note: `kind`) at each of
    `IN_FLIGHT`, after a warm-up."""
    service = IncidentService(store=store, policy=default_policy(), clock=FakeClock())
    incidents = [
        (await service.declare(severity="sev3", title=f"warm-up {n}", by="U1")).incident.id
        for n in range(_WARM_UP)
    ]
    for incident_id in incidents:
        await service.add_note(Where(incident_id=incident_id), by="U1", text="warm-up")

    def change(n: int) -> Awaitable[object]:
        if kind == "note":
            where = Where(incident_id=incidents[n % len(incidents)])
            return service.add_note(where, by="U2", text=f"bench {n}")
        return service.declare(
            severity="sev3",
            title=f"bench {n}",
            by="U1",
            response_url="https://hooks.slack.com/commands/1",
        )

    async def request(n: int, turns: asyncio.Semaphore) -> None:
        async with turns:
            with answering():
                await within(lambda: change(n))

    rows = []
    for in_flight in IN_FLIGHT:
        turns = asyncio.Semaphore(in_flight)
        wall, cpu = time.perf_counter(), time.process_time()
        if in_flight == 1:
            for n in range(count):
                await request(n, turns)
        else:
            await asyncio.gather(*(request(n, turns) for n in range(count)))
        rows.append(
            (
                name,
                in_flight,
                (time.perf_counter() - wall) * 1000 / count,
                (time.process_time() - cpu) * 1000 / count,
            )
        )
    return rows


async def _row(name: str, url: str, count: int, kind: str) -> list[Row]:
    database = Database(url)
    await database.migrate()
    try:
        return await _declarations(SqlStore(database), count, name, kind)
    finally:
        await database.dispose()


async def _postgres(admin_url: str, count: int, kind: str) -> list[Row]:
    async with postgres_schema(admin_url, "bench_declare") as database:
        if database is None:
            return []
        return await _declarations(SqlStore(database), count, "PostgreSQL", kind)


async def measure(count: int, postgres_url: str | None, kind: str = "declare") -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'incidents.db'}"
        rows = await _row("SQLite", url, count, kind)
    if postgres_url:
        rows += await _postgres(postgres_url, count, kind)
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
    parser.add_argument(
        "--request",
        choices=("declare", "note"),
        default="declare",
        help="what is measured: declarations, or notes added to the warm-up's incidents",
    )
    options = parser.parse_args()
    rows = asyncio.run(
        measure(
            options.declarations,
            None if options.no_postgres else options.postgres_url,
            options.request,
        )
    )
    what, how = (
        ("note", "notes through IncidentService.add_note")
        if options.request == "note"
        else ("declaration", "declarations through IncidentService.declare")
    )
    print(
        f"\nOne {what}'s cost to the event loop ({options.declarations} {how} "
        "at each number in flight, in the process; milliseconds each)."
    )
    print(f"Machine: {machine(None)}.\n")
    print("| store | in flight | wall | CPU |")
    print("|---|--:|--:|--:|")
    for name, in_flight, wall, cpu in rows:
        print(f"| {name} | {in_flight} | {wall:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
