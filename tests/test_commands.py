"""Every command and button, through the signed HTTP endpoint, asserting what people see."""

from __future__ import annotations

import json

import pytest

from bot.slack.blocks import Action, Modal
from tests.harness import BOB, CAROL, Slack, message_text


def everything_posted(slack: Slack) -> list[str]:
    """Every text and block the bot sent to any channel (and its edits)."""
    shown: list[str] = []
    for channel in slack.fake.channels.values():
        for message in channel.messages:
            shown.append(message.text + json.dumps(message.blocks or []))
            shown += [v.text + json.dumps(v.blocks or []) for v in message.edits]
    return shown


async def incident_count(slack: Slack) -> int:
    return len(await slack.bot.service.open_incidents())


# ---- declaring -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("word", "severity"), [("p0", "SEV1"), ("High", "SEV2"), ("sev3", "SEV3"), ("low", "SEV4")]
)
async def test_declare_with_any_severity_word(slack: Slack, word: str, severity: str) -> None:
    channel = await slack.declare(f"{word} checkout slow")
    record = await slack.record(channel)
    assert record.incident.severity == severity
    assert f"INCIDENT ALERT - {severity}" in slack.alert(channel).text


async def test_unknown_severity_creates_nothing(slack: Slack) -> None:
    reply = await slack.command("sev9 payment down")
    assert reply.text is not None
    assert "`sev9` is neither a severity nor a subcommand" in reply.text
    assert "sev1 (p0/critical)" in reply.text
    assert await incident_count(slack) == 0
    assert not slack.fake.calls_to("conversations.create")


@pytest.mark.parametrize("text", ["sev1", "sev1    ", "critical"])
async def test_empty_title_is_refused(slack: Slack, text: str) -> None:
    reply = await slack.command(text)
    assert reply.text is not None
    assert "The title is empty" in reply.text
    assert "/incident sev1 payment down" in reply.text
    assert await incident_count(slack) == 0


async def test_emoji_title_still_gets_a_valid_channel(slack: Slack) -> None:
    channel = await slack.declare("sev2 🔥🔥 !!!")
    assert channel.name == "inc-20261122-001"
    assert "🔥🔥 !!!" in message_text(slack.alert(channel))


async def test_long_title_fits_every_limit(slack: Slack) -> None:
    title = "database connection pool exhausted " * 15  # 525 characters
    channel = await slack.declare(f"sev1 {title}")
    assert len(channel.name) <= 80
    assert channel.name.startswith("inc-20261122-001-database-connection-pool")
    header = slack.alert(channel).blocks[0]["text"]["text"]  # type: ignore[index]
    assert len(header) <= 150
    record = await slack.record(channel)
    assert len(record.incident.title) <= 500
    assert record.incident.title.endswith("…")


async def test_taken_channel_name_gets_a_suffix(slack: Slack) -> None:
    slack.fake.add_channel("inc-20261122-001-payment-down")
    channel = await slack.declare("sev1 payment down")
    assert channel.name == "inc-20261122-001-payment-down-2"
    assert slack.alert(channel)


@pytest.mark.parametrize("hostile", ["<!channel>", "<!here>", "<@U0BOB>", "<!subteam^S0ALL>"])
async def test_typed_mentions_never_ping(slack: Slack, hostile: str) -> None:
    channel = await slack.declare(f"sev1 {hostile} payments down")
    await slack.command(f"update {hostile} still failing", channel=channel.id)
    await slack.command(f"note {hostile} see graph", channel=channel.id)
    await slack.command(f"resolve {hostile} fixed", channel=channel.id)
    posted = everything_posted(slack)
    assert not [text for text in posted if hostile in text]
    escaped = hostile.replace("<", "&lt;").replace(">", "&gt;")
    assert sum(escaped in text for text in posted) >= 4


async def test_slack_escaped_text_is_shown_as_typed(slack: Slack) -> None:
    # Slack sends what people type with &, < and > escaped, and @mentions as <@U…|name>.
    channel = await slack.declare("sev2 p95 &gt; 2s for <@U0BOB|bob> &amp; friends")
    record = await slack.record(channel)
    assert record.incident.title == "p95 > 2s for @bob & friends"
    assert "p95 &gt; 2s for @bob &amp; friends" in message_text(slack.alert(channel))


# ---- commands in the incident channel --------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "ack",
        "update all good",
        "status identified",
        "sev sev2",
        "ic",
        "note hi",
        "escalate",
        "resolve done",
        "timeline",
        "role scribe <@U0BOB|bob>",
    ],
)
async def test_incident_commands_outside_an_incident_channel(slack: Slack, text: str) -> None:
    await slack.declare()
    calls = len(slack.fake.calls)
    reply = await slack.command(text, channel=slack.general)
    assert reply.text is not None
    assert "not an incident channel" in reply.text
    assert len(slack.fake.calls) == calls, "nothing reached Slack"


