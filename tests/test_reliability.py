"""Slack failures, crashes and concurrency: delayed, never lost, never done twice."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from urllib.parse import urlencode

from sqlalchemy import select, update

from bot.service.ports import JobKind
from bot.store.tables import incidents, slack_jobs
from tests.harness import BOB, Slack, message_text


def alerts(slack: Slack, channel_name: str) -> list[str]:
    channel = slack.fake.channel(channel_name)
    return [m.ts for m in channel.messages if "INCIDENT ALERT" in m.text]


async def test_rate_limit_is_waited_out(slack: Slack) -> None:
    slack.fake.rate_limit("chat.postMessage", retry_after=7)
    await slack.command("sev1 payment down")
    channel = slack.incident_channel()
    assert not channel.messages, "the 429 delayed the alert"
    slack.clock.advance(timedelta(seconds=6))
    await slack.settle()
    assert not channel.messages, "Retry-After is honoured"
    slack.clock.advance(timedelta(seconds=1))
    await slack.settle()
    assert len(alerts(slack, channel.name)) == 1
    assert len(alerts(slack, "incidents")) == 1


async def test_server_errors_are_retried_with_backoff(slack: Slack) -> None:
    slack.fake.fail("conversations.create", status=503, times=2)
    reply = await slack.command("sev2 search down")
    assert reply.text is not None
    assert "declared" in reply.text, "the user is told at once; Slack catches up"
    for _ in range(3):
        slack.clock.advance(timedelta(seconds=2))
        await slack.settle()
    created = [c for c in slack.fake.calls_to("conversations.create") if c.ok]
    assert len(created) == 1
    assert len(slack.fake.calls_to("conversations.create")) == 3
    assert len(alerts(slack, slack.incident_channel().name)) == 1


async def test_a_crash_after_slack_answered_does_not_post_twice(slack: Slack) -> None:
    channel = await slack.declare()
    (first,) = alerts(slack, channel.name)
    # The process died after chat.postMessage succeeded but before the ts was recorded:
    # the job is left running with an expired lease and the incident has no alert ts.
    past = slack.clock.now() - timedelta(seconds=1)
    async with slack.bot.database.transaction() as connection:
        await connection.execute(
            update(slack_jobs)
            .where(slack_jobs.c.kind == JobKind.POST_ALERT)
            .values(state="running", locked_until=past, result={})
        )
        await connection.execute(update(incidents).values(alert_ts=None))
    await slack.settle()
    assert alerts(slack, channel.name) == [first]
    async with slack.bot.database.transaction() as connection:
        ts = (await connection.execute(select(incidents.c.alert_ts))).scalar_one()
    assert ts == first


async def test_acknowledged_before_slow_slack_work(slack: Slack) -> None:
    channel = await slack.declare()
    slack.fake.latency("views.open", 1.0)
    reply = await slack.command("update", channel=channel.id, settle=False)
    assert reply.status == 200
    assert reply.body == ""
    assert not slack.fake.views, "the modal opens after the acknowledgement"
    await slack.settle()
    assert len(slack.fake.views) == 1


async def test_slack_refusing_the_channel_is_reported(slack: Slack) -> None:
    slack.fake.error("conversations.create", "restricted_action")
    reply = await slack.command("sev1 payment down")
    (told,) = await reply.followups()
    assert "Slack refused to create its channel (`restricted_action`)" in told["text"]
    assert len(await slack.bot.service.open_incidents()) == 1, "the incident is kept"


async def test_missing_announcement_channel_is_said_in_the_incident_channel(
    slack: Slack,
) -> None:
    announce = slack.fake.channel("incidents")
    del slack.fake.channels[announce.id]
    channel = await slack.declare()
    assert len(alerts(slack, channel.name)) == 1
    assert "announcement channel #incidents not found" in slack.texts(channel)[-1]


async def test_forged_and_stale_requests_get_401(slack: Slack) -> None:
    body = urlencode(
        {
            "command": "/incident",
            "text": "sev1 forged",
            "user_id": BOB,
            "channel_id": slack.general,
            "team_id": "T0FAKE",
        }
    )
    forged = await slack.driver.post_raw(
        body, content_type="application/x-www-form-urlencoded", signature="v0=" + "0" * 64
    )
    stale = await slack.driver.post_raw(
        body,
        content_type="application/x-www-form-urlencoded",
        timestamp=int(time.time()) - 6 * 60,
    )
    assert forged.status_code == 401
    assert stale.status_code == 401
    assert await slack.bot.service.open_incidents() == []


async def test_simultaneous_declarations_get_distinct_ids(slack: Slack) -> None:
    replies = await asyncio.gather(
        *(slack.command(f"sev3 flaky thing {n}", settle=False) for n in range(8))
    )
    ids = sorted(r.text.split("*")[1] for r in replies if r.text)
    assert ids == [f"INC-20261122-{n:03d}" for n in range(1, 9)]
    outcomes = await asyncio.gather(
        *(slack.bot.service.declare(severity="sev4", title=f"t{n}", by=BOB) for n in range(12))
    )
    assert len({o.incident.id for o in outcomes}) == 12


async def test_event_retries_are_answered(slack: Slack) -> None:
    event = {"type": "app_home_opened", "user": BOB, "channel": "D0BOB", "tab": "home"}
    first = await slack.driver.event(event, event_id="Ev0001")
    retried = await slack.driver.event(event, event_id="Ev0001", retry_num=1)
    assert first.status_code == 200
    assert retried.status_code == 200


async def test_the_worker_runs_by_itself(slack: Slack) -> None:
    task = asyncio.create_task(slack.bot.worker.run_forever())
    try:
        await slack.command("sev1 payment down", settle=False)
        channel = await slack.fake.wait_for(
            lambda: next(
                (
                    c
                    for c in slack.fake.channels.values()
                    if c.name.startswith("inc-") and c.messages
                ),
                None,
            ),
            timeout=5,
        )
        assert "INCIDENT ALERT - SEV1" in message_text(channel.messages[0])
    finally:
        slack.bot.worker.stop()
        await task


async def test_metrics_and_health(slack: Slack) -> None:
    await slack.declare("sev2 search slow")
    port = slack.driver.events_url.split(":")[2].split("/")[0]
    base = f"http://127.0.0.1:{port}"
    health = await slack.driver._http.get(f"{base}/healthz")
    assert health.status_code == 200
    assert json.loads(health.text)["database"] == "reachable"
    metrics = (await slack.driver._http.get(f"{base}/metrics")).text
    assert 'incident_bot_open_incidents{severity="SEV2"} 1' in metrics
    assert "\nincident_bot_slack_jobs_pending 0.0\n" in metrics  # prometheus_client: floats


async def test_unknown_events_are_answered_200(slack: Slack) -> None:
    response = await slack.driver.event(
        {"type": "member_joined_channel", "user": BOB, "channel": slack.general}
    )
    assert response.status_code == 200


async def test_follow_ups_wait_out_a_rate_limited_response_url(slack: Slack) -> None:
    channel = await slack.declare()
    slack.fake.rate_limit("response_url", retry_after=1)
    slack.fake.fail("response_url", status=503)
    reply = await slack.click("incident_ack", slack.alert(channel), channel, user=BOB)
    (told,) = await reply.followups(timeout=8)
    assert told["text"] == "👀 INC-20261122-001 acknowledged. Escalation stopped."
