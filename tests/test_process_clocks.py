"""Clocks in real processes and real time, as the operator runs them: on time, once each,
across a kill -9 and a restart, and with two processes sharing one PostgreSQL database."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from bot.devtools.driver import SlackDriver
from bot.devtools.fakeslack import Channel, FakeSlack
from bot.store.db import Database
from tests.conftest import PG_URL
from tests.harness import ALICE, BOB, SIGNING_SECRET, message_text
from tests.test_process import free_port

pytestmark = pytest.mark.slow

POLICY = """
announce_channel: incidents
severities:
  - name: SEV1
    aliases: [p0]
    ack_timeout: 2s
    update_interval: 4s
    resolution_target: 1h
    escalation:
      - {after: 0s, notify: [S0ONCALL]}
      - {after: 3s, notify: [S0SECONDARY]}
      - {after: 6s, notify: [U0MANAGER]}
  - name: SEV4
    aliases: [p3]
    ack_timeout: 1h
    update_interval: null
    resolution_target: 3d
"""


class Bot:
    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env, self.cwd, self.port = env, cwd, free_port()
        self.process: asyncio.subprocess.Process | None = None
        self.log: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
        env |= {**self.env, "PORT": str(self.port)}
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            cwd=self.cwd,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                assert self.process.returncode is None, "".join(self.log)
                try:
                    if (await client.get(f"http://127.0.0.1:{self.port}/healthz")).is_success:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError("not healthy:\n" + "".join(self.log))

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.log.append(line.decode(errors="replace"))

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(sig)
            await asyncio.wait_for(self.process.wait(), timeout=15)
        if self._reader is not None:
            await self._reader


@asynccontextmanager
async def bots(
    fake: FakeSlack,
    tmp_path: Path,
    database_url: str,
    count: int = 1,
) -> AsyncIterator[list[Bot]]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    env = {
        "SLACK_BOT_TOKEN": fake.bot_token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": fake.api_url,
        "DATABASE_URL": database_url,
        "POLICY_FILE": str(tmp_path / "policy.yaml"),
        "LOG_LEVEL": "INFO",
    }
    started = [Bot(env, tmp_path) for _ in range(count)]
    try:
        for bot in started:
            await bot.start()
        yield started
    finally:
        for bot in started:
            await bot.stop()


def seen_at(channel: Channel, needle: str, arrivals: dict[str, float]) -> list[float]:
    """Arrival times (monotonic) of the messages containing `needle`, as first observed."""
    times = []
    for message in channel.messages:
        if needle in message_text(message):
            times.append(arrivals.setdefault(message.ts, time.monotonic()))
    return times


async def declare(fake: FakeSlack, port: int) -> tuple[Channel, float]:
    general = fake.add_channel("general", members=[ALICE, BOB])
    fake.add_channel("incidents", bot_is_member=False)
    async with SlackDriver(
        bot_url=f"http://127.0.0.1:{port}", signing_secret=SIGNING_SECRET, fake=fake
    ) as driver:
        start = time.monotonic()
        reply = await driver.command("sev1 payments down", channel=general, channel_name="general")
        assert reply.status == 200
    channel = await fake.wait_for(
        lambda: next((c for c in fake.channels.values() if c.name.startswith("inc-")), None)
    )
    return channel, start


async def watch(channel: Channel, seconds: float, needles: list[str]) -> dict[str, list[float]]:
    arrivals: dict[str, float] = {}
    found: dict[str, list[float]] = {}
    end = time.monotonic() + seconds
    while True:
        for needle in needles:
            found[needle] = seen_at(channel, needle, arrivals)
        if time.monotonic() >= end:  # the last look, with no wait before the caller's next
            return found
        await asyncio.sleep(0.01)


LEVEL2, LEVEL3, NUDGE = "escalated to level 2", "escalated to level 3", "status update is due"


async def test_escalation_and_nudge_on_time(fake: FakeSlack, tmp_path: Path) -> None:
    async with bots(fake, tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}") as (bot,):
        channel, start = await declare(fake, bot.port)
        found = await watch(channel, 7.5, [LEVEL2, LEVEL3, NUDGE])
    (level2,) = found[LEVEL2]
    (level3,) = found[LEVEL3]
    assert 3.0 <= level2 - start <= 5.0, level2 - start
    assert 6.0 <= level3 - start <= 8.0, level3 - start
    assert 4.0 <= found[NUDGE][0] - start <= 6.0, found[NUDGE][0] - start


async def test_acknowledgement_and_update_stop_their_clocks(
    fake: FakeSlack, tmp_path: Path
) -> None:
    async with bots(fake, tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}") as (bot,):
        channel, _ = await declare(fake, bot.port)
        async with SlackDriver(
            bot_url=f"http://127.0.0.1:{bot.port}", signing_secret=SIGNING_SECRET, fake=fake
        ) as driver:
            await driver.command("ack", user=BOB, channel=channel.id, channel_name=channel.name)
            await asyncio.sleep(2.5)
            await driver.command(
                "update still digging", user=BOB, channel=channel.id, channel_name=channel.name
            )
        found = await watch(channel, 3.3, [LEVEL2, LEVEL3, NUDGE, "response target"])
    assert found[LEVEL2] == found[LEVEL3] == found["response target"] == []
    assert found[NUDGE] == [], "the update at 2.5 s moved the nudge to 6.5 s"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def process_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database URL for bot processes: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
        return
    if not PG_URL:
        pytest.skip("TEST_DATABASE_URL is not set")
    name = f"bot_{uuid.uuid4().hex[:10]}"
    admin = Database(PG_URL, isolation_level="AUTOCOMMIT")
    async with admin.engine.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        async with admin.engine.connect() as connection:
            await connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        await admin.dispose()


async def test_kill_and_restart_fires_each_timer_once(
    fake: FakeSlack, tmp_path: Path, process_database: str
) -> None:
    async with bots(fake, tmp_path, process_database) as (bot,):
        channel, start = await declare(fake, bot.port)
        await fake.wait_for(lambda: channel.messages)
        await bot.stop(signal.SIGKILL)  # timers for 2 s, 3 s, 4 s, 6 s are pending
        await asyncio.sleep(max(0.0, 7.0 - (time.monotonic() - start)))
        assert not [m for m in channel.messages if LEVEL2 in message_text(m)]
        await bot.start()
        found = await watch(channel, 3.0, [LEVEL2, LEVEL3, NUDGE, "response target"])
        # Taken with the watch's last look: a nudge posted after it is in neither.
        nudges = {m.ts for m in channel.messages if NUDGE in message_text(m)}
    assert len(found[LEVEL2]) == 1, "".join(bot.log)
    assert len(found[LEVEL3]) == 1
    assert len(found["response target"]) == 1
    assert len(found[NUDGE]) >= 1
    assert len(found[NUDGE]) == len(nudges)


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="TEST_DATABASE_URL is not set")
async def test_two_processes_post_each_message_once(fake: FakeSlack, tmp_path: Path) -> None:
    name = f"bot_{uuid.uuid4().hex[:10]}"
    admin = Database(PG_URL, isolation_level="AUTOCOMMIT")
    async with admin.engine.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_URL.rsplit("/", 1)[0] + "/" + name
    try:
        async with bots(fake, tmp_path, url, count=2) as (first, second):
            channel, _ = await declare(fake, first.port)
            found = await watch(channel, 9.0, [LEVEL2, LEVEL3, NUDGE, "response target"])
            database = Database(url)
            query = "SELECT kind, count(*) FROM timers WHERE state = 'fired' GROUP BY kind"
            async with database.engine.connect() as connection:
                rows = (await connection.execute(text(query))).all()
            fired: dict[str, int] = {str(kind): int(n) for kind, n in rows}
            await database.dispose()
        logs = "".join(first.log + second.log)
    finally:
        async with admin.engine.connect() as connection:
            await connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        await admin.dispose()
    assert len(found[LEVEL2]) == 1
    assert len(found[LEVEL3]) == 1
    assert len(found["response target"]) == 1
    assert len(found[NUDGE]) == fired["nudge"] >= 2
    alerts = [m for m in channel.messages if "INCIDENT ALERT" in m.text]
    assert len(alerts) == 1
    assert "fired escalate:SEV1:1" in logs
