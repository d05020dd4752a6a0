"""Reaching people: invitations, direct pages, re-paging on a severity raise, PagerDuty,
stale clicks and repeated forms, and who may act (guests, other organisations, the
policy's `permissions`). Everything is read off the fake Slack as a person would see it:
who is in the channel, who got a direct message, whom Slack notified."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.devtools.fakeslack import Channel
from bot.domain.policy import Policy, PolicyError, default_policy, parse_policy
from bot.simulate import simulate
from bot.slack.blocks import Action, Modal
from tests.harness import ALICE, BOB, CAROL, Slack, message_text

ON1, ON2 = "U0ONCALL1", "U0ONCALL2"  # the on-call group S0ONCALL
BOSS = "U0BOSS"  # the management group S0MGMT
SECOND = "U0SECOND"  # escalation level 2
LEAD = "U0LEAD"  # the SRE leads group S0LEADS
GUEST, STRANGER = "U0GUEST", "U0STRANGER"


def paging_policy(**permissions: list[str]) -> Policy:
    """The default numbers, with people named, PagerDuty on SEV1's first two levels."""
    data = default_policy().model_dump(mode="json")
    sev1, sev2, sev3 = data["severities"][:3]
    sev1["notify_on_declare"] = ["S0MGMT"]
    sev1["escalation"] = [
        {"after": "0s", "notify": ["S0ONCALL"], "pagerduty": "R0FIRST"},
        {"after": "15m", "notify": [SECOND], "pagerduty": "R0SECOND"},
        {"after": "30m", "notify": [CAROL]},
    ]
    sev2["escalation"] = [{"after": "0s", "notify": ["S0ONCALL"]}]
    sev3["escalation"] = [{"after": "0s", "notify": [ON1]}, {"after": "1h", "notify": [SECOND]}]
    data["permissions"] = permissions
    return parse_policy(data)


@pytest.fixture
def policy() -> Policy:
    return paging_policy()


@pytest.fixture
def people(slack: Slack) -> Slack:
    """The workspace: on-call, management, a second level, leads, a guest, a stranger."""
    fake = slack.fake
    for user, name in [(ON1, "oncall1"), (ON2, "oncall2"), (BOSS, "boss"), (SECOND, "second")]:
        fake.add_user(user, name, name.title())
    fake.add_user(LEAD, "lead", "Lead")
    fake.add_user(GUEST, "guest", "Guest", restricted=True)
    fake.add_user(STRANGER, "stranger", "Stranger", team_id="T0OTHERORG")
    fake.add_usergroup("S0ONCALL", "oncall", users=[ON1, ON2])
    fake.add_usergroup("S0MGMT", "management", users=[BOSS])
    fake.add_usergroup("S0LEADS", "sre-leads", users=[LEAD])
    return slack


async def advance(slack: Slack, minutes: float) -> None:
    slack.clock.advance(timedelta(minutes=minutes))
    await slack.settle()


def dm_texts(slack: Slack, user: str) -> list[str]:
    return [message_text(m) for m in slack.fake.dms(user)]


def notified_in(slack: Slack, user: str, channel: Channel) -> int:
    return len([n for n in slack.fake.notified(user) if n.channel == channel.id])


def pd(slack: Slack) -> list[tuple[str, str]]:
    return [(e["event_action"], e["routing_key"]) for e in slack.pagerduty.events]


# ---- reaching people -----------------------------------------------------------------------
async def test_declaration_invites_and_messages_every_paged_person(people: Slack) -> None:
    slack = people
    channel = await slack.declare("sev1 payment down")
    for person in (ON1, ON2, BOSS):
        assert person in channel.members, f"{person} invited"
        (page,) = dm_texts(slack, person)
        assert "SEV1" in page
        assert "payment down" in page
        assert f"<#{channel.id}>" in page
        dm = slack.fake.dms(person)[0]
        assert any(
            e.get("action_id") == Action.ACK for b in dm.blocks or [] for e in b.get("elements", [])
        ), "the page carries Acknowledge"
        # Invited before the alert mentions them: Slack notifies them in the channel too.
        assert notified_in(slack, person, channel) >= 1
    assert not slack.fake.dms(SECOND), "level 2 is not paged yet"
    assert pd(slack) == [("trigger", "R0FIRST")]


