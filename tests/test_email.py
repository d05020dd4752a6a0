"""Email to stakeholders, received by a real SMTP server (aiosmtpd) on this machine: at
declaration, on each published update and at resolution; the public text only; escaped in
the HTML part; waiting (and arriving once) while the server is down, with Slack going on."""

from __future__ import annotations

import email
import email.policy
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from bot.config import SettingsError, load_settings
from bot.domain.policy import Policy
from bot.integrations.email import Mailer, parse_smtp_url
from bot.service.ports import JobFailed
from bot.slack.blocks import Modal
from tests.harness import ALICE, Slack
from tests.statuspage import (
    INTERNAL_TITLE,
    STAKEHOLDERS,
    declare_with_services,
    fetch,
    status_policy,
)

CREDENTIALS = (b"bot", b"s3cret-pw")
HOSTILE = "Checkout fails <script>alert(1)</script> <!channel>"


class Inbox:
    """What the SMTP server received: one parsed message per delivery."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.refuse = refuse

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), parsed))
        return "250 OK: queued"

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for _, m in self.messages]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    """The credentials of SMTP_URL, and only those, are accepted."""
    if isinstance(auth_data, LoginPassword):
        return AuthResult(success=(auth_data.login, auth_data.password) == CREDENTIALS)
    return AuthResult(success=False)


def _serve(inbox: Inbox, port: int) -> Controller:
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticate,
        auth_require_tls=False,  # a test server on this machine has no certificate
    )
    controller.start()
    return controller


@pytest.fixture
def smtp_port() -> int:
    return _free_port()


@pytest.fixture
def bot_settings(smtp_port: int) -> dict[str, object]:
    return {
        "smtp_url": f"smtp://bot:s3cret-pw@127.0.0.1:{smtp_port}",
        "email_from": "Incident bot <incidents@example.com>",
        "public_url": "https://status.example.com",
    }


@pytest.fixture
def inbox(smtp_port: int) -> Iterator[Inbox]:
    box = Inbox()
    controller = _serve(box, smtp_port)
    yield box
    controller.stop()


@pytest.fixture
def policy() -> Policy:
    return status_policy()


def _parts(message: EmailMessage) -> tuple[str, str]:
    plain = message.get_body(preferencelist=("plain",))
    rich = message.get_body(preferencelist=("html",))
    assert plain is not None
    assert rich is not None
    return str(plain.get_content()), str(rich.get_content())


async def test_stakeholders_get_the_alert_each_update_and_the_resolution(
    slack: Slack, inbox: Inbox
) -> None:
    channel = await declare_with_services(slack)
    assert len(inbox.messages) == 1
    recipients, declared = inbox.messages[0]
    assert sorted(recipients) == sorted(STAKEHOLDERS)
    assert declared["To"] == ", ".join(STAKEHOLDERS)
    assert declared["From"] == "Incident bot <incidents@example.com>"
    record = await slack.record(channel)
    assert declared["Subject"] == f"[SEV1] Incident {record.incident.id} declared"
    plain, _ = _parts(declared)
    assert "Nothing has been published about it yet" in plain

    await slack.command(f"publish Payments=major {HOSTILE}", channel=channel.id)
    assert len(inbox.messages) == 2
    _, update = inbox.messages[1]
    assert update["Subject"] == "[SEV1] Investigating: Service disruption affecting Payments"
    plain, rich = _parts(update)
    assert HOSTILE in plain  # plain text shows it as typed
    assert "Payments: Major outage" in plain
    assert "https://status.example.com/status" in plain
    assert "<script>" not in rich
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rich
    assert "&lt;!channel&gt;" in rich

    await slack.command("resolve internal summary zebracorn", channel=channel.id)
    assert len(inbox.messages) == 3
    _, resolved = inbox.messages[2]
    assert resolved["Subject"] == "[SEV1] Resolved: Service disruption affecting Payments"
    plain, rich = _parts(resolved)
    assert "has been resolved" in plain
    assert "was <strong>resolved</strong>" in rich

    ids = [str(m["Message-ID"]) for _, m in inbox.messages]
    assert len(set(ids)) == 3
    assert all(i.endswith("@example.com>") for i in ids)
    for _, message in inbox.messages:
        whole = message.as_string()
        for internal in (INTERNAL_TITLE, "zebracorn", channel.name, ALICE):
            assert internal not in whole


async def test_smtp_down_email_waits_and_nothing_else_does(slack: Slack, smtp_port: int) -> None:
    box = Inbox()
    channel = await declare_with_services(slack)
    assert any("INCIDENT ALERT" in t for t in slack.texts(channel)), "no waiting for email"
    slack.clock.advance(timedelta(seconds=5))
    await slack.settle()  # the email's retry, once the channel exists, says it waits
    texts = slack.texts(channel)
    assert sum("Email to stakeholders not sent yet" in t for t in texts) == 1
    assert any("SMTP server unreachable" in t for t in texts)
    await slack.command("publish We are investigating.", channel=channel.id)
    assert any("made the incident public" in t for t in slack.texts(channel))
    assert "We are investigating." in (await fetch(slack, "/status")).text
    announce = slack.fake.channel("incidents")
    assert announce.messages, "the announcement does not wait for email"

    slack.clock.advance(timedelta(seconds=30))
    await slack.settle()  # still down: retried, not sent, not dropped
    assert box.messages == []

    controller = _serve(box, smtp_port)
    try:
        slack.clock.advance(timedelta(minutes=10))
        await slack.settle()
        assert [s.split("]")[0] for s in box.subjects()] == ["[SEV1", "[SEV1"]
        assert "declared" in box.subjects()[0]
        assert box.subjects()[1].startswith("[SEV1] Investigating")
        assert any("Email sent to 2 addresses after waiting" in t for t in slack.texts(channel))
        for _ in range(3):
            slack.clock.advance(timedelta(minutes=10))
            await slack.settle()
        assert len(box.messages) == 2, "each email arrives once"
    finally:
        controller.stop()


async def test_telling_the_channel_never_sends_the_email_again(
    slack: Slack, smtp_port: int
) -> None:
    """The SMTP server comes back: the email goes out, and the channel is told. Slack is
    rate-limiting and then loses the answer to that message: the message still arrives,
    once, and the email is not sent a second time."""
    box = Inbox()
    channel = await declare_with_services(slack)
    slack.clock.advance(timedelta(seconds=5))
    await slack.settle()  # the server is away: the channel is told it waits
    controller = _serve(box, smtp_port)
    try:
        slack.fake.rate_limit("chat.postMessage", retry_after=1)
        slack.fake.lose_answer("chat.postMessage")
        for _ in range(4):
            slack.clock.advance(timedelta(minutes=10))
            await slack.settle()
        assert len(box.messages) == 1, "the declaration's email, once"
    finally:
        controller.stop()
    recovered = [t for t in slack.texts(channel) if "Email sent to 2 addresses" in t]
    assert len(recovered) == 1


async def test_a_server_that_never_answers_holds_up_no_slack_message(
    slack: Slack, smtp_port: int
) -> None:
    """A blackholed SMTP server (connections accepted, never a greeting) fails only after
    the whole timeout: the Slack work of the incident goes on meanwhile."""
    assert slack.bot.executor.mailer is not None
    slack.bot.executor.mailer.timeout = 4  # it waits that long before giving up
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", smtp_port))
        blackhole.listen(8)  # the kernel accepts; nobody ever speaks
        await slack.command("", user=ALICE)
        view = next(v for v in slack.fake.views if v.get("callback_id") == Modal.DECLARE)
        values = slack.driver.view_values_from(
            view, {"severity": "SEV1", "title": "checkout slow", "services": "payments"}
        )
        await slack.driver.submit(Modal.DECLARE, values, view_id=str(view["id"]))
        started = time.monotonic()
        for _ in range(50):  # what the worker loop does, without waiting for email
            await slack.bot.background.wait()
            if not await slack.bot.worker.run_once():
                break
        elapsed = time.monotonic() - started
        channel = slack.incident_channel()
        assert any("INCIDENT ALERT" in t for t in slack.texts(channel))
        assert slack.fake.channel("incidents").messages, "the announcement went out"
        assert slack.bot.worker.busy, "the email is still waiting for its server"
        assert elapsed < 3.5, f"Slack work waited {elapsed:.2f}s for the SMTP server"
        await slack.bot.worker.drain()  # the server's silence ends in a timeout: a retry
        await slack.settle()  # what the channel is told is a message of its own
    told = [t for t in slack.texts(channel) if "Email to stakeholders not sent yet" in t]
    assert len(told) == 1
    assert "SMTP server unreachable" in told[0]


async def test_refused_recipients_end_the_job_and_the_channel_is_told(
    slack: Slack, smtp_port: int
) -> None:
    box = Inbox(refuse=True)
    controller = _serve(box, smtp_port)
    try:
        channel = await declare_with_services(slack)
        slack.clock.advance(timedelta(minutes=10))
        await slack.settle()
    finally:
        controller.stop()
    assert box.messages == []
    told = [t for t in slack.texts(channel) if "Email to stakeholders" in t]
    assert len(told) == 1
    assert "every recipient was refused" in told[0]
    assert "will not be retried" in told[0]


async def test_drills_email_nobody(slack: Slack, inbox: Inbox) -> None:
    await slack.command("drill sev1 practice outage")
    assert inbox.messages == []


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_internal_details_when_the_policy_says_so(slack: Slack, inbox: Inbox) -> None:
    slack.bot.service.policy = status_policy(email_details="internal")
    await slack.command("", user=ALICE)
    await slack.submit_modal(
        Modal.DECLARE, {"severity": "SEV1", "title": INTERNAL_TITLE, "services": "payments"}
    )
    (_, declared) = inbox.messages[0]
    assert INTERNAL_TITLE in str(declared["Subject"])
    plain, _ = _parts(declared)
    assert "Internal details" in plain
    assert "Services: payments" in plain


async def test_a_resend_carries_the_same_message_id(smtp_port: int, inbox: Inbox) -> None:
    """A send whose answer was lost is sent again by the retry: with the same Message-ID,
    which mail systems use to drop the repeat."""
    mailer = Mailer(url=f"smtp://127.0.0.1:{smtp_port}", sender="incidents@example.com")
    payload = {
        "to": ["a@example.com"],
        "what": "update",
        "at": "2026-11-23T10:00:00+00:00",
        "id": "INC-20261123-001",
        "severity": "SEV1",
        "public": {"title": "T", "text": "body", "status": "investigating", "components": {}},
    }
    first = await mailer.send(7, payload)
    second = await mailer.send(7, payload)
    assert first["message_id"] == second["message_id"] == "<inc-20261123-001.job7@example.com>"
    assert [str(m["Message-ID"]) for _, m in inbox.messages] == [first["message_id"]] * 2
    other = await mailer.send(8, payload)
    assert other["message_id"] != first["message_id"]


async def test_a_server_that_refuses_everything_is_a_permanent_failure(smtp_port: int) -> None:
    box = Inbox(refuse=True)
    controller = _serve(box, smtp_port)
    try:
        mailer = Mailer(url=f"smtp://127.0.0.1:{smtp_port}", sender="incidents@example.com")
        with pytest.raises(JobFailed, match="every recipient was refused"):
            await mailer.send(1, {"to": ["a@example.com"], "what": "declared", "id": "X"})
    finally:
        controller.stop()


def test_smtp_settings(no_env: None) -> None:
    server = parse_smtp_url("smtp://user%40corp:p%3Ass@mail.example.com:2525")
    assert (server.host, server.port, server.implicit_tls) == ("mail.example.com", 2525, False)
    assert (server.username, server.password) == ("user@corp", "p:ss")
    assert parse_smtp_url("smtps://mail.example.com").port == 465
    assert parse_smtp_url("smtp://mail.example.com").port == 587
    base = {"slack_bot_token": "xoxb-1", "slack_signing_secret": "s", "_env_file": None}
    with pytest.raises(SettingsError) as missing:
        load_settings(**base, smtp_url="smtp://u:hunter2@mail.example.com:587")
    assert "EMAIL_FROM is required when SMTP_URL is set" in str(missing.value)
    assert "hunter2" not in str(missing.value)
    with pytest.raises(SettingsError) as wrong:
        load_settings(**base, smtp_url="http://u:hunter2@mail.example.com", email_from="a@b.c")
    assert str(wrong.value).startswith("SMTP_URL must start with smtp://")
    assert "hunter2" not in str(wrong.value)
    with pytest.raises(SettingsError, match="PUBLIC_URL must be an http"):
        load_settings(**base, public_url="status.example.com")
