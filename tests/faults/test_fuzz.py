"""Fuzz: the `/incident` grammar, every form and every button value, through the real bot.

Each example is one request as Slack sends it: signed HTTP to the bot serving in-process,
which talks to the fake Slack server, on SQLite. One bot serves every example of the module
(its own event loop, driven from these synchronous tests), so the examples also see a bot
that has lived a while: many incidents, resolved ones, a commander handed around.

What someone typed is modelled twice. As Slack sends slash-command text (`should_escape`:
`&`, `<`, `>` arrive as `&amp;`, `&lt;`, `&gt;`, and people picked from the autocomplete
arrive as `<@U0BOB|bob>`), where what is stored can be predicted; and raw, as a forged or
unescaped request would carry it, where only the safety properties are asserted.

The properties, as a user would notice them:
- every request is answered 200, with something readable, and nothing is logged as failed;
- nothing typed reaches Slack as markup: no message, DM, topic, view or reply carries a
  broadcast, link, channel or mention that was typed (the bot's own mentions of people are
  fine; typed ones use ids that only this file writes: `U0TYPED`, `W0TYPED`, `S0TYPED`).
  One allowance, by design (`texts.escape_error`): a refusal read by its author alone may
  show a bare typed `<@U0TYPED>` as a name; it notifies nobody. Broadcasts never;
- no control character is sent to Slack or stored;
- what is stored is what was typed, minus control characters (CR LF and CR are line breaks);
- one accepted declaration is one incident and one channel; a refused one is none.

Bugs the fuzz found keep a plain regression test at the end of the file. The example counts
are sized for CI (the file runs in about 20 s); `FUZZ_SCALE=10` multiplies them for a longer
hunt (the examples stay deterministic for a given scale).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from bot.clock import FakeClock
from bot.devtools.fakepagerduty import FakePagerDuty
from bot.devtools.fakeslack import Call, Channel, FakeSlack
from bot.domain.policy import Policy, default_policy, parse_policy
from bot.service.incidents import Where
from bot.service.ports import IncidentRecord
from bot.slack.app import INTERNAL_ERROR
from bot.slack.blocks import Action, Modal
from bot.store import tables
from bot.store.db import Database
from tests.conftest import serving
from tests.harness import ALICE, BOB, CAROL, Slack

T = TypeVar("T")
JSON = dict[str, Any]


def paging_policy() -> Policy:
    """The built-in policy, with people to page: declaring SEV1 or SEV2 messages Bob
    directly (a DM that quotes the title); escalating SEV2 pages Carol."""
    data = default_policy().model_dump(mode="json")
    sev1, sev2 = data["severities"][:2]
    sev1["escalation"][0]["notify"] = [BOB]
    sev2["escalation"][:2] = [
        {"after": "0s", "notify": [BOB]},
        {"after": "15m", "notify": [CAROL]},
    ]
    return parse_policy(data)


POLICY = paging_policy()
TITLE_MAX, TEXT_MAX, ACTION_MAX = 500, 2900, 1000

SCALE = float(os.environ.get("FUZZ_SCALE", "1"))


def examples(count: int) -> int:
    return max(1, round(count * SCALE))


FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

# ---- what people type ----------------------------------------------------------------------
# Typed markup, with ids nobody but this file uses: if one of these reaches Slack unescaped,
# it came from typed text.
HOSTILE = (
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "<@U0TYPED>",
    "<@W0TYPED|w>",
    "<#C0TYPED|x>",
    "<!subteam^S0TYPED>",
    "<https://typed.example|click here>",
    "a < b && c",
    "&amp;",
    "&lt;",
    "&#60;",
    "&",
    "<",
    ">",
    "|",
)
CONTROLS = ("\x00", "\x1b", "\x07", "\r", "\r\n", "\x7f", "\x85", "\x1b[31m", "\x0b", "\x1c")
ODD = (
    "\n",
    "\t",
    " ",
    "\u00a0",
    "\u2028",
    "\u202e",
    "\u200b",
    "é",
    "ß",
    "🔥",
    "👩‍🚒",
    "𝔘",
    "٣",
    "²",
    "…",
    "*bold*",
    "`x`",
    "_i_",
    ":fire:",
    "due",
    "2w",
    "sev1",
)
atoms = st.one_of(st.sampled_from(HOSTILE + CONTROLS + ODD), st.text(min_size=1, max_size=8))
short_text = st.lists(atoms, max_size=7).map("".join)
long_text = st.builds(
    lambda seed, size: (seed * (size // len(seed) + 1))[:size],
    st.lists(atoms, min_size=1, max_size=7).map("".join),
    st.integers(min_value=400, max_value=3500),
)
free_text = st.one_of(short_text, short_text, short_text, long_text)


def slack_escaped(text: str) -> str:
    """Slash-command text as Slack sends what was typed (`should_escape`)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class Writing:
    """Text someone wrote: `sent` as the request carries it, `shown` as they typed it
    (None for a raw request, where the two cannot be told apart)."""

    sent: str
    shown: str | None

    def __add__(self, other: Writing) -> Writing:
        shown = None if self.shown is None or other.shown is None else self.shown + other.shown
        return Writing(self.sent + other.sent, shown)


# Things Slack itself writes into slash-command text: (as sent, as the user sees it).
PICKED = {
    "bob": Writing("<@U0BOB|bob>", "@bob"),
    "carol": Writing("<@U0CAROL>", "<@U0CAROL>"),
    "room": Writing("<#C0ROOM|room>", "#room"),
    "channel": Writing("<!channel>", "<!channel>"),
}