async def test_a_mention_alone_would_notify_nobody(people: Slack) -> None:
    """What the fake holds us to: a mention in a channel one is not in notifies nobody."""
    slack = people
    channel = await slack.declare("sev1 payment down")
    await advance(slack, 14)
    assert SECOND not in channel.members
    announce = slack.fake.channel("incidents")
    assert SECOND not in announce.members
    assert not slack.fake.notified(SECOND)


async def test_escalation_pages_the_next_level_directly(people: Slack) -> None:
    slack = people
    channel = await slack.declare("sev1 payment down")
    await advance(slack, 15)
    assert SECOND in channel.members
    (page,) = dm_texts(slack, SECOND)
    assert "escalation level 2" in page
    assert "15 min" in page
    assert pd(slack) == [("trigger", "R0FIRST"), ("trigger", "R0SECOND")]
    # The ack button in the direct message acknowledges, in Slack and in PagerDuty.
    dm_channel = next(c for c in slack.fake.channels.values() if c.is_im and SECOND in c.members)
    reply = await slack.click(Action.ACK, slack.fake.dms(SECOND)[0], dm_channel, user=SECOND)
    assert "acknowledged" in (await reply.followups())[0]["text"]
    assert sorted(pd(slack)[2:]) == [("acknowledge", "R0FIRST"), ("acknowledge", "R0SECOND")]
    await advance(slack, 60)
    assert not slack.fake.dms(CAROL), "acknowledged: level 3 is never paged"
    await slack.command("resolve fixed", channel=channel.id)
    assert sorted(pd(slack)[4:]) == [("resolve", "R0FIRST"), ("resolve", "R0SECOND")]


def unreachable_policy() -> Policy:
    data = paging_policy().model_dump(mode="json")
    data["severities"][1]["escalation"] = [
        {"after": "0s", "notify": ["S0ONCALL", "S0NOGROUP", "U0NOBODY", GUEST]}
    ]
    return parse_policy(data)


@pytest.mark.parametrize("policy", [unreachable_policy()])
async def test_unreachable_targets_are_said_and_the_rest_paged(people: Slack) -> None:
    slack = people
    channel = await slack.declare("sev2 search slow")
    assert {ON1, ON2} <= channel.members
    assert len(dm_texts(slack, ON1)) == 1
    notice = next(t for t in slack.texts(channel) if "could be reached" in t)
    assert "S0NOGROUP" in notice
    assert "U0NOBODY" in notice
    assert GUEST in notice, "a guest cannot be invited"


async def test_pages_survive_slack_trouble_without_doubling(people: Slack) -> None:
    slack = people
    slack.fake.fail("conversations.invite", status=503)
    slack.fake.rate_limit("usergroups.users.list", retry_after=1)
    slack.fake.fail("chat.postMessage", status=500, times=2)
    await slack.command("sev1 payment down")
    for _ in range(10):
        await advance(slack, 0.1)
    channel = slack.incident_channel()
    for person in (ON1, ON2, BOSS):
        assert person in channel.members
        assert len(slack.fake.dms(person)) == 1, f"{person} paged exactly once"


async def test_drills_page_nobody(people: Slack) -> None:
    slack = people
    await slack.command("drill sev1 practice payment down")
    await advance(slack, 45)
    channel = slack.incident_channel()
    for person in (ON1, ON2, BOSS, SECOND, CAROL):
        assert not slack.fake.dms(person)
        assert person not in channel.members
    assert not pd(slack)


