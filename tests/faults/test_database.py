"""The database goes away: frozen (nothing answers), stopped, restarted — on a private
PostgreSQL cluster, and on SQLite with its write lock held by someone else.

Slack waits three seconds for an answer. Whatever the database does, every request is
answered in time and truthfully (nothing was changed: try again), nothing the user was told
had failed appears later, and the worker carries on once the database is back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text

from bot.devtools.driver import SlackDriver
from bot.devtools.fakeslack import FakeSlack
from bot.runtime import Runtime
from bot.store.db import WORKER_LOCK_CLASS, Database
from bot.store.tables import incidents
from tests.conftest import settings_for
from tests.faults.pgcluster import PrivateCluster
from tests.harness import ALICE, BOB, CAROL, SIGNING_SECRET

SLACK_BUDGET = 3.0


@asynccontextmanager
async def running_bot(fake: FakeSlack, url: str) -> AsyncIterator[tuple[Runtime, SlackDriver, str]]:
    """The bot serving HTTP with its worker running on the real clock; yields the runtime,
    a driver and the bot's base URL."""
    fake.add_user(ALICE, "alice", "Alice Ops")
    fake.add_user(BOB, "bob", "Bob Oncall")
    fake.add_user(CAROL, "carol", "Carol Comms")
    fake.add_channel("general", members=[ALICE, BOB, CAROL])
    fake.add_channel("incidents", members=[ALICE, BOB, CAROL], bot_is_member=False)
    runtime = await Runtime.create(settings_for(fake, url), poll_seconds=0.1)
    port = await runtime.start(host="127.0.0.1", port=0)
    base = f"http://127.0.0.1:{port}"
    try:
        async with SlackDriver(bot_url=base, signing_secret=SIGNING_SECRET, fake=fake) as driver:
            yield runtime, driver, base
    finally:
        await runtime.close()


def incident_channels(fake: FakeSlack) -> list[str]:
    return sorted(c.name for c in fake.channels.values() if c.name.startswith("inc-"))


async def count_incidents(url: str) -> int:
    database = Database(url)
    try:
        async with database.transaction() as connection:
            return int(
                (await connection.execute(select(func.count()).select_from(incidents))).scalar_one()
            )
    finally:
        await database.dispose()


async def until(check: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out waiting for the bot")


async def timed_command(driver: SlackDriver, text_: str) -> tuple[float, str]:
    started = time.monotonic()
    reply = await driver.command(text_, user=ALICE, channel=driver.fake.channel("general").id)
    assert reply.status == 200
    return time.monotonic() - started, reply.text or ""


async def timed_health(base: str) -> tuple[float, int, dict[str, object]]:
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{base}/healthz")
    return time.monotonic() - started, response.status_code, response.json()


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


async def test_a_frozen_database_gets_every_request_answered_in_time(
    fake: FakeSlack, cluster: PrivateCluster, empty: str
) -> None:
    async with running_bot(fake, empty) as (_, driver, base):
        _, said = await timed_command(driver, "sev2 search slow")
        assert "declared" in said
        await until(lambda: len(incident_channels(fake)) == 1)

        cluster.freeze()
        try:
            took, said = await timed_command(driver, "sev1 payment down")
            assert took < SLACK_BUDGET, f"answered after {took:.2f} s"
            assert "nothing was changed" in said, said
            assert "Try again" in said
            took, status, body = await timed_health(base)
            assert took < 1.5, f"health answered after {took:.2f} s"
            assert status == 503, body
            assert body["database"] == "unreachable"
            took, said = await timed_command(driver, "sev1 checkout down")
            assert took < SLACK_BUDGET, f"answered after {took:.2f} s"
        finally:
            cluster.thaw()

        await asyncio.sleep(1.0)  # anything cancelled would have committed by now
        assert await count_incidents(empty) == 1, "what the user was told failed never appears"
        _, said = await timed_command(driver, "sev1 payment down")
        assert "declared" in said, said
        await until(lambda: len(incident_channels(fake)) == 2)
        _, status, _ = await timed_health(base)
        assert status == 200


async def test_a_database_restart_loses_nothing_and_the_worker_comes_back(
    fake: FakeSlack, cluster: PrivateCluster, empty: str
) -> None:
    async with running_bot(fake, empty) as (runtime, driver, base):
        general = fake.channel("general").id
        # Slack is slow, so the worker is mid-way through these when the database goes.
        fake.latency("conversations.create", 0.3)
        replies = await asyncio.gather(
            *(driver.command(f"sev2 outage {n}", user=ALICE, channel=general) for n in range(5))
        )
        assert all("declared" in (r.text or "") for r in replies)
        cluster.stop("immediate")
        try:
            took, said = await timed_command(driver, "sev1 payment down")
            assert took < SLACK_BUDGET, f"answered after {took:.2f} s"
            assert "try the command again" in said.lower(), said
            _, status, _ = await timed_health(base)
            assert status == 503
        finally:
            cluster.start()
        fake.latency("conversations.create", 0)

        await until(lambda: len(incident_channels(fake)) == 5, timeout=30)
        await until(
            lambda: all(
                any("INCIDENT ALERT" in m.text for m in fake.channel(name).messages)
                for name in incident_channels(fake)
            ),
            timeout=30,
        )
        assert len(incident_channels(fake)) == 5, "no channel twice"
        for name in incident_channels(fake):
            alerts = [m for m in fake.channel(name).messages if "INCIDENT ALERT" in m.text]
            assert len(alerts) == 1, name
        assert await count_incidents(empty) == 5
        # The worker holds its liveness lock again, so other replicas know it is alive.
        database = Database(empty)
        try:
            for _ in range(100):
                async with database.transaction() as connection:
                    held = await connection.execute(
                        text(
                            "SELECT count(*) FROM pg_locks "
                            "WHERE locktype = 'advisory' AND classid = :c"
                        ),
                        {"c": WORKER_LOCK_CLASS},
                    )
                    if held.scalar_one() == 1:
                        break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the worker did not take its liveness lock again")
        finally:
            await database.dispose()
        _, status, body = await timed_health(base)
        assert status == 200, body
        assert runtime.worker.alive()


async def test_sqlite_held_by_another_writer_gets_an_answer_in_time(
    fake: FakeSlack, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'incidents.db'}"
    async with running_bot(fake, url) as (runtime, driver, _):
        _, said = await timed_command(driver, "sev2 search slow")
        assert "declared" in said
        await until(lambda: len(incident_channels(fake)) == 1)
        blocker = Database(url)
        async with blocker.transaction() as connection:
            await connection.execute(text("SELECT 1"))  # BEGIN IMMEDIATE: the write lock
            took, said = await timed_command(driver, "sev1 payment down")
        await blocker.dispose()
        assert took < SLACK_BUDGET, f"answered after {took:.2f} s"
        assert "nothing was changed" in said, said
        await asyncio.sleep(0.5)
        assert await count_incidents(url) == 1
        _, said = await timed_command(driver, "sev1 payment down")
        assert "declared" in said
        await until(lambda: len(incident_channels(fake)) == 2)
        assert runtime.worker.alive()
