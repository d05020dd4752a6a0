"""Faults: what the bot does when Slack loses an answer, the database goes away, a claim is
taken over, a timer cannot fire, or a request is garbage. Each test counts what a person
would see (channels, messages, pages) against what was asked: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select

from bot.domain.policy import Policy, default_policy, parse_policy
from bot.service.ports import JobState
from bot.slack.blocks import Modal
from bot.store.repository import SqlStore
from bot.store.tables import incidents, slack_jobs, timers
from bot.worker import Worker
from tests.harness import Slack, message_text, post_as


def incident_channels(slack: Slack) -> list[str]:
    return sorted(c.name for c in slack.fake.channels.values() if c.name.startswith("inc-"))


async def run_retries(slack: Slack, rounds: int, *, step: float = 301) -> None:
    """Let the worker retry `rounds` times, moving the fake clock past each backoff."""
    for _ in range(rounds):
        slack.clock.advance(timedelta(seconds=step))
        await slack.settle()


# ---- answers lost: settled by looking --------------------------------------------------------
async def test_lost_answer_on_channel_creation_adopts_the_channel(slack: Slack) -> None:
    slack.fake.lose_answer("conversations.create")
    await slack.command("sev2 search slow")
    await run_retries(slack, 3, step=5)
    assert incident_channels(slack) == ["inc-20261122-001-search-slow"]
    channel = slack.incident_channel()
    record = await slack.record(channel)
    assert record.slack.channel_id == channel.id
    assert len([t for t in slack.texts(channel) if "INCIDENT ALERT" in t]) == 1


async def test_lost_answer_on_a_post_posts_once(slack: Slack) -> None:
    slack.fake.lose_answer("chat.postMessage")
    await slack.command("sev2 search slow")
    await run_retries(slack, 3, step=5)
    channel = slack.incident_channel()
    assert len([t for t in slack.texts(channel) if "INCIDENT ALERT" in t]) == 1


async def test_lost_answers_on_the_upload_upload_the_post_mortem_once(slack: Slack) -> None:
    channel = await slack.declare("sev2 search slow")
    for method in ("files.getUploadURLExternal", "files.completeUploadExternal"):
        slack.fake.lose_answer(method)
        await slack.command("postmortem", channel=channel.id)
        await run_retries(slack, 3, step=5)
    shared = [f for f in slack.fake.files.values() if channel.id in f.channels]
    assert len(shared) == 2, "one draft per request, none doubled"
    posted = [m for m in channel.messages if m.files]
    assert len(posted) == 2
    assert {f.filename for f in shared} == {"INC-20261122-001-postmortem.md"}


async def test_a_taken_name_made_by_someone_else_gets_a_suffix(slack: Slack) -> None:
    slack.fake.add_channel("inc-20261122-001-search-slow")
    await slack.command("sev2 search slow")
    assert "inc-20261122-001-search-slow-2" in incident_channels(slack)


# ---- Slack away for long: retried, never abandoned ---------------------------------------------
async def test_a_long_slack_outage_delays_but_never_drops(slack: Slack) -> None:
    slack.fake.fail("conversations.create", status=503, times=25)
    await slack.command("sev2 search slow")
    await run_retries(slack, 30)
    assert incident_channels(slack) == ["inc-20261122-001-search-slow"]
    channel = slack.incident_channel()
    assert any("INCIDENT ALERT" in t for t in slack.texts(channel))


async def test_rate_limits_do_not_spend_attempts(slack: Slack) -> None:
    slack.fake.rate_limit("conversations.create", retry_after=1, times=20)
    await slack.command("sev2 search slow")
    await run_retries(slack, 25, step=2)
    assert incident_channels(slack) == ["inc-20261122-001-search-slow"]
    async with slack.bot.database.transaction() as c:
        attempts = (
            await c.execute(
                select(slack_jobs.c.attempts).where(slack_jobs.c.kind == "create_channel")
            )
        ).scalar_one()
    assert attempts == 1


async def test_a_refused_channel_ends_the_work_that_needs_it(slack: Slack) -> None:
    slack.fake.error("conversations.create", "restricted_action")
    await slack.command("sev2 search slow")
    await run_retries(slack, 2, step=5)
    async with slack.bot.store.transaction() as tx:
        assert await tx.pending_job_count() == 0, "nothing spins on a channel that cannot be"


# ---- claims are fenced -----------------------------------------------------------------------
async def test_a_worker_whose_claim_was_taken_over_records_nothing(slack: Slack) -> None:
    await slack.command("sev2 search slow", settle=False)
    now = slack.clock.now()
    async with slack.bot.store.transaction() as tx:
        (mine,) = await tx.claim_jobs(now=now, worker="A", limit=1, lease_seconds=10)
    later = now + timedelta(seconds=11)
    async with slack.bot.store.transaction() as tx:
        (theirs,) = await tx.claim_jobs(now=later, worker="B", limit=1, lease_seconds=10)
        assert theirs.id == mine.id
        assert not await tx.finish_job(mine.id, worker="A", now=later, result={"by": "A"})
        assert not await tx.save_job_result(mine.id, {"by": "A"}, worker="A")
        assert await tx.finish_job(mine.id, worker="B", now=later, result={"by": "B"})
    async with slack.bot.database.transaction() as c:
        row = (await c.execute(select(slack_jobs).where(slack_jobs.c.id == mine.id))).one()
    assert row.state == JobState.DONE
    assert row.result == {"by": "B"}


async def test_a_worker_never_claims_again_what_it_is_still_running(slack: Slack) -> None:
    """The worker claims new jobs while others of its own still run: those are not
    "abandoned" to it, even once their lease ran out or (PostgreSQL) when its liveness
    lock is not held — running them twice would post twice. Another worker may take
    them over once they are abandoned, and so may this one once it no longer runs them."""
    await slack.command("sev2 search slow", settle=False)
    now = slack.clock.now()
    async with slack.bot.store.transaction() as tx:
        (mine,) = await tx.claim_jobs(now=now, worker="A", limit=1, lease_seconds=10)
    later = now + timedelta(seconds=11)
    async with slack.bot.store.transaction() as tx:
        again = await tx.claim_jobs(
            now=later, worker="A", limit=10, lease_seconds=10, running=[mine.id]
        )
        assert mine.id not in [job.id for job in again]
        theirs = await tx.claim_jobs(now=later, worker="B", limit=10, lease_seconds=10)
        assert mine.id in [job.id for job in theirs]
    async with slack.bot.store.transaction() as tx:  # B holds it and runs it no more
        (back,) = await tx.claim_jobs(now=later, worker="B", limit=1, lease_seconds=10)
        assert back.id == mine.id


# ---- one bad timer stays one failure ---------------------------------------------------------
def policy_without_sev1() -> Policy:
    data = default_policy().model_dump(mode="json")
    data["severities"] = data["severities"][1:]
    return parse_policy(data)


async def test_a_timer_that_cannot_fire_does_not_stall_the_others(slack: Slack) -> None:
    big = await slack.declare("sev1 payment down")
    small = await slack.declare("sev2 search slow")
    # The policy loses SEV1 (an edited policy file): SEV1's timers cannot fire any more.
    slack.bot.service.policy = policy_without_sev1()
    slack.clock.advance(timedelta(minutes=16))
    await slack.settle()
    assert any("response target" in t for t in slack.texts(small)), "SEV2's clock fired"
    big_id = (await slack.record(big)).incident.id
    async with slack.bot.database.transaction() as c:
        rows = (await c.execute(select(timers).where(timers.c.incident_id == big_id))).all()
    failed = [r for r in rows if r.state == "failed"]
    assert failed
    assert all("SEV1" in (r.last_error or "") for r in failed)
    assert not [r for r in rows if r.state == "firing"], "nothing left claimed"
    notices = [t for t in slack.texts(big) if "could not run" in t]
    assert len(notices) == len(failed), "each failed clock is said once in its channel"
    assert "SEV1" in notices[0], notices[0]
    assert not [t for t in slack.texts(small) if "could not run" in t]


# ---- the database goes away ------------------------------------------------------------------
class FlakyStore:
    """A store that fails while `down` is set, as a database that went away does."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.down = False

    @asynccontextmanager
    async def transaction(
        self, *, read_only: bool = False, autocommit: bool = False
    ) -> AsyncIterator[Any]:
        if self.down:
            raise ConnectionRefusedError("database unreachable")
        async with self.store.transaction(read_only=read_only, autocommit=autocommit) as tx:
            yield tx

    @asynccontextmanager
    async def declaring(self, day: date) -> AsyncIterator[Any]:
        if self.down:
            raise ConnectionRefusedError("database unreachable")
        async with self.store.declaring(day) as taken:
            yield taken

    async def ping(self) -> bool:
        return not self.down and await self.store.ping()