# ---- severity changes ----------------------------------------------------------------------
async def test_raising_an_acknowledged_incident_pages_the_new_severity(people: Slack) -> None:
    slack = people
    channel = await slack.declare("sev3 checkout slow")
    assert len(dm_texts(slack, ON1)) == 1
    await slack.command("ack", channel=channel.id, user=ON1)
    await advance(slack, 20)
    await slack.command("sev sev1", channel=channel.id, user=ON1)
    assert BOSS in channel.members
    (boss_page,) = dm_texts(slack, BOSS)
    assert "raised the severity from SEV3 to SEV1" in boss_page
    assert len(dm_texts(slack, ON2)) == 1
    assert ("trigger", "R0FIRST") in pd(slack)
    await advance(slack, 60)
    assert not slack.fake.dms(SECOND), "acknowledged: the chain does not run"


async def test_raising_an_unacknowledged_incident_fires_past_levels_once(people: Slack) -> None:
    slack = people
    channel = await slack.declare("sev3 checkout slow")
    await advance(slack, 20)
    await slack.command("sev sev1", channel=channel.id)
    # Level 2 of SEV1 (15m) is past: it fires now, once.
    assert len(dm_texts(slack, SECOND)) == 1
    assert "escalation level 2" in dm_texts(slack, SECOND)[0]
    await advance(slack, 5)
    assert len(dm_texts(slack, SECOND)) == 1
    await advance(slack, 5)
    assert len(dm_texts(slack, CAROL)) == 1, "level 3 at 30m goes on as planned"


async def test_lowering_pages_nobody(people: Slack) -> None:
    slack = people
    channel = await slack.declare("sev1 payment down")
    paged = {p: len(slack.fake.dms(p)) for p in (ON1, ON2, BOSS, SECOND)}
    await slack.command("sev sev3", channel=channel.id)
    assert {p: len(slack.fake.dms(p)) for p in paged} == paged


# ---- idempotent clicks and forms -----------------------------------------------------------
async def test_two_clicks_on_escalate_climb_one_level(people: Slack) -> None:
    slack = people
    channel = await slack.declare("sev1 payment down")
    alert = slack.alert(channel)
    first = await slack.click(Action.ESCALATE, alert, channel, user=BOB)
    second = await slack.click(Action.ESCALATE, alert, channel, user=BOB, old=True)
    assert "escalated to level 2" in (await first.followups())[0]["text"]
    assert "already escalated" in (await second.followups())[0]["text"]
    assert (await slack.record(channel)).incident.escalation_level == 1
    assert not slack.fake.dms(CAROL), "level 3 was not paged"
    # The re-rendered alert carries the new level: escalating again is deliberate.
    third = await slack.click(Action.ESCALATE, slack.alert(channel), channel, user=BOB)
    assert "escalated to level 3" in (await third.followups())[0]["text"]


async def test_two_clicks_on_snooze_postpone_once(people: Slack) -> None:
    slack = people
    channel = await slack.declare("sev2 search slow")
    await slack.command("ack", channel=channel.id)
    await advance(slack, 30)
    nudge = next(m for m in channel.messages if "status update is due" in m.text)
    await slack.click(f"{Action.NUDGE_SNOOZE}_15m", nudge, channel)
    reply = await slack.click(f"{Action.NUDGE_SNOOZE}_15m", nudge, channel)
    assert "already answered" in (await reply.followups())[0]["text"]
    record = await slack.record(channel)
    assert record.incident.snoozed_until == record.incident.declared_at + timedelta(minutes=45)


async def test_forms_submitted_twice_act_once(people: Slack) -> None:
    slack = people
    await slack.command("")
    answers: dict[str, object] = {"severity": "SEV2", "title": "Search down"}
    await slack.submit_modal(Modal.DECLARE, answers)
    again = await slack.submit_modal(Modal.DECLARE, answers)
    assert again.status_code == 200
    assert len([c for c in slack.fake.channels.values() if c.name.startswith("inc-")]) == 1
    channel = slack.incident_channel()
    await slack.command("update", channel=channel.id)
    update: dict[str, object] = {"text": "Found it"}
    await slack.submit_modal(Modal.UPDATE, update)
    await slack.submit_modal(Modal.UPDATE, update)
    assert len([t for t in slack.texts(channel) if "INCIDENT UPDATE" in t]) == 1


