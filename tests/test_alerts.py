"""Alerts open incidents: Alertmanager, Grafana and generic webhooks, sent over HTTP to the
running bot (with ALERTS_TOKEN set), against the fake Slack. What is asserted is what people
and monitoring see: the HTTP answers, the incident channels and their messages, who was
paged, the stored incidents."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bot.clock import FakeClock
from bot.devtools.driver import SlackDriver
from bot.devtools.fakepagerduty import FakePagerDuty
from bot.devtools.fakeslack import Channel, FakeSlack
from bot.domain.policy import Policy, default_policy, parse_policy
from bot.runtime import Runtime
from bot.slack.blocks import Action, Modal
from bot.store.db import Database
from tests.conftest import settings_for
from tests.harness import ALICE, BOB, CAROL, SIGNING_SECRET, Slack, message_text

FIXTURES = Path(__file__).parent / "fixtures" / "alerts"
TOKEN = "alerts-token-3f9c1e"
ON1, ON2, BOSS, SECOND = "U0ONCALL1", "U0ONCALL2", "U0BOSS", "U0SECOND"
AM = "/alerts/alertmanager"
GENERIC = "/alerts/generic"

POLICY_YAML = """\
alerts:
  - match: {alertname: PaymentSuccessRateLow}
    severity: SEV1
    title: "Payment success rate below 95%"
    services: [payments]
  - match: {alertname: "~HighErrorRate|ErrorBudgetBurn"}
    severity: SEV2
  - match: {team: "~.+"}
"""


def alert_policy() -> Policy:
    """The built-in numbers with people named, and the rules above."""
    data = default_policy().model_dump(mode="json")
    sev1, sev2, sev3 = data["severities"][:3]
    sev1["notify_on_declare"] = ["S0MGMT"]
    sev1["escalation"] = [
        {"after": "0s", "notify": ["S0ONCALL"], "pagerduty": "R0FIRST"},
        {"after": "15m", "notify": [SECOND]},
    ]
    sev2["escalation"] = [{"after": "0s", "notify": [ON1]}]
    sev3["escalation"] = [{"after": "0s", "notify": [ON2]}]
    data["alerts"] = yaml.safe_load(POLICY_YAML)["alerts"]
    return parse_policy(data)


# Refusals happen before the database is touched, and the rules are decided before it is
# written: those tests run on SQLite only (the `backend` fixture, parametrized directly),
# which keeps the suite fast. Everything the store does runs on both.
BEFORE_THE_DATABASE = pytest.mark.parametrize("backend", ["sqlite"])
ONE_DATABASE = BEFORE_THE_DATABASE


def fixture(name: str) -> dict[str, Any]:
    data = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture
def clock() -> FakeClock:
    """Noon: the fixtures' alerts started ten minutes before."""
    return FakeClock(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))


@pytest.fixture
def policy() -> Policy:
    return alert_policy()


@dataclass
class Monitoring:
    """Monitoring as the bot's alert endpoints see it, beside Slack as people see it."""

    slack: Slack
    http: httpx.AsyncClient

    async def post(
        self, path: str, body: Any, *, token: str | None = TOKEN, raw: bytes | None = None
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}".strip()
        content = raw if raw is not None else json.dumps(body).encode("utf-8")
        return await self.http.post(path, content=content, headers=headers)

    async def send(self, path: str, body: Any, *, settle: bool = True) -> dict[str, Any]:
        """Post, expect 202, let the bot do its Slack work; the answer's JSON."""
        response = await self.post(path, body)
        assert response.status_code == 202, response.text
        if settle:
            await self.slack.settle()
        answer = response.json()
        assert isinstance(answer, dict)
        return answer

    def channels(self) -> list[Channel]:
        return [c for c in self.slack.fake.channels.values() if c.name.startswith("inc-")]

    async def incidents(self) -> list[Any]:
        async with self.slack.bot.store.transaction() as tx:
            records = await tx.declared_since(datetime(2000, 1, 1, tzinfo=UTC))
        return [r.incident for r in records]