async def test_the_worker_outlives_a_database_outage(slack: Slack) -> None:
    flaky = FlakyStore(slack.bot.store)
    worker = Worker(store=flaky, run_job=slack.bot.executor, clock=slack.clock, poll_seconds=0.02)
    flaky.down = True
    task = asyncio.create_task(worker.run_forever())
    try:
        await asyncio.sleep(0.3)
        assert not task.done(), "the worker is still there"
        flaky.down = False
        await slack.command("sev2 search slow", settle=False)
        worker.wake()
        await slack.fake.wait_for(
            lambda: any(c.name.startswith("inc-") for c in slack.fake.channels.values()),
            timeout=10,
        )
        assert worker.alive()
    finally:
        worker.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)


async def test_work_whose_outcome_was_lost_with_the_database_runs_again_at_once(
    slack: Slack,
) -> None:
    """The database goes away while a claimed job talks to Slack, so its outcome cannot be
    recorded. When the database is back, the same worker runs it again at once (and finds
    what it already did): not two minutes later, when its lease would have run out, which
    is all a worker alive and holding its liveness lock would otherwise wait for."""
    flaky = FlakyStore(slack.bot.store)
    worker = Worker(store=flaky, run_job=slack.bot.executor, clock=slack.clock, poll_seconds=0.02)
    await slack.command("sev2 search slow", settle=False)
    slack.fake.latency("conversations.create", 0.3)

    async def outage() -> None:
        await slack.fake.wait_for(lambda: slack.fake.calls_to("conversations.create"), timeout=2)
        flaky.down = True  # while the channel is being created
        await asyncio.sleep(0.5)
        flaky.down = False

    going = asyncio.create_task(outage())
    task = asyncio.create_task(worker.run_forever())
    try:
        await going
        # The fake clock does not move: a lease could not run out.
        await slack.fake.wait_for(
            lambda: any(
                "INCIDENT ALERT" in m.text
                for c in slack.fake.channels.values()
                if c.name.startswith("inc-")
                for m in c.messages
            ),
            timeout=10,
        )
    finally:
        worker.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)
    assert len([c for c in slack.fake.channels.values() if c.name.startswith("inc-")]) == 1