async def test_compliance_done_exists_only_for_duties_the_incident_has(people: Slack) -> None:
    slack = people
    channel = await slack.declare("sev2 search slow")
    record = await slack.record(channel)
    reply = await slack.driver.click(
        Action.DUTY_DONE,
        f"{record.incident.id}|compliance:security",
        user=ALICE,
        channel=channel.id,
        message_ts=channel.messages[0].ts,
        block_id="duty_actions",
    )
    assert "has no duty" in (await reply.followups())[0]["text"]
    assert not (await slack.record(channel)).incident.done


# ---- who may act ---------------------------------------------------------------------------
async def test_guests_and_strangers_cannot_act(people: Slack) -> None:
    slack = people
    channel = await slack.declare("sev2 search slow")
    for outsider in (GUEST, STRANGER):
        channel.members.add(outsider)
        reply = await slack.command("resolve done here", channel=channel.id, user=outsider)
        assert reply.text is not None
        assert "can't act on incidents" in reply.text
        click = await slack.click(Action.RESOLVE, slack.alert(channel), channel, user=outsider)
        assert "can't act" in (await click.followups())[0]["text"]
        refused = await slack.command("sev1 my own incident", user=outsider)
        assert refused.text is not None
        assert "can't act" in refused.text
    help_reply = await slack.command("help", user=GUEST)
    assert help_reply.text is not None
    assert "/incident" in help_reply.text
    assert (await slack.record(channel)).incident.is_open
    assert len([c for c in slack.fake.channels.values() if c.name.startswith("inc-")]) == 1


async def test_when_slack_cannot_say_who_someone_is_they_may_act(people: Slack) -> None:
    slack = people
    channel = await slack.declare("sev2 search slow")
    slack.fake.add_user("U0NEWBIE", "newbie", "Newbie")
    slack.fake.fail("users.info", status=500, times=10)
    reply = await slack.command("note looking at it", channel=channel.id, user="U0NEWBIE")
    assert reply.text is not None
    assert "Note added" in reply.text


@pytest.mark.parametrize(
    "policy", [paging_policy(resolve=["commander", "S0LEADS"], lower_severity=["commander"])]
)
async def test_restrictive_policy(people: Slack) -> None:
    slack = people
    channel = await slack.declare("sev1 payment down")
    # Nobody holds command yet: anyone may.
    await slack.command("sev sev2", channel=channel.id, user=BOB)
    assert (await slack.record(channel)).incident.severity == "SEV2"
    await slack.command("sev sev1", channel=channel.id, user=BOB)
    await slack.command("ic", channel=channel.id, user=ALICE)
    refused = await slack.command("resolve it is fine", channel=channel.id, user=BOB)
    assert refused.text is not None
    assert "Only the commander (<@U0ALICE>)" in refused.text
    assert "may resolve" in refused.text
    lowered = await slack.command("sev sev4", channel=channel.id, user=BOB)
    assert lowered.text is not None
    assert "may lower the severity" in lowered.text
    raised = await slack.command("sev critical", channel=channel.id, user=BOB)
    assert raised.text is not None
    assert "already SEV1" in raised.text, "raising is never restricted"
    record = await slack.record(channel)
    assert record.incident.is_open
    assert record.incident.severity == "SEV1"
    # A member of the leads group may resolve; so may the commander.
    ok = await slack.command("resolve rolled back", channel=channel.id, user=LEAD)
    assert ok.text is not None
    assert "resolved" in ok.text
    assert not (await slack.record(channel)).incident.is_open


def test_permissions_naming_an_unknown_role_fail_the_policy() -> None:
    data = default_policy().model_dump(mode="json")
    data["permissions"] = {"resolve": ["incident_overlord"]}
    with pytest.raises(PolicyError, match=r"permissions\.resolve"):
        parse_policy(data)