async def test_acknowledge_command_and_repeat(slack: Slack) -> None:
    channel = await slack.declare()
    reply = await slack.command("ack", user=BOB, channel=channel.id)
    assert reply.text == "👀 INC-20261122-001 acknowledged. Escalation stopped."
    again = await slack.command("ack", user=CAROL, channel=channel.id)
    assert again.text is not None
    assert "already acknowledged by <@U0BOB>" in again.text
    acks = [t for t in slack.texts(channel) if "acknowledged the incident" in t]
    assert len(acks) == 1


async def test_double_click_changes_nothing_twice(slack: Slack) -> None:
    channel = await slack.declare()
    alert = slack.alert(channel)
    first = await slack.click(Action.ACK, alert, channel, user=BOB)
    second = await slack.click(Action.ACK, alert, channel, user=BOB)
    assert "acknowledged" in (await first.followups())[0]["text"]
    assert "already acknowledged" in (await second.followups())[0]["text"]
    record = await slack.record(channel)
    kinds = [e.kind for e in await slack.bot.service.timeline(record.incident.id)]
    assert kinds.count("acknowledged") == 1


async def test_commander_handover(slack: Slack) -> None:
    channel = await slack.declare()
    await slack.command("ic", user=BOB, channel=channel.id)
    reply = await slack.command("ic <@U0CAROL|carol>", user=BOB, channel=channel.id)
    assert reply.text == "🧑‍✈️ <@U0CAROL> is the incident commander of INC-20261122-001."
    assert "IC: <@U0CAROL>" in channel.topic
    assert CAROL in channel.members
    assert "handed incident command to <@U0CAROL>" in slack.texts(channel)[-1]
    bad = await slack.command("ic carol", user=BOB, channel=channel.id)
    assert bad.text is not None
    assert "Mention them with @" in bad.text


async def test_roles(slack: Slack) -> None:
    channel = await slack.declare()
    reply = await slack.command("role comms_lead <@U0CAROL|carol>", channel=channel.id)
    assert reply.text is not None
    assert "Role assigned" in reply.text
    assert CAROL in channel.members
    assert "assigned *comms lead* to <@U0CAROL>" in slack.texts(channel)[-1]
    record = await slack.record(channel)
    assert record.incident.roles == {"comms_lead": CAROL}
    bad = await slack.command("role chef <@U0CAROL|carol>", channel=channel.id)
    assert bad.text is not None
    assert "There is no role 'chef'" in bad.text


async def test_status_and_severity_words(slack: Slack) -> None:
    channel = await slack.declare()
    bad = await slack.command("status fixed", channel=channel.id)
    assert bad.text is not None
    assert "'fixed' is not a status" in bad.text
    await slack.command("status monitoring", channel=channel.id)
    assert "monitoring" in channel.topic
    bad = await slack.command("sev urgent", channel=channel.id)
    assert bad.text is not None
    assert "`urgent` is not a severity" in bad.text
    await slack.command("sev P2", channel=channel.id)
    assert channel.topic.startswith("SEV3")
    announce = slack.fake.channel("incidents").messages
    assert "changed the severity: SEV1 → *SEV3*" in message_text(announce[-1])


async def test_note_and_timeline(slack: Slack) -> None:
    channel = await slack.declare()
    await slack.command("note customers report 502s in EU", user=CAROL, channel=channel.id)
    assert "Note from <@U0CAROL>: customers report 502s in EU" in slack.texts(channel)[-1]
    reply = await slack.command("timeline", channel=channel.id)
    assert isinstance(reply.body, dict)
    shown = json.dumps(reply.body["blocks"])
    assert "declared SEV1: payment down" in shown
    assert "noted: customers report 502s in EU" in shown


async def test_escalate_moves_one_level(slack: Slack) -> None:
    channel = await slack.declare()
    reply = await slack.command("escalate db team not answering", user=BOB, channel=channel.id)
    assert reply.text == "📣 INC-20261122-001 escalated to level 2."
    text = slack.texts(channel)[-1]
    assert "escalated to level 2" in text
    assert "No escalation targets are configured" in text
    assert "db team not answering" in text
    for _ in range(2):
        await slack.command("escalate", channel=channel.id)
    top = await slack.command("escalate", channel=channel.id)
    assert top.text is not None
    assert "already at the last escalation level" in top.text


