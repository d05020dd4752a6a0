"""The status page, driven as people use it: publish, update and resolve from Slack (the
command and the forms), then the page, its JSON and its feed read over HTTP as a visitor,
an aggregator and a feed reader would."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta

import jsonschema
import pytest

from bot.domain.policy import Policy
from bot.slack.blocks import Modal
from tests.harness import ALICE, BOB, CAROL, Slack, message_text
from tests.statuspage import (
    INTERNAL_TITLE,
    STATUS_SCHEMA,
    SUMMARY_SCHEMA,
    declare_with_services,
    fetch,
    status_policy,
)

HOSTILE = "Card payments fail <script>alert('x')</script> <!channel> & more"


@pytest.fixture
def policy() -> Policy:
    return status_policy()


def _view(slack: Slack, callback_id: str) -> dict[str, object]:
    return next(v for v in reversed(slack.fake.views) if v.get("callback_id") == callback_id)


def _input(view: dict[str, object], block_id: str) -> dict[str, object]:
    for block in view["blocks"]:  # type: ignore[attr-defined]
        if block.get("block_id") == block_id:
            return dict(block["element"])
    raise AssertionError(f"no input {block_id}")


def _visible(page: str) -> str:
    """The page's text as a reader sees it (tags dropped, entities read)."""
    without_style = re.sub(r"<style>.*?</style>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", without_style))


async def test_publish_update_resolve_as_customers_see_it(slack: Slack) -> None:
    channel = await declare_with_services(slack)
    before = await fetch(slack, "/status")
    assert before.status_code == 200
    assert "All Systems Operational" in before.text  # nothing is public before a publish

    # The form: the customer-communication template pre-filled, a public title, the
    # suggested component.
    await slack.command("publish", channel=channel.id)
    form = _view(slack, Modal.PUBLISH)
    title = _input(form, "title")["initial_value"]
    assert INTERNAL_TITLE not in str(title)
    assert "Payments" in str(title)
    text = str(_input(form, "text")["initial_value"])
    assert "We are currently experiencing issues with Payments" in text
    assert "every 30m" in text
    assert "Workaround" in text
    payments = _input(form, "component:0")
    assert payments["initial_option"]["value"] == "major_outage"  # type: ignore[index]
    assert _input(form, "component:1")["initial_option"]["value"] == "operational"  # type: ignore[index]

    await slack.submit_modal(
        Modal.PUBLISH,
        {
            "title": "Card payments failing",
            "component:0": "partial_outage",
            "component:1": "operational",
            "component:2": "degraded_performance",
            "text": HOSTILE,
        },
    )
    slack.clock.advance(timedelta(minutes=10))
    await slack.command("update internal-update-zebracorn: pool exhausted", channel=channel.id)
    await slack.command("note ask vendor-zebracorn about limits", channel=channel.id)
    await slack.command("status identified", channel=channel.id)
    reply = await slack.command(
        "publish Payments=degraded Status-API=operational A fix is rolling out.",
        channel=channel.id,
    )
    assert reply.text is not None
    assert "Published on the status page" in reply.text

    # While open: the page shows the incident, its state and its updates newest first.
    page = (await fetch(slack, "/status")).text
    seen = _visible(page)
    assert "Card payments failing" in seen
    assert "Minor Service Outage" in seen  # worst open impact: degraded performance
    assert re.search(r"Payments\s+Degraded performance", seen)
    assert re.search(r"Messaging\s+Operational", seen)
    assert re.search(r"Status API\s+Operational", seen)
    newest, oldest = seen.index("A fix is rolling out."), seen.index("<!channel> & more")
    assert newest < oldest, "updates are listed newest first"
    assert re.search(r"identified.*A fix is rolling out.*investigating.*& more", seen, re.S)

    # Escaped on the page: the hostile text is shown, never run.
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "&lt;!channel&gt;" in page

    # In Slack: the channel says what was published, escaped (no ping, no markup).
    said = [m for m in slack.texts(channel) if "status page" in m]
    assert any("made the incident public" in m for m in said)
    assert all("<!channel>" not in m and "<script>" not in m for m in said)
    assert any("&lt;!channel&gt;" in m for m in said)

    # Resolving proposes the public resolution text and publishes it.
    await slack.command("resolve", channel=channel.id)
    resolve_form = _view(slack, Modal.RESOLVE)
    proposed = str(_input(resolve_form, "public")["initial_value"])
    assert "has been resolved" in proposed
    assert "Payments" in proposed
    await slack.submit_modal(
        Modal.RESOLVE,
        {
            "summary": "secret-root-zebracorn: the primary ran out of connections",
            "public": "Payments work normally again. Sorry for the trouble.",
        },
    )
    page = (await fetch(slack, "/status")).text
    seen = _visible(page)
    assert "All Systems Operational" in seen
    assert re.search(r"Payments\s+Operational", seen)
    history = seen[seen.index("Past incidents") :]
    assert "Card payments failing" in history
    assert history.index("Payments work normally again") < history.index("A fix is rolling")
    assert re.search(r"resolved.*Payments work normally again", history, re.S)

    # Nothing internal anywhere: title, channel, people, the incident id, the summary.
    record = await slack.record(channel)
    internal = [
        INTERNAL_TITLE,
        "zebracorn",
        channel.name,
        channel.id,
        record.incident.id,
        ALICE,
        BOB,
        CAROL,
        "alice",
        "Alice",
        "secret-root",
        "payments down",
        "pool exhausted",
        "vendor",
    ]
    for path in ("/status", "/status/api/v2/summary.json", "/status/history.atom"):
        body = (await fetch(slack, path)).text
        for word in internal:
            assert word not in body, f"{word!r} is on {path}"

    # The post-mortem draft says what customers were told.
    _, markdown = await slack.bot.service.postmortem(record.incident.id)
    assert "Customer communication" in markdown
    assert "Published on the status page" in markdown
    assert "A fix is rolling out." in markdown