# ---- garbage in ------------------------------------------------------------------------------
async def test_unsigned_garbage_gets_401_and_signed_garbage_400(slack: Slack) -> None:
    bad = await slack.driver.post_raw(
        "payload=%7Bnot-json",
        content_type="application/x-www-form-urlencoded",
        signature="v0=deadbeef",
    )
    assert bad.status_code == 401
    stale = await slack.driver.post_raw(
        "payload=%7B%7D", content_type="application/x-www-form-urlencoded", timestamp=1
    )
    assert stale.status_code == 401
    nonsense = await slack.driver.post_raw(
        "x",
        content_type="application/x-www-form-urlencoded",
        headers={"X-Slack-Request-Timestamp": "soon"},
    )
    assert nonsense.status_code == 401
    signed = await slack.driver.post_raw(
        "payload=%7Bnot-json", content_type="application/x-www-form-urlencoded"
    )
    assert signed.status_code == 400


async def test_forged_ids_in_buttons_and_forms_are_refused_politely(slack: Slack) -> None:
    """A NUL in an id makes PostgreSQL refuse the query: ids are checked before any look-up."""
    channel = await slack.declare("sev2 search slow")
    alert = slack.alert(channel)
    for forged in ("INC-20261122-001\x00", "INC\x00|1", "../INC-20261122-001"):
        reply = await slack.driver.click(
            "incident_ack", forged, channel=channel.id, message_ts=alert.ts
        )
        assert reply.status == 200
        said = str((await reply.followups())[-1]["text"])
        assert "There is no incident" in said, said
        assert "\x00" not in said
    answer = await slack.driver.submit(
        Modal.UPDATE,
        {"text": {"text": {"type": "plain_text_input", "value": "x"}}},
        private_metadata="INC-20261122-001\x00",
    )
    assert answer.status_code == 200
    assert "There is no incident" in answer.text
    record = await slack.record(channel)
    assert not record.incident.acknowledged_at, "nothing was acknowledged"