@st.composite
def writing(draw: st.DrawFn, *, people: bool = True) -> Writing:
    """Free text, as Slack would send it or raw; Slack's own entities mixed in."""
    if draw(st.integers(0, 3)) == 0:
        return Writing(draw(free_text), None)
    picked = [w for name, w in PICKED.items() if people or name in ("room", "channel")]
    pieces = draw(
        st.lists(
            st.one_of(
                free_text.map(lambda t: Writing(slack_escaped(t), t)),
                st.sampled_from(picked),
            ),
            max_size=4,
        )
    )
    total = Writing("", "")
    for piece in pieces:
        total = total + piece
    return total


def words(*choices: str) -> st.SearchStrategy[Writing]:
    return st.sampled_from([Writing(c, c) for c in choices])


# ---- what the bot may keep -----------------------------------------------------------------
# Unicode's control characters (category Cc: U+0000-001F, U+007F-009F) but tab and line feed.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def controls_in(text: str) -> list[str]:
    return CONTROL.findall(text)


def without_controls(text: str) -> str:
    return CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def clipped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def cleaned(text: str, limit: int = TEXT_MAX) -> str:
    """Required text: one line unless it has line breaks, trimmed, cut at `limit`."""
    text = without_controls(text)
    text = " ".join(text.split()) if "\n" not in text else text.strip()
    return clipped(text, limit)


def trimmed(text: str, limit: int = TEXT_MAX) -> str:
    """Optional text: trimmed, cut at `limit`."""
    return without_controls(text).strip()[:limit]


def action_text(text: str) -> str:
    one_line = " ".join(without_controls(text).split()).strip(" ,;-–—")
    return cleaned(clipped(one_line, ACTION_MAX))


# ---- what the bot says ---------------------------------------------------------------------
# Typed markup that must never reach Slack as markup.
TYPED_MARKUP = re.compile(
    r"<(?:@[UW]0TYPED|#C0TYPED|!subteam\^S0TYPED|!channel|!here|!everyone|https://typed\.example)"
)
BROADCAST = re.compile(r"<!(?:channel|here|everyone)")
# Refusals read by their author alone show a bare mention as a name (`texts.escape_error`).
BARE_MENTION = re.compile(r"<(?:@[UW]0TYPED|!subteam\^S0TYPED)>")
DOUBLE_ESCAPED = re.compile(r"&amp;(?:amp|lt|gt);")


def strings(value: Any) -> Iterator[str]:
    """Every string in a call's arguments, JSON-encoded blocks and views opened up."""
    if isinstance(value, str):
        if value[:1] in "[{":
            try:
                decoded = json.loads(value)
            except ValueError:
                decoded = None
            if isinstance(decoded, dict | list):
                yield from strings(decoded)
                return
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings(item)


PRIVATE_METHODS = {"chat.postEphemeral"}


@dataclass
class Exchange:
    """One request and everything the bot did about it."""

    what: str
    status: int
    ack: JSON | str
    calls: list[Call]
    replies: list[JSON]  # posted to the request's response_url
    files: list[bytes]

    def public(self) -> Iterator[tuple[str, str]]:
        for call in self.calls:
            if call.method not in PRIVATE_METHODS:
                for text in strings(call.args):
                    yield call.method, text

    def private(self) -> Iterator[tuple[str, str]]:
        for text in strings(self.ack):
            yield "ack", text
        for reply in self.replies:
            for text in strings(reply):
                yield "response_url", text
        for call in self.calls:
            if call.method in PRIVATE_METHODS:
                for text in strings(call.args):
                    yield call.method, text

    def opened_view(self) -> bool:
        return any(c.method == "views.open" and c.ok for c in self.calls)

    def reply_texts(self) -> list[str]:
        found = [self.ack["text"]] if isinstance(self.ack, dict) and "text" in self.ack else []
        return found + [str(r.get("text") or "") for r in self.replies]


def check_safe(
    exchange: Exchange, *, typed: str | None, people_typed: bool = True, form: bool = False
) -> None:
    """Nothing typed reaches Slack as markup; no control character reaches it at all.

    `typed`: what was typed, when known; without `&` in it, nothing may come out escaped
    twice. `form`: the answer is a form's errors, plain text shown under a field."""
    markup = TYPED_MARKUP if people_typed else BROADCAST
    for where, text in exchange.public():
        assert not controls_in(text), (exchange.what, where, text)
        assert not markup.search(text), (exchange.what, where, text)
    for where, text in exchange.private():
        assert not controls_in(text), (exchange.what, where, text)
        if not (form and where == "ack"):
            assert not markup.search(BARE_MENTION.sub("", text)), (exchange.what, where, text)
    for content in exchange.files:
        assert not controls_in(content.decode()), exchange.what
    if typed is not None and "&" not in typed:
        for where, text in [*exchange.public(), *exchange.private()]:
            assert not DOUBLE_ESCAPED.search(text), (exchange.what, where, text)


def check_readable(exchange: Exchange) -> None:
    """The user is answered: a reply with words in it, or the form they asked for."""
    assert exchange.status == 200, (exchange.what, exchange.status, exchange.ack)
    texts = [t for t in exchange.reply_texts() if t.strip()]
    assert texts or exchange.opened_view(), (exchange.what, exchange.ack, exchange.replies)
    for text in texts:
        assert INTERNAL_ERROR not in text, exchange.what


