"""The main journey, as an on-call engineer and an incident commander live it."""

from __future__ import annotations

from datetime import timedelta

from bot.slack.blocks import Action, Modal
from tests.harness import ALICE, BOB, Slack, message_text


async def test_declare_to_resolve(slack: Slack) -> None:
    reply = await slack.command("sev1 payment down")
    assert reply.text is not None
    assert "INC-20261122-001" in reply.text

    channel = slack.incident_channel()
    assert channel.name == "inc-20261122-001-payment-down"
    assert ALICE in channel.members, "the declarer is invited"
    assert channel.topic.startswith("SEV1 | investigating | IC: unassigned")
    alert = slack.alert(channel)
    shown = message_text(alert)
    assert "🚨 INCIDENT ALERT - SEV1" in shown
    assert "payment down" in shown
    assert "No escalation targets are configured" in shown
    announced = slack.fake.channel("incidents").messages
    assert len(announced) == 1
    assert "INCIDENT ALERT - SEV1" in announced[0].text

    # The declarer is told where the channel is.
    followups = await reply.followups()
    assert f"<#{channel.id}>" in followups[0]["text"]

    slack.clock.advance(timedelta(minutes=3))
    await slack.click(Action.ACK, alert, channel, user=BOB)
    assert "acknowledged the incident (3m after declaration)" in slack.texts(channel)[-1]

    await slack.click(Action.COMMAND, slack.alert(channel), channel, user=BOB)
    assert channel.topic.startswith("SEV1 | investigating | IC: <@U0BOB>")
    assert "<@U0BOB>" in message_text(slack.alert(channel))

    slack.clock.advance(timedelta(minutes=10))
    await slack.command(
        "update Stripe webhooks failing; failing over", user=BOB, channel=channel.id
    )
    update = channel.messages[-1]
    assert "📊 INCIDENT UPDATE - SEV1" in message_text(update)
    assert "Stripe webhooks failing" in message_text(update)
    assert "INCIDENT UPDATE" in slack.fake.channel("incidents").messages[-1].text

    await slack.command("status mitigating", user=BOB, channel=channel.id)
    assert "SEV1 | mitigating" in channel.topic

    await slack.command("sev sev2", user=BOB, channel=channel.id)
    assert "SEV2" in message_text(slack.alert(channel))
    assert channel.topic.startswith("SEV2 | mitigating")

    slack.clock.advance(timedelta(minutes=50))
    await slack.click(Action.RESOLVE, slack.alert(channel), channel, user=BOB)
    assert slack.fake.views[-1]["callback_id"] == Modal.RESOLVE
    await slack.submit_modal(
        Modal.RESOLVE,
        {"summary": "Failed over to the backup processor", "root_cause": "Expired Stripe key"},
        user=BOB,
    )
    resolution = message_text(channel.messages[-2])
    assert "✅ INCIDENT RESOLVED - SEV2" in resolution
    assert "1h 3m" in resolution
    assert "Expired Stripe key" in resolution
    assert "INCIDENT RESOLVED" in slack.fake.channel("incidents").messages[-1].text
    assert "resolved" in channel.topic

    # The post-mortem draft follows, filled from the record.
    upload = channel.messages[-1]
    assert "post-mortem draft for *INC-20261122-001*" in upload.text
    (draft,) = slack.fake.files.values()
    assert draft.content is not None
    markdown = draft.content.decode()
    assert "# Post-Mortem: payment down" in markdown
    assert "Expired Stripe key" in markdown
    assert "Stripe webhooks failing; failing over" in markdown

    record = await slack.record(channel)
    kinds = [e.kind for e in await slack.bot.service.timeline(record.incident.id)]
    assert kinds == [
        "declared",
        "acknowledged",
        "commander_changed",
        "update_posted",
        "status_changed",
        "severity_changed",
        "update_nudged",  # the update was due 30 minutes after the last one
        "nudge_escalated",  # and was still missing half an interval later
        "resolved",
    ]
