"""The incident record: playbook checklist, 📌 capture, action items, post-mortem, stats,
metrics and the App Home tab — through Slack-signed requests, as people use them."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta
from pathlib import Path

from bot.devtools.fakeslack import Channel
from tests.harness import ALICE, BOB, CAROL, Slack, message_text, post_as, tick

M = timedelta(minutes=1)


def playbook_message(slack: Slack, channel: Channel) -> object:
    return next(m for m in channel.messages if "Playbook:" in message_text(m))


async def entries(slack: Slack, channel: Channel) -> list[tuple[str, dict[str, object]]]:
    record = await slack.record(channel)
    return [(e.kind, e.data) for e in await slack.bot.service.timeline(record.incident.id)]


# ---- playbooks -----------------------------------------------------------------------------
async def test_payment_incident_gets_the_payment_playbook_as_a_checklist(slack: Slack) -> None:
    channel = await slack.declare("sev1 payment down")
    message = next(m for m in channel.messages if "Playbook:" in message_text(m))
    shown = message_text(message)
    assert "📖 Playbook: Payment processing down" in shown
    assert "Stripe status" in shown
    groups = [b for b in message.blocks or [] if str(b.get("block_id", "")).startswith("steps:")]
    assert groups
    assert groups[0]["elements"][0]["type"] == "checkboxes"
    first = groups[0]["elements"][0]["options"][0]["value"]

    await tick(slack, channel, message, group=0, steps=[first], user=BOB)
    ticked = [d for k, d in await entries(slack, channel) if k == "step_ticked"]
    assert len(ticked) == 1
    assert ticked[0]["step"] == first
    rerendered = next(b for b in message.blocks or [] if b.get("block_id") == "steps:0")
    option = rerendered["elements"][0]["initial_options"][0]
    assert option["value"] == first
    assert "<@U0BOB>" in option["description"]["text"], "the list shows who ticked it"

    await tick(slack, channel, message, group=0, steps=[], user=BOB)
    kinds = [k for k, _ in await entries(slack, channel)]
    assert kinds.count("step_unticked") == 1


async def test_no_match_gets_the_generic_procedure(slack: Slack) -> None:
    channel = await slack.declare("sev4 typo on the pricing page")
    message = next(m for m in channel.messages if "Playbook:" in message_text(m))
    assert "📖 Playbook: Generic incident procedure" in message_text(message)


# ---- 📌 capture -----------------------------------------------------------------------------
async def test_pinned_message_joins_the_timeline_once(slack: Slack) -> None:
    channel = await slack.declare()
    said_at = slack.clock.now() + 2 * M
    message = post_as(channel, CAROL, "DB failover started on <!here>", at=said_at)
    event = {
        "type": "reaction_added",
        "user": BOB,
        "reaction": "pushpin",
        "item": {"type": "message", "channel": channel.id, "ts": message.ts},
        "item_user": CAROL,
    }
    for retry in (None, 1, 2):  # Slack delivers it three times
        response = await slack.driver.event(event, event_id="Ev0PIN1", retry_num=retry)
        assert response.status_code == 200
    await slack.settle()
    pinned = [(k, d) for k, d in await entries(slack, channel) if k == "message_pinned"]
    assert len(pinned) == 1
    assert message.reactions.get("white_check_mark") == [slack.fake.bot_user_id], (
        "the bot marks the message so people see it is on the timeline"
    )
    record = await slack.record(channel)
    (entry,) = [
        e
        for e in await slack.bot.service.timeline(record.incident.id)
        if e.kind == "message_pinned"
    ]
    assert (
        entry.at == said_at.replace(microsecond=0) or abs((entry.at - said_at).total_seconds()) < 1
    )
    assert entry.actor == CAROL
    assert str(entry.data["permalink"]).startswith("https://")
    reply = await slack.command("timeline", channel=channel.id)
    assert isinstance(reply.body, dict)
    assert "DB failover started on &lt;!here&gt;" in json.dumps(reply.body["blocks"])

    edited = {
        "type": "message",
        "subtype": "message_changed",
        "channel": channel.id,
        "message": {
            "type": "message",
            "user": CAROL,
            "ts": message.ts,
            "text": "DB failover finished",
        },
        "previous_message": {
            "type": "message",
            "user": CAROL,
            "ts": message.ts,
            "text": message.text,
        },
    }
    await slack.driver.event(edited)
    texts = [d["text"] for k, d in await entries(slack, channel) if k == "message_pinned"]
    assert texts == ["DB failover finished"]

    removed = dict(event, type="reaction_removed")
    await slack.driver.event(removed)
    await slack.settle()
    assert not [k for k, _ in await entries(slack, channel) if k == "message_pinned"]
    assert "white_check_mark" not in message.reactions, "the mark goes with the 📌"

    await slack.driver.event(event, event_id="Ev0PIN2")
    await slack.settle()
    assert len([k for k, _ in await entries(slack, channel) if k == "message_pinned"]) == 1
    deleted = {
        "type": "message",
        "subtype": "message_deleted",
        "channel": channel.id,
        "deleted_ts": message.ts,
        "previous_message": {"ts": message.ts},
    }
    await slack.driver.event(deleted)
    assert not [k for k, _ in await entries(slack, channel) if k == "message_pinned"]


async def test_pins_elsewhere_are_ignored(slack: Slack) -> None:
    general = slack.fake.channel(slack.general)
    message = post_as(general, CAROL, "lunch?", at=slack.clock.now())
    response = await slack.driver.reaction_added("pushpin", channel=general.id, ts=message.ts)
    assert response.status_code == 200
    await slack.settle()
    assert not slack.fake.calls_to("conversations.history")


# ---- action items --------------------------------------------------------------------------
async def test_action_items(slack: Slack) -> None:
    channel = await slack.declare()
    reply = await slack.command(
        "action add retry with backoff <@U0BOB|bob> due 2026-12-06", channel=channel.id
    )
    assert reply.text == "📋 Action item #1 added to INC-20261122-001 (due 2026-12-06)."
    shown = slack.texts(channel)[-1]
    assert "Action item #1: add retry with backoff" in shown
    assert "Owner: <@U0BOB> · Due: 2026-12-06" in shown
    await slack.command("action page the DBA earlier", channel=channel.id)
    listing = await slack.command("action", channel=channel.id)
    assert isinstance(listing.body, dict)
    listed = json.dumps(listing.body["blocks"])
    assert "#1* add retry with backoff" in listed
    assert "due 2026-11-29" in listed, "default due date: the action review, a week on"
    message = channel.messages[-1]
    done = await slack.click("action_done", message, channel, user=BOB)
    assert done.status == 200
    await slack.settle()
    assert "completed action item #2" in slack.texts(channel)[-1]
    record = await slack.record(channel)
    assert [(a.id, a.done) for a in record.incident.actions] == [(1, False), (2, True)]


# ---- post-mortem ---------------------------------------------------------------------------
async def test_postmortem_has_the_procedures_headings_and_every_entry(
    slack: Slack, tmp_path: Path
) -> None:
    channel = await slack.declare("sev2 search | slow")
    await slack.command("ack", user=BOB, channel=channel.id)
    await slack.command("note cache hit rate dropped", channel=channel.id)
    await slack.command("action add an alert on cache hit rate", channel=channel.id)
    reply = await slack.command("postmortem", channel=channel.id)
    assert reply.text is not None
    assert "Building the post-mortem draft for INC-20261122-001" in reply.text
    (draft,) = slack.fake.files.values()
    assert draft.filename == "INC-20261122-001-postmortem.md"
    assert channel.id in draft.channels
    assert draft.content is not None
    markdown = draft.content.decode()
    headings = [
        "# Post-Mortem: search | slow",
        "## Incident Summary",
        "## Timeline",
        "## Root Cause",
        "## Contributing Factors",
        "## What Went Well",
        "## What Could Be Improved",
        "## Action Items",
        "## Lessons Learned",
    ]
    positions = [markdown.index(h) for h in headings]
    assert positions == sorted(positions)
    record = await slack.record(channel)
    timeline = await slack.bot.service.timeline(record.incident.id)
    rows = markdown.split("## Timeline")[1].split("## Root Cause")[0].strip().splitlines()
    assert len(rows) == 2 + len(timeline)
    assert "| add an alert on cache hit rate | unassigned |" in markdown
    assert "@bob acknowledged" in markdown, "people by name, not by id"
    assert "U0BOB" not in markdown

    if slack.bot.database.is_sqlite:
        out = tmp_path / "pm.md"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "postmortem",
            "INC-20261122-001",
            "--out",
            str(out),
            env={"DATABASE_URL": slack.bot.database.url, "PATH": "/usr/bin:/bin"},
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
        assert "## Lessons Learned" in out.read_text()


# ---- stats and metrics ---------------------------------------------------------------------
async def test_stats_agree_with_the_recorded_times(slack: Slack) -> None:
    for ack, resolve in ((2, 30), (4, 60), (10, 90)):
        channel = await slack.declare("sev1 payment down")
        slack.clock.advance(ack * M)
        await slack.command("ack", user=BOB, channel=channel.id)
        slack.clock.advance((resolve - ack) * M)
        await slack.command("resolve fixed", user=BOB, channel=channel.id)
    await slack.command("drill sev1 practice")
    reply = await slack.command("stats 30d")
    assert reply.text == "📈 Computing the statistics…"
    (answer,) = await reply.followups()
    assert answer["replace_original"] is True
    shown = json.dumps(answer["blocks"], ensure_ascii=False)
    assert "1 drill excluded" in shown
    sev1 = next(line for line in shown.split("\\n") if line.startswith("SEV1"))
    assert sev1.split()[:3] == ["SEV1", "3", "3"]
    assert "4m" in sev1, "median time to acknowledge"
    assert "10m" in sev1, "p90 time to acknowledge"
    assert "1h" in sev1, "median time to resolve"

    port = slack.driver.events_url.split(":")[2].split("/")[0]
    metrics = (await slack.driver._http.get(f"http://127.0.0.1:{port}/metrics")).text
    assert 'incident_bot_incidents_declared_total{severity="SEV1"} 3' in metrics
    assert 'incident_bot_incidents_resolved_total{severity="SEV1"} 3' in metrics
    assert 'incident_bot_open_incidents{severity="SEV1"} 0' in metrics
    assert 'incident_bot_time_to_acknowledge_seconds_bucket{le="300"} 2' in metrics
    assert "incident_bot_time_to_acknowledge_seconds_count 3" in metrics


# ---- App Home and paging ------------------------------------------------------------------
async def test_app_home_lists_open_incidents_with_overdue_flags(slack: Slack) -> None:
    channel = await slack.declare("sev1 payment down")
    await slack.declare("sev3 search slow")
    slack.clock.advance(40 * M)
    await slack.driver.app_home_opened(user=ALICE)
    await slack.settle()
    view = slack.fake.home_views[ALICE]
    shown = json.dumps(view)
    assert "Open incidents (2)" in shown
    assert f"<#{channel.id}>" in shown
    assert "not acknowledged" in shown
    assert "update overdue" in shown
    assert shown.index("SEV1") < shown.index("SEV3"), "worst first"


async def test_long_timelines_are_paged(slack: Slack) -> None:
    channel = await slack.declare()
    for n in range(60):
        await slack.command(f"note step {n}", channel=channel.id, settle=False)
    await slack.settle()
    first = await slack.command("timeline", channel=channel.id)
    assert isinstance(first.body, dict)
    assert "Page 1 of 2" in json.dumps(first.body["blocks"])
    second = await slack.command("timeline 2", channel=channel.id)
    assert isinstance(second.body, dict)
    assert "noted: step 59" in json.dumps(second.body["blocks"])