class Failures(logging.Handler):
    """ERROR records (Bolt's "failed to run listener", the bot's "… failed")."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# ---- one bot for the module ----------------------------------------------------------------
@asynccontextmanager
async def serving_file(path: Path) -> AsyncIterator[Slack]:
    """The bot serving HTTP against the fake Slack on a SQLite file (as conftest's `slack`)."""
    async with FakeSlack() as fake, FakePagerDuty() as pagerduty:
        fake.add_user(ALICE, "alice", "Alice Ops")
        fake.add_user(BOB, "bob", "Bob Oncall")
        fake.add_user(CAROL, "carol", "Carol Comms")
        database = Database(f"sqlite+aiosqlite:///{path}")
        async with serving(fake, database, FakeClock(), POLICY, pagerduty) as slack:
            yield slack


class Bot:
    """The running bot, its event loop, and what the fuzz expects of it so far."""

    def __init__(self, loop: asyncio.AbstractEventLoop, slack: Slack, failures: Failures) -> None:
        self.loop, self.slack, self.failures = loop, slack, failures
        self.accepted = 0  # declarations the bot accepted (drills included)
        self.channel: Channel | None = None  # the open incident in-channel examples act in
        self.views = 0
        self.examples: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Bot(accepted={self.accepted})"

    def run(self, work: Coroutine[Any, Any, T], *, name: str) -> T:
        self.examples[name] = self.examples.get(name, 0) + 1
        return self.loop.run_until_complete(work)

    @property
    def fake(self) -> FakeSlack:
        return self.slack.fake

    def view_id(self) -> str:
        self.views += 1
        return f"V0FUZZ{self.views:05d}"

    async def exchange(
        self, what: str, send: Coroutine[Any, Any, Any], *, response_url: str | None = None
    ) -> Exchange:
        """Send one request, let the bot finish, and collect everything it did (and what
        it posted to `response_url`, or to the request's own)."""
        calls, files, errors = (
            len(self.fake.calls),
            set(self.fake.files),
            len(self.failures.records),
        )
        reply = await send
        await self.slack.settle()
        assert self.failures.records[errors:] == [], (what, self.failures.records[errors:])
        response_url = response_url or getattr(reply, "response_url", None)
        if hasattr(reply, "body") and hasattr(reply, "status"):
            status, ack = reply.status, reply.body
        else:  # an httpx.Response (a form submission)
            status, ack = reply.status_code, (reply.json() if reply.text else "")
        return Exchange(
            what=what,
            status=status,
            ack=ack,
            calls=self.fake.calls[calls:],
            replies=list(self.fake.responses.get(response_url or "", [])),
            files=[f.content or b"" for key, f in self.fake.files.items() if key not in files],
        )

    async def command(self, text: str, *, channel: str | None = None) -> Exchange:
        where = channel or self.slack.general
        name = self.fake.channel(where).name
        send = self.slack.driver.command(text, user=ALICE, channel=where, channel_name=name)
        return await self.exchange(f"/incident {text!r}", send)

    async def incidents(self) -> int:
        async with self.slack.bot.database.transaction() as connection:
            count = await connection.scalar(select(func.count()).select_from(tables.incidents))
        return int(count or 0)

    async def check_counts(self) -> None:
        """As many incidents, and incident channels, as declarations were accepted."""
        assert await self.incidents() == self.accepted
        created = [c for c in self.fake.calls_to("conversations.create") if c.ok]
        assert len(created) == self.accepted

    async def open_incident(self) -> Channel:
        """The incident in-channel examples act in; a new one once the last is resolved."""
        if self.channel is not None and (await self.record()).incident.is_open:
            return self.channel
        exchange = await self.command(f"sev2 fuzz target {self.accepted + 1}")
        assert "declared" in exchange.reply_texts()[0], exchange
        self.accepted += 1
        self.channel = self.slack.incident_channel()
        return self.channel

    async def record(self) -> IncidentRecord:
        assert self.channel is not None
        return await self.slack.bot.service.find(Where(channel_id=self.channel.id))


def check_stored(record: IncidentRecord, entries: list[Any]) -> None:
    """No control character in what is kept of an incident."""
    incident = record.incident
    kept = [incident.title, incident.impact, incident.resolution_summary, incident.root_cause]
    kept += incident.services + incident.tags + [a.text for a in incident.actions]
    kept += [text for entry in entries for text in strings(entry.data)]
    for text in kept:
        assert not controls_in(text), (incident.id, text)


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bot]:
    loop = asyncio.new_event_loop()
    failures = Failures()
    logging.getLogger().addHandler(failures)
    serve: AbstractAsyncContextManager[Slack] = serving_file(
        tmp_path_factory.mktemp("fuzz") / "incidents.db"
    )
    try:
        slack = loop.run_until_complete(serve.__aenter__())
        running = Bot(loop=loop, slack=slack, failures=failures)
        try:
            yield running
        finally:
            loop.run_until_complete(serve.__aexit__(None, None, None))
            print(f"\nfuzz examples run: {running.examples}")  # seen with -s
    finally:
        logging.getLogger().removeHandler(failures)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


# ---- /incident anywhere --------------------------------------------------------------------
DECLARED = re.compile(r"^(?:🚨|🧪 Drill) \*(INC-\d{8}-\d+)\* declared")
SEVERITY_WORDS = sorted({w for s in POLICY.severities for w in s.words})


