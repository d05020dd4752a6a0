"""What one claim of the worker costs the event loop on SQLite, however deep the queue.

One incident's job is under way (claimed by another worker, alive) with N jobs waiting
behind it, as a chatty incident's messages pile up, or Slack is slow for its channel. The
worker claims again and again (at every job it finishes) and finds nothing there: each
claim's time is spent on the event loop's thread, where SQLite runs. Measured for
N = 100, 1,000 and 5,000: milliseconds per claim, over 300 claims.

    python -m bench.claims

To compare with an earlier commit, run this file against that commit's `bot` package, as
`bench/declare.py` says.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from bench.load import machine
from bot.store import tables
from bot.store.db import Database
from bot.store.repository import SqlStore

_NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DEPTHS = (100, 1000, 5000)
CLAIMS = 300


async def _claim_ms(depth: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        database = Database(f"sqlite+aiosqlite:///{Path(tmp) / 'incidents.db'}")
        await database.migrate()
        incident = {
            "id": "INC-20261123-0001", "day": "20261123", "seq": 1, "title": "t",
            "severity": "sev3", "status": "open", "declared_at": _NOW, "declared_by": "U1",
            "services": [], "impact": "", "drill": False, "tags": [], "roles": {},
            "escalation_level": 0, "resolution_summary": "", "root_cause": "", "version": 1,
        }  # fmt: skip
        job = {
            "incident_id": "INC-20261123-0001", "kind": "post", "payload": {},
            "attempts": 0, "run_after": _NOW, "created_at": _NOW, "state": "pending",
            "locked_by": None, "locked_until": None,
        }  # fmt: skip
        under_way = {**job, "state": "running", "locked_by": "other"}
        under_way["locked_until"] = _NOW + timedelta(minutes=5)
        try:
            async with database.transaction() as connection:
                await connection.execute(insert(tables.incidents), [incident])
                await connection.execute(insert(tables.slack_jobs), [under_way] + [job] * depth)
            store = SqlStore(database)
            started = time.perf_counter()
            for _ in range(CLAIMS):
                async with store.transaction() as tx:
                    claimed = await tx.claim_jobs(
                        now=_NOW, worker="worker", limit=4, lease_seconds=60
                    )
                assert not claimed  # all wait behind the one under way
            return (time.perf_counter() - started) * 1000 / CLAIMS
        finally:
            await database.dispose()


async def measure() -> list[tuple[int, float]]:
    return [(depth, await _claim_ms(depth)) for depth in DEPTHS]


def main() -> None:
    rows = asyncio.run(measure())
    print(
        f"\nOne claim that finds nothing, with N jobs waiting behind one under way (SQLite, "
        f"in the process; milliseconds per claim over {CLAIMS})."
    )
    print(f"Machine: {machine(None)}.\n")
    print("| jobs waiting | claim |")
    print("|--:|--:|")
    for depth, ms in rows:
        print(f"| {depth} | {ms:.2f} |")


if __name__ == "__main__":
    main()