async def test_json_in_the_statuspage_shape(slack: Slack) -> None:
    channel = await declare_with_services(slack)
    await slack.command(f"publish Payments=major Messaging=partial {HOSTILE}", channel=channel.id)
    slack.clock.advance(timedelta(minutes=5))
    await slack.command("publish Still investigating.", channel=channel.id)

    response = await fetch(slack, "/status/api/v2/summary.json")
    assert response.headers["Content-Type"].startswith("application/json")
    assert "<script>" not in response.text
    assert "<!channel>" not in response.text
    summary = response.json()
    jsonschema.validate(summary, SUMMARY_SCHEMA, format_checker=jsonschema.FormatChecker())
    assert summary["page"]["name"] == "Example status"
    assert summary["page"]["url"].endswith("/status")
    assert summary["status"] == {"indicator": "critical", "description": "Major System Outage"}
    states = {c["name"]: c["status"] for c in summary["components"]}
    assert states == {
        "Payments": "major_outage",
        "Messaging": "partial_outage",
        "Status API": "operational",
    }
    (incident,) = summary["incidents"]
    assert incident["impact"] == "critical"
    assert incident["status"] == "investigating"
    bodies = [u["body"] for u in incident["incident_updates"]]
    assert bodies == ["Still investigating.", HOSTILE]  # newest first; read back exactly

    status = (await fetch(slack, "/status/api/v2/status.json")).json()
    jsonschema.validate(status, STATUS_SCHEMA, format_checker=jsonschema.FormatChecker())
    assert status["status"]["indicator"] == "critical"

    await slack.command("resolve fixed it", channel=channel.id)
    summary = (await fetch(slack, "/status/api/v2/summary.json")).json()
    jsonschema.validate(summary, SUMMARY_SCHEMA, format_checker=jsonschema.FormatChecker())
    assert summary["incidents"] == []  # summary.json lists unresolved incidents only
    assert summary["status"]["indicator"] == "none"
    assert {c["status"] for c in summary["components"]} == {"operational"}