@dataclass(frozen=True)
class Declaring:
    text: Writing  # the whole command text
    title: Writing | None  # the title, when the text is a declaration

    @property
    def echoes(self) -> bool:
        """Whether the answer repeats earlier examples' text (the open incidents' titles)."""
        return self.text.sent.lower().split()[:1] == ["list"]


@st.composite
def anywhere(draw: st.DrawFn, kind: str) -> Declaring:
    """What people type after /incident outside an incident channel."""
    if kind in ("declare", "drill"):
        severity = draw(st.sampled_from(SEVERITY_WORDS))
        severity = draw(st.sampled_from([severity, severity.upper(), severity.title()]))
        title = draw(writing())
        head = f"drill {severity}" if kind == "drill" else severity
        return Declaring(Writing(head + " ", head + " ") + title, title)
    if kind == "word":  # an unknown (or hostile) subcommand, and some more words
        word = draw(atoms.map(lambda w: w if w.split() else f"x{w}"))
        return Declaring(Writing(slack_escaped(word), word) + draw(writing()), None)
    if kind == "blank":
        return Declaring(draw(words("", " ", "\t", "\n", "\x00", "\x1b", "\u2028")), None)
    rest = draw(
        st.one_of(
            words("help", "HELP extra", "list", "list <!channel>", "drill", "drill sev9 x"),
            words("stats", "stats 7d", "stats 12W", "stats 0d", "stats 3651d", "stats ²"),
            words("stats 99999999999999999999d", "stats " + "9" * 5000 + "d", "stats x"),
            words("ack", "note hi", "resolve done", "update x", "timeline", "ic"),
        )
    )
    return Declaring(rest, None)


async def _anywhere(bot: Bot, case: Declaring) -> None:
    exchange = await bot.command(case.text.sent)
    check_readable(exchange)
    check_safe(exchange, typed=None if case.echoes else case.text.shown)
    declared = DECLARED.search(exchange.reply_texts()[0]) if exchange.reply_texts() else None
    kept: str | None = None
    if declared is not None:
        bot.accepted += 1
        service = bot.slack.bot.service
        record = await service.find(Where(incident_id=declared.group(1)))
        check_stored(record, await service.timeline(record.incident.id))
        kept = record.incident.title
    await bot.check_counts()
    if case.title is not None and case.title.shown is not None:
        title = cleaned(case.title.shown, TITLE_MAX)
        assert kept == (title or None), (case, exchange.reply_texts())


# Examples per kind: a declaration costs a channel, an alert and a playbook (~0.1 s).
ANYWHERE = {"declare": 16, "drill": 4, "word": 12, "blank": 4, "other": 10}


@pytest.mark.parametrize("kind", ANYWHERE)
def test_fuzz_command_anywhere(bot: Bot, kind: str) -> None:
    @settings(FUZZ, max_examples=examples(ANYWHERE[kind]))
    @given(case=anywhere(kind))
    def fuzz(case: Declaring) -> None:
        bot.run(_anywhere(bot, case), name=f"/incident anywhere: {kind}")

    fuzz()


# ---- /incident in an incident channel --------------------------------------------------------
@dataclass(frozen=True)
class Said:
    """A command in the incident channel, and what its timeline entry should keep."""

    word: str
    rest: Writing
    kept: str | None = None  # predicted text (None: not predicted)
    people_typed: bool = True  # False: a typed `<@U…>` is the command's person argument
    refused: bool = False  # refused whatever the text (an unreadable due date)

    @property
    def echoes(self) -> bool:
        """Whether the answer repeats earlier examples' text (the timeline, the actions)."""
        return self.word in ("timeline", "postmortem") or (
            self.word == "action" and not self.rest.sent.strip()
        )

    @property
    def text(self) -> str:
        return f"{self.word} {self.rest.sent}"


# The text each command keeps, and under which key of its timeline entry.
KEEPS = {
    "note": ("note_added", "text"),
    "update": ("update_posted", "text"),
    "resolve": ("resolved", "summary"),
    "escalate": ("escalated", "reason"),
    "action": ("action_added", "text"),
}
DUES = ("", " due 2w", " due in 3d", " due 2026-12-01")
BAD_DUES = (" due 99999999999999999999d", " due 2026-13-01", " due ²", " due " + "9" * 5000 + "d")


