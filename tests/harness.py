"""The test harness: the real bot, served over HTTP, against the fake Slack server.

A test reads like a conversation::

    reply = await slack.command("sev1 payment down")
    channel = slack.incident_channel()
    assert "INCIDENT ALERT" in channel.messages[0].text
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.clock import FakeClock
from bot.devtools.driver import ActionReply, CommandReply, SlackDriver, view_values_from
from bot.devtools.fakepagerduty import FakePagerDuty
from bot.devtools.fakeslack import Channel, FakeSlack, Message
from bot.runtime import Runtime
from bot.service.incidents import Where
from bot.service.ports import IncidentRecord
from bot.store.repository import SqlStore, SqlTx

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
SIGNING_SECRET = "test-signing-secret-8f2a"


@dataclass
class Slack:
    """Talks to the bot as Slack would, and reads what Slack shows."""

    fake: FakeSlack
    driver: SlackDriver
    bot: Runtime
    clock: FakeClock
    general: str
    pagerduty: FakePagerDuty
    bot_url: str = ""  # where the bot serves HTTP (the status page, health)

    async def settle(self) -> None:
        """Let the bot finish: background replies, then every due Slack job."""
        await self.bot.settle()

    async def command(
        self, text: str, *, user: str = ALICE, channel: str | None = None, settle: bool = True
    ) -> CommandReply:
        channel_id = channel or self.general
        name = self.fake.channel(channel_id).name
        reply = await self.driver.command(text, user=user, channel=channel_id, channel_name=name)
        assert reply.status == 200, reply
        if settle:
            await self.settle()
        return reply

    async def declare(self, text: str = "sev1 payment down", *, user: str = ALICE) -> Channel:
        reply = await self.command(text, user=user)
        assert reply.text is not None
        assert "declared" in reply.text, reply.text
        return self.incident_channel()

    def incident_channel(self, index: int = -1) -> Channel:
        """An incident channel, in creation order (default: the newest)."""
        channels = [c for c in self.fake.channels.values() if c.name.startswith("inc-")]
        assert channels, "no incident channel was created"
        return channels[index]

    def alert(self, channel: Channel) -> Message:
        for message in channel.messages:
            if "INCIDENT" in message.text and message.user == self.fake.bot_user_id:
                return message
        raise AssertionError(f"no alert in #{channel.name}")

    async def click(
        self,
        action_id: str,
        message: Message,
        channel: Channel,
        *,
        user: str = ALICE,
        old: bool = False,
    ) -> ActionReply:
        """Click a button on `message`; `old=True` clicks it on the message as first posted
        (a screen that has not refreshed since)."""
        blocks = message.edits[0].blocks if old and message.edits else message.blocks
        block_id, value = _button(blocks or [], action_id)
        reply = await self.driver.click(
            action_id,
            value,
            user=user,
            channel=channel.id,
            message_ts=message.ts,
            block_id=block_id,
            message={"ts": message.ts, "text": message.text, "blocks": blocks},
        )
        assert reply.status == 200, reply
        await self.settle()
        return reply

    async def submit_modal(
        self, callback_id: str, answers: dict[str, object], *, user: str = ALICE
    ) -> Any:
        view = next(v for v in reversed(self.fake.views) if v.get("callback_id") == callback_id)
        values = view_values_from(view, answers)
        response = await self.driver.submit(
            callback_id,
            values,
            user=user,
            private_metadata=view.get("private_metadata", ""),
            view_id=view.get("id"),
        )
        await self.settle()
        return response

    async def record(self, channel: Channel) -> IncidentRecord:
        return await self.bot.service.find(Where(channel_id=channel.id))

    def texts(self, channel: Channel) -> list[str]:
        """What the channel shows: every message's text and block text, in order."""
        return [message_text(m) for m in channel.messages]


def _button(blocks: list[dict[str, Any]], action_id: str) -> tuple[str, str]:
    """The (block_id, value) of the button `action_id` on a message."""
    for block in blocks:
        for element in block.get("elements", []):
            if element.get("action_id") == action_id:
                return str(block.get("block_id")), str(element.get("value"))
    raise AssertionError(f"no button {action_id} on the message")


def message_text(message: Message) -> str:
    """Everything a person reads in a message: the text and every text in its blocks."""
    parts = [message.text]
    parts.extend(_block_texts(message.blocks or []))
    return "\n".join(parts)


def _block_texts(value: Any) -> list[str]:
    found: list[str] = []
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            found.append(value["text"])
        for key, item in value.items():
            if key != "text" or not isinstance(item, str):
                found.extend(_block_texts(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(_block_texts(item))
    return found


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


async def tick(
    slack: Slack,
    channel: Channel,
    message: Message,
    *,
    group: int,
    steps: list[str],
    user: str = ALICE,
) -> ActionReply:
    """Set the checkboxes of one checklist group to exactly `steps`, as Slack reports it."""
    element = next(
        e
        for b in message.blocks or []
        if b.get("block_id") == f"steps:{group}"
        for e in b.get("elements", [])
    )
    selected = [o for o in element["options"] if o["value"] in steps]
    reply = await slack.driver.click(
        element["action_id"],
        "",
        user=user,
        channel=channel.id,
        message_ts=message.ts,
        block_id=f"steps:{group}",
        extra={"type": "checkboxes", "selected_options": selected},
    )
    assert reply.status == 200
    await slack.settle()
    return reply


def post_as(channel: Channel, user: str, text: str, *, at: datetime) -> Message:
    """Someone (not the bot) writes in a channel at a given time."""
    message = Message(ts=f"{at.timestamp():.6f}", user=user, text=text)
    channel.messages.append(message)
    return message


class _SqlAlchemyTx(SqlTx):
    async def _direct(self) -> Any:
        return None  # every statement through SQLAlchemy


class ThroughSQLAlchemy(SqlStore):
    """The store with every statement run by SQLAlchemy, none directly on SQLite's writer
    or on PostgreSQL's asyncpg connection (`bot.store.prepared`): its transactions are
    still begun and committed by the writer."""

    @asynccontextmanager
    async def transaction(
        self, *, read_only: bool = False, autocommit: bool = False
    ) -> AsyncIterator[SqlTx]:
        async with self.database.transaction(read_only=read_only) as connection:
            yield _SqlAlchemyTx(connection)
