"""`make demo`: the real bot, served over HTTP, against the local Slack stand-in.

A scripted incident from declaration to resolution; every request is signed like Slack's
and goes through the same endpoint as in production. The transcript shows what each
channel shows, step by step, what the public status page says once the incident is
published, and, at the end, an incident that monitoring declares (Alertmanager's webhook)
before anyone types a word. The clock is simulated so that the incident lasts an hour
while the demo takes seconds.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx

from bot.clock import FakeClock, SystemClock
from bot.config import Settings
from bot.devtools.driver import SlackDriver, view_values_from
from bot.devtools.fakeslack import Channel, FakeSlack, Message
from bot.devtools.transcript import message_lines, readable, render_edit, render_message
from bot.domain.policy import Component, StatusPage, default_policy
from bot.runtime import Runtime

SECRET = "demo-signing-secret"  # noqa: S105 - the demo's own stand-in, no real Slack app
ALERTS_TOKEN = "demo-alerts-token"  # noqa: S105 - the demo's own monitoring


@dataclass
class Demo:
    fake: FakeSlack
    driver: SlackDriver
    bot: Runtime
    clock: FakeClock
    general: str
    start: datetime
    base: str = ""
    seen: dict[str, int] = field(default_factory=dict)
    edits: dict[str, int] = field(default_factory=dict)

    def channels(self) -> list[Channel]:
        """Incident channels first, then the others (the announcement channel)."""
        channels = [c for c in self.fake.channels.values() if not c.is_im]
        return sorted(channels, key=lambda c: not c.name.startswith("inc-"))

    def show_new(self) -> None:
        """Print what appeared, or was edited in place, in every channel since the last step."""
        for channel in self.channels():
            start = self.seen.get(channel.id, 0)
            new = channel.messages[start:]
            edited = []
            for message in channel.messages[:start]:
                key = f"{channel.id}:{message.ts}"
                if len(message.edits) > self.edits.get(key, 0):
                    edited.append((message, self.edits.get(key, 0)))
            for message in channel.messages:
                self.edits[f"{channel.id}:{message.ts}"] = len(message.edits)
            self.seen[channel.id] = len(channel.messages)
            if not new and not edited:
                continue
            topic = f"  (topic: {readable(self.fake, channel.topic)})" if channel.topic else ""
            print(f"\n  ── #{channel.name}{topic}")
            for message, seen_edits in edited:
                print(render_edit(self.fake, message, seen_edits=seen_edits))
            for message in new:
                print(render_message(self.fake, message))

    async def step(
        self, when: str, who: str, what: str, action: Callable[[], Awaitable[str | None]]
    ) -> None:
        print(f"\n{'━' * 78}\n[{when}] {who}: {what}")
        reply = await action()
        await self.bot.settle()
        if reply:
            print(f"  (only {who} sees) {reply}")
        for url, messages in self.fake.responses.items():
            for message in messages[self.seen.get(url, 0) :]:
                print(f"  (only {who} sees) {readable(self.fake, str(message.get('text', '')))}")
            self.seen[url] = len(messages)
        self.show_new()

    async def wait(self, minutes: int) -> None:
        """Let simulated time pass a minute at a time; print what the bot does on its own."""
        for _ in range(minutes):
            self.clock.advance(timedelta(minutes=1))
            await self.bot.settle()
            if any(len(c.messages) > self.seen.get(c.id, 0) for c in self.channels()):
                elapsed = int((self.clock.now() - self.start).total_seconds() // 60)
                print(
                    f"\n{'━' * 78}\n[T+{elapsed:>2}m] ⏰ nobody typed anything; the bot keeps "
                    "the clocks:"
                )
                self.show_new()

    async def command(self, text: str, *, user: str, channel: str) -> str | None:
        """Send the command; return the ephemeral reply as the user reads it."""
        name = self.fake.channel(channel).name
        reply = await self.driver.command(text, user=user, channel=channel, channel_name=name)
        body = reply.body if isinstance(reply.body, dict) else {}
        if body.get("blocks"):
            lines = message_lines(self.fake, str(body.get("text", "")), body["blocks"])
            return "\n" + "\n".join(f"    {line}" for line in lines)
        return readable(self.fake, reply.text) if reply.text else None

    async def click(self, action: str, *, user: str, channel: Channel) -> str | None:
        alert = next(
            m
            for m in channel.messages
            if m.blocks
            and any(e.get("action_id") == action for b in m.blocks for e in b.get("elements", []))
        )
        await self.driver.click(
            action,
            _value(alert.blocks or [], action),
            user=user,
            channel=channel.id,
            message_ts=alert.ts,
            block_id="incident_actions",
        )
        return None


def _value(blocks: list[dict[str, object]], action: str) -> str:
    for block in blocks:
        for element in block.get("elements", []) or []:  # type: ignore[attr-defined]
            if element.get("action_id") == action:
                return str(element.get("value"))
    raise LookupError(action)


async def run_demo(*, database_url: str | None = None) -> int:
    start = SystemClock().now().replace(second=0, microsecond=0)
    clock = FakeClock(start)
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'demo.db'}"
        async with FakeSlack() as fake:
            alice, bob, carol = "U0ALICE", "U0BOB", "U0CAROL"
            fake.add_user(alice, "alice", "Alice (on-call)")
            fake.add_user(bob, "bob", "Bob (SRE)")
            fake.add_user(carol, "carol", "Carol (support)")
            general = fake.add_channel("general", members=[alice, bob, carol])
            fake.add_channel("incidents", members=[alice, bob, carol], bot_is_member=False)
            settings = Settings(
                _env_file=None,
                slack_bot_token=fake.bot_token,
                slack_signing_secret=SECRET,
                slack_api_url=fake.api_url,
                database_url=url,
                alerts_token=ALERTS_TOKEN,
            )
            page = StatusPage(
                title="Example status",
                components=[
                    Component(name="Payments", services=["payments", "stripe"]),
                    Component(name="Messaging", services=["messaging"]),
                ],
            )
            policy = default_policy().model_copy(update={"status_page": page})
            bot = await Runtime.create(settings, clock=clock, policy=policy)
            port = await bot.start(host="127.0.0.1", port=0, worker=False)
            try:
                async with SlackDriver(
                    bot_url=f"http://127.0.0.1:{port}", signing_secret=SECRET, fake=fake
                ) as driver:
                    demo = Demo(
                        fake,
                        driver,
                        bot,
                        clock,
                        general,
                        start=clock.now(),
                        base=f"http://127.0.0.1:{port}",
                    )
                    await script(demo, alice=alice, bob=bob, carol=carol)
            finally:
                await bot.close()
    return 0


async def script(demo: Demo, *, alice: str, bob: str, carol: str) -> None:
    print("Incident bot demo: the real bot over HTTP against a local Slack stand-in.")
    print("Requests are signed like Slack's; the clock is simulated.\n")
    general = demo.general

    def at(minutes: int) -> str:
        return f"T+{minutes:>2}m"

    await demo.step(
        at(0),
        "@alice in #general",
        "/incident sev1 payment processing down",
        lambda: demo.command("sev1 payment processing down", user=alice, channel=general),
    )
    channel = next(c for c in demo.channels() if c.name.startswith("inc-"))
    await demo.wait(3)
    await demo.step(
        at(3),
        "@bob",
        "clicks Acknowledge",
        lambda: demo.click("incident_ack", user=bob, channel=channel),
    )
    await demo.wait(1)
    await demo.step(
        at(4),
        "@bob",
        "clicks Take command",
        lambda: demo.click("incident_command", user=bob, channel=channel),
    )
    await demo.step(
        at(4),
        "@bob",
        "/incident role comms_lead @carol",
        lambda: demo.command(f"role comms_lead <@{carol}|carol>", user=bob, channel=channel.id),
    )
    await demo.wait(8)
    await demo.step(
        at(12),
        "@bob",
        "/incident update …",
        lambda: demo.command(
            "update Stripe webhooks failing since the 09:58 deploy; "
            "failing over to the backup processor",
            user=bob,
            channel=channel.id,
        ),
    )
    await demo.step(
        at(12),
        "@bob",
        "/incident status mitigating",
        lambda: demo.command("status mitigating", user=bob, channel=channel.id),
    )
    await demo.step(
        at(12),
        "@carol",
        "/incident publish Payments=major … (the customer-facing update)",
        lambda: demo.command(
            "publish Payments=major Some card payments in Europe are failing. We have found "
            "the cause and are moving payments to a backup processor. Next update within 30 "
            "minutes.",
            user=carol,
            channel=channel.id,
        ),
    )
    await status_page(demo, "The public status page now")
    playbook = next(m for m in channel.messages if "Playbook" in m.text)
    first = next(b for b in playbook.blocks or [] if b.get("block_id") == "steps:0")
    option = first["elements"][0]["options"][0]

    async def tick() -> str | None:
        await demo.driver.click(
            first["elements"][0]["action_id"],
            "",
            user=bob,
            channel=channel.id,
            message_ts=playbook.ts,
            block_id="steps:0",
            extra={"type": "checkboxes", "selected_options": [option]},
        )
        return None

    await demo.step(at(12), "@bob", "ticks the first playbook step", tick)
    await demo.wait(3)
    said = Message(
        ts=f"{demo.clock.now().timestamp():.6f}",
        user=carol,
        text="Support: EU customers see checkout errors since 09:58",
    )
    channel.messages.append(said)
    demo.seen[channel.id] = len(channel.messages)

    async def pin() -> str | None:
        await demo.driver.reaction_added("pushpin", user=bob, channel=channel.id, ts=said.ts)
        return None

    await demo.step(
        at(15),
        "@bob",
        "reacts 📌 to Carol's message “Support: EU customers see checkout errors since 09:58”",
        pin,
    )
    await demo.wait(3)
    await demo.step(
        at(18),
        "@carol",
        "/incident note <!channel> customers report checkout errors",
        lambda: demo.command(
            "note <!channel> customers report checkout errors in EU", user=carol, channel=channel.id
        ),
    )
    await demo.wait(20)
    await demo.step(
        at(38),
        "@bob",
        "/incident sev sev2 (payments flowing through the backup)",
        lambda: demo.command("sev sev2", user=bob, channel=channel.id),
    )
    await demo.step(
        at(38),
        "@bob",
        "/incident action add alert on webhook signature failures @bob",
        lambda: demo.command(
            f"action add alert on webhook signature failures <@{bob}|bob>",
            user=bob,
            channel=channel.id,
        ),
    )
    await demo.wait(24)
    await demo.step(
        at(62),
        "@bob",
        "clicks Resolve (the resolve form opens)",
        lambda: demo.click("incident_resolve", user=bob, channel=channel),
    )

    async def submit() -> str | None:
        view = demo.fake.views[-1]
        values = view_values_from(
            view,
            {
                "summary": "Rolled back the 09:58 deploy; payments flow through Stripe again",
                "root_cause": "The deploy rotated the Stripe webhook signing secret",
            },
        )
        await demo.driver.submit(
            str(view["callback_id"]),
            values,
            user=bob,
            private_metadata=str(view.get("private_metadata", "")),
            view_id=str(view.get("id")),
        )
        return None

    await demo.step(at(62), "@bob", "submits the resolve form", submit)
    await demo.step(
        at(63),
        "@alice",
        "/incident timeline",
        lambda: demo.command("timeline", user=alice, channel=channel.id),
    )
    await status_page(demo, "The public status page after the resolution")
    (draft,) = demo.fake.files.values()
    markdown = (draft.content or b"").decode()
    print(
        f"\n{'━' * 78}\nThe post-mortem draft uploaded at resolution ({draft.filename}), "
        "its first lines:\n"
    )
    print("\n".join(f"    {line}" for line in markdown.splitlines()[:30]))
    print("    …")
    await alert_declares(demo)
    print(
        f"\n{'━' * 78}\nDone: two incidents (one declared by a person, one by monitoring), "
        f"{len(channel.messages)} messages in #{channel.name}, "
        f"{len(demo.fake.calls)} Slack API calls recorded by the stand-in."
    )


async def status_page(demo: Demo, title: str) -> None:
    """What anyone reads at /status (its JSON, as status aggregators read it)."""
    async with httpx.AsyncClient() as http:
        summary = (await http.get(f"{demo.base}/status/api/v2/summary.json")).json()
    print(f"\n{'━' * 78}\n{title} (GET /status/api/v2/summary.json; /status is the page):")
    print(f"    overall: {summary['status']['description']}")
    for component in summary["components"]:
        print(f"    {component['name']}: {component['status'].replace('_', ' ')}")
    async with httpx.AsyncClient() as http:
        page = (await http.get(f"{demo.base}/status")).text
    print(
        f"    /status: {len(page)} bytes of HTML, no script; internal title on it: "
        f"{'payment processing down' in page}"
    )


async def alert_declares(demo: Demo) -> None:
    """Alertmanager's webhook (as its `receivers:` would send it) declares an incident."""
    demo.clock.advance(timedelta(minutes=30))
    now = demo.clock.now()
    alert = {
        "status": "firing",
        "labels": {
            "alertname": "HighErrorRate",
            "service": "messaging",
            "severity": "critical",
        },
        "annotations": {
            "summary": "Error rate above 1% on messaging-api for 5 minutes",
            "runbook_url": "https://runbooks.example.com/messaging/errors",
        },
        "startsAt": (now - timedelta(minutes=5)).isoformat().replace("+00:00", "Z"),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example.com:9090/graph?g0.expr=errors",
        "fingerprint": "b1c2d3e4f5a60718",
    }
    body = {
        "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "incident-bot",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": alert["labels"],
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://alertmanager.example.com:9093",
        "alerts": [alert],
    }
    headers = {"Authorization": f"Bearer {ALERTS_TOKEN}"}
    url = f"{demo.base}/alerts/alertmanager"

    async def post(what: dict[str, object]) -> str | None:
        async with httpx.AsyncClient() as http:
            answer = await http.post(url, json=what, headers=headers)
        return f"HTTP {answer.status_code} {answer.json().get('status')}"

    await demo.step(
        "T+93m",
        "Alertmanager",
        "POST /alerts/alertmanager (HighErrorRate, critical)",
        lambda: post(body),
    )
    await demo.step(
        "T+93m",
        "Alertmanager",
        "the same group again (its repeat_interval): nothing new",
        lambda: post(body),
    )
    demo.clock.advance(timedelta(minutes=10))
    resolved = {**alert, "status": "resolved", "endsAt": demo.clock.now().isoformat()}
    await demo.step(
        "T+103m",
        "Alertmanager",
        "the alert is resolved (people decide: Resolve button)",
        lambda: post({**body, "status": "resolved", "alerts": [resolved]}),
    )
