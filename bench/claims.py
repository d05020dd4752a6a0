"""What one claim of the worker costs the event loop, however deep the queue, on SQLite
and PostgreSQL.

One incident's job is under way (claimed by another worker, alive) with N jobs waiting
behind it, as a chatty incident's messages pile up, or Slack is slow for its channel. The
worker claims again and again (at every job it finishes) and finds nothing there. On
SQLite each claim's time is spent on the event loop's thread, where SQLite runs; on
PostgreSQL it is the round trips' wait and the loop's CPU sending and reading them.
Measured for N = 100, 1,000 and 5,000: milliseconds per claim (wall and the process's
CPU), over 300 claims, each in autocommit as the worker claims. Then the claim that finds
work: 1,200 incidents each with one job due, claimed 4 at a time with their incidents.

    python -m bench.claims [--postgres-url URL] [--no-postgres]

To compare with an earlier commit, run this file against that commit's `bot` package, as
`bench/declare.py` says.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from bench.load import machine
from bench.schema import postgres_schema
from bot.store import tables
from bot.store.db import Database
from bot.store.repository import SqlStore

_NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DEPTHS = (100, 1000, 5000)
CLAIMS = 300
Row = tuple[str, int, float, float]  # store, jobs waiting, wall and CPU ms per claim


FINDING = -1  # the depth that stands for the claim that finds work
_FOUND = 4


def _incident(n: int) -> dict[str, Any]:
    return {
        "id": f"INC-20261123-{n:04d}", "day": "20261123", "seq": n, "title": "t",
        "severity": "sev3", "status": "open", "declared_at": _NOW, "declared_by": "U1",
        "services": [], "impact": "", "drill": False, "tags": [], "roles": {},
        "escalation_level": 0, "resolution_summary": "", "root_cause": "", "version": 1,
    }  # fmt: skip


def _job(incident_id: str) -> dict[str, Any]:
    return {
        "incident_id": incident_id, "kind": "post", "payload": {},
        "attempts": 0, "run_after": _NOW, "created_at": _NOW, "state": "pending",
        "locked_by": None, "locked_until": None,
    }  # fmt: skip


async def _claim_ms(database: Database, depth: int) -> tuple[float, float]:
    """(wall, CPU) milliseconds per claim with `depth` jobs waiting behind one under way
    (`FINDING`: with one job due for each of enough incidents), on a `database` just
    migrated."""
    if depth == FINDING:
        incidents = [_incident(n) for n in range(1, CLAIMS * _FOUND + 1)]
        jobs = [_job(incident["id"]) for incident in incidents]
    else:
        incidents = [_incident(1)]
        under_way = {**_job(incidents[0]["id"]), "state": "running", "locked_by": "other"}
        under_way["locked_until"] = _NOW + timedelta(minutes=5)
        jobs = [under_way] + [_job(incidents[0]["id"])] * depth
    await database.hold_liveness("other")  # PostgreSQL: the other worker is alive
    async with database.transaction() as connection:
        await connection.execute(insert(tables.incidents), incidents)
        await connection.execute(insert(tables.slack_jobs), jobs)
    store = SqlStore(database)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(CLAIMS):
        async with store.transaction(autocommit=True) as tx:
            claimed = await tx.claim_jobs(now=_NOW, worker="worker", limit=4, lease_seconds=60)
        if depth == FINDING:
            assert len(claimed) == _FOUND
            assert all(job.incident is not None for job in claimed)
        else:
            assert not claimed  # all wait behind the one under way
    return (
        (time.perf_counter() - wall) * 1000 / CLAIMS,
        (time.process_time() - cpu) * 1000 / CLAIMS,
    )


async def _sqlite(depth: int) -> Row:
    with tempfile.TemporaryDirectory() as tmp:
        database = Database(f"sqlite+aiosqlite:///{Path(tmp) / 'incidents.db'}")
        await database.migrate()
        try:
            return ("SQLite", depth, *await _claim_ms(database, depth))
        finally:
            await database.dispose()


async def _postgres(admin_url: str, depth: int) -> Row | None:
    async with postgres_schema(admin_url, f"bench_claims_{depth + 1}") as database:
        if database is None:
            return None
        return ("PostgreSQL", depth, *await _claim_ms(database, depth))


async def measure(postgres_url: str | None) -> list[Row]:
    rows = [await _sqlite(depth) for depth in (*DEPTHS, FINDING)]
    if postgres_url:
        for depth in (*DEPTHS, FINDING):
            row = await _postgres(postgres_url, depth)
            if row is None:
                break
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--no-postgres", action="store_true")
    options = parser.parse_args()
    rows = asyncio.run(measure(None if options.no_postgres else options.postgres_url))
    print(
        "\nOne claim of the worker (in the process, in autocommit; milliseconds per claim "
        f"over {CLAIMS}): one that finds nothing, with N jobs waiting behind one under way, "
        f"and one that finds {_FOUND} jobs due with their incidents."
    )
    print(f"Machine: {machine(None)}.\n")
    print("| store | claim | wall | CPU |")
    print("|---|---|--:|--:|")
    for name, depth, wall, cpu in rows:
        what = f"finds {_FOUND} jobs" if depth == FINDING else f"nothing, {depth} waiting"
        print(f"| {name} | {what} | {wall:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
