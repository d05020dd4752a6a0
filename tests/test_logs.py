"""Logs: quiet at start-up, one JSON object per line on request, the incident named."""

from __future__ import annotations

import json
import logging

import pytest
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot import logs
from bot.devtools.fakeslack import FakeSlack


@pytest.fixture
def restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_incident(
    restore_logging: object, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup("INFO", secrets=["hunter2-secret"], fmt="json")
    log = logging.getLogger("bot.test")
    with logs.about("INC-20261122-001"):
        log.warning("paging failed for token xoxb-123-abc and hunter2-secret")
    log.info("no incident here")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["incident"] == "INC-20261122-001"
    assert lines[0]["level"] == "WARNING"
    assert "xoxb-123" not in lines[0]["message"]
    assert "hunter2-secret" not in lines[0]["message"]
    assert "incident" not in lines[1]


def test_text_lines_name_the_incident_once(
    restore_logging: object, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup("INFO", secrets=[], fmt="text")
    log = logging.getLogger("bot.test")
    with logs.about("INC-20261122-002"):
        log.info("invited 3 people")
        log.info("declared INC-20261122-002 (SEV1)")
    first, second = capsys.readouterr().err.splitlines()
    assert "[INC-20261122-002] invited 3 people" in first
    assert second.count("INC-20261122-002") == 1


def test_library_chatter_is_quiet(restore_logging: object) -> None:
    logs.setup("INFO", secrets=[])
    for name in ("alembic", "slack_sdk", "slack_bolt"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name


async def test_slack_calls_build_no_debug_lines_nobody_reads(
    restore_logging: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """slack_sdk's clients format every request's parameters and every response's body
    for a DEBUG line whenever their own logger has no level set, and the inherited level
    drops it afterwards: at the bot's usual levels no Web API call builds one (that work
    was a few per cent of the worker's time)."""
    logs.setup("INFO", secrets=[])
    built: list[str] = []
    monkeypatch.setattr(logging.Logger, "debug", lambda self, msg, *a, **k: built.append(msg))
    async with FakeSlack() as fake:
        client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
        await client.auth_test()
        await AsyncWebhookClient(f"{fake.api_url}../webhook/none").send(text="x")
    assert [line for line in built if "request" in line.lower()] == []
