"""What people read: one announcement per incident with everything after it in its thread,
a short alert without placeholders, updates shaped like the update template."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.basic_objects import JsonObject
from slack_sdk.models.blocks import HeaderBlock, SectionBlock

from bot.devtools.fakeslack import Channel, Message
from bot.slack import blocks
from bot.slack.blocks import Modal
from tests.harness import BOB, Slack, message_text


def top_level(channel: Channel) -> list[Message]:
    return [m for m in channel.messages if m.top_level]


def replies(channel: Channel, parent: Message) -> list[Message]:
    return [m for m in channel.messages if m.thread_ts == parent.ts and m.ts != parent.ts]


async def journey(slack: Slack) -> Channel:
    """Declare, acknowledge, take command, two updates, a raise, resolve."""
    channel = await slack.declare("sev2 checkout slow")
    await slack.command("ack", user=BOB, channel=channel.id)
    await slack.command(f"ic <@{BOB}>", user=BOB, channel=channel.id)
    await slack.command("update p99 back under 2 s in eu-west", user=BOB, channel=channel.id)
    await slack.command("update card payments failing too", user=BOB, channel=channel.id)
    await slack.command("sev sev1", user=BOB, channel=channel.id)
    await slack.command("resolve rolled back the cache config", user=BOB, channel=channel.id)
    return channel


async def test_one_announcement_per_incident_with_its_story_in_the_thread(slack: Slack) -> None:
    await journey(slack)
    announce = slack.fake.channel("incidents")
    (alert, *broadcasts) = top_level(announce)
    assert "INCIDENT" in message_text(alert)
    thread = [message_text(m) for m in replies(announce, alert)]
    assert len([t for t in thread if "INCIDENT UPDATE" in t]) == 2
    assert len([t for t in thread if "changed the severity" in t]) == 1
    assert len([t for t in thread if "INCIDENT RESOLVED" in t]) == 1
    # Everyone in the channel also sees the raise to SEV1 and the resolution.
    assert len(broadcasts) == 2
    assert "changed the severity" in message_text(broadcasts[0])
    assert "INCIDENT RESOLVED" in message_text(broadcasts[1])


async def test_a_lowering_and_an_update_are_not_broadcast(slack: Slack) -> None:
    channel = await slack.declare("sev1 checkout down")
    await slack.command("sev sev3", user=BOB, channel=channel.id)
    await slack.command("update recovering", user=BOB, channel=channel.id)
    announce = slack.fake.channel("incidents")
    (alert,) = top_level(announce)
    assert len(replies(announce, alert)) == 2


async def test_the_alert_has_no_placeholders(slack: Slack) -> None:
    channel = await slack.declare("sev1 payment processing down")
    alert = message_text(slack.alert(channel))
    for placeholder in ("not given", "being assessed", "unassigned", "being created"):
        assert placeholder not in alert, placeholder
    assert "Not yet" in alert, "the acknowledgement is due, and when"
    assert "Channel" not in alert, "the incident channel does not link to itself"
    announced = message_text(top_level(slack.fake.channel("incidents"))[0])
    assert f"<#{channel.id}>" in announced


async def test_messages_in_the_incident_channel_carry_no_id_line(slack: Slack) -> None:
    channel = await journey(slack)
    incident = (await slack.record(channel)).incident.id
    lines = [m for m in top_level(channel) if m.blocks and m.blocks[-1].get("type") == "context"]
    for message in lines:
        context = str(message.blocks[-1]) if message.blocks else ""
        assert incident not in context, message_text(message)


async def test_an_update_from_the_form_fills_the_template(slack: Slack) -> None:
    channel = await slack.declare("sev2 search slow")
    alert = slack.alert(channel)
    await slack.click("incident_update", alert, channel, user=BOB)
    await slack.submit_modal(
        Modal.UPDATE,
        {
            "status": "mitigating",
            "text": "failed over to the replica",
            "impact": "EU users see stale results",
            "next_steps": "rebuild the index",
        },
        user=BOB,
    )
    update = message_text([m for m in channel.messages if "INCIDENT UPDATE" in m.text][-1])
    for part in (
        "Mitigating",
        "EU users see stale results",
        "Actions taken",
        "failed over to the replica",
        "Next steps",
        "rebuild the index",
    ):
        assert part in update, part
    record = await slack.record(channel)
    assert record.incident.impact == "EU users see stale results", "the current impact moved"


async def test_a_typed_update_is_the_update(slack: Slack) -> None:
    channel = await slack.declare("sev2 search slow")
    await slack.command("update the index is rebuilding", user=BOB, channel=channel.id)
    update = message_text([m for m in channel.messages if "INCIDENT UPDATE" in m.text][-1])
    assert "the index is rebuilding" in update
    assert "Actions taken" not in update


async def test_a_lost_answer_in_the_thread_posts_once(slack: Slack) -> None:
    channel = await slack.declare("sev2 search slow")
    slack.fake.lose_answer("chat.postMessage", times=2)  # the channel's copy, then the thread's
    await slack.command("update index rebuilt", user=BOB, channel=channel.id)
    for _ in range(3):
        slack.clock.advance(timedelta(seconds=5))
        await slack.settle()
    announce = slack.fake.channel("incidents")
    (alert,) = top_level(announce)
    assert len([m for m in replies(announce, alert) if "INCIDENT UPDATE" in m.text]) == 1
    assert len([m for m in channel.messages if "INCIDENT UPDATE" in m.text]) == 1


async def test_playbook_commands_show_as_written(slack: Slack) -> None:
    """Angle brackets and ampersands in diagnostics are text, not Slack links."""
    channel = await slack.declare("sev2 redis cache hit rate dropped")
    checklist = next(m for m in channel.messages if "Playbook" in m.text)
    shown = message_text(checklist)
    assert "Diagnostics" in shown
    section = next(
        str(b["text"]["text"])
        for b in checklist.blocks or []
        if b.get("type") == "section" and "Diagnostics" in str(b.get("text"))
    )
    assert "<" not in section.replace("&lt;", ""), "every < is escaped"
    assert "examples from the runbook" in section


async def test_every_message_is_the_json_slack_sdk_would_make(
    slack: Slack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`blocks.plain` turns Block Kit models into JSON without slack_sdk's per-object
    lookup of validators: over a whole incident (alert, checklist, announcement, pages,
    updates, a raise, the resolution and the post-mortem notice), every block is the dict
    slack_sdk's `to_dict()` makes."""
    compared: list[str] = []
    real = blocks.plain

    def checked(value: Any) -> Any:
        made = real(value)
        if isinstance(value, JsonObject):
            assert made == value.to_dict()
            compared.append(type(value).__name__)
        return made

    monkeypatch.setattr(blocks, "plain", checked)
    await journey(slack)
    kinds = set(compared)
    assert len(compared) > 50
    assert {"SectionBlock", "ActionsBlock", "ContextBlock", "HeaderBlock", "Option"} <= kinds


def test_a_broken_limit_is_refused_as_slack_sdk_refuses_it() -> None:
    """The same checks run: a header over Slack's 150 characters is refused."""
    header = HeaderBlock(text="x" * 151)
    with pytest.raises(SlackObjectFormationError):
        header.to_dict()
    with pytest.raises(SlackObjectFormationError):
        blocks.plain(header)
    # And an empty list is left out, as slack_sdk leaves it out.
    section = SectionBlock(text="hello", fields=[])
    assert blocks.plain(section) == section.to_dict()
