"""`GET /metrics` as Prometheus reads it: every scrape parsed by prometheus_client's own
text parser, never by looking for strings."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bot.clock import FakeClock
from bot.devtools.fakeslack import FakeSlack
from bot.domain.policy import Policy
from bot.metrics import Metrics, call_outcome
from bot.runtime import Runtime
from bot.slack.blocks import Modal
from bot.slack.server import request_kind
from bot.store.db import Database
from tests.conftest import settings_for
from tests.harness import ALICE, BOB, Slack

TOKEN = "metrics-token-5d1f9c2e7a"


async def scrape(slack: Slack, **headers: str) -> httpx.Response:
    base = slack.driver.events_url.rsplit("/slack/", 1)[0]
    return await slack.driver._http.get(f"{base}/metrics", headers=headers)


def families(text: str) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(found: dict[str, Metric], sample: str, **labels: str) -> float:
    """The value of the one sample named `sample` whose labels include `labels`."""
    for family in found.values():
        for each in family.samples:
            if each.name == sample and labels.items() <= each.labels.items():
                return float(each.value)
    raise AssertionError(f"no sample {sample} {labels}")


async def test_metrics_parse_with_every_series(slack: Slack) -> None:
    channel = await slack.declare("sev2 search slow")
    await slack.click("incident_ack", slack.alert(channel), channel, user=BOB)
    await slack.command("drill sev1 practice run")  # drills stay out of the figures

    response = await scrape(slack)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    found = families(response.text)

    kinds = {name: family.type for name, family in found.items()}
    assert kinds["incident_bot_open_incidents"] == "gauge"
    assert kinds["incident_bot_incidents_declared"] == "counter"
    assert kinds["incident_bot_incidents_resolved"] == "counter"
    assert kinds["incident_bot_time_to_acknowledge_seconds"] == "histogram"
    assert kinds["incident_bot_nudges"] == "counter"
    assert kinds["incident_bot_escalations"] == "counter"
    for gauge in (
        "incident_bot_slack_jobs_pending",
        "incident_bot_jobs_pending",
        "incident_bot_oldest_pending_job_seconds",
        "incident_bot_timers_pending",
    ):
        assert kinds[gauge] == "gauge", gauge
    assert kinds["incident_bot_slack_api_calls"] == "counter"
    assert kinds["incident_bot_slack_request_duration_seconds"] == "histogram"

    assert value(found, "incident_bot_open_incidents", severity="SEV2") == 1
    assert value(found, "incident_bot_open_incidents", severity="SEV1") == 0, "a drill"
    assert value(found, "incident_bot_incidents_declared_total", severity="SEV1") == 0
    assert value(found, "incident_bot_incidents_declared_total", severity="SEV2") == 1
    assert value(found, "incident_bot_time_to_acknowledge_seconds_count") == 1
    assert value(found, "incident_bot_time_to_acknowledge_seconds_bucket", le="+Inf") == 1
    assert value(found, "incident_bot_jobs_pending") == 0
    assert value(found, "incident_bot_slack_jobs_pending") == 0
    assert value(found, "incident_bot_timers_pending") > 0, "the clocks of the open incident"

    # the declaration's Slack calls, made by the worker's client
    for method in ("conversations.create", "chat.postMessage"):
        calls = value(found, "incident_bot_slack_api_calls_total", method=method, outcome="ok")
        assert calls >= 1, method
    # the command and the click, timed by kind
    duration = "incident_bot_slack_request_duration_seconds_count"
    assert value(found, duration, kind="command") >= 2
    assert value(found, duration, kind="action") == 1
    assert value(found, duration, kind="view") == 0


async def test_a_listeners_calls_and_forms_and_events_are_counted(slack: Slack) -> None:
    """Bolt gives each listener a client of its own: its calls are counted all the same."""
    await slack.command("")  # the declare form: views.open by the listener's client
    await slack.driver.event({"type": "member_joined_channel", "user": BOB, "channel": "C1"})
    await slack.submit_modal(Modal.DECLARE, {"severity": "SEV1", "title": "   "})  # refused

    found = families((await scrape(slack)).text)
    opened = value(found, "incident_bot_slack_api_calls_total", method="views.open", outcome="ok")
    assert opened == 1
    duration = "incident_bot_slack_request_duration_seconds_count"
    assert value(found, duration, kind="event") == 1
    assert value(found, duration, kind="view") == 1


async def test_label_values_round_trip_quotes_backslashes_and_newlines(slack: Slack) -> None:
    weird = 'we"ird \\ err\nor'
    slack.fake.error("users.info", weird)
    with pytest.raises(SlackApiError):
        await slack.bot.inline_client.users_info(user=ALICE)
    slack.fake.fail("users.info", status=503, times=3)  # the inline client tries 3 times
    with pytest.raises(SlackApiError):
        await slack.bot.inline_client.users_info(user=ALICE)
    slack.fake.lose_answer("users.info", times=3)  # aiohttp itself re-sends some GETs
    with contextlib.suppress(Exception):
        await slack.bot.inline_client.users_info(user=ALICE)

    text = (await scrape(slack)).text
    assert 'outcome="we\\"ird \\\\ err\\nor"' in text, "escaped as the text format says"
    found = families(text)
    calls = "incident_bot_slack_api_calls_total"
    assert value(found, calls, method="users.info", outcome=weird) == 1
    assert value(found, calls, method="users.info", outcome="http_503") == 3
    assert value(found, calls, method="users.info", outcome="exception") >= 1


async def test_scrapes_of_several_bots_in_one_process_do_not_mix(slack: Slack) -> None:
    """Each bot has its own registry: another one neither collides nor shows up here."""
    other = Metrics(store=slack.bot.store, policy=slack.bot.policy, clock=slack.clock)
    other.slack_call("chat.postMessage", "from_another_bot")
    other.observe_request("command", 0.5)
    found = families((await scrape(slack)).text)
    with pytest.raises(AssertionError):
        value(found, "incident_bot_slack_api_calls_total", outcome="from_another_bot")
    assert "from_another_bot" in await other.render()


@pytest.fixture
async def guarded(
    fake: FakeSlack, database: Database, clock: FakeClock, policy: Policy
) -> AsyncIterator[str]:
    """A bot whose /metrics needs METRICS_TOKEN; yields its base URL."""
    runtime = await Runtime.create(
        settings_for(fake, database.url, metrics_token=TOKEN),
        clock=clock,
        policy=policy,
        database=database,
    )
    assert TOKEN not in repr(runtime.settings)
    port = await runtime.start(host="127.0.0.1", port=0, worker=False)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runtime.close()


async def test_a_token_guards_metrics_and_is_never_logged(
    guarded: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(timeout=10) as http:
        refused = [
            await http.get(f"{guarded}/metrics", headers=headers)
            for headers in (
                {},
                {"Authorization": "Bearer wrong-token"},
                {"Authorization": f"Basic {TOKEN}"},
                {"Authorization": f"Bearer {TOKEN}x"},
                {"Authorization": TOKEN},
            )
        ]
        allowed = await http.get(f"{guarded}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        health = await http.get(f"{guarded}/healthz")
    assert [r.status_code for r in refused] == [401] * 5
    assert refused[0].headers["www-authenticate"].startswith("Bearer")
    assert "incident_bot" not in refused[0].text
    assert allowed.status_code == 200
    assert "incident_bot_open_incidents" in families(allowed.text)
    assert health.status_code == 200, "/healthz stays open"
    assert TOKEN not in caplog.text
    assert all(TOKEN not in record.getMessage() for record in caplog.records)


async def test_without_a_token_metrics_are_open(slack: Slack) -> None:
    response = await scrape(slack, Authorization="Bearer anything")
    assert response.status_code == 200


def test_requests_are_classified_by_their_body() -> None:
    assert request_kind({"command": "/incident", "text": "sev1 x"}) == "command"
    assert request_kind({"type": "block_actions", "actions": []}) == "action"
    assert request_kind({"type": "view_submission"}) == "view"
    assert request_kind({"type": "view_closed"}) == "view"
    assert request_kind({"type": "event_callback", "event": {}}) == "event"
    assert request_kind({"type": "shortcut"}) == "other"
    assert request_kind({"type": "url_verification"}) == "other"


def test_call_outcomes() -> None:
    def answer(status: int, body: dict[str, object] | None) -> HttpResponse:
        return HttpResponse(status_code=status, headers={}, body=body)

    assert call_outcome(answer(200, {"ok": True}), None) == "ok"
    assert call_outcome(answer(200, {"ok": False, "error": "not_in_channel"}), None) == (
        "not_in_channel"
    )
    assert call_outcome(answer(429, {"ok": False, "error": "ratelimited"}), None) == "http_429"
    assert call_outcome(answer(200, None), None) == "invalid_response"
    assert call_outcome(None, TimeoutError()) == "exception"
    assert len(call_outcome(answer(200, {"ok": False, "error": "x" * 500}), None)) == 64


async def test_only_web_api_calls_are_counted(slack: Slack) -> None:
    """A file's upload URL is not a Web API method: it would be a label per upload."""
    metrics = Metrics(store=slack.bot.store, policy=slack.bot.policy, clock=slack.clock)
    meter = metrics.slack_meter("https://slack.com/api/")
    for url in ("https://files.slack.com/upload/v1/abc", "https://slack.com/api/chat.update"):
        request = HttpRequest(method="POST", url=url, headers={})
        retry = await meter.can_retry_async(
            state=RetryState(),
            request=request,
            response=HttpResponse(status_code=200, headers={}, body={"ok": True}),
        )
        assert retry is False, "the meter never retries"
    found = families(await metrics.render())
    assert value(found, "incident_bot_slack_api_calls_total", method="chat.update") == 1
    methods = {
        s.labels.get("method")
        for s in found["incident_bot_slack_api_calls"].samples
        if s.name.endswith("_total")
    }
    assert methods == {"chat.update"}