@st.composite
def in_channel(draw: st.DrawFn, word: str) -> Said:
    typed = draw(writing())
    free = st.just(typed)
    match word:
        case "note" | "update" | "resolve":
            shown = typed.shown
            return Said(word, typed, None if shown is None else cleaned(shown))
        case "escalate":
            return Said(word, typed, None if typed.shown is None else trimmed(typed.shown))
        case "action":
            text = draw(writing(people=False))
            owner = draw(st.sampled_from(["", " <@U0BOB|bob>", " <@U0CAROL>"]))
            due = draw(st.sampled_from(DUES + BAD_DUES))
            rest = Writing(text.sent + owner + due, text.shown)
            predictable = text.shown is not None and "due" not in text.shown.casefold()
            kept = action_text(text.shown) if predictable and text.shown is not None else None
            return Said(word, rest, kept, text.shown is not None, refused=due in BAD_DUES)
        case "status":
            rest = draw(st.one_of(words(*POLICY.open_statuses, "resolved", "Monitoring x"), free))
        case "sev":
            word = draw(st.sampled_from(["sev", "severity"]))
            rest = draw(st.one_of(st.sampled_from([Writing(w, w) for w in SEVERITY_WORDS]), free))
        case "ic":
            word = draw(st.sampled_from(["ic", "commander"]))
            people = words("", "<@U0BOB|bob>", "<@U0CAROL>", "<@U0ALICE|alice>", "bob", "@bob")
            rest = draw(st.one_of(people, free))
            return Said(word, rest, people_typed=rest.shown is not None)
        case "role":
            rest = draw(
                st.one_of(
                    words("scribe <@U0CAROL|carol>", "tech-lead <@U0BOB>", "Comms_Lead <@U0BOB>"),
                    words("commander <@U0BOB|bob>", "nobody <@U0BOB>", "scribe", "scribe bob"),
                    words("<@U0BOB> scribe", "scribe <@U0BOB> <@U0CAROL>"),
                    free,
                )
            )
            return Said(word, rest, people_typed=rest.shown is not None)
        case "snooze":
            rest = draw(
                st.one_of(
                    words("15m", "1h", "30M", "0m", "25h", "90s", "٣m", "1h30m", "-5m"),
                    words("99999999999999999999h", "9" * 5000 + "m"),
                    free,
                )
            )
        case "tag":
            rest = draw(st.one_of(words("security", "#Security", "db-1", "a b", "🔥"), free))
        case "timeline":
            rest = draw(
                st.one_of(
                    words("", "2", "0", "-1", "²", "٣", "99999999999999999999", "9" * 5000), free
                )
            )
        case "unknown":
            word = draw(st.sampled_from(["acknowledge", "resolved", "note:", "NOTE", "sev0"]))
            rest = typed
        case _:
            rest = draw(st.one_of(words(""), free))
    return Said(word, rest)


async def _in_channel(bot: Bot, said: Said) -> None:
    channel = await bot.open_incident()
    service = bot.slack.bot.service
    before = await bot.record()
    seen = len(await service.timeline(before.incident.id))
    exchange = await bot.command(said.text, channel=channel.id)
    check_readable(exchange)
    typed = None if said.echoes else said.rest.shown
    check_safe(exchange, typed=typed, people_typed=said.people_typed)
    after = await bot.record()
    entries = await service.timeline(after.incident.id)
    check_stored(after, entries)
    await bot.check_counts()
    if said.word not in KEEPS or said.kept is None:
        return
    kind, key = KEEPS[said.word]
    kept = [e.data[key] for e in entries[seen:] if e.kind == kind]
    if said.word == "escalate":  # any reason, even none; refused at the last level
        assert kept in ([], [said.kept]), (said, kept)
    else:  # on an open incident: kept as typed, unless there is nothing to keep
        assert kept == ([] if said.refused or not said.kept else [said.kept]), (said, kept)


IN_CHANNEL = {"note": 8, "update": 8, "resolve": 6, "escalate": 6, "action": 10}
IN_CHANNEL |= {"status": 5, "sev": 5, "ic": 5, "role": 5, "snooze": 6, "tag": 4}
IN_CHANNEL |= {"timeline": 5, "ack": 2, "postmortem": 2, "unknown": 4}


@pytest.mark.parametrize("word", IN_CHANNEL)
def test_fuzz_command_in_incident_channel(bot: Bot, word: str) -> None:
    @settings(FUZZ, max_examples=examples(IN_CHANNEL[word]))
    @given(said=in_channel(word))
    def fuzz(said: Said) -> None:
        bot.run(_in_channel(bot, said), name=f"/incident {word}")

    fuzz()


# ---- the forms -----------------------------------------------------------------------------
def modal_text(text: str) -> str | None:
    """Form fields arrive as typed (Slack does not escape them); the bot reads them as it
    reads slash-command text, so `&…;` and `<@U…|…>` shapes are not predicted here."""
    if "&" in text or re.search(r"<[@#][UWC][A-Z0-9]+\|", text):
        return None
    return text


def _state(values: dict[str, tuple[str, str | None]]) -> JSON:
    """`view.state.values` as Slack builds it: block id → {"value": element state}."""
    state: JSON = {}
    for block, (kind, value) in values.items():
        if kind == "static_select":
            option = None
            if value is not None:
                text = {"type": "plain_text", "text": value[:75] or "?", "emoji": True}
                option = {"text": text, "value": value}
            state[block] = {"value": {"type": kind, "selected_option": option}}
        else:
            state[block] = {"value": {"type": kind, "value": value}}
    return state


@dataclass(frozen=True)
class Form:
    callback: str
    fields: dict[str, tuple[str, str | None]]
    target: str  # "open" (the open incident), or a forged incident id; "" for declare
    twice: bool = False  # submitted again (Slack's retry, a double click)

    def typed(self, block: str) -> str:
        return self.fields[block][1] or ""


optional_text = st.one_of(st.none(), free_text)
forged_ids = st.one_of(
    st.sampled_from(["INC-20261122-999", "INC-20261122-001", "inc-20261122-002", "", "|"]),
    short_text,
)


