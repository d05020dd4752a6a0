"""Slack in trouble during a whole incident: every write method losing its answers, a 429
storm, a burst of 5xx. Each run is the same incident (declared, paged, escalated by the
clock, acknowledged, updated, resolved, post-mortem) and must leave Slack exactly as a run
without faults does: the same channels, members, messages, direct pages and files —
nothing lost, nothing twice."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy import func, select

from bot.clock import FakeClock
from bot.devtools.driver import SlackDriver
from bot.devtools.fakepagerduty import FakePagerDuty
from bot.devtools.fakeslack import FakeSlack
from bot.domain.policy import Policy, default_policy, parse_policy
from bot.runtime import Runtime
from bot.service.ports import JobState
from bot.store.db import Database
from bot.store.tables import slack_jobs
from tests.conftest import settings_for
from tests.harness import ALICE, BOB, CAROL, SIGNING_SECRET, Slack, message_text

ON1, ON2, BOSS, SECOND = "U0ONCALL1", "U0ONCALL2", "U0BOSS", "U0SECOND"

WRITE_METHODS = [
    "conversations.create",
    "conversations.invite",
    "conversations.setTopic",
    "conversations.join",
    "conversations.open",
    "chat.postMessage",
    "chat.update",
    "files.getUploadURLExternal",
    "files.completeUploadExternal",
]

Seen = dict[str, object]


@pytest.fixture
def backend() -> str:
    """What Slack shows does not depend on the database; SQLite keeps the campaign quick."""
    return "sqlite"


@pytest.fixture
def policy() -> Policy:
    data = default_policy().model_dump(mode="json")
    sev1 = data["severities"][0]
    sev1["notify_on_declare"] = ["S0MGMT"]
    sev1["escalation"] = [
        {"after": "0s", "notify": ["S0ONCALL"]},
        {"after": "15m", "notify": [SECOND]},
        {"after": "30m", "notify": [CAROL]},
    ]
    return parse_policy(data)


async def heal(slack: Slack) -> None:
    """Let the worker retry until no Slack work is left, moving the clock to each retry's
    time as real time would pass (backoff, or Slack's Retry-After)."""
    await slack.settle()
    waiting = slack_jobs.c.state.in_([JobState.PENDING, JobState.RUNNING])
    for _ in range(200):
        now = slack.clock.now()
        async with slack.bot.database.transaction() as connection:
            left = (
                await connection.execute(
                    select(func.count()).select_from(slack_jobs).where(waiting)
                )
            ).scalar_one()
            later = (
                await connection.execute(
                    select(func.min(slack_jobs.c.run_after)).where(
                        waiting, slack_jobs.c.run_after > now
                    )
                )
            ).scalar_one()
        if not left:
            return
        slack.clock.set(later or now + timedelta(seconds=1))
        await slack.settle()
    raise AssertionError("Slack work still waiting after 200 retries")


async def journey(slack: Slack) -> None:
    """The incident, each step at a fixed time after the declaration (so faults that delay
    the work do not change what the clocks do)."""
    fake = slack.fake
    for user, name in [(ON1, "oncall1"), (ON2, "oncall2"), (BOSS, "boss"), (SECOND, "second")]:
        fake.add_user(user, name, name.title())
    fake.add_usergroup("S0ONCALL", "oncall", users=[ON1, ON2])
    fake.add_usergroup("S0MGMT", "management", users=[BOSS])
    start = slack.clock.now()

    async def at(minutes: int) -> None:
        await heal(slack)
        moment = start + timedelta(minutes=minutes)
        assert slack.clock.now() <= moment, "the faults delayed the work past the next step"
        slack.clock.set(moment)
        await slack.settle()

    await slack.command("sev1 payment down")
    await at(16)  # level 2 (15 min) has been paged; level 3 (30 min) not yet
    channel = slack.incident_channel()
    await slack.command("ack", user=BOB, channel=channel.id)
    await at(18)
    await slack.command("update card payments recovering", user=BOB, channel=channel.id)
    await at(20)
    await slack.command("resolve failover done", user=BOB, channel=channel.id)
    await at(25)


def seen(fake: FakeSlack) -> Seen:
    """What the people in the workspace see, without times and ids."""
    channels = sorted(fake.channels.values(), key=lambda c: c.name)
    return {
        "channels": [c.name for c in channels],
        "members": {c.name: sorted(c.members) for c in channels},
        "topics": {c.name: bool(c.topic) for c in channels if c.name.startswith("inc-")},
        "messages": {
            c.name: Counter(message_text(m).splitlines()[0][:40] for m in c.messages)
            for c in channels
        },
        "files": sorted(f.filename for f in fake.files.values() if f.channels),
    }


_reference: list[Seen] = []


async def reference(policy: Policy, tmp_path: Path) -> Seen:
    """The same incident on a separate bot without faults (run once per session)."""
    if not _reference:
        async with FakeSlack() as fake:
            fake.add_user(ALICE, "alice", "Alice Ops")
            fake.add_user(BOB, "bob", "Bob Oncall")
            fake.add_user(CAROL, "carol", "Carol Comms")
            general = fake.add_channel("general", members=[ALICE, BOB, CAROL])
            fake.add_channel("incidents", members=[ALICE, BOB, CAROL], bot_is_member=False)
            database = Database(f"sqlite+aiosqlite:///{tmp_path / 'reference.db'}")
            clock = FakeClock()
            runtime = await Runtime.create(
                settings_for(fake, database.url), clock=clock, policy=policy, database=database
            )
            port = await runtime.start(host="127.0.0.1", port=0, worker=False)
            try:
                async with (
                    FakePagerDuty() as pagerduty,
                    SlackDriver(
                        bot_url=f"http://127.0.0.1:{port}", signing_secret=SIGNING_SECRET, fake=fake
                    ) as driver,
                ):
                    slack = Slack(fake, driver, runtime, clock, general, pagerduty)
                    await journey(slack)
            finally:
                await runtime.close()
            _reference.append(seen(fake))
    return _reference[0]


def assert_same(faulty: Seen, clean: Seen) -> None:
    for key in clean:
        assert faulty[key] == clean[key], f"{key} differs from a run without faults"


async def test_the_reference_run_pages_posts_and_uploads(policy: Policy, tmp_path: Path) -> None:
    clean = await reference(policy, tmp_path)
    names = cast(list[str], clean["channels"])
    assert len([n for n in names if n.startswith("inc-")]) == 1
    assert clean["files"] == ["INC-20261122-001-postmortem.md"]
    direct = [n for n in names if not n.startswith(("inc-", "general", "incidents"))]
    assert len(direct) == 4, "on-call (2), management and level 2 were paged directly"


@pytest.mark.parametrize("method", WRITE_METHODS)
async def test_lost_answers_on_every_write_method(
    slack: Slack, policy: Policy, tmp_path: Path, method: str
) -> None:
    slack.fake.lose_answer(method, times=2)
    await journey(slack)
    assert_same(seen(slack.fake), await reference(policy, tmp_path))
    assert slack.fake.calls_to(method), f"{method} was called (and its answer lost)"


async def test_a_429_storm_on_every_method(slack: Slack, policy: Policy, tmp_path: Path) -> None:
    for method in [*WRITE_METHODS, "usergroups.users.list", "conversations.history"]:
        slack.fake.rate_limit(method, retry_after=1, times=3)
    await journey(slack)
    assert_same(seen(slack.fake), await reference(policy, tmp_path))


async def test_a_burst_of_server_errors_on_every_method(
    slack: Slack, policy: Policy, tmp_path: Path
) -> None:
    for method in [*WRITE_METHODS, "usergroups.users.list", "conversations.history"]:
        slack.fake.fail(method, status=503, times=3)
    await journey(slack)
    assert_same(seen(slack.fake), await reference(policy, tmp_path))
