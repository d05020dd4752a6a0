"""`kill -9` during bursts of declarations, on SQLite and on PostgreSQL (one process, and two
processes sharing the database). Whatever moment the process dies at, after restarts every
declaration the user was told about exists once, with one channel, one alert and one
announcement; nothing is left half-done and nothing is doubled."""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.devtools.driver import CommandReply, SlackDriver
from bot.devtools.fakeslack import FakeSlack
from bot.store.db import Database
from tests.harness import ALICE, BOB, SIGNING_SECRET, message_text
from tests.test_process_clocks import Bot

pytestmark = pytest.mark.slow

ROUNDS = 3
BURST = 12


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        server.add_channel("general", members=[ALICE, BOB])
        server.add_channel("incidents", bot_is_member=False)
        # Slack answers slowly enough that a kill lands in the middle of the work.
        server.latency("conversations.create", 0.05)
        server.latency("chat.postMessage", 0.02)
        yield server


def env_for(fake: FakeSlack, database_url: str) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": fake.bot_token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": fake.api_url,
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
    }


async def burst(
    fake: FakeSlack, target: Bot, victim: Bot, label: str, rng: random.Random
) -> set[str]:
    """Declare BURST incidents at once through `target` and SIGKILL `victim` while they are
    under way; returns the titles whose declaration was confirmed to the user."""
    general = fake.channel("general").id
    titles = [f"burst {label} {n}" for n in range(BURST)]
    async with SlackDriver(
        bot_url=f"http://127.0.0.1:{target.port}", signing_secret=SIGNING_SECRET, fake=fake
    ) as driver:
        sent = [
            asyncio.create_task(driver.command(f"sev2 {title}", channel=general))
            for title in titles
        ]
        await asyncio.sleep(rng.uniform(0.02, 0.5))
        await victim.stop(signal.SIGKILL)
        replies = await asyncio.gather(*sent, return_exceptions=True)
    return {
        title
        for title, reply in zip(titles, replies, strict=True)
        if isinstance(reply, CommandReply)
        and reply.status == 200
        and "declared" in (reply.text or "")
    }


async def stored(database_url: str) -> dict[str, list[str]]:
    """Title → incident ids, as stored."""
    database = Database(database_url)
    try:
        async with database.transaction() as connection:
            rows = (await connection.execute(text("SELECT id, title FROM incidents"))).all()
    finally:
        await database.dispose()
    found: dict[str, list[str]] = {}
    for incident_id, title in rows:
        found.setdefault(str(title), []).append(str(incident_id))
    return found


def settled(fake: FakeSlack, ids: list[str]) -> bool:
    """Every incident has its channel with its alert, and its announcement."""
    announced = " ".join(message_text(m) for m in fake.channel("incidents").messages)
    for incident_id in ids:
        prefix = incident_id.lower() + "-"
        channel = next((c for c in fake.channels.values() if c.name.startswith(prefix)), None)
        if channel is None or not any("INCIDENT ALERT" in m.text for m in channel.messages):
            return False
        if incident_id not in announced:
            return False
    return True


async def campaign(fake: FakeSlack, tmp_path: Path, database_url: str, processes: int) -> None:
    rng = random.Random(20261123)  # the same kill moments in every run
    env = env_for(fake, database_url)
    bots = [Bot(env, tmp_path) for _ in range(processes)]
    confirmed: set[str] = set()
    try:
        for bot in bots:
            await bot.start()
        for round_no in range(ROUNDS):
            victim = bots[round_no % processes]
            target = bots[(round_no + 1) % processes] if rng.random() < 0.5 else victim
            confirmed |= await burst(fake, target, victim, f"r{round_no}", rng)
            await victim.start()
        by_title = await stored(database_url)
        ids = [incident_id for found in by_title.values() for incident_id in found]
        await fake.wait_for(lambda: settled(fake, ids), timeout=30)
    finally:
        for bot in bots:
            await bot.stop()

    assert confirmed, "some declarations were confirmed before the kills"
    missing = confirmed - set(by_title)
    assert not missing, f"confirmed but lost: {sorted(missing)}"
    doubled = {title: found for title, found in by_title.items() if len(found) > 1}
    assert not doubled, f"declared twice: {doubled}"
    channels = [c for c in fake.channels.values() if c.name.startswith("inc-")]
    assert len(channels) == len(ids), "one channel per incident, no orphans"
    for channel in channels:
        alerts = [m for m in channel.messages if "INCIDENT ALERT" in m.text]
        assert len(alerts) == 1, f"{channel.name}: {len(alerts)} alerts"
    announcements = [message_text(m) for m in fake.channel("incidents").messages]
    for incident_id in ids:
        posts = [t for t in announcements if incident_id in t and "INCIDENT ALERT" in t]
        assert len(posts) == 1, f"{incident_id}: {len(posts)} announcements"


async def test_kill_during_bursts_on_sqlite(fake: FakeSlack, tmp_path: Path) -> None:
    await campaign(fake, tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}", processes=1)


async def test_kill_during_bursts_on_postgres(fake: FakeSlack, tmp_path: Path, empty: str) -> None:
    await campaign(fake, tmp_path, empty, processes=1)


async def test_kill_one_of_two_processes_during_bursts(
    fake: FakeSlack, tmp_path: Path, empty: str
) -> None:
    await campaign(fake, tmp_path, empty, processes=2)