@st.composite
def forms(draw: st.DrawFn, callback: str) -> Form:
    twice = draw(st.integers(0, 4)) == 0
    if callback == Modal.DECLARE:
        severity = draw(
            st.one_of(
                st.sampled_from([s.name for s in POLICY.severities] + ["p0", "SEV9"]),
                st.none(),
                short_text,
            )
        )
        fields = {
            "severity": ("static_select", severity),
            "title": ("plain_text_input", draw(optional_text)),
            "services": ("plain_text_input", draw(optional_text)),
            "impact": ("plain_text_input", draw(optional_text)),
        }
        return Form(callback, fields, "", twice)
    target = draw(st.one_of(st.just("open"), st.just("open"), forged_ids))
    if callback == Modal.UPDATE:
        status = draw(st.one_of(st.sampled_from([*POLICY.open_statuses, "resolved"]), short_text))
        fields = {
            "status": ("static_select", status),
            "text": ("plain_text_input", draw(optional_text)),
            "next_steps": ("plain_text_input", draw(optional_text)),
        }
    else:
        fields = {
            "summary": ("plain_text_input", draw(optional_text)),
            "root_cause": ("plain_text_input", draw(optional_text)),
        }
    return Form(callback, fields, target, twice)


FORM_BLOCKS: dict[str, set[str]] = {
    Modal.DECLARE: {"severity", "title"},
    Modal.UPDATE: {"text"},
    Modal.RESOLVE: {"summary"},
}


async def _form(bot: Bot, form: Form) -> None:
    service = bot.slack.bot.service
    response_url = None
    if form.callback == Modal.DECLARE:  # opened by `/incident`: its response_url is kept
        response_url = bot.fake.new_response_url()
        metadata = json.dumps({"channel": bot.slack.general, "response_url": response_url})
        target: IncidentRecord | None = None
    else:
        await bot.open_incident()
        target = await bot.record()
        metadata = target.incident.id if form.target == "open" else form.target
    view_id = bot.view_id()
    seen = len(await service.timeline(target.incident.id)) if target else 0
    exchanges = []
    for _ in range(2 if form.twice else 1):
        send = bot.slack.driver.submit(
            form.callback, _state(form.fields), private_metadata=metadata, view_id=view_id
        )
        what = f"{form.callback} {form.fields!r}"
        exchanges.append(await bot.exchange(what, send, response_url=response_url))
    for exchange in exchanges:
        assert exchange.status == 200, exchange
        if isinstance(exchange.ack, dict):  # refused: said next to the field
            assert exchange.ack.get("response_action") == "errors", exchange.ack
            errors = exchange.ack["errors"]
            assert set(errors) <= FORM_BLOCKS[form.callback], errors
            assert all(str(message).strip() for message in errors.values()), errors
        else:
            assert exchange.ack == "", exchange.ack
        check_safe(exchange, typed=None, form=True)
    accepted = exchanges[0].ack == ""
    if form.twice:  # answered as the first time; accepted again, it changes nothing
        assert exchanges[1].ack == exchanges[0].ack
        assert not [c for c in exchanges[1].calls if c.method.startswith("chat.")]
    if form.callback == Modal.DECLARE:
        title = modal_text(form.typed("title"))
        valid = POLICY.severity(form.fields["severity"][1] or "") is not None
        if title is not None:
            assert accepted == (valid and bool(cleaned(title, TITLE_MAX))), (form, exchanges[0])
        if accepted:
            bot.accepted += 1
            record = await service.find(Where(channel_id=bot.slack.incident_channel().id))
            check_stored(record, await service.timeline(record.incident.id))
            if title is not None:
                assert record.incident.title == cleaned(title, TITLE_MAX)
            services = modal_text(form.typed("services"))
            if services is not None:
                wanted = [without_controls(s).strip() for s in services.split(",")]
                assert record.incident.services == [s for s in wanted if s]
            impact = modal_text(form.typed("impact"))
            if impact is not None:
                assert record.incident.impact == trimmed(impact)
        await bot.check_counts()
        return
    assert target is not None
    after = await service.find(Where(incident_id=target.incident.id))
    entries = await service.timeline(after.incident.id)
    check_stored(after, entries)
    await bot.check_counts()
    new = entries[seen:]
    if form.target != "open" and form.target != target.incident.id:
        assert accepted is False or new == [], (form, new)
        return
    if form.callback == Modal.UPDATE:
        posted = [e for e in new if e.kind == "update_posted"]
        assert len(posted) == (1 if accepted else 0), (form, exchanges[0].ack, new)
        text, steps = modal_text(form.typed("text")), modal_text(form.typed("next_steps"))
        if posted and text is not None:
            assert posted[0].data["text"] == cleaned(text)
        if posted and steps is not None:
            assert posted[0].data["next_steps"] == trimmed(steps)
    else:
        resolved = [e for e in new if e.kind == "resolved"]
        assert len(resolved) == (1 if accepted else 0), (form, exchanges[0].ack, new)
        summary, cause = modal_text(form.typed("summary")), modal_text(form.typed("root_cause"))
        if resolved and summary is not None:
            assert resolved[0].data["summary"] == cleaned(summary)
        if resolved and cause is not None:
            assert resolved[0].data["root_cause"] == trimmed(cause)


FORMS: dict[str, int] = {Modal.DECLARE: 12, Modal.UPDATE: 8, Modal.RESOLVE: 6}


@pytest.mark.parametrize("callback", FORMS)
def test_fuzz_forms(bot: Bot, callback: str) -> None:
    @settings(FUZZ, max_examples=examples(FORMS[callback]))
    @given(form=forms(callback))
    def fuzz(form: Form) -> None:
        bot.run(_form(bot, form), name=f"form {callback}")

    fuzz()


