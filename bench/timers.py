"""Timer lateness with many open incidents, and the worker's CPU while nothing is due.

N acknowledged SEV2 incidents are declared so that each one's next update nudge falls at a
random moment of a measurement window; the real worker (real clock, real database) fires
them. Slack work is replaced by a no-op runner: this measures the clock machinery (claim,
fire under the incident lock, record, re-plan), not Slack. Then, with nothing due, the
worker's CPU use is sampled.

    python -m bench.timers [--incidents 10000] [--window 60] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import update

from bot.clock import SystemClock
from bot.domain.policy import default_policy
from bot.service.incidents import IncidentService, Where
from bot.service.ports import Job
from bot.store.db import Database
from bot.store.repository import SqlStore
from bot.store.tables import slack_jobs
from bot.worker import Worker


class SetupClock:
    """The real clock, except while the bench places incidents in the past."""

    def __init__(self) -> None:
        self.fixed: datetime | None = None
        self.real = SystemClock()

    def now(self) -> datetime:
        return self.fixed or self.real.now()


async def no_slack(job: Job) -> dict[str, Any]:
    del job
    return {}


def resident_mb(pid: int) -> tuple[float, float]:
    """A process's resident memory now and at its peak (VmRSS, VmHWM), in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.split()
    return int(fields["VmRSS"][0]) / 1024, int(fields["VmHWM"][0]) / 1024


async def bot_memory(url: str, tmp: Path) -> tuple[float, float, float]:
    """The bot itself (`python -m bot`, against the Slack stand-in) serving the database with
    the open incidents: its resident memory once started, and after what reads all of them
    (`/incident list`, the Home tab, /metrics), with its peak."""
    from bench.load import ALICE, REPO, SECRET, child_env, free_port, serving
    from bot.devtools.driver import SlackDriver
    from bot.devtools.fakeslack import FakeSlack

    pids: list[int] = []
    port = free_port()
    async with FakeSlack() as fake:
        fake.add_user(ALICE, "alice", "Alice Ops")
        general = fake.add_channel("general", members=[ALICE])
        env = child_env(
            {
                "SLACK_BOT_TOKEN": fake.bot_token,
                "SLACK_SIGNING_SECRET": SECRET,
                "SLACK_API_URL": fake.api_url,
                "DATABASE_URL": url,
                "PORT": str(port),
                "PLAYBOOKS_DIR": str(REPO / "playbooks"),
            }
        )
        command = [sys.executable, "-m", "bot"]
        log = tmp / "bot.log"
        async with serving("the bot", command, env=env, cwd=tmp, log=log, port=port, pids=pids):
            started, _ = resident_mb(pids[0])
            base = f"http://127.0.0.1:{port}"
            async with SlackDriver(bot_url=base, signing_secret=SECRET, fake=fake) as driver:
                await driver.command("list", user=ALICE, channel=general, channel_name="general")
                await driver.event({"type": "app_home_opened", "user": ALICE, "tab": "home"})
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"{base}/metrics") as response,
                ):
                    await response.read()
            await asyncio.sleep(2)  # the Home tab is published in the background
            now, peak = resident_mb(pids[0])
    return started, now, peak


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def run(incidents: int, window: float, database_url: str | None, idle: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        database = Database(url)
        await database.migrate()
        store = SqlStore(database)
        policy = default_policy()
        interval = policy.get("sev2").update_interval
        assert interval is not None
        clock = SetupClock()
        worker = Worker(store=store, run_job=no_slack, clock=clock, concurrency=64)
        service = IncidentService(store=store, policy=policy, clock=clock, wake=worker.wake)
        worker.timers = service

        lead = 20.0 + incidents * 0.012  # placing one takes ~9 ms here (two transactions)
        start = clock.real.now() + timedelta(seconds=lead)
        rng = random.Random(7)
        placed = time.perf_counter()
        for n in range(incidents):
            due = start + timedelta(seconds=rng.uniform(0, window))
            clock.fixed = due - interval
            outcome = await service.declare(severity="sev2", title=f"bench {n}", by="U0BENCH")
            clock.fixed = due - interval + timedelta(seconds=1)
            await service.acknowledge(Where(incident_id=outcome.incident.id), by="U0BENCH")
        clock.fixed = None
        placed = time.perf_counter() - placed
        # The declarations' Slack work is not what is measured: mark it done at once.
        async with database.transaction() as connection:
            await connection.execute(
                update(slack_jobs).where(slack_jobs.c.state == "pending").values(state="done")
            )
        service.fired.clear()
        if clock.now() > start:
            print(f"warning: placing took {placed:.0f}s, past the window start; raise the lead")

        task = asyncio.create_task(worker.run_forever())
        end = start + timedelta(seconds=window + 3)
        await asyncio.sleep(max(0.0, (end - clock.now()).total_seconds()))
        nudges = [late for kind, late, _ in service.fired if kind == "nudge"]

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(idle)
        cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        worker.stop()
        await task
        await database.dispose()
        memory = await bot_memory(url, Path(tmp)) if database.dialect == "sqlite" else None

    print(
        f"\nTimers: {incidents} open incidents, nudges due across {window:.0f}s "
        f"({database.dialect}; placed in {placed:.0f}s)"
    )
    print(f"| {'measure':<34} | {'value':>12} |")
    print(f"|{'-' * 36}|{'-' * 14}|")
    rows = [
        ("nudges fired", f"{len(nudges)}"),
        ("lateness p50", f"{statistics.median(nudges) * 1000:.0f} ms" if nudges else "—"),
        ("lateness p99", f"{percentile(nudges, 0.99) * 1000:.0f} ms" if nudges else "—"),
        ("lateness max", f"{max(nudges) * 1000:.0f} ms" if nudges else "—"),
        (f"worker CPU while idle ({idle:.0f}s)", f"{cpu * 100:.2f} % of a core"),
    ]
    if memory is not None:
        rows += [
            ("bot resident memory, started", f"{memory[0]:.0f} MB"),
            ("  after list, Home, /metrics", f"{memory[1]:.0f} MB"),
            ("  peak", f"{memory[2]:.0f} MB"),
        ]
    for name, value in rows:
        print(f"| {name:<34} | {value:>12} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    asyncio.run(run(args.incidents, args.window, args.database_url, args.idle))


if __name__ == "__main__":
    main()