async def test_control_characters_never_reach_the_record(slack: Slack) -> None:
    channel = await slack.declare("sev2 pay\x00ment\x1b[31m down\x07")
    record = await slack.record(channel)
    assert record.incident.title == "payment[31m down"
    assert "payment[31m down" in message_text(slack.alert(channel))
    async with slack.bot.database.transaction() as c:
        title = (await c.execute(select(incidents.c.title))).scalar_one()
    assert title == "payment[31m down"


# ---- what is kept only for a while ----------------------------------------------------------
async def test_old_once_keys_are_dropped_and_recent_ones_kept(slack: Slack) -> None:
    store = slack.bot.store
    now = slack.clock.now()
    async with store.transaction() as tx:
        assert await tx.remember("view:OLD", now=now - timedelta(days=8))
        assert await tx.remember("view:NEW", now=now - timedelta(days=1))
    assert await slack.bot.worker.housekeep() == 1
    async with store.transaction() as tx:
        assert await tx.remember("view:OLD", now=now), "forgotten: it may be recorded again"
        assert not await tx.remember("view:NEW", now=now), "still remembered"


# ---- a wake-up is never lost ------------------------------------------------------------------
class CommitsWhileLooking:
    """A store on which, while the worker asks what is due next, a request commits new work
    and wakes the worker (the race between a command and the worker going to sleep)."""

    def __init__(self, store: SqlStore, worker: list[Worker]) -> None:
        self.store, self.worker = store, worker

    @asynccontextmanager
    async def transaction(
        self, *, read_only: bool = False, autocommit: bool = False
    ) -> AsyncIterator[Any]:
        async with self.store.transaction(read_only=read_only, autocommit=autocommit) as tx:
            real = tx.next_job_due

            async def next_job_due() -> Any:
                due = await real()
                self.worker[0].wake()  # committed right after the worker looked
                return due

            tx.next_job_due = next_job_due  # type: ignore[method-assign]
            yield tx

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def test_work_committed_while_the_worker_looks_wakes_it(slack: Slack) -> None:
    holder: list[Worker] = []
    store = CommitsWhileLooking(slack.bot.store, holder)
    worker = Worker(
        store=store,
        run_job=slack.bot.executor,
        clock=slack.clock,
        poll_seconds=30,
    )
    holder.append(worker)
    # Without the wake-up the worker would sleep the whole 30 s poll.
    await asyncio.wait_for(worker._sleep(), timeout=5)


async def test_a_lost_answer_on_the_pin_mark_marks_once(slack: Slack) -> None:
    channel = await slack.declare("sev2 search slow")
    message = post_as(channel, "U0CAROL", "failover started", at=slack.clock.now())
    pin = {
        "type": "reaction_added",
        "user": "U0BOB",
        "reaction": "pushpin",
        "item": {"type": "message", "channel": channel.id, "ts": message.ts},
    }
    slack.fake.lose_answer("reactions.add")
    await slack.driver.event(pin, event_id="Ev0LOST1")
    await run_retries(slack, 3, step=5)
    assert message.reactions.get("white_check_mark") == [slack.fake.bot_user_id]
    record = await slack.record(channel)
    pinned = [
        e
        for e in await slack.bot.service.timeline(record.incident.id)
        if e.kind == "message_pinned"
    ]
    assert len(pinned) == 1, "on the timeline once"