# ---- the buttons (their values can be forged) ---------------------------------------------
BUTTONS = (
    Action.ACK,
    Action.COMMAND,
    Action.ESCALATE,
    f"{Action.NUDGE_SNOOZE}_15m",
    f"{Action.NUDGE_SNOOZE}_1h",
    Action.DUTY_DONE,
    Action.ACTION_DONE,
    Action.UPDATE,
    Action.NUDGE_UPDATE,
    Action.RESOLVE,
    Action.OPEN_CHANNEL,
)
ARGUMENTS = (
    "",
    "SEV2:0",
    "SEV1:3",
    "15m",
    "15m|2026-11-22T09:30:00+00:00",
    "1h|not a time",
    "99999999999999999999h",
    "followup:report",
    "compliance:security",
    "followup:",
    "1",
    "0",
    "99999999999999999999",
)


@dataclass(frozen=True)
class Click:
    action: str
    incident: str  # "open" or a forged id
    argument: str | None  # after the `|`; None: no `|`

    def value(self, open_id: str) -> str:
        incident = open_id if self.incident == "open" else self.incident
        return incident if self.argument is None else f"{incident}|{self.argument}"


@st.composite
def clicks(draw: st.DrawFn, action: str) -> Click:
    incident = draw(st.one_of(st.just("open"), st.just("open"), forged_ids))
    argument = draw(st.one_of(st.none(), st.sampled_from(ARGUMENTS), short_text))
    return Click(action, incident, argument)


async def _click(bot: Bot, click: Click) -> None:
    channel = await bot.open_incident()
    record = await bot.record()
    alert = bot.slack.alert(channel)
    value = click.value(record.incident.id)
    send = bot.slack.driver.click(
        click.action,
        value,
        user=BOB,
        channel=channel.id,
        message_ts=alert.ts,
        block_id="incident_actions",
        message={"type": "message", "ts": alert.ts, "text": alert.text, "blocks": []},
    )
    exchange = await bot.exchange(f"click {click.action} {value!r}", send)
    if click.action == Action.OPEN_CHANNEL:
        assert exchange.status == 200
    else:
        check_readable(exchange)
    check_safe(exchange, typed=None)
    after = await bot.record()
    check_stored(after, await bot.slack.bot.service.timeline(after.incident.id))
    await bot.check_counts()


@pytest.mark.parametrize("action", BUTTONS)
def test_fuzz_buttons(bot: Bot, action: str) -> None:
    @settings(FUZZ, max_examples=examples(4))
    @given(click=clicks(action))
    def fuzz(click: Click) -> None:
        bot.run(_click(bot, click), name=f"button {action}")

    fuzz()


@st.composite
def ticks(draw: st.DrawFn) -> tuple[str, list[int | str]]:
    """A checklist group and the options said to be ticked: a step of the checklist (by
    its place) or a forged value."""
    group = draw(st.sampled_from(["0", "10", "-5", "99999999999999999999", "00"]))
    selected = draw(st.lists(st.one_of(st.integers(0, 30), short_text), max_size=5))
    return group, selected


async def _tick(bot: Bot, group: str, selected: list[int | str]) -> None:
    channel = await bot.open_incident()
    steps = [
        option["value"]
        for message in channel.messages
        for block in message.blocks or []
        if str(block.get("block_id", "")).startswith("steps:")
        for option in block["elements"][0]["options"]
    ]
    values = [steps[v % len(steps)] if isinstance(v, int) else v for v in selected]
    options = [{"text": {"type": "mrkdwn", "text": "x"}, "value": v} for v in values]
    send = bot.slack.driver.click(
        f"{Action.PLAYBOOK_STEP}_{group}",
        "",
        user=CAROL,
        channel=channel.id,
        message_ts=bot.slack.alert(channel).ts,
        block_id=f"steps:{group}",
        extra={"type": "checkboxes", "selected_options": options},
    )
    exchange = await bot.exchange(f"tick steps:{group} {selected!r}", send)
    check_readable(exchange)
    check_safe(exchange, typed=None)
    after = await bot.record()
    check_stored(after, await bot.slack.bot.service.timeline(after.incident.id))


@settings(FUZZ, max_examples=examples(8))
@given(tick=ticks())
def test_fuzz_checklist(bot: Bot, tick: tuple[str, list[int | str]]) -> None:
    bot.run(_tick(bot, *tick), name="checklist")


# ---- what the fuzz found: one plain test each ------------------------------------------------
async def _entries_after(bot: Bot, text: str) -> tuple[Exchange, list[Any], IncidentRecord]:
    """`/incident <text>` in the open incident's channel: the exchange, the new timeline
    entries, and the incident afterwards."""
    channel = await bot.open_incident()
    service = bot.slack.bot.service
    seen = len(await service.timeline((await bot.record()).incident.id))
    exchange = await bot.command(text, channel=channel.id)
    check_readable(exchange)
    record = await bot.record()
    return exchange, (await service.timeline(record.incident.id))[seen:], record


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("snooze 99999999999999999999h", "is not a duration"),
        ("action check the pool due 99999999999999999999d", "too far away"),
        ("timeline ²", "Timeline of"),
        ("timeline " + "9" * 5000, "Timeline of"),
        ("stats 99999999999999999999d", "too long"),
    ],
)
def test_numbers_too_big_or_odd_are_answered_not_crashed(bot: Bot, text: str, said: str) -> None:
    """Found: OverflowError from timedelta() (snooze, action due, stats window) and
    ValueError from int('²') (timeline page): "Something went wrong", logged as failed."""

    async def scenario() -> None:
        exchange, _, _ = await _entries_after(bot, text)  # asserts no "failed" log record
        assert said in exchange.reply_texts()[0]

    bot.run(scenario(), name="regression")