async def test_resolve_twice(slack: Slack) -> None:
    channel = await slack.declare()
    await slack.command("resolve rolled back", channel=channel.id)
    again = await slack.command("resolve again", channel=channel.id)
    assert again.text is not None
    assert "already resolved" in again.text
    assert sum("INCIDENT RESOLVED" in t for t in slack.texts(channel)) == 2  # message + alert


async def test_button_on_an_old_message(slack: Slack) -> None:
    channel = await slack.declare()
    alert = slack.alert(channel)
    await slack.command("resolve rolled back", channel=channel.id)
    assert alert.edits, "the alert was edited in place; its buttons are gone"
    # Someone still has the old version on screen and clicks it.
    reply = await slack.click(Action.ACK, alert, channel, user=BOB, old=True)
    assert "already resolved" in (await reply.followups())[0]["text"]
    reply = await slack.click(Action.RESOLVE, alert, channel, user=BOB, old=True)
    assert "already resolved" in (await reply.followups())[0]["text"]
    assert not slack.fake.views


async def test_escalate_button(slack: Slack) -> None:
    channel = await slack.declare()
    reply = await slack.click(Action.ESCALATE, slack.alert(channel), channel, user=BOB)
    assert "escalated to level 2" in (await reply.followups())[0]["text"]
    assert "<@U0BOB> escalated to level 2" in slack.texts(channel)[-1]


async def test_help_and_list(slack: Slack) -> None:
    reply = await slack.command("help")
    assert reply.text is not None
    assert "/incident resolve <summary>" in reply.text
    empty = await slack.command("list")
    assert empty.text == "No open incidents. 🎉"
    channel = await slack.declare("sev2 search slow")
    listed = await slack.command("list")
    assert isinstance(listed.body, dict)
    shown = json.dumps(listed.body["blocks"])
    assert "INC-20261122-001" in shown
    assert f"<#{channel.id}>" in shown


# ---- modals --------------------------------------------------------------------------------
async def test_declare_modal(slack: Slack) -> None:
    reply = await slack.command("")
    assert reply.body == ""
    (view,) = slack.fake.views
    assert view["callback_id"] == Modal.DECLARE
    await slack.submit_modal(
        Modal.DECLARE,
        {
            "severity": "SEV2",
            "title": "Search <!here> timing out",
            "services": "search, api",
            "impact": "30% of searches fail",
        },
    )
    channel = slack.incident_channel()
    record = await slack.record(channel)
    assert record.incident.severity == "SEV2"
    assert record.incident.services == ["search", "api"]
    shown = message_text(slack.alert(channel))
    assert "search, api" in shown
    assert "30% of searches fail" in shown
    assert "&lt;!here&gt;" in shown
    followups = await reply.followups()
    assert f"<#{channel.id}>" in followups[-1]["text"]


async def test_declare_modal_with_blank_title(slack: Slack) -> None:
    await slack.command("")
    response = await slack.submit_modal(Modal.DECLARE, {"severity": "SEV1", "title": "   "})
    assert response.json() == {
        "response_action": "errors",
        "errors": {"title": "The title is empty."},
    }
    assert await incident_count(slack) == 0


async def test_update_modal_from_the_command_and_the_button(slack: Slack) -> None:
    channel = await slack.declare()
    reply = await slack.command("update", channel=channel.id)
    assert reply.body == ""
    assert slack.fake.views[-1]["callback_id"] == Modal.UPDATE
    await slack.submit_modal(
        Modal.UPDATE,
        {"status": "identified", "text": "Bad deploy found", "next_steps": "Roll back"},
        user=BOB,
    )
    update = message_text(channel.messages[-1])
    assert "INCIDENT UPDATE" in update
    assert "Bad deploy found" in update
    assert "Roll back" in update
    assert "identified" in channel.topic
    await slack.click(Action.UPDATE, slack.alert(channel), channel, user=BOB)
    assert len([v for v in slack.fake.views if v["callback_id"] == Modal.UPDATE]) == 2


async def test_stats_with_a_wrong_window_is_refused_at_once(slack: Slack) -> None:
    reply = await slack.command("stats forever")
    assert reply.text is not None
    assert "forever" in reply.text
    assert not slack.fake.responses[reply.response_url], "no follow-up is sent"


async def test_a_title_with_the_word_payload_is_declared(slack: Slack) -> None:
    """Bolt's own body parser takes any form in which "payload" appears for a button's
    payload; the bot parses what Slack sent itself, so this is a slash command."""
    channel = await slack.declare("sev2 payload service rejects requests")
    assert "payload service rejects requests" in channel.messages[0].text
    reply = await slack.command("note the payload=1 field is what fails", channel=channel.id)
    assert reply.text is not None
    assert "Note added" in reply.text
