"""The pure core: the incident state machine, names, the policy, escaping."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from bot.domain.errors import IllegalTransition, InvalidCommand, NothingToDo
from bot.domain.incident import EventKind, Incident
from bot.domain.naming import channel_name, incident_id, slugify
from bot.domain.policy import (
    PolicyError,
    default_policy,
    format_duration,
    human_duration,
    parse_duration,
    parse_policy,
)
from bot.slack.texts import escape, escape_error

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
POLICY = default_policy()


def declared(title: str = "payment down", severity: str = "sev1") -> Incident:
    incident, events = Incident.declare(
        incident_id="INC-20261122-001",
        title=title,
        severity=POLICY.get(severity),
        by="U0ALICE",
        now=NOW,
    )
    assert [e.kind for e in events] == [EventKind.DECLARED]
    return incident


def test_life_cycle_records_an_event_per_change() -> None:
    incident = declared()
    later = NOW + timedelta(minutes=4)
    (ack,) = incident.acknowledge(by="U0BOB", now=later)
    assert ack.data["seconds"] == 240
    assert incident.time_to_acknowledge() == timedelta(minutes=4)
    assert [e.kind for e in incident.take_command(by="U0BOB", now=later)] == [
        EventKind.COMMANDER_CHANGED
    ]
    events = incident.post_update(
        by="U0BOB", text="failing over", now=later, policy=POLICY, status="mitigating"
    )
    assert [e.kind for e in events] == [EventKind.STATUS_CHANGED, EventKind.UPDATE_POSTED]
    assert incident.next_update_due(POLICY) == later + timedelta(minutes=30)
    incident.change_severity(by="U0BOB", severity=POLICY.get("p1"), now=later, policy=POLICY)
    assert incident.severity == "SEV2"
    (resolved,) = incident.resolve(by="U0BOB", summary="rolled back", now=NOW + timedelta(hours=1))
    assert resolved.data["seconds"] == 3600
    assert incident.status == "resolved"
    assert incident.next_update_due(POLICY) is None


def test_taking_command_acknowledges_when_nobody_has() -> None:
    incident = declared()
    kinds = [e.kind for e in incident.take_command(by="U0BOB", now=NOW)]
    assert kinds == [EventKind.ACKNOWLEDGED, EventKind.COMMANDER_CHANGED]
    assert incident.acknowledged_by == "U0BOB"
    assert incident.roles["commander"] == "U0BOB"


def test_repeats_change_nothing() -> None:
    incident = declared()
    incident.acknowledge(by="U0BOB", now=NOW)
    with pytest.raises(NothingToDo, match="already acknowledged by <@U0BOB>"):
        incident.acknowledge(by="U0CAROL", now=NOW)
    incident.take_command(by="U0BOB", now=NOW)
    with pytest.raises(NothingToDo):
        incident.take_command(by="U0BOB", now=NOW)
    with pytest.raises(NothingToDo):
        incident.set_status(by="U0BOB", status="investigating", now=NOW, policy=POLICY)
    with pytest.raises(NothingToDo):
        incident.change_severity(
            by="U0BOB", severity=POLICY.get("critical"), now=NOW, policy=POLICY
        )


def test_resolved_incident_refuses_changes() -> None:
    incident = declared()
    incident.resolve(by="U0BOB", summary="fixed", now=NOW)
    with pytest.raises(IllegalTransition, match="already resolved"):
        incident.resolve(by="U0BOB", summary="again", now=NOW)
    with pytest.raises(IllegalTransition):
        incident.acknowledge(by="U0BOB", now=NOW)
    with pytest.raises(IllegalTransition):
        incident.post_update(by="U0BOB", text="x", now=NOW, policy=POLICY)


def test_bad_words_are_explained() -> None:
    incident = declared()
    with pytest.raises(InvalidCommand, match="investigating, identified, mitigating, monitoring"):
        incident.set_status(by="U0BOB", status="fixed", now=NOW, policy=POLICY)
    with pytest.raises(InvalidCommand, match="resolve"):
        incident.set_status(by="U0BOB", status="resolved", now=NOW, policy=POLICY)
    with pytest.raises(InvalidCommand, match="commander, tech_lead, comms_lead, scribe"):
        incident.assign_role(by="U0BOB", role="chef", user="U0CAROL", now=NOW, policy=POLICY)
    with pytest.raises(InvalidCommand, match="empty"):
        incident.resolve(by="U0BOB", summary="   ", now=NOW)
    with pytest.raises(InvalidCommand, match="title is empty"):
        declared(title="  ")


def test_escalation_walks_the_chain_and_stops_at_the_top() -> None:
    incident = declared()
    levels = [incident.escalate(by="U0BOB", now=NOW, policy=POLICY)[0].data["level"]]
    levels += [incident.escalate(by=None, now=NOW, policy=POLICY)[0].data["level"]]
    levels += [incident.escalate(by=None, now=NOW, policy=POLICY)[0].data["level"]]
    assert levels == [2, 3, 4]
    with pytest.raises(IllegalTransition, match="last escalation level"):
        incident.escalate(by="U0BOB", now=NOW, policy=POLICY)


def test_long_title_is_cut_not_refused() -> None:
    incident = declared(title="x" * 800)
    assert len(incident.title) == 500
    assert incident.title.endswith("…")


# ---- names -------------------------------------------------------------------------------
def test_incident_ids() -> None:
    assert incident_id(date(2026, 11, 2), 7) == "INC-20261102-007"
    assert incident_id(date(2026, 11, 2), 1234) == "INC-20261102-1234"


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Payment down!!", "inc-20261122-001-payment-down"),
        ("Élan café: DB ☕ slow", "inc-20261122-001-elan-cafe-db-slow"),
        ("🔥🔥🔥", "inc-20261122-001"),
        ("<!channel> ...", "inc-20261122-001-channel"),
    ],
)
def test_channel_names_are_slack_valid(title: str, expected: str) -> None:
    assert channel_name("INC-20261122-001", title) == expected


def test_channel_name_stays_within_80_with_suffix() -> None:
    title = "database connection pool exhausted on the primary cluster " * 10
    for attempt in range(0, 12):
        name = channel_name("INC-20261122-001", title, attempt=attempt)
        assert len(name) <= 80
        assert not name.endswith("-") or attempt
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert channel_name("INC-20261122-001", "db", attempt=2) == "inc-20261122-001-db-3"


def test_slugify_drops_everything_but_words() -> None:
    assert slugify("  API -- 5xx / spikes ") == "api-5xx-spikes"


# ---- policy ------------------------------------------------------------------------------
def test_default_policy_words() -> None:
    for word, name in [
        ("P0", "SEV1"),
        ("critical", "SEV1"),
        ("sev2", "SEV2"),
        ("HIGH", "SEV2"),
        ("p2", "SEV3"),
        ("medium", "SEV3"),
        ("low", "SEV4"),
        ("p3", "SEV4"),
    ]:
        severity = POLICY.severity(word)
        assert severity is not None
        assert severity.name == name
    assert POLICY.severity("sev5") is None
    assert POLICY.get("sev1").ack_timeout == timedelta(minutes=5)
    assert POLICY.get("sev4").update_interval is None
    assert all(not level.notify for s in POLICY.severities for level in s.escalation)


def test_durations_round_trip() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("15m") == timedelta(minutes=15)
    assert parse_duration("3d") == timedelta(days=3)
    assert format_duration(timedelta(minutes=90)) == "90m"
    assert human_duration(timedelta(hours=1, minutes=3, seconds=9)) == "1h 3m"
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("15 minutes")


def test_policy_errors_name_the_field() -> None:
    data = POLICY.model_dump(mode="json")
    data["severities"][0]["escalation"][1]["notify"] = ["@oncall"]
    with pytest.raises(PolicyError, match=r"severities\.0\.escalation\.1\.notify"):
        parse_policy(data, source="policy.yaml")
    data = POLICY.model_dump(mode="json")
    data["severities"][1]["aliases"] = ["p0"]
    with pytest.raises(PolicyError, match="'p0' names both SEV1 and SEV2"):
        parse_policy(data)
    data = POLICY.model_dump(mode="json")
    data["severities"][0]["ack_timout"] = "5m"
    with pytest.raises(PolicyError, match="ack_timout"):
        parse_policy(data)


# ---- escaping ----------------------------------------------------------------------------
def test_escape_neutralises_mentions_and_links() -> None:
    assert escape("<!channel> & <@U123> <https://x|y>") == (
        "&lt;!channel&gt; &amp; &lt;@U123&gt; &lt;https://x|y&gt;"
    )
    assert escape_error("`<!here>` taken by <@U0BOB>") == "`&lt;!here&gt;` taken by <@U0BOB>"