def test_typed_markup_is_kept_as_typed(bot: Bot) -> None:
    """Found: Slack's escaping was undone before labelled mentions were read, so a typed
    `<#C1|x>` (sent as `&lt;#C1|x&gt;`) was kept as `#x`."""
    typed = "see <#C0TYPED|x> and <@W0TYPED|w>, p95 > 2s && rising"

    async def scenario() -> None:
        exchange, entries, _ = await _entries_after(bot, "note " + slack_escaped(typed))
        assert [e.data["text"] for e in entries if e.kind == "note_added"] == [typed]
        check_safe(exchange, typed=typed)

    bot.run(scenario(), name="regression")


def test_action_text_is_kept_as_typed(bot: Bot) -> None:
    """Found: `/incident action` kept the text as Slack sent it (`p95 &gt; 2s`), shown as
    `p95 &amp;gt; 2s`; a typed `<@U0TYPED>` must not become the owner either."""
    typed = "alert when p95 > 2s && <@U0TYPED> agrees"

    async def scenario() -> None:
        text = f"action {slack_escaped(typed)} <@U0BOB|bob> due 2w"
        exchange, _, record = await _entries_after(bot, text)
        action = record.incident.actions[-1]
        assert (action.text, action.owner) == (typed, BOB)
        check_safe(exchange, typed=typed)

    bot.run(scenario(), name="regression")


def test_words_quoted_in_refusals_are_escaped_once(bot: Bot) -> None:
    """Found: an unknown subcommand (and a person that is not one) was quoted escaped two or
    three times: `a&lt;b` showed as `a&amp;amp;lt;b`."""

    async def scenario() -> None:
        unknown = await bot.command(slack_escaped("a<b&c rest"))
        assert "`a&lt;b&amp;c` is neither a severity nor a subcommand" in unknown.reply_texts()[0]
        channel = await bot.open_incident()
        person = await bot.command("ic " + slack_escaped("a<b"), channel=channel.id)
        assert "`a&lt;b` is not a person" in person.reply_texts()[0]

    bot.run(scenario(), name="regression")


def test_refusals_carry_no_control_characters(bot: Bot) -> None:
    """Found: refusals quoted typed control characters back to Slack (`\\x00` is neither a
    severity…, There is no incident \\x00.), in replies and under form fields."""

    async def scenario() -> None:
        typed = await bot.command("\x1b[31mred alert")
        assert "[31mred" in typed.reply_texts()[0]
        check_safe(typed, typed=None)
        channel = await bot.open_incident()
        alert = bot.slack.alert(channel)
        send = bot.slack.driver.click(
            Action.ACK, "INC\x00\x07", user=BOB, channel=channel.id, message_ts=alert.ts
        )
        clicked = await bot.exchange("ack a forged id", send)
        assert "There is no incident INC." in clicked.reply_texts()
        check_safe(clicked, typed=None)
        state = _state({"severity": ("static_select", "\x07sev1"), "title": ("x", "db down")})
        submit = bot.slack.driver.submit(Modal.DECLARE, state, view_id=bot.view_id())
        form = await bot.exchange("declare with a forged severity", submit)
        assert isinstance(form.ack, dict)
        assert form.ack["errors"]["severity"].startswith("`sev1` is not a severity")
        await bot.check_counts()

    bot.run(scenario(), name="regression")


def test_carriage_returns_are_line_breaks(bot: Bot) -> None:
    """Found: CR was kept (a note `a\\r\\nb` was stored and posted with its `\\r`)."""

    async def scenario() -> None:
        exchange, entries, _ = await _entries_after(bot, "note first\r\nsecond\rthird")
        assert [e.data["text"] for e in entries] == ["first\nsecond\nthird"]
        check_safe(exchange, typed="first\nsecond\nthird")

    bot.run(scenario(), name="regression")


def test_services_of_control_characters_alone_are_dropped(bot: Bot) -> None:
    """Found: a service typed as control characters alone was kept as an empty service
    (`db, , api` in the alert)."""

    async def scenario() -> None:
        state = _state(
            {
                "severity": ("static_select", "SEV3"),
                "title": ("plain_text_input", "checkout slow"),
                "services": ("plain_text_input", "db,\x00\x07, api"),
            }
        )
        submit = bot.slack.driver.submit(Modal.DECLARE, state, view_id=bot.view_id())
        exchange = await bot.exchange("declare with services", submit)
        assert exchange.ack == ""
        bot.accepted += 1
        record = await bot.slack.bot.service.find(Where(channel_id=bot.slack.incident_channel().id))
        assert record.incident.services == ["db", "api"]
        await bot.check_counts()

    bot.run(scenario(), name="regression")


# ---- found, to be fixed in bot/slack/app.py (not this file's to change) ---------------------
@pytest.mark.parametrize("number", ["²", "9" * 5000])
def test_done_button_with_an_odd_number(bot: Bot, number: str) -> None:
    async def scenario() -> None:
        await _click(bot, Click(Action.ACTION_DONE, "open", number))

    bot.run(scenario(), name="odd number on Done")


def test_checklist_with_a_block_id_that_is_not_a_number(bot: Bot) -> None:
    bot.run(_tick(bot, "x", []), name="odd checklist block")
