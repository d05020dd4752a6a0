"""Clocks, driven through Slack with a fake clock: escalation, nudges, targets, follow-ups."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.clock import FakeClock
from bot.domain import clocks
from bot.domain.incident import Incident
from bot.domain.policy import Policy, default_policy, parse_policy
from bot.runtime import Runtime
from bot.slack.blocks import Action
from tests.conftest import settings_for
from tests.harness import BOB, CAROL, Slack, message_text

M = timedelta(minutes=1)
START = FakeClock().now()


@pytest.fixture
def policy() -> Policy:
    """The default numbers, with people named: on-call, secondary, manager, VP, CTO."""
    data = default_policy().model_dump(mode="json")
    sev1 = data["severities"][0]
    sev1["notify_on_declare"] = ["S0MGMT"]
    sev1["escalation"] = [
        {"after": "0s", "notify": ["S0ONCALL"]},
        {"after": "15m", "notify": ["S0SECONDARY"], "pagerduty": "R0UTINGKEY"},
        {"after": "30m", "notify": ["U0MANAGER"]},
    ]
    sev1["open_escalation"] = [
        {"after": "2h", "notify": ["U0VPENG"]},
        {"after": "4h", "notify": ["U0CTO"]},
    ]
    return parse_policy(data)


async def advance(slack: Slack, minutes: float) -> None:
    slack.clock.advance(timedelta(minutes=minutes))
    await slack.settle()


def posted(slack: Slack, channel_name: str, needle: str) -> list[str]:
    channel = slack.fake.channel(channel_name)
    return [message_text(m) for m in channel.messages if needle in message_text(m)]


# ---- pure planning -------------------------------------------------------------------------
def test_plan_for_a_fresh_sev1(policy: Policy) -> None:
    incident, _ = Incident.declare(
        incident_id="INC-20261122-001",
        title="x",
        severity=policy.get("sev1"),
        by="U0A",
        now=START,
    )
    due = {
        t.key.split(":")[0] + ":" + str(t.data.get("level", t.data.get("index", ""))): (
            t.due - START
        )
        for t in clocks.plan(incident, policy, START)
    }
    assert due["ack_target:"] == 5 * M
    assert due["escalate:1"] == 15 * M
    assert due["escalate:2"] == 30 * M
    assert due["open:0"] == 120 * M
    assert due["open:1"] == 240 * M
    assert due["resolution_target:"] == 60 * M
    assert due["nudge:"] == 30 * M
    assert due["nudge_comms:"] == 45 * M
    assert due["nudge_announce:"] == 60 * M


def test_lowest_severity_has_no_nudges(policy: Policy) -> None:
    incident, _ = Incident.declare(
        incident_id="INC-20261122-001",
        title="x",
        severity=policy.get("sev4"),
        by="U0A",
        now=START,
    )
    kinds = {t.kind for t in clocks.plan(incident, policy, START)}
    assert clocks.TimerKind.NUDGE not in kinds
    assert clocks.TimerKind.ACK_TARGET in kinds


# ---- acknowledgement escalation --------------------------------------------------------------
async def test_unacknowledged_sev1_climbs_the_chain_on_time(slack: Slack) -> None:
    channel = await slack.declare()
    alert = message_text(slack.alert(channel))
    assert "Paging: <!subteam^S0MGMT> <!subteam^S0ONCALL>" in alert
    assert "<!subteam^S0ONCALL>" in slack.alert(channel).text, "the fallback text notifies"
    await advance(slack, 4.9)
    assert not posted(slack, channel.name, "escalated to level 2")
    await advance(slack, 0.1)
    (missed,) = posted(slack, channel.name, "response target")
    assert "within the 5m response target for SEV1. <!subteam^S0ONCALL>" in missed
    await advance(slack, 9.9)
    assert not posted(slack, channel.name, "escalated to level 2")
    await advance(slack, 0.1)
    (level2,) = posted(slack, channel.name, "escalated to level 2")
    assert "<!subteam^S0SECONDARY>" in level2
    assert "not acknowledged after 15m" in level2
    assert posted(slack, "incidents", "escalated to level 2")
    await advance(slack, 15)
    (level3,) = posted(slack, channel.name, "escalated to level 3")
    assert "<@U0MANAGER>" in level3
    await advance(slack, 120)
    assert len(posted(slack, channel.name, "escalated to level")) == 2, "no level 4 exists"


async def test_acknowledging_stops_the_escalation(slack: Slack) -> None:
    channel = await slack.declare()
    await advance(slack, 3)
    await slack.click(Action.ACK, slack.alert(channel), channel, user=BOB)
    await advance(slack, 60)
    assert not posted(slack, channel.name, "escalated to level")
    assert not posted(slack, channel.name, "response target")
    record = await slack.record(channel)
    assert record.incident.time_to_acknowledge() == 3 * M


async def test_manual_escalation_skips_the_level_it_reached(slack: Slack) -> None:
    channel = await slack.declare()
    await advance(slack, 1)
    await slack.command("escalate secondary needed now", channel=channel.id)
    await advance(slack, 15)
    assert len(posted(slack, channel.name, "escalated to level 2")) == 1
    await advance(slack, 15)
    assert len(posted(slack, channel.name, "escalated to level 3")) == 1


# ---- update nudges -------------------------------------------------------------------------
async def test_nudge_then_comms_lead_then_announcement(slack: Slack) -> None:
    channel = await slack.declare()
    await slack.command("ack", user=BOB, channel=channel.id)
    await slack.command("role comms_lead <@U0CAROL|carol>", channel=channel.id)
    await advance(slack, 29)
    assert not posted(slack, channel.name, "status update is due")
    await advance(slack, 1)
    (nudge,) = posted(slack, channel.name, "status update is due")
    assert "<@U0ALICE>" in nudge, "the declarer, as nobody took command"
    last = slack.fake.channel(channel.name).messages[-1]
    labels = [
        e["text"]["text"]
        for b in last.blocks or []
        for e in b.get("elements", [])
        if e.get("type") == "button"
    ]
    assert labels == ["Post update", "Snooze 15m", "Snooze 30m", "Snooze 1h"]
    await advance(slack, 15)
    (comms,) = posted(slack, channel.name, "(comms lead)")
    assert f"<@{CAROL}>" in comms
    assert not posted(slack, "incidents", "overdue")
    await advance(slack, 15)
    (overdue,) = posted(slack, "incidents", "is 30m overdue")
    assert "INC-20261122-001" in overdue


async def test_an_update_resets_the_nudge_clock(slack: Slack) -> None:
    channel = await slack.declare()
    await slack.command("ic", user=BOB, channel=channel.id)
    await advance(slack, 25)
    await slack.command("update rolling back", user=BOB, channel=channel.id)
    await advance(slack, 29)
    assert not posted(slack, channel.name, "status update is due")
    await advance(slack, 1)
    (nudge,) = posted(slack, channel.name, "status update is due")
    assert f"<@{BOB}>" in nudge, "the commander is nudged"


async def test_snooze_button_and_command(slack: Slack) -> None:
    channel = await slack.declare()
    await advance(slack, 30)
    nudge = slack.fake.channel(channel.name).messages[-1]
    reply = await slack.click("nudge_snooze_30m", nudge, channel, user=BOB)
    assert reply.status == 200
    await slack.settle()
    assert "snoozed until 2026-11-22 10:00 UTC" in (await reply.followups())[0]["text"]
    await advance(slack, 29)
    assert len(posted(slack, channel.name, "status update is due")) == 1
    assert not posted(slack, channel.name, "(comms lead)"), "the snooze stopped the chain"
    await advance(slack, 1)
    assert len(posted(slack, channel.name, "status update is due")) == 2
    reply2 = await slack.command("snooze 1h", channel=channel.id)
    assert reply2.text is not None
    assert "snoozed until 2026-11-22 11:00 UTC" in reply2.text
    bad = await slack.command("snooze forever", channel=channel.id)
    assert bad.text is not None
    assert "`forever` is not a duration" in bad.text


async def test_lowest_severity_is_never_nudged(slack: Slack) -> None:
    channel = await slack.declare("sev4 typo on pricing page")
    await advance(slack, 600)
    assert not posted(slack, channel.name, "status update is due")
    reply = await slack.command("snooze 30m", channel=channel.id)
    assert reply.text is not None
    assert "SEV4 incidents get no update nudges" in reply.text


async def test_severity_change_replans_the_clocks(slack: Slack) -> None:
    channel = await slack.declare("sev3 search slow")
    await advance(slack, 10)
    assert not posted(slack, channel.name, "response target")
    await slack.command("sev sev1", channel=channel.id)
    await slack.settle()
    (missed,) = posted(slack, channel.name, "response target")
    assert "5m response target for SEV1" in missed


# ---- time open -----------------------------------------------------------------------------
async def test_targets_and_time_open_escalations(slack: Slack) -> None:
    channel = await slack.declare()
    await slack.command("ack", user=BOB, channel=channel.id)
    await advance(slack, 60)
    assert posted(slack, channel.name, "Resolution target missed")
    assert posted(slack, "incidents", "Resolution target missed")
    await advance(slack, 60)
    (vp,) = posted(slack, channel.name, "open for 2h")
    assert "<@U0VPENG>" in vp
    await advance(slack, 120)
    (cto,) = posted(slack, channel.name, "open for 4h")
    assert "<@U0CTO>" in cto
    await slack.command("resolve fixed", channel=channel.id)
    await advance(slack, 600)
    assert len(posted(slack, channel.name, "open for")) == 2


# ---- after resolution ----------------------------------------------------------------------
async def test_followups_remind_until_done(slack: Slack) -> None:
    channel = await slack.declare()
    await slack.command("ic", user=BOB, channel=channel.id)
    await slack.command("resolve fixed", user=BOB, channel=channel.id)
    await advance(slack, 24 * 60)
    (report,) = posted(slack, channel.name, "the incident report")
    assert f"<@{BOB}>" in report
    message = slack.fake.channel(channel.name).messages[-1]
    reply = await slack.click("duty_done", message, channel, user=BOB)
    assert reply.status == 200
    await slack.settle()
    assert posted(slack, channel.name, "marked *report* done")
    await advance(slack, 24 * 60)
    assert len(posted(slack, channel.name, "the incident report")) == 1, "done: no more"
    assert len(posted(slack, channel.name, "the post-mortem review")) == 1
    await advance(slack, 24 * 60)
    assert len(posted(slack, channel.name, "the post-mortem review")) == 2, "daily until done"


async def test_security_incident_has_a_regulator_clock(slack: Slack) -> None:
    channel = await slack.declare("sev1 possible data breach")
    await slack.command("tag security", channel=channel.id)
    await advance(slack, 24 * 60)
    (first,) = posted(slack, channel.name, "notify the regulator")
    assert "due in 2d" in first
    await advance(slack, 24 * 60)
    assert any("due in 1d" in t for t in posted(slack, channel.name, "notify the regulator"))
    reminders = [m for m in channel.messages if "notify the regulator" in message_text(m)]
    await slack.click("duty_done", reminders[-1], channel, user=BOB)
    await advance(slack, 48 * 60)
    assert len(posted(slack, channel.name, "notify the regulator")) == 2


# ---- durability ----------------------------------------------------------------------------
async def test_timers_survive_a_restart_and_fire_once(slack: Slack, policy: Policy) -> None:
    channel = await slack.declare()
    await slack.bot.close()  # the process is gone; its timers are rows in the database
    slack.clock.advance(timedelta(minutes=20))
    again = await Runtime.create(
        settings_for(slack.fake, slack.bot.database.url, pagerduty_events_url=slack.pagerduty.url),
        clock=slack.clock,
        policy=policy,
        database=slack.bot.database.reopen(),
    )
    try:
        await again.settle()
        await again.settle()
    finally:
        await again.close()
    assert len(posted(slack, channel.name, "escalated to level 2")) == 1
    assert len(posted(slack, channel.name, "response target")) == 1


# ---- paging --------------------------------------------------------------------------------
async def test_pagerduty_is_triggered_at_its_level_and_resolved(slack: Slack) -> None:
    channel = await slack.declare()
    await advance(slack, 15)
    (trigger,) = slack.pagerduty.events
    assert trigger["routing_key"] == "R0UTINGKEY"
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == "INC-20261122-001"
    assert trigger["payload"]["severity"] == "critical"
    assert "payment down" in trigger["payload"]["summary"]
    assert "PagerDuty paged" in posted(slack, channel.name, "escalated to level 2")[0]
    await slack.command("resolve fixed", channel=channel.id)
    assert [e["event_action"] for e in slack.pagerduty.events] == ["trigger", "resolve"]


async def test_pagerduty_outage_is_said_and_retried_without_blocking_slack(
    slack: Slack,
) -> None:
    channel = await slack.declare()
    slack.pagerduty.fail(2)
    await advance(slack, 15)
    assert posted(slack, channel.name, "escalated to level 2"), "Slack is not held up"
    (trouble,) = posted(slack, channel.name, "PagerDuty page not delivered")
    assert "The bot keeps retrying" in trouble
    assert not slack.pagerduty.events
    await advance(slack, 1 / 60)  # backoff 1 s
    await advance(slack, 2 / 60)  # backoff 2 s
    assert [e["event_action"] for e in slack.pagerduty.events] == ["trigger"]
    assert posted(slack, channel.name, "PagerDuty reached after retrying")


async def test_drills_page_nobody(slack: Slack) -> None:
    outcome = await slack.bot.service.declare(severity="sev1", title="practice", by=BOB, drill=True)
    await slack.settle()
    await advance(slack, 20)
    assert outcome.incident.drill
    assert not slack.pagerduty.events
    assert not posted(slack, "incidents", "practice")


async def test_drill_is_marked_pings_nobody_and_reports_the_times(slack: Slack) -> None:
    reply = await slack.command("drill sev1 practice: payments down")
    assert reply.text is not None
    assert reply.text.startswith("🧪 Drill *INC-20261122-001* declared (SEV1)")
    channel = slack.incident_channel()
    assert channel.name == "inc-20261122-001-drill-practice-payments-down"
    assert channel.topic.startswith("DRILL | SEV1")
    alert = message_text(slack.alert(channel))
    assert "🧪 DRILL · 🚨 INCIDENT ALERT - SEV1" in alert
    assert "nobody: this is a drill (would notify `S0MGMT`, `S0ONCALL`)" in alert
    await advance(slack, 16)  # the response target and level 2 pass
    await slack.command("ack", user=BOB, channel=channel.id)
    await advance(slack, 20)
    await slack.command("update practising the failover", user=BOB, channel=channel.id)
    await advance(slack, 4)
    await slack.command("resolve failed over", user=BOB, channel=channel.id)
    everything = "\n".join(slack.texts(channel))
    assert "<!subteam^" not in everything
    assert "<@U0MANAGER>" not in everything
    assert all("DRILL" in m.text for m in channel.messages if m.user == slack.fake.bot_user_id)
    assert not slack.fake.channel("incidents").messages, "nothing outside the channel"
    assert not slack.pagerduty.events
    (report,) = [t for t in slack.texts(channel) if "🧪 Drill report" in t]
    assert "Time to acknowledge: 16m (target 5m) ❌" in report
    assert "Time to resolve: 40m (target 1h) ✅" in report
    assert "Status updates: 1, 0 before their nudge (every 30m) ❌" in report
    assert "Escalated automatically 1 time(s)" in report
