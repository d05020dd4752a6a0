"""SlackDriver against a real Bolt AsyncApp served by aiohttp, with FakeSlack behind it."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from aiohttp import web
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.devtools.driver import SlackDriver, default_payloads_dir, view_values_from
from bot.devtools.fakeslack import FakeSlack

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"

ACTIONS_MESSAGE: list[dict[str, Any]] = [
    {"type": "section", "block_id": "summary", "text": {"type": "mrkdwn", "text": "*INC-1*"}},
    {
        "type": "actions",
        "block_id": "actions",
        "elements": [
            {
                "type": "button",
                "action_id": "acknowledge",
                "text": {"type": "plain_text", "text": "I'm on it"},
                "style": "primary",
                "value": "INC-1",
            }
        ],
    },
]


def option(text: str, value: str) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": text}, "value": value}


DECLARE_MODAL: dict[str, Any] = {
    "type": "modal",
    "callback_id": "declare_incident",
    "private_metadata": "C0GENERAL",
    "title": {"type": "plain_text", "text": "Declare an incident"},
    "submit": {"type": "plain_text", "text": "Declare"},
    "blocks": [
        {
            "type": "input",
            "block_id": "title",
            "label": {"type": "plain_text", "text": "Title"},
            "element": {"type": "plain_text_input", "action_id": "value"},
        },
        {
            "type": "input",
            "block_id": "severity",
            "label": {"type": "plain_text", "text": "Severity"},
            "element": {
                "type": "static_select",
                "action_id": "value",
                "options": [option("SEV1", "sev1"), option("SEV2", "sev2")],
            },
        },
        {
            "type": "input",
            "block_id": "commander",
            "label": {"type": "plain_text", "text": "Commander"},
            "element": {"type": "users_select", "action_id": "value"},
        },
        {
            "type": "input",
            "block_id": "services",
            "label": {"type": "plain_text", "text": "Services"},
            "element": {
                "type": "multi_static_select",
                "action_id": "value",
                "options": [option("API", "api"), option("DB", "db"), option("Web", "web")],
            },
        },
        {
            "type": "input",
            "block_id": "flags",
            "optional": True,
            "label": {"type": "plain_text", "text": "Flags"},
            "element": {
                "type": "checkboxes",
                "action_id": "value",
                "options": [option("Customer facing", "customer"), option("Security", "sec")],
            },
        },
    ],
}


@dataclass
class Bolt:
    """The Bolt app under test and what its listeners saw."""

    url: str
    seen: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def record(self, kind: str, body: dict[str, Any]) -> None:
        self.seen.setdefault(kind, []).append(body)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        server.add_user("U0ALICE", "alice", "Alice")
        server.add_channel("general", members=["U0ALICE"])
        yield server


@pytest.fixture
async def bolt(fake: FakeSlack) -> AsyncIterator[Bolt]:
    app = AsyncApp(
        client=AsyncWebClient(token=fake.bot_token, base_url=fake.api_url),
        signing_secret=SECRET,
    )
    harness = Bolt(url="")

    @app.command("/incident")
    async def on_command(
        ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        harness.record("command", body)
        await ack(text=f"Declaring: {body['text']}")
        if body["text"] == "form":
            await client.views_open(trigger_id=body["trigger_id"], view=DECLARE_MODAL)
        await respond(text="follow-up", response_type="in_channel")

    @app.action("acknowledge")
    async def on_click(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        harness.record("action", body)
        await ack()
        await respond(text=f"acked by <@{body['user']['id']}>", replace_original=False)

    @app.view("declare_incident")
    async def on_submit(ack: AsyncAck, body: dict[str, Any]) -> None:
        harness.record("view", body)
        title = body["view"]["state"]["values"]["title"]["value"]["value"]
        if not title:
            await ack(response_action="errors", errors={"title": "A title is required"})
        else:
            await ack()

    @app.event("reaction_added")
    async def on_reaction(body: dict[str, Any], request: AsyncBoltRequest) -> None:
        harness.record("reaction_added", body)
        harness.record("headers", {k: v[0] for k, v in request.headers.items()})

    @app.event("app_home_opened")
    async def on_home(body: dict[str, Any]) -> None:
        harness.record("app_home_opened", body)

    runner = web.AppRunner(app.web_app(path="/slack/events"), shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    harness.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield harness
    await runner.cleanup()


@pytest.fixture
async def slack(bolt: Bolt, fake: FakeSlack) -> AsyncIterator[SlackDriver]:
    async with SlackDriver(bot_url=bolt.url + "/", signing_secret=SECRET, fake=fake) as driver:
        yield driver


# --------------------------------------------------------------------------- accepted


async def test_slash_command_is_accepted(slack: SlackDriver, bolt: Bolt, fake: FakeSlack) -> None:
    reply = await slack.command("declare db down", channel=fake.channel("general").id)
    assert reply.status == 200
    assert reply.text == "Declaring: declare db down"
    assert reply.body == "Declaring: declare db down"  # Bolt acks text as text/plain
    followups = await reply.followups()
    assert followups == [{"text": "follow-up", "response_type": "in_channel"}]

    body = bolt.seen["command"][0]
    assert body["command"] == "/incident"
    assert body["text"] == "declare db down"
    assert body["user_id"] == "U0ALICE"
    assert body["user_name"] == "alice"
    assert body["channel_id"] == fake.channel("general").id
    assert body["channel_name"] == "general"
    assert body["team_id"] == "T0FAKE"
    assert body["team_domain"] == "fake"
    assert body["api_app_id"] == fake.app_id
    assert body["is_enterprise_install"] == "false"
    assert body["response_url"] == reply.response_url
    assert body["trigger_id"] == reply.trigger_id


async def test_click_is_accepted(slack: SlackDriver, bolt: Bolt, fake: FakeSlack) -> None:
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    cid = fake.channel("general").id
    posted = await client.chat_postMessage(channel=cid, text="INC-1", blocks=ACTIONS_MESSAGE)

    reply = await slack.click("acknowledge", "INC-1", channel=cid, message_ts=posted["ts"])
    assert reply.status == 200
    assert reply.body == ""
    assert await reply.followups() == [{"text": "acked by <@U0ALICE>", "replace_original": False}]

    body = bolt.seen["action"][0]
    assert body["type"] == "block_actions"
    assert body["user"] == {
        "id": "U0ALICE",
        "username": "alice",
        "name": "alice",
        "team_id": "T0FAKE",
    }
    assert body["container"] == {
        "type": "message",
        "message_ts": posted["ts"],
        "channel_id": cid,
        "is_ephemeral": False,
    }
    assert body["channel"] == {"id": cid, "name": "general"}
    assert body["message"]["ts"] == posted["ts"]
    assert body["message"]["blocks"] == ACTIONS_MESSAGE
    assert body["response_url"] == reply.response_url
    assert body["trigger_id"] == reply.trigger_id
    [action] = body["actions"]
    assert action["action_id"] == "acknowledge"
    assert action["block_id"] == "actions"
    assert action["value"] == "INC-1"
    assert action["type"] == "button"
    assert action["text"] == {"type": "plain_text", "text": "I'm on it"}  # as on the message
    assert action["style"] == "primary"
    assert float(action["action_ts"]) > 0


async def test_modal_opened_from_command_then_submitted(
    slack: SlackDriver, bolt: Bolt, fake: FakeSlack
) -> None:
    reply = await slack.command("form")
    await reply.followups()
    view = await fake.wait_for(lambda: fake.views[-1] if fake.views else None)
    assert view["callback_id"] == "declare_incident"

    empty = view_values_from(view, {})
    response = await slack.submit("declare_incident", empty)
    assert response.status_code == 200
    assert response.json() == {
        "response_action": "errors",
        "errors": {"title": "A title is required"},
    }

    answers: dict[str, object] = {
        "title": "DB down",
        "severity": "sev1",
        "commander": "U0ALICE",
        "services": ["api", "db"],
        "flags": ["customer"],
    }
    response = await slack.submit("declare_incident", view_values_from(view, answers))
    assert response.status_code == 200
    assert response.text == ""

    body = bolt.seen["view"][-1]
    assert body["type"] == "view_submission"
    assert body["user"]["id"] == "U0ALICE"
    assert body["view"]["id"] == view["id"]
    assert body["view"]["private_metadata"] == "C0GENERAL"
    values = body["view"]["state"]["values"]
    assert values["title"]["value"] == {"type": "plain_text_input", "value": "DB down"}
    assert values["severity"]["value"]["selected_option"]["value"] == "sev1"
    assert values["commander"]["value"] == {"type": "users_select", "selected_user": "U0ALICE"}
    assert [o["value"] for o in values["services"]["value"]["selected_options"]] == ["api", "db"]
    assert values["flags"]["value"]["selected_options"] == [option("Customer facing", "customer")]


async def test_events_are_accepted(slack: SlackDriver, bolt: Bolt, fake: FakeSlack) -> None:
    cid = fake.channel("general").id
    response = await slack.reaction_added("eyes", channel=cid, ts="1763816400.000100")
    assert response.status_code == 200
    seen = await fake.wait_for(lambda: bolt.seen.get("reaction_added"))
    envelope = seen[0]
    assert envelope["type"] == "event_callback"
    assert envelope["event"]["reaction"] == "eyes"
    assert envelope["event"]["item"] == {
        "type": "message",
        "channel": cid,
        "ts": "1763816400.000100",
    }
    assert envelope["authorizations"][0]["user_id"] == "U0BOT"
    assert envelope["event_id"].startswith("Ev")

    event = dict(envelope["event"])
    response = await slack.event(event, event_id="Ev0SAME", retry_num=1)
    assert response.status_code == 200
    await fake.wait_for(lambda: len(bolt.seen["reaction_added"]) == 2)
    assert bolt.seen["reaction_added"][1]["event_id"] == "Ev0SAME"
    headers = bolt.seen["headers"][1]
    assert headers["x-slack-retry-num"] == "1"
    assert headers["x-slack-retry-reason"] == "http_timeout"

    response = await slack.app_home_opened(user="U0ALICE")
    assert response.status_code == 200
    home = await fake.wait_for(lambda: bolt.seen.get("app_home_opened"))
    assert home[0]["event"]["tab"] == "home"
    assert home[0]["event"]["user"] == "U0ALICE"


# --------------------------------------------------------------------------- rejected


async def test_forged_signature_is_rejected(slack: SlackDriver, bolt: Bolt) -> None:
    body = urlencode({"command": "/incident", "text": "forged", "user_id": "U0EVE"})
    response = await slack.post_raw(
        body, content_type="application/x-www-form-urlencoded", signature="v0=" + "0" * 64
    )
    assert response.status_code == 401
    other = SlackDriver(bot_url=bolt.url, signing_secret="not-the-secret", fake=slack.fake)
    async with other:
        assert (await other.command("wrong secret")).status == 401
    assert "command" not in bolt.seen


async def test_stale_timestamp_is_rejected(slack: SlackDriver, bolt: Bolt, fake: FakeSlack) -> None:
    url = fake.new_response_url()
    fields = {"command": "/incident", "text": "replayed", "user_id": "U0EVE", "response_url": url}
    body = urlencode(fields)
    stale = int(time.time()) - 5 * 60 - 5
    response = await slack.post_raw(
        body, content_type="application/x-www-form-urlencoded", timestamp=stale
    )
    assert response.status_code == 401
    fresh = await slack.post_raw(body, content_type="application/x-www-form-urlencoded")
    assert fresh.status_code == 200
    assert [c["text"] for c in bolt.seen["command"]] == ["replayed"]
    await fake.wait_for(lambda: fake.responses[url])


async def test_post_raw_sends_exactly_what_slack_sends(slack: SlackDriver) -> None:
    captured: list[tuple[dict[str, str], bytes]] = []

    async def capture(request: web.Request) -> web.Response:
        captured.append((dict(request.headers), await request.read()))
        return web.Response(text="")

    app = web.Application()
    app.router.add_post("/slack/events", capture)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with SlackDriver(bot_url=url, signing_secret=SECRET, fake=slack.fake) as driver:
            stale = int(time.time()) - 600
            await driver.post_raw("a=1&b=%2F", content_type="text/x", timestamp=stale)
            await driver.event({"type": "app_mention", "text": "hi"}, retry_num=2)
    finally:
        await runner.cleanup()

    headers, body = captured[0]
    assert body == b"a=1&b=%2F"
    assert headers["Content-Type"] == "text/x"
    assert headers["X-Slack-Request-Timestamp"] == str(stale)
    verifier = SignatureVerifier(SECRET, clock=_FrozenClock(stale))
    assert verifier.is_valid_request(body, headers)  # a correctly signed, if stale, request

    headers, body = captured[1]
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Slack-Retry-Num"] == "2"
    assert headers["X-Slack-Retry-Reason"] == "http_timeout"
    envelope = json.loads(body)
    assert envelope["event"]["type"] == "app_mention"
    assert "event_ts" in envelope["event"]
    assert SignatureVerifier(SECRET).is_valid_request(body, headers)


def test_sign_matches_slack_algorithm(slack: SlackDriver) -> None:
    ts = 1_763_816_400
    body = "token=x&text=hello"
    signature = slack.sign(body, ts)
    assert signature.startswith("v0=")
    verifier = SignatureVerifier(SECRET, clock=_FrozenClock(ts))
    assert verifier.is_valid(body=body, timestamp=str(ts), signature=signature)
    assert not verifier.is_valid(body=body + "&x=1", timestamp=str(ts), signature=signature)


class _FrozenClock(Clock):
    def __init__(self, now: int) -> None:
        self._now = now

    def now(self) -> float:
        return float(self._now)


# --------------------------------------------------------------------------- helpers & fixtures


def test_view_values_from_shapes() -> None:
    view: dict[str, Any] = {
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": "ignored"}},
            *DECLARE_MODAL["blocks"],
            {
                "type": "input",
                "block_id": "when",
                "label": {"type": "plain_text", "text": "When"},
                "element": {"type": "datepicker", "action_id": "date"},
            },
        ]
    }
    values = view_values_from(view, {"severity": "sev2", "when": "2025-11-22"})
    assert values == {
        "title": {"value": {"type": "plain_text_input", "value": None}},
        "severity": {"value": {"type": "static_select", "selected_option": option("SEV2", "sev2")}},
        "commander": {"value": {"type": "users_select", "selected_user": None}},
        "services": {"value": {"type": "multi_static_select", "selected_options": []}},
        "flags": {"value": {"type": "checkboxes", "selected_options": []}},
        "when": {"date": {"type": "datepicker", "selected_date": "2025-11-22"}},
    }
    with pytest.raises(ValueError, match="not an option"):
        view_values_from(view, {"severity": "sev9"})
    with pytest.raises(ValueError, match="unknown input blocks"):
        view_values_from(view, {"titel": "typo"})


def test_payload_fixtures_have_slack_shapes() -> None:
    root: Path = default_payloads_dir()
    slash = dict(parse_qsl((root / "slash_command.txt").read_text().strip()))
    for name in (
        "token",
        "team_id",
        "team_domain",
        "channel_id",
        "channel_name",
        "user_id",
        "user_name",
        "command",
        "text",
        "api_app_id",
        "is_enterprise_install",
        "response_url",
        "trigger_id",
    ):
        assert name in slash, name
    actions = json.loads((root / "block_actions.json").read_text())
    assert set(actions["container"]) == {"type", "message_ts", "channel_id", "is_ephemeral"}
    assert {"action_id", "block_id", "value", "type", "action_ts"} <= set(actions["actions"][0])
    submission = json.loads((root / "view_submission.json").read_text())
    assert {"id", "callback_id", "private_metadata", "state"} <= set(submission["view"])
    for name in ("reaction_added.json", "app_home_opened.json"):
        envelope = json.loads((root / name).read_text())
        assert envelope["type"] == "event_callback"
        assert {"token", "team_id", "api_app_id", "event", "event_id", "event_time"} <= set(
            envelope
        )
        assert envelope["authorizations"][0]["is_bot"] is True