async def test_feed_and_caching_headers(slack: Slack) -> None:
    channel = await declare_with_services(slack)
    await slack.command(f"publish {HOSTILE}", channel=channel.id)
    feed = await fetch(slack, "/status/history.atom")
    assert feed.headers["Content-Type"].startswith("application/atom+xml")
    assert "<entry>" in feed.text
    assert "&lt;script&gt;" in feed.text
    assert "<script>" not in feed.text

    first = await fetch(slack, "/status")
    assert "max-age=" in first.headers["Cache-Control"]
    assert first.headers["Last-Modified"].endswith("GMT")
    etag = first.headers["ETag"]
    again = await fetch(slack, "/status", **{"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    await slack.command("publish Another update.", channel=channel.id)
    changed = await fetch(slack, "/status", **{"If-None-Match": etag})
    assert changed.status_code == 200
    assert "Another update." in changed.text


async def test_drill_publish_is_refused(slack: Slack) -> None:
    reply = await slack.command("drill sev2 practice payment outage")
    assert reply.text is not None
    channel = slack.incident_channel()
    refused = await slack.command("publish customers beware", channel=channel.id)
    assert refused.text is not None
    assert "drill" in refused.text
    assert "nothing of a drill goes on the status page" in refused.text
    form = await slack.command("publish", channel=channel.id)
    assert form.text is not None
    assert "drill" in form.text
    assert not [v for v in slack.fake.views if v.get("callback_id") == Modal.PUBLISH]
    page = (await fetch(slack, "/status")).text
    assert "customers beware" not in page
    assert "All Systems Operational" in page


async def test_unknown_component_is_refused_naming_the_known_ones(slack: Slack) -> None:
    channel = await declare_with_services(slack)
    reply = await slack.command("publish Billing=major Card payments fail", channel=channel.id)
    assert reply.text is not None
    assert "no status-page component `Billing`" in reply.text
    assert "Known components: Payments, Messaging, Status API" in reply.text
    wrong_state = await slack.command("publish Payments=sideways x", channel=channel.id)
    assert wrong_state.text is not None
    assert "not a component state" in wrong_state.text

    # A forged form naming a component the form never offered: refused the same way.
    await slack.command("publish", channel=channel.id)
    view = _view(slack, Modal.PUBLISH)
    values = slack.driver.view_values_from(view, {"title": "T", "text": "forged"})
    values["component:7"] = {"value": {"type": "static_select", "selected_option": None}}
    values["component:7"]["value"]["selected_option"] = {"value": "major_outage"}
    response = await slack.driver.submit(
        Modal.PUBLISH, values, private_metadata=str(view["private_metadata"])
    )
    answer = response.json()
    assert answer["response_action"] == "errors"
    assert "Known components: Payments, Messaging, Status API" in answer["errors"]["text"]
    page = (await fetch(slack, "/status")).text
    assert "forged" not in page
    assert "Card payments fail" not in page


async def test_publish_permission_follows_the_policy(slack: Slack) -> None:
    slack.bot.service.policy = status_policy(permissions={"publish": ["comms_lead"]})
    channel = await declare_with_services(slack)
    await slack.command("ic", channel=channel.id)  # Alice takes command
    await slack.command(f"role comms_lead <@{CAROL}>", channel=channel.id)
    refused = await slack.command("publish We are on it.", channel=channel.id, user=BOB)
    assert refused.text is not None
    assert "may publish status-page updates" in refused.text
    assert "We are on it." not in (await fetch(slack, "/status")).text
    allowed = await slack.command("publish We are on it.", channel=channel.id, user=CAROL)
    assert allowed.text is not None
    assert "Published" in allowed.text
    assert "We are on it." in (await fetch(slack, "/status")).text


async def test_typed_resolve_of_a_public_incident_publishes_its_resolution(slack: Slack) -> None:
    channel = await declare_with_services(slack, services="messaging", severity="SEV2")
    await slack.command("publish Messages are delayed.", channel=channel.id)
    summary = (await fetch(slack, "/status/api/v2/summary.json")).json()
    (incident,) = summary["incidents"]
    assert [c["name"] for c in incident["components"]] == ["Messaging"]
    assert {c["name"]: c["status"] for c in summary["components"]}["Messaging"] == (
        "partial_outage"  # proposed from the services: SEV2 is a partial outage
    )
    reply = await slack.command("resolve internal-only summary", channel=channel.id)
    assert reply.text is not None
    assert "published on the status page" in reply.text
    page = (await fetch(slack, "/status")).text
    assert "has been resolved" in page
    assert "internal-only summary" not in page
    assert any("published the resolution" in message_text(m) for m in channel.messages)


async def test_customer_communication_followup(slack: Slack) -> None:
    public = await declare_with_services(slack)
    await slack.command("publish We are investigating.", channel=public.id)
    await slack.command("resolve fixed", channel=public.id)
    private = await declare_with_services(slack, severity="SEV3", title="quiet one")
    await slack.command("resolve fixed too", channel=private.id)

    slack.clock.advance(timedelta(hours=23, minutes=59))
    await slack.settle()
    due = "the customer communication"
    assert not any(due in m for m in slack.texts(public))
    slack.clock.advance(timedelta(minutes=2))
    await slack.settle()
    reminders = [m for m in slack.texts(public) if due in m]
    assert len(reminders) == 1
    assert "is due" in reminders[0]
    assert not any(due in m for m in slack.texts(private))  # never public, SEV3


async def test_customer_communication_for_severe_incidents_named_by_the_policy(
    slack: Slack,
) -> None:
    slack.bot.service.policy = status_policy(
        followups={
            "report": "24h",
            "postmortem": "48h",
            "action_review": "7d",
            "customer_communication": "24h",
            "customer_communication_from": "SEV2",
        }
    )
    severe = await declare_with_services(slack, severity="SEV2", title="never published")
    await slack.command("resolve fixed", channel=severe.id)
    slack.clock.advance(timedelta(hours=24, minutes=1))
    await slack.settle()
    assert any("the customer communication" in m for m in slack.texts(severe))


def test_page_json_is_well_formed_without_a_status_page_section() -> None:
    from datetime import UTC, datetime

    from bot.domain.policy import default_policy
    from bot.domain.statuspage import build_view, summary_json

    view = build_view(default_policy(), [], datetime(2026, 11, 23, tzinfo=UTC))
    summary = summary_json(view, "https://status.example.com/status")
    jsonschema.validate(summary, SUMMARY_SCHEMA)
    assert summary["page"]["name"] == "Status"
    assert summary["components"] == []
    assert json.loads(json.dumps(summary)) == summary


async def test_history_keeps_the_last_14_days(slack: Slack) -> None:
    old = await declare_with_services(slack, title="old one")
    await slack.command("publish Old trouble with payments.", channel=old.id)
    await slack.command("resolve fixed", channel=old.id)
    slack.clock.advance(timedelta(days=13))
    seen = _visible((await fetch(slack, "/status")).text)
    assert "Old trouble with payments." in seen[seen.index("Past incidents") :]
    slack.clock.advance(timedelta(days=1, minutes=1))
    page = (await fetch(slack, "/status")).text
    assert "Old trouble with payments." not in page
    assert "No incidents in the last 14 days." in page
    assert "Old trouble" not in (await fetch(slack, "/status/history.atom")).text


async def test_an_open_incident_is_never_crowded_off_the_page(slack: Slack) -> None:
    """The page reads a bounded number of public incidents: the ones still open come first,
    however many were published and resolved after them."""
    first = await declare_with_services(slack, services="messaging", severity="SEV2")
    await slack.command("publish Messages are delayed.", channel=first.id)
    slack.clock.advance(timedelta(minutes=5))
    later = await slack.declare("sev2 search slow")
    await slack.command("publish Search is slow.", channel=later.id)
    await slack.command("resolve fixed", channel=later.id)
    async with slack.bot.store.transaction(read_only=True) as tx:
        since = slack.clock.now() - timedelta(days=14)
        (shown,) = await tx.public_incidents(since=since, limit=1)
    assert shown.resolved_at is None, "the open one, not the newer resolved one"


async def test_the_publish_form_submitted_twice_publishes_once(slack: Slack) -> None:
    """Slack retries a form submission, or someone clicks twice: one update on the page,
    one message in the channel."""
    channel = await declare_with_services(slack)
    await slack.command("publish", channel=channel.id)
    answers: dict[str, object] = {"title": "Card payments failing", "text": "We are on it."}
    await slack.submit_modal(Modal.PUBLISH, answers)
    await slack.submit_modal(Modal.PUBLISH, answers)  # the same view again
    said = [t for t in slack.texts(channel) if "made the incident public" in t]
    assert len(said) == 1
    summary = (await fetch(slack, "/status/api/v2/summary.json")).json()
    (incident,) = summary["incidents"]
    assert len(incident["incident_updates"]) == 1
