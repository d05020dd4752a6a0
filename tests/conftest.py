"""Fixtures: the fake Slack server, a database (SQLite, and PostgreSQL when configured),
and the real bot serving HTTP on a free port, with a fake clock."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import text

from bot.clock import FakeClock
from bot.config import Settings
from bot.devtools.driver import SlackDriver
from bot.devtools.fakepagerduty import FakePagerDuty
from bot.devtools.fakeslack import FakeSlack
from bot.domain.policy import Policy, default_policy
from bot.runtime import Runtime
from bot.store.db import Database
from tests.harness import ALICE, BOB, CAROL, SIGNING_SECRET, Slack

PG_URL = os.environ.get("TEST_DATABASE_URL", "")


def _postgres_param() -> object:
    if PG_URL:
        return pytest.param("postgres", marks=pytest.mark.postgres)
    if os.environ.get("CI"):
        # CI provides PostgreSQL; skipping there would hide a broken half of the store.
        raise RuntimeError("CI is set but TEST_DATABASE_URL is not: PostgreSQL tests must run")
    return pytest.param(
        "postgres",
        marks=[pytest.mark.postgres, pytest.mark.skip(reason="TEST_DATABASE_URL is not set")],
    )


@pytest.fixture(params=["sqlite", _postgres_param()])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Database]:
    """A migrated, empty database: a temp SQLite file, or a private PostgreSQL schema."""
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("db") / "incidents.db"
        db = Database(f"sqlite+aiosqlite:///{path}")
        await db.migrate()
        yield db
        await db.dispose()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = Database(PG_URL)
    async with admin.transaction() as connection:
        await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    db = Database(PG_URL, connect_args={"server_settings": {"search_path": schema}})
    await db.migrate()
    try:
        yield db
    finally:
        await db.dispose()
        async with admin.transaction() as connection:
            await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        server.add_user(ALICE, "alice", "Alice Ops")
        server.add_user(BOB, "bob", "Bob Oncall")
        server.add_user(CAROL, "carol", "Carol Comms")
        yield server


@pytest.fixture
async def pagerduty() -> AsyncIterator[FakePagerDuty]:
    async with FakePagerDuty() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def policy() -> Policy:
    return default_policy()


def settings_for(fake: FakeSlack, database_url: str, **extra: object) -> Settings:
    return Settings(
        _env_file=None,
        slack_bot_token=fake.bot_token,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=fake.api_url,
        database_url=database_url,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def bot_settings() -> dict[str, object]:
    """More settings for the bot of `slack` (a test module overrides it: SMTP_URL…)."""
    return {}


@asynccontextmanager
async def serving(
    fake: FakeSlack,
    database: Database,
    clock: FakeClock,
    policy: Policy,
    pagerduty: FakePagerDuty,
    **settings: object,
) -> AsyncIterator[Slack]:
    """The bot serving HTTP against the fake Slack (with #general and #incidents); its
    worker is run by `slack.settle()`."""
    general = fake.add_channel("general", members=[ALICE, BOB, CAROL])
    fake.add_channel("incidents", members=[ALICE, BOB, CAROL], bot_is_member=False)
    runtime = await Runtime.create(
        settings_for(fake, database.url, pagerduty_events_url=pagerduty.url, **settings),
        clock=clock,
        policy=policy,
        database=database,
    )
    try:
        port = await runtime.start(host="127.0.0.1", port=0, worker=False)
        async with SlackDriver(
            bot_url=f"http://127.0.0.1:{port}", signing_secret=SIGNING_SECRET, fake=fake
        ) as driver:
            yield Slack(
                fake=fake,
                driver=driver,
                bot=runtime,
                clock=clock,
                general=general,
                pagerduty=pagerduty,
                bot_url=f"http://127.0.0.1:{port}",
            )
    finally:
        await runtime.close()


@pytest.fixture
async def slack(
    fake: FakeSlack,
    database: Database,
    clock: FakeClock,
    policy: Policy,
    pagerduty: FakePagerDuty,
    bot_settings: dict[str, object],
) -> AsyncIterator[Slack]:
    """The bot serving HTTP against the fake Slack; its worker is run by `slack.settle()`."""
    async with serving(fake, database, clock, policy, pagerduty, **bot_settings) as bot:
        yield bot


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Slack or bot settings in the environment (the developer's shell may have some)."""
    for name in list(os.environ):
        if name.startswith("SLACK_") or name in {
            "DATABASE_URL",
            "PORT",
            "POLICY_FILE",
            "LOG_LEVEL",
            "LOG_FORMAT",
            "METRICS_TOKEN",
            "ALERTS_TOKEN",
            "PLAYBOOKS_DIR",
        }:
            monkeypatch.delenv(name, raising=False)