def add_people(fake: FakeSlack) -> None:
    for user, name in [(ON1, "oncall1"), (ON2, "oncall2"), (BOSS, "boss"), (SECOND, "second")]:
        fake.add_user(user, name, name.title())
    fake.add_usergroup("S0ONCALL", "oncall", users=[ON1, ON2])
    fake.add_usergroup("S0MGMT", "management", users=[BOSS])


async def start_bot(
    fake: FakeSlack,
    database: Database,
    clock: FakeClock,
    policy: Policy,
    pagerduty: FakePagerDuty,
    **settings: Any,
) -> tuple[Runtime, int]:
    runtime = await Runtime.create(
        settings_for(fake, database.url, pagerduty_events_url=pagerduty.url, **settings),
        clock=clock,
        policy=policy,
        database=database,
    )
    port = await runtime.start(host="127.0.0.1", port=0, worker=False)
    return runtime, port


@pytest.fixture
async def monitoring(
    fake: FakeSlack,
    database: Database,
    clock: FakeClock,
    policy: Policy,
    pagerduty: FakePagerDuty,
) -> AsyncIterator[Monitoring]:
    """The bot with ALERTS_TOKEN set, serving HTTP against the fake Slack."""
    general = fake.add_channel("general", members=[ALICE, BOB, CAROL])
    fake.add_channel("incidents", members=[ALICE, BOB, CAROL], bot_is_member=False)
    add_people(fake)
    runtime, port = await start_bot(fake, database, clock, policy, pagerduty, alerts_token=TOKEN)
    await runtime.background.wait()
    url = f"http://127.0.0.1:{port}"
    async with (
        SlackDriver(bot_url=url, signing_secret=SIGNING_SECRET, fake=fake) as driver,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        slack = Slack(
            fake=fake, driver=driver, bot=runtime, clock=clock, general=general, pagerduty=pagerduty
        )
        yield Monitoring(slack=slack, http=http)
    await runtime.close()


def texts_of(channel: Channel) -> list[str]:
    return [message_text(m) for m in channel.messages]


def everything_posted(fake: FakeSlack) -> list[str]:
    return [message_text(m) for c in fake.channels.values() for m in c.messages]


def with_alert(payload: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The payload with its (first) alert changed: labels/annotations merged, others set."""
    data = copy.deepcopy(payload)
    alert = data["alerts"][0]
    for name, value in changes.items():
        if name in ("labels", "annotations"):
            alert[name] = {**alert[name], **value}
        else:
            alert[name] = value
    return data


# ---- declaring -----------------------------------------------------------------------------
async def test_an_alertmanager_group_declares_an_incident_as_the_bot(
    monitoring: Monitoring,
) -> None:
    answer = await monitoring.send(AM, fixture("alertmanager_firing.json"))
    assert answer["status"] == "declared"
    assert answer["incident"].startswith("INC-20261122-")
    slack = monitoring.slack
    (channel,) = monitoring.channels()
    alert = slack.alert(channel)
    shown = message_text(alert)
    assert "INCIDENT ALERT - SEV1" in shown
    assert "Payment success rate below 95%" in shown  # the rule's title
    assert "Declared by the bot from Alertmanager: *PaymentSuccessRateLow*" in shown
    assert "below 95% for 10 minutes" in shown  # the description
    assert "<https://runbooks.example.com/payments/success-rate|Runbook>" in shown
    assert "<https://grafana.example.com/d/payments/payments-overview|Dashboard>" in shown
    assert "payments" in shown  # the rule's services
    (incident,) = await monitoring.incidents()
    assert incident.declared_by == slack.fake.bot_user_id
    assert incident.alert["name"] == "PaymentSuccessRateLow"
    assert incident.playbook == "payment-processing-down"
    # Announced, and paged exactly like a declared SEV1: management and on-call, PagerDuty.
    announce = slack.fake.channel("incidents")
    assert any(answer["incident"] in message_text(m) for m in announce.messages)
    for person in (ON1, ON2, BOSS):
        assert person in channel.members
        (page,) = [message_text(m) for m in slack.fake.dms(person)]
        assert "SEV1" in page
    assert not slack.fake.dms(SECOND)
    assert [(e["event_action"], e["routing_key"]) for e in slack.pagerduty.events] == [
        ("trigger", "R0FIRST")
    ]
    timeline = await slack.bot.service.timeline(incident.id)
    assert timeline[0].kind == "declared"
    assert timeline[0].data["alert"]["summary"].startswith("Payment success rate is 91%")
    metrics = (await monitoring.http.get("/metrics")).text
    counted = 'incident_bot_alert_requests_total{endpoint="alertmanager",outcome="declared"}'
    assert f"{counted} 1.0" in metrics


@ONE_DATABASE
async def test_the_escalation_chain_runs_for_an_alert_declared_incident(
    monitoring: Monitoring,
) -> None:
    await monitoring.send(AM, fixture("alertmanager_firing.json"))
    slack = monitoring.slack
    slack.clock.advance(timedelta(minutes=15))
    await slack.settle()
    (page,) = [message_text(m) for m in slack.fake.dms(SECOND)]
    assert "escalation level 2" in page


async def test_one_incident_per_group_however_often_and_concurrently_sent(
    monitoring: Monitoring,
) -> None:
    payload = fixture("alertmanager_firing.json")
    responses = await asyncio.gather(*(monitoring.post(AM, payload) for _ in range(8)))
    assert [r.status_code for r in responses] == [202] * 8
    statuses = sorted(r.json()["status"] for r in responses)
    assert statuses == ["declared"] + ["unchanged"] * 7
    assert len({r.json()["incident"] for r in responses}) == 1
    await monitoring.slack.settle()
    assert len(monitoring.slack.fake.dms(ON1)) == 1, "paged once"
    # Alertmanager re-sends the group every repeat_interval: nothing new, nothing said.
    monitoring.slack.clock.advance(timedelta(hours=4))
    again = await monitoring.send(AM, payload)
    assert again["status"] == "unchanged"
    (channel,) = monitoring.channels()
    assert len(await monitoring.incidents()) == 1
    assert not [t for t in texts_of(channel) if "🔔" in t]


async def test_another_alert_of_the_group_joins_its_incident(monitoring: Monitoring) -> None:
    first = fixture("alertmanager_firing.json")
    declared = await monitoring.send(AM, first)
    second = copy.deepcopy(first)
    other = copy.deepcopy(first["alerts"][0])
    other["labels"]["instance"] = "payments-api-1:8080"
    other["annotations"]["summary"] = "Payment success rate is 89% on payments-api-1"
    other["fingerprint"] = "77e1c2b9a0d3f456"
    second["alerts"].append(other)
    joined = await monitoring.send(AM, second)
    assert joined == {
        "status": "joined",
        "detail": f"joined {declared['incident']}: 1 alert(s) fired, 0 resolved",
        "incident": declared["incident"],
        "firing": 2,
    }
    (channel,) = monitoring.channels()
    (said,) = [t for t in texts_of(channel) if "🔔" in t]
    assert "2 alerts firing" in said
    assert "Payment success rate is 89% on payments-api-1" in said
    timeline = await monitoring.slack.bot.service.timeline(declared["incident"])
    assert [e.kind for e in timeline].count("alert_fired") == 1
    assert "2 alerts firing" in message_text(monitoring.slack.alert(channel))  # edited
    # One of the two resolves, then the other: the second notice says all are resolved.
    one = copy.deepcopy(second)
    one["alerts"][0]["status"] = "resolved"
    await monitoring.send(AM, one)
    (notice,) = [t for t in texts_of(channel) if "resolved:" in t]
    assert "Still firing: 1 alert." in notice
    assert "Every alert" not in notice
    both = copy.deepcopy(one)
    both["status"] = "resolved"
    both["alerts"][1]["status"] = "resolved"
    answer = await monitoring.send(AM, both)
    assert (answer["status"], answer["resolved"], answer["firing"]) == ("joined", 1, 0)
    last = [t for t in texts_of(channel) if "resolved:" in t][-1]
    assert "89% on payments-api-1" in last
    assert "Every alert of this incident is resolved" in last
    assert "every alert resolved" in message_text(monitoring.slack.alert(channel))


async def test_a_resolved_alert_is_said_with_a_resolve_button(monitoring: Monitoring) -> None:
    declared = await monitoring.send(AM, fixture("alertmanager_firing.json"))
    answer = await monitoring.send(AM, fixture("alertmanager_resolved.json"))
    assert answer["status"] == "joined"
    assert answer["resolved"] == 1
    slack = monitoring.slack
    (channel,) = monitoring.channels()
    (notice,) = [m for m in channel.messages if "resolved:" in message_text(m)]
    assert "Every alert of this incident is resolved" in message_text(notice)
    (incident,) = await monitoring.incidents()
    assert incident.is_open, "people decide: the incident stays open"
    # The same notice re-sent changes nothing.
    assert (await monitoring.send(AM, fixture("alertmanager_resolved.json")))["status"] == (
        "unchanged"
    )
    assert len([m for m in channel.messages if "resolved:" in message_text(m)]) == 1
    # Resolve, from the notice's button, through the resolve form.
    await slack.click(Action.RESOLVE, notice, channel, user=BOB)
    await slack.submit_modal(Modal.RESOLVE, {"summary": "gateway failover"}, user=BOB)
    (incident,) = await monitoring.incidents()
    assert not incident.is_open
    assert incident.id == declared["incident"]
    # The post-mortem draft says where the incident came from, and when the alert resolved.
    (draft,) = [f for f in slack.fake.files.values() if channel.id in f.channels]
    markdown = (draft.content or b"").decode("utf-8")
    assert "from Alertmanager: PaymentSuccessRateLow" in markdown
    assert "Alert resolved: PaymentSuccessRateLow (every alert resolved)" in markdown


async def test_a_firing_notice_that_arrives_after_its_resolution_is_not_news(
    monitoring: Monitoring,
) -> None:
    """Alertmanager retries a notification it could not deliver, so the firing notice of an
    alert can arrive after the one saying it resolved. Its start is the one already
    recorded: the alert did not fire again. Neither the open incident nor, once that is
    resolved, a new one says it did."""
    slack = monitoring.slack
    declared = await monitoring.send(AM, fixture("alertmanager_firing.json"))
    await monitoring.send(AM, fixture("alertmanager_resolved.json"))
    (channel,) = monitoring.channels()
    late = await monitoring.send(AM, fixture("alertmanager_firing.json"))
    assert (late["status"], late.get("incident")) == ("unchanged", declared["incident"])
    assert not [t for t in texts_of(channel) if "fired again" in t]
    await slack.command("resolve gateway failover", channel=channel.id)
    slack.clock.advance(timedelta(minutes=5))
    late = await monitoring.send(AM, fixture("alertmanager_firing.json"))
    assert late["status"] == "unchanged"
    assert len(monitoring.channels()) == 1
    assert len(await monitoring.incidents()) == 1


async def test_a_flapping_alert_never_opens_a_second_incident(monitoring: Monitoring) -> None:
    declared = await monitoring.send(AM, fixture("alertmanager_firing.json"))
    for minute in range(3):  # resolves, fires again with a new start: three times over
        await monitoring.send(AM, fixture("alertmanager_resolved.json"))
        monitoring.slack.clock.advance(timedelta(minutes=1))
        flap = with_alert(
            fixture("alertmanager_firing.json"), startsAt=f"2026-11-22T12:0{minute}:30Z"
        )
        answer = await monitoring.send(AM, flap)
        assert (answer["status"], answer["incident"]) == ("joined", declared["incident"])
    (channel,) = monitoring.channels()
    fired = [t for t in texts_of(channel) if "🔔" in t]
    assert len(fired) == 3
    assert all("PaymentSuccessRateLow* (fired again)" in t for t in fired)
    assert len(await monitoring.incidents()) == 1


async def test_an_alert_firing_again_after_resolution_opens_a_linked_incident(
    monitoring: Monitoring,
) -> None:
    slack = monitoring.slack
    first = await monitoring.send(AM, fixture("alertmanager_firing.json"))
    await monitoring.send(AM, fixture("alertmanager_resolved.json"))
    (channel,) = monitoring.channels()
    await slack.command("resolve gateway failover", channel=channel.id)
    # While the alert is resolved and its incident too, a re-sent notice opens nothing.
    assert (await monitoring.send(AM, fixture("alertmanager_resolved.json")))["status"] in (
        "unchanged",
        "ignored",
    )
    slack.clock.advance(timedelta(hours=2))
    again = with_alert(
        fixture("alertmanager_firing.json"), startsAt="2026-11-22T13:59:00.000000000Z"
    )
    answer = await monitoring.send(AM, again)
    assert answer["status"] == "declared"
    assert answer["incident"] != first["incident"]
    second = monitoring.channels()[-1]
    shown = message_text(slack.alert(second))
    assert f"fired again 2h after {first['incident']} was resolved" in shown


async def test_firing_again_concurrently_after_resolution_opens_one_new_incident(
    monitoring: Monitoring,
) -> None:
    slack = monitoring.slack
    await monitoring.send(AM, fixture("alertmanager_firing.json"))
    (channel,) = monitoring.channels()
    await slack.command("resolve gateway failover", channel=channel.id)
    again = with_alert(
        fixture("alertmanager_firing.json"), startsAt="2026-11-22T13:00:00.000000000Z"
    )
    answers = await asyncio.gather(*(monitoring.post(AM, again) for _ in range(6)))
    assert sorted(a.json()["status"] for a in answers) == ["declared"] + ["unchanged"] * 5
    await slack.settle()
    assert len(monitoring.channels()) == 2
    assert len(await monitoring.incidents()) == 2


async def test_a_firing_alert_whose_incident_was_resolved_opens_nothing_until_it_fires_again(
    monitoring: Monitoring,
) -> None:
    slack = monitoring.slack
    await monitoring.send(AM, fixture("alertmanager_firing.json"))
    (channel,) = monitoring.channels()
    await slack.command("resolve false alarm", channel=channel.id)
    slack.clock.advance(timedelta(hours=4))
    answer = await monitoring.send(AM, fixture("alertmanager_firing.json"))
    assert answer["status"] == "unchanged"
    assert "kept firing since before" in answer["detail"]
    assert len(monitoring.channels()) == 1


async def test_a_slack_outage_delays_the_incident_and_makes_no_duplicate(
    monitoring: Monitoring,
) -> None:
    """The answer comes after the transaction, not after Slack: while Slack fails, the
    incident is recorded and answered for, and Alertmanager's retries change nothing."""
    slack = monitoring.slack
    slack.fake.fail("conversations.create", status=503, times=3)
    first = await monitoring.send(AM, fixture("alertmanager_firing.json"))
    assert first["status"] == "declared"
    assert not monitoring.channels()
    retried = await monitoring.send(AM, fixture("alertmanager_firing.json"))
    assert retried["status"] == "unchanged"
    for _ in range(6):  # the job's backoff, waited out on the fake clock
        slack.clock.advance(timedelta(seconds=10))
        await slack.settle()
    (channel,) = monitoring.channels()
    assert first["incident"] in message_text(slack.alert(channel))
    assert len(await monitoring.incidents()) == 1


@ONE_DATABASE
async def test_until_slack_has_said_who_the_bot_is_monitoring_is_asked_to_retry(
    monitoring: Monitoring,
) -> None:
    slack = monitoring.slack
    for task in slack.bot._tasks:  # start-up's own auth.test, which must not answer later
        await task
    identity = slack.bot.identity
    identity.team_id = identity.bot_user_id = None  # auth.test has not answered yet
    slack.fake.error("auth.test", "fatal_error")
    refused = await monitoring.post(AM, fixture("alertmanager_firing.json"))
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "10"
    assert not await monitoring.incidents()
    # Slack answers again: the next attempt asks it, and declares.
    answer = await monitoring.send(AM, fixture("alertmanager_firing.json"))
    assert answer["status"] == "declared"
    (incident,) = await monitoring.incidents()
    assert incident.declared_by == slack.fake.bot_user_id


# ---- the rules -----------------------------------------------------------------------------
@ONE_DATABASE
@pytest.mark.parametrize(
    ("labels", "severity", "pages"),
    [
        ({"alertname": "HighErrorRate", "severity": "critical"}, "SEV2", ON1),  # rule 2
        ({"alertname": "ErrorBudgetBurn"}, "SEV2", ON1),  # rule 2's regex
        ({"alertname": "DiskFull", "severity": "p2"}, "SEV3", ON2),  # rule 3: its own label
        ({"alertname": "DiskFull", "team": "", "priority": "critical"}, "SEV1", ON1),
    ],
)
async def test_the_severity_each_rule_promises_and_its_paging(
    monitoring: Monitoring, labels: dict[str, str], severity: str, pages: str
) -> None:
    payload = fixture("alertmanager_firing.json")
    payload["commonLabels"] = {}
    alert = payload["alerts"][0]
    alert["labels"] = {"team": "storage", **labels}
    answer = await monitoring.send(AM, payload)
    assert answer["status"] == "declared", answer
    (incident,) = await monitoring.incidents()
    assert incident.severity == severity
    assert monitoring.slack.fake.dms(pages), f"{pages} is paged for {severity}"


@ONE_DATABASE
async def test_an_alert_no_rule_gives_a_severity_is_ignored(monitoring: Monitoring) -> None:
    payload = fixture("alertmanager_firing.json")
    payload["commonLabels"] = {}
    payload["alerts"][0]["labels"] = {"alertname": "DiskFull", "severity": "warning"}
    answer = await monitoring.send(AM, payload)
    assert answer["status"] == "ignored"
    assert "'warning', which names no severity of the policy" in answer["ignored"][0]
    assert not monitoring.channels()
    assert not await monitoring.incidents()


# ---- Grafana and the generic webhook ---------------------------------------------------------
@ONE_DATABASE
async def test_grafana_contact_point_payload(monitoring: Monitoring) -> None:
    answer = await monitoring.send(AM, fixture("grafana_firing.json"))
    assert answer["status"] == "declared"
    (incident,) = await monitoring.incidents()
    assert incident.severity == "SEV2"  # its severity label `high`, an alias of SEV2
    assert incident.title == "Checkout error rate above 1%"
    assert incident.services == ["checkout"]
    (channel,) = monitoring.channels()
    shown = message_text(monitoring.slack.alert(channel))
    assert "Declared by the bot from Grafana: *High error rate*" in shown
    assert "viewPanel=4|Dashboard>" in shown
    assert "|Silence>" in shown


async def test_generic_alert_fires_and_resolves(monitoring: Monitoring) -> None:
    answer = await monitoring.send(GENERIC, fixture("generic_firing.json"))
    assert answer["status"] == "declared"
    (incident,) = await monitoring.incidents()
    assert (incident.severity, incident.services) == ("SEV2", ["checkout"])
    assert incident.title == "Synthetic checkout failing in eu-west-1"
    (channel,) = monitoring.channels()
    assert "Declared by the bot from a webhook" in message_text(monitoring.slack.alert(channel))
    assert (await monitoring.send(GENERIC, fixture("generic_firing.json")))["status"] == (
        "unchanged"
    )
    resolved = await monitoring.send(GENERIC, fixture("generic_resolved.json"))
    assert resolved["status"] == "joined"
    assert any("Every alert of this incident is resolved" in t for t in texts_of(channel))


# ---- refusals ------------------------------------------------------------------------------
@BEFORE_THE_DATABASE
@pytest.mark.parametrize("token", [None, "wrong-token", ""])
async def test_a_wrong_or_missing_token_is_401_and_nothing_is_stored(
    monitoring: Monitoring, token: str | None
) -> None:
    for path, name in ((AM, "alertmanager_firing.json"), (GENERIC, "generic_firing.json")):
        response = await monitoring.post(path, fixture(name), token=token)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    basic = await monitoring.http.post(
        AM, json=fixture("alertmanager_firing.json"), headers={"Authorization": f"Basic {TOKEN}"}
    )
    assert basic.status_code == 401
    await monitoring.slack.settle()
    assert not await monitoring.incidents()
    assert not monitoring.channels()
    # Counted, for whoever runs the bot: refused requests are a thing to alert on.
    metrics = (await monitoring.http.get("/metrics")).text
    counted = 'incident_bot_alert_requests_total{endpoint="alertmanager",outcome="unauthorized"}'
    assert f"{counted} 2.0" in metrics


@BEFORE_THE_DATABASE
async def test_the_endpoints_do_not_exist_without_a_token(slack: Slack) -> None:
    base = slack.driver.events_url.removesuffix("/slack/events")
    async with httpx.AsyncClient(base_url=base) as http:
        for path in (AM, GENERIC):
            response = await http.post(
                path,
                json=fixture("alertmanager_firing.json"),
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert response.status_code == 404


def _without(payload: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != name}


@BEFORE_THE_DATABASE
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (AM, b"{not json", None),
        (AM, b"[1, 2]", None),
        (AM, _without(fixture("alertmanager_firing.json"), "status"), "status"),
        (AM, {**fixture("alertmanager_firing.json"), "status": "pending"}, "status"),
        (AM, with_alert(fixture("alertmanager_firing.json"), status="flapping"), "alerts.0.status"),
        (AM, with_alert(fixture("alertmanager_firing.json"), labels={"n": 5}), "alerts.0.labels.n"),
        (AM, _without(fixture("alertmanager_firing.json"), "alerts"), "alerts"),
        (GENERIC, {**fixture("generic_firing.json"), "sevirity": "p1"}, "sevirity"),
        (GENERIC, _without(fixture("generic_firing.json"), "key"), "key"),
        (GENERIC, {**fixture("generic_firing.json"), "status": "open"}, "status"),
        (GENERIC, {**fixture("generic_firing.json"), "key": "k" * 201}, "key"),
    ],
)
async def test_a_bad_body_is_400_naming_the_field_and_nothing_is_stored(
    monitoring: Monitoring, path: str, body: Any, field: str | None
) -> None:
    raw = body if isinstance(body, bytes) else None
    response = await monitoring.post(path, body, raw=raw)
    assert response.status_code == 400, response.text
    answer = response.json()
    if field is None:
        assert answer["error"].startswith(("the body is not JSON", "the body must be"))
    else:
        assert field in [p["field"] for p in answer["problems"]]
        assert field in answer["error"]
    await monitoring.slack.settle()
    assert not await monitoring.incidents()
    assert not monitoring.channels()


@BEFORE_THE_DATABASE
async def test_a_body_over_the_limit_is_413(monitoring: Monitoring) -> None:
    response = await monitoring.post(AM, None, raw=b" " * (10 * 1024 * 1024 + 1))
    assert response.status_code == 413
    assert not await monitoring.incidents()


# ---- bad input that still makes a bounded incident -------------------------------------------
async def test_ten_thousand_alerts_make_one_bounded_incident(monitoring: Monitoring) -> None:
    payload = fixture("alertmanager_firing.json")
    template = payload["alerts"][0]
    payload["alerts"] = [
        {
            **template,
            "labels": {**template["labels"], "instance": f"payments-api-{n}:8080"},
            "fingerprint": f"{n:016x}",
        }
        for n in range(10_000)
    ]
    answer = await monitoring.send(AM, payload)
    assert answer["status"] == "declared"
    assert answer["firing"] == 1000
    (channel,) = monitoring.channels()
    shown = message_text(monitoring.slack.alert(channel))
    assert "1000 alerts firing · 9000 more not read" in shown
    assert len(await monitoring.incidents()) == 1


async def test_a_megabyte_annotation_and_mentions_in_labels_are_cut_and_escaped(
    monitoring: Monitoring,
) -> None:
    payload = with_alert(
        fixture("alertmanager_firing.json"),
        labels={"alertname": "<!channel> PaymentSuccessRateLow", "team": "<!here>"},
        annotations={
            "summary": "<!channel> pay <@U0BOSS> attention & <https://evil.example|click>",
            "description": "x" * 1_000_000,
            "runbook_url": "https://ok.example/a|<!channel>",
        },
    )
    payload["commonLabels"] = {}
    payload["commonAnnotations"] = {}
    answer = await monitoring.send(AM, payload)
    assert answer["status"] == "declared"  # rule 3: the team label, severity critical
    slack = monitoring.slack
    (channel,) = monitoring.channels()
    shown = message_text(slack.alert(channel))
    assert "&lt;!channel&gt; PaymentSuccessRateLow" in shown
    assert "&lt;!channel&gt; pay &lt;@U0BOSS&gt; attention &amp;" in shown
    assert "xxx…" in shown
    assert len(shown) < 10_000
    for text in everything_posted(slack.fake):
        assert "<!channel>" not in text
        assert "<!here>" not in text
        assert "<https://evil.example" not in text
    for user in (ALICE, BOB, CAROL, BOSS):
        assert not [n for n in slack.fake.notified(user) if n.reason == "broadcast"]
    (incident,) = await monitoring.incidents()
    assert len(incident.alert["description"]) <= 3000
    assert len(incident.title) <= 500


# ---- restarts and replicas -----------------------------------------------------------------
async def test_a_restart_between_firing_and_resolving(
    monitoring: Monitoring, policy: Policy
) -> None:
    slack = monitoring.slack
    declared = await monitoring.send(AM, fixture("alertmanager_firing.json"))
    await slack.bot.close()  # the process is gone; the incident and its alert keys remain
    slack.clock.advance(timedelta(minutes=30))
    again, port = await start_bot(
        slack.fake,
        slack.bot.database.reopen(),
        slack.clock,
        policy,
        slack.pagerduty,
        alerts_token=TOKEN,
    )
    try:
        await again.background.wait()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            repeat = await http.post(
                AM,
                json=fixture("alertmanager_firing.json"),
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            resolved = await http.post(
                AM,
                json=fixture("alertmanager_resolved.json"),
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
        await again.settle()
    finally:
        await again.close()
    assert repeat.json()["status"] == "unchanged"
    assert resolved.status_code == 202
    assert resolved.json()["incident"] == declared["incident"]
    (channel,) = monitoring.channels()
    assert any("Every alert of this incident is resolved" in t for t in texts_of(channel))


async def test_two_replicas_receiving_the_same_group_at_once_make_one_incident(
    monitoring: Monitoring, policy: Policy
) -> None:
    slack = monitoring.slack
    other, port = await start_bot(
        slack.fake,
        slack.bot.database.reopen(),
        slack.clock,
        policy,
        slack.pagerduty,
        alerts_token=TOKEN,
    )
    try:
        await other.background.wait()
        payload = fixture("alertmanager_firing.json")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            answers = await asyncio.gather(
                *(monitoring.post(AM, payload) for _ in range(3)),
                *(http.post(AM, json=payload, headers=headers) for _ in range(3)),
            )
    finally:
        await other.close()
    statuses = sorted(a.json()["status"] for a in answers)
    assert statuses == ["declared"] + ["unchanged"] * 5
    await slack.settle()
    assert len(await monitoring.incidents()) == 1
    assert len(monitoring.channels()) == 1


class FailsOnce:
    """The store, but the next transaction fails as if the database had gone away."""

    def __init__(self, store: Any) -> None:
        self.store, self.failed = store, False

    def transaction(self, *, read_only: bool = False, autocommit: bool = False) -> Any:
        if not self.failed:
            self.failed = True
            raise ConnectionRefusedError("database unreachable")
        return self.store.transaction(read_only=read_only, autocommit=autocommit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def test_a_database_away_answers_503_and_alertmanager_s_retry_declares_once(
    monitoring: Monitoring,
) -> None:
    """The database does not answer: 503 with Retry-After and nothing stored, so that
    Alertmanager sends again; the retry declares the incident, once."""
    service = monitoring.slack.bot.service
    real = service.store
    service.store = FailsOnce(real)
    try:
        refused = await monitoring.post(GENERIC, fixture("generic_firing.json"))
    finally:
        service.store = real
    assert refused.status_code == 503, refused.text
    assert refused.headers.get("Retry-After")
    assert await monitoring.incidents() == []
    assert (await monitoring.send(GENERIC, fixture("generic_firing.json")))["status"] == "declared"
    assert len(await monitoring.incidents()) == 1
    assert len(monitoring.channels()) == 1