# ---- the announcement channel ----------------------------------------------------------------
async def test_announcement_copy_leads_into_the_channel_without_actions(people: Slack) -> None:
    slack = people
    channel = await slack.declare("sev1 payment down")
    copy = slack.alert(slack.fake.channel("incidents"))
    ids = [e.get("action_id") for b in copy.blocks or [] for e in b.get("elements", [])]
    assert Action.RESOLVE not in ids
    assert Action.ESCALATE not in ids
    assert Action.OPEN_CHANNEL in ids
    assert channel.id in str(copy.blocks)


# ---- policy simulate -----------------------------------------------------------------------
def test_simulate_shows_pages_and_a_raise() -> None:
    lines = simulate(paging_policy(), "sev3", raise_to="sev1", raise_at=timedelta(minutes=20))
    text = "\n".join(lines)
    assert "invited + direct message: U0ONCALL1" in text
    raise_at = next(i for i, line in enumerate(lines) if "raised SEV3 → SEV1" in line)
    assert lines[raise_at].strip().startswith("+20m")
    assert "invited + direct message: S0MGMT, S0ONCALL" in lines[raise_at + 1]
    assert "PagerDuty trigger (routing key R0FIRST)" in lines[raise_at + 2]
    assert "escalation level 2: U0SECOND" in text
    assert "PagerDuty trigger (routing key R0SECOND)" in text


@pytest.mark.parametrize("policy", [paging_policy(resolve=["commander", "S0LEADS"])])
async def test_a_refusal_names_the_groups_that_may(people: Slack) -> None:
    slack = people
    channel = await slack.declare("sev2 search slow")
    await slack.command("ic", channel=channel.id, user=ALICE)
    refused = await slack.command("resolve done", channel=channel.id, user=BOB)
    assert refused.text is not None
    assert "<!subteam^S0LEADS>" in refused.text, "shown as the group, not as escaped text"
    assert "&lt;" not in refused.text


@pytest.mark.parametrize("method", ["conversations.invite", "chat.postMessage"])
async def test_a_lost_answer_while_paging_pages_once(people: Slack, method: str) -> None:
    """Slack did the invite / sent the page, but the answer never came back: the retry
    looks before doing it again."""
    slack = people
    slack.fake.lose_answer(method)
    await slack.command("sev2 search slow")
    for _ in range(3):
        slack.clock.advance(timedelta(seconds=5))
        await slack.settle()
    channel = slack.incident_channel()
    for person in (ON1, ON2):
        assert person in channel.members
        assert len(slack.fake.dms(person)) == 1, f"{person} paged exactly once"
    assert not [t for t in slack.texts(channel) if "could be reached" in t]


async def test_a_failed_lookup_is_not_repeated_for_every_request(people: Slack) -> None:
    """During a Slack outage a burst of commands waits for users.info once, not each time."""
    slack = people
    channel = await slack.declare("sev2 search slow")
    slack.fake.add_user("U0NEWBIE", "newbie", "Newbie")
    slack.fake.fail("users.info", status=500, times=50)
    before = len(slack.fake.calls_to("users.info"))
    for n in range(3):
        reply = await slack.command(f"note look {n}", channel=channel.id, user="U0NEWBIE")
        assert reply.text is not None
        assert "Note added" in reply.text
    asked = len(slack.fake.calls_to("users.info")) - before
    assert asked <= 3, "one look-up (with the client's own two retries), then the cache"


async def test_a_raise_past_the_new_response_target_pages_each_person_once(
    people: Slack,
) -> None:
    """Raised to SEV1 after SEV1's 5-minute response target has passed: the people SEV1
    pages at declaration get one direct message about it, not the page and, in the same
    moment, a reminder that the target was missed."""
    slack = people
    channel = await slack.declare("sev3 checkout slow")
    await advance(slack, 20)
    before = len(dm_texts(slack, ON2))
    await slack.command("sev sev1", channel=channel.id)
    await advance(slack, 1)
    assert len(dm_texts(slack, ON2)) - before == 1, dm_texts(slack, ON2)
    missed = [t for t in slack.texts(channel) if "5m response target for SEV1" in t]
    assert len(missed) == 1, "the missed target is still said in the channel"
