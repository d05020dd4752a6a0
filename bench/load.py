"""Acknowledgement latency under concurrent load, and declaration-to-live, each process apart.

Processes: this one serves the Slack stand-in (`bot/devtools/fakeslack.py`, no latency
injected) and builds the requests with the signed-request driver's payload code
(`bot/devtools/driver.py`); the bot is `python -m bot`, on SQLite then on PostgreSQL (a
database of the bench's own, dropped at the end); the floor is a bare Bolt app whose
listeners only call ack(), served and verified as the bot is (`bench/floor.py`); the load
generator (`bench/loadgen.py`, aiohttp) keeps N signed requests in flight and times each.

Rows: `/incident help`, a declaration (`/incident sev3 bench <n>`), a click on an alert's
Acknowledge (as Slack sends it, with the alert message; a new incident each click) and
`/incident note …` in an incident channel (round robin over the incidents), at 1, 20 and
50 in flight: p50, p99, max, errors. The same requests go first to the floor, then to the
bot, so "× floor" compares like with like, measured a moment apart. A warm-up of
`/incident help` (at least N) comes first and is not counted. The bot's Slack work is
waited out between rows (`/healthz`: no job pending), so each row starts from the same
quiet bot; during a row its worker runs, as it would. An error is an answer that is not a
200, not the command's success, or later than Slack's 3 s (for a click: its follow-up).

Declaration to live: declarations at a fixed rate; for each, from the moment the slash
command left the generator to the moment the stand-in had created its channel, then
posted the alert in it (read from the stand-in's call log, timed as each call is answered).

    python -m bench.load [--quick] [--requests 200] [--declarations 100]
                         [--in-flight 1,20,50] [--live-rate 10] [--live-seconds 10|30]
                         [--postgres-url URL | --no-postgres]

A full run takes about three minutes on two cores; `--quick` is a smoke run (about 1.5).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import re
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bot.devtools.driver import SlackDriver
from bot.devtools.fakeslack import Call, FakeSlack
from bot.slack.blocks import Action

REPO = Path(__file__).resolve().parent.parent
SECRET = "bench-signing-secret"
ALICE = "U0ALICE"
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
KINDS = ("help", "declare", "button", "note")
# The stand-in's names for what a declaration makes: "live <i>" becomes #inc-…-live-<i>.
LIVE_CHANNEL = re.compile(r"^inc-\d{8}-\d{3,}-live-(\d+)$")
# Settings the bot reads: the developer's own must not reach the bench's bot.
BOT_SETTINGS = {
    "DATABASE_URL",
    "PORT",
    "POLICY_FILE",
    "PLAYBOOKS_DIR",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "METRICS_TOKEN",
    "PAGERDUTY_EVENTS_URL",
}


class BenchError(Exception):
    """Something the bench needs did not work; said in one line (and a log tail)."""


# --------------------------------------------------------------------------- requests


@dataclass
class Request:
    content_type: str
    body: str
    expect: str  # what a successful answer contains; "" = an empty answer
    response_url: str = ""


class Capture(SlackDriver):
    """The driver, building each request as Slack would, keeping it instead of sending it:
    the load generator sends it, signed at that moment."""

    def __init__(self, fake: FakeSlack) -> None:
        super().__init__(bot_url="http://127.0.0.1:9", signing_secret=SECRET, fake=fake)
        self.captured: list[tuple[str, str]] = []

    async def __aenter__(self) -> Capture:
        return self

    async def post_raw(
        self,
        body: str | bytes,
        *,
        content_type: str,
        timestamp: int | None = None,
        signature: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        del timestamp, signature, headers
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        self.captured.append((content_type, text))
        return httpx.Response(200, text="")

    async def slash(self, words: str, *, channel: str, expect: str) -> Request:
        reply = await self.command(
            words, user=ALICE, channel=channel, channel_name=self.fake.channel(channel).name
        )
        content_type, body = self.captured.pop()
        return Request(content_type, body, expect, reply.response_url)

    async def acknowledge(self, alert: Alert) -> Request:
        reply = await self.click(
            Action.ACK,
            alert.incident,
            user=ALICE,
            channel=alert.channel,
            message_ts=alert.ts,
            block_id=alert.block_id,
        )
        content_type, body = self.captured.pop()
        return Request(content_type, body, "", reply.response_url)


@dataclass(frozen=True)
class Alert:
    """An incident's alert in its channel, as the stand-in holds it (the button to click)."""

    incident: str
    channel: str
    ts: str
    block_id: str


def alerts(fake: FakeSlack) -> list[Alert]:
    """Every incident channel's first message carrying an Acknowledge button, by incident."""
    found: dict[str, Alert] = {}
    for channel in fake.channels.values():
        if channel.is_im or not channel.name.startswith("inc-"):
            continue
        for message in channel.messages:
            for block in message.blocks or []:
                for element in block.get("elements") or []:
                    if isinstance(element, dict) and element.get("action_id") == Action.ACK:
                        incident = str(element.get("value"))
                        alert = Alert(incident, channel.id, message.ts, str(block.get("block_id")))
                        found.setdefault(incident, alert)
    return sorted(found.values(), key=lambda a: a.incident)


class CallClock(list[Call]):
    """The stand-in's call log, timing what declaration-to-live waits for: a channel
    `live-<i>` created, and the alert posted in it. Each is timed when the stand-in has done
    it (its answer is being sent). It also keeps how long the stand-in took over each call,
    to show it adds nothing worth counting. Only the last calls are kept: thousands of
    declarations would otherwise hold every message's blocks."""

    KEEP = 1000

    def __init__(self, fake: FakeSlack) -> None:
        super().__init__()
        self.fake = fake
        self.created: dict[int, float] = {}
        self.live: dict[int, float] = {}
        self.handling: list[float] = []  # per call, from its arrival to its answer (s)

    def append(self, call: Call, /) -> None:
        now = time.monotonic()
        self.handling.append(now - call.at)
        if call.ok and call.method == "conversations.create":
            match = LIVE_CHANNEL.match(str(call.args.get("name") or ""))
            if match:
                self.created.setdefault(int(match[1]), now)
        elif call.ok and call.method == "chat.postMessage":
            channel = self.fake.channels.get(str(call.args.get("channel") or ""))
            match = LIVE_CHANNEL.match(channel.name) if channel is not None else None
            if match and "INCIDENT ALERT" in str(call.args.get("text") or ""):
                self.live.setdefault(int(match[1]), now)
        super().append(call)
        if len(self) > 2 * self.KEEP:
            del self[: -self.KEEP]


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """A port free on every interface (the bot listens on 0.0.0.0), chosen below the
    kernel's ephemeral range: there, the thousands of connections the bench opens cannot
    take it between this probe and the server's bind."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))  # noqa: S104 - probing what the bot will bind
            except OSError:
                continue
            return port
    raise BenchError("no free port found")


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SLACK_") and k not in BOT_SETTINGS
    }
    return env | extra


def tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.asynccontextmanager
async def serving(
    name: str,
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    log: Path,
    port: int,
    pids: list[int] | None = None,
) -> AsyncIterator[str]:
    """Start a server process, wait for its /healthz to answer 200, and at the end stop it
    with SIGTERM (SIGKILL after 15 s). Yields its base URL; its pid is added to `pids`."""
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    if pids is not None:
        pids.append(process.pid)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 60
            while True:
                if process.returncode is not None:
                    raise BenchError(f"{name} exited ({process.returncode}):\n{tail(log)}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(
                        f"{base}/healthz", timeout=aiohttp.ClientTimeout(total=2)
                    ) as response:
                        if response.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise BenchError(f"{name} was not healthy within 60 s:\n{tail(log)}")
                await asyncio.sleep(0.05)
        yield base
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=15)
            except TimeoutError:
                print(f"warning: {name} did not stop within 15 s of SIGTERM; killed")
                process.kill()
                await process.wait()
            else:
                if process.returncode not in (0, -signal.SIGTERM):
                    print(f"warning: {name} stopped with {process.returncode}:\n{tail(log)}")


class LoadGen:
    """The load generator process (`bench/loadgen.py`), given one spec file at a time."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.runs = 0
        self.log = tmp / "loadgen.log"
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> LoadGen:
        with self.log.open("wb") as err:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.loadgen",
                cwd=REPO,
                env=child_env({}),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            process.send_signal(signal.SIGTERM)
            await process.wait()

    async def run(
        self,
        url: str,
        requests: list[Request],
        *,
        in_flight: int = 0,
        rate: float = 0.0,
    ) -> tuple[list[float], list[float], list[str | None]]:
        """Send `requests`; returns, per request, when it left (time.monotonic()), its
        latency in ms and its error (None when answered as expected)."""
        process = self.process
        assert process is not None
        assert process.stdin is not None
        assert process.stdout is not None
        self.runs += 1
        spec_path = self.tmp / f"spec-{self.runs}.json"
        out_path = self.tmp / f"result-{self.runs}.json"
        spec = {
            "url": url,
            "secret": SECRET,
            "in_flight": in_flight,
            "rate": rate,
            "timeout": 30,
            "requests": [[r.content_type, r.body, r.expect] for r in requests],
        }
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        process.stdin.write(f"{spec_path} {out_path}\n".encode())
        await process.stdin.drain()
        line = await process.stdout.readline()
        if line.strip() != b"done":
            raise BenchError(f"the load generator stopped:\n{tail(self.log)}")
        result = json.loads(out_path.read_text(encoding="utf-8"))
        spec_path.unlink()
        out_path.unlink()
        return result["sent"], result["ms"], result["errors"]


@contextlib.asynccontextmanager
async def postgres_database(admin_url: str) -> AsyncIterator[tuple[str, str]]:
    """A database of the bench's own on that server, dropped at the end: (url, version)."""
    name = f"bench_load_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            version = str((await connection.execute(text("SHOW server_version"))).scalar())
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
            yield url, version.split()[0]
        finally:
            async with admin.connect() as connection:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


async def postgres_reachable(admin_url: str) -> str | None:
    """None when the server answers; otherwise why not, in one line."""
    engine = create_async_engine(admin_url, connect_args={"timeout": 5})
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        await engine.dispose()
    return None


# --------------------------------------------------------------------------- measuring


@dataclass
class Figures:
    ms: list[float]
    errors: list[str]

    @property
    def p50(self) -> float:
        return statistics.median(self.ms)

    @property
    def p99(self) -> float:
        return percentile(self.ms, 0.99)


@dataclass
class Row:
    request: str
    database: str
    in_flight: int
    bot: Figures
    floor: Figures
    cpu_ms: float | None = None  # the bot's CPU time per request, its Slack work included
    answer_cpu_ms: float | None = None  # the bot's, from the first request to the last answer
    floor_cpu_ms: float | None = None  # the floor's, the same way


@dataclass
class Live:
    database: str
    declarations: int
    rate: float
    ack_ms: list[float]
    created_ms: list[float]
    live_ms: list[float]
    errors: list[str]


@dataclass
class Backlog:
    """Slack held back while declarations pile up work, then let go: how fast the worker
    drains it (to each declaration's alert), and how requests are answered meanwhile."""

    database: str
    declarations: int
    jobs: int  # Slack jobs pending when Slack answered again
    alone_s: float  # from Slack answering again to the last of the alerts, nothing else sent
    drain_s: float  # the same, while notes were sent one after another
    bot: Figures  # `/incident note` answered while the worker drained
    floor: Figures

    @property
    def per_second_alone(self) -> float:
        return self.declarations / self.alone_s if self.alone_s > 0 else 0.0

    @property
    def per_second(self) -> float:
        return self.declarations / self.drain_s if self.drain_s > 0 else 0.0


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    live: list[Live] = field(default_factory=list)
    backlogs: list[Backlog] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    postgres: str | None = None


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def per_request(pid: int, before: float | None, requests: int) -> float | None:
    """The CPU milliseconds per request `pid` used since `before` (`cpu_seconds`)."""
    now = cpu_seconds(pid)
    if before is None or now is None:
        return None
    return (now - before) * 1000 / requests


def cpu_seconds(pid: int) -> float | None:
    """The CPU time a process has used so far (user and system), read from Linux's /proc;
    None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def warmup_for(in_flight: int) -> int:
    """Requests sent before the measured ones (`/incident help`: no database, no Slack
    work): the generator's connections are open and the pipeline full when timing starts."""
    return max(10, in_flight)


async def drain(http: aiohttp.ClientSession, base: str, *, timeout: float = 240) -> float:
    """Wait until the bot has no Slack job pending; returns how long that took (s)."""
    begin = time.monotonic()
    unanswered = 0
    while True:
        pending: object = None
        try:
            async with http.get(
                f"{base}/healthz", timeout=aiohttp.ClientTimeout(total=5)
            ) as response:
                pending = (await response.json()).get("jobs_pending")
            unanswered = 0
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            unanswered += 1
            if unanswered >= 50:
                raise BenchError(f"the bot stopped answering /healthz ({exc!r})") from None
        if pending == 0:
            return time.monotonic() - begin
        if time.monotonic() - begin > timeout:
            print(f"warning: {pending} Slack job(s) still pending after {timeout:.0f} s")
            return time.monotonic() - begin
        await asyncio.sleep(0.1)


async def followups(fake: FakeSlack, requests: list[Request], marker: str) -> list[str | None]:
    """Per request, None when its response URL got a follow-up containing `marker` (the
    button's outcome is said there), else what went wrong; waits up to 15 s for them."""
    with contextlib.suppress(AssertionError):  # wait_for's timeout: said per request below
        await fake.wait_for(
            lambda: all(fake.responses.get(r.response_url) for r in requests), timeout=15
        )
    verdicts: list[str | None] = []
    for request in requests:
        messages = fake.responses.get(request.response_url) or []
        texts = [str(m.get("text") or "") for m in messages]
        if any(marker in t for t in texts):
            verdicts.append(None)
        else:
            verdicts.append(f"follow-up: {texts[0][:160]}" if texts else "no follow-up")
    return verdicts


class BotRun:
    """One bot process on one database, with a stand-in of its own; the floor beside it."""

    def __init__(
        self,
        *,
        gen: LoadGen,
        fake: FakeSlack,
        capture: Capture,
        clock: CallClock,
        http: aiohttp.ClientSession,
        base: str,
        floor: str,
        database: str,
        general: str,
        options: argparse.Namespace,
        report: Report,
        pid: int,
        floor_pid: int,
    ) -> None:
        self.gen, self.fake, self.capture, self.clock = gen, fake, capture, clock
        self.pid, self.floor_pid = pid, floor_pid
        self.http, self.base, self.database, self.general = http, base, database, general
        self.events = f"{base}/slack/events"
        self.floor_events = f"{floor}/slack/events"
        self.options = options
        self.report = report
        self.declared = 0
        self.clicked: set[str] = set()

    async def help(self, count: int) -> list[Request]:
        return [
            await self.capture.slash("help", channel=self.general, expect="Incident bot")
            for _ in range(count)
        ]

    async def declarations(self, count: int) -> list[Request]:
        requests = []
        for _ in range(count):
            self.declared += 1
            words = f"sev3 bench {self.declared}"
            requests.append(
                await self.capture.slash(words, channel=self.general, expect="declared (")
            )
        return requests

    async def warm_up(self) -> None:
        requests = await self.help(20) + await self.declarations(3)
        await self.gen.run(self.events, requests, in_flight=1)
        await drain(self.http, self.base)

    async def unclicked(self, count: int) -> list[Alert]:
        """`count` incidents nobody has acknowledged; more are declared if need be."""
        fresh = [a for a in alerts(self.fake) if a.incident not in self.clicked]
        if len(fresh) < count:
            more = await self.declarations(count - len(fresh))
            await self.gen.run(self.events, more, in_flight=10)
            await drain(self.http, self.base)
            fresh = [a for a in alerts(self.fake) if a.incident not in self.clicked]
            if len(fresh) < count:
                raise BenchError(f"only {len(fresh)} incidents to acknowledge, {count} needed")
        chosen = fresh[:count]
        self.clicked.update(a.incident for a in chosen)
        return chosen

    async def requests(self, kind: str, count: int) -> list[Request]:
        if kind == "help":
            return await self.help(count)
        if kind == "declare":
            return await self.declarations(count)
        if kind == "button":
            return [await self.capture.acknowledge(a) for a in await self.unclicked(count)]
        return await self.notes(count)

    async def row(self, kind: str, n: int) -> Row:
        """The floor, then the bot, each sent the same requests at `n` in flight."""
        await drain(self.http, self.base)
        count = self.options.requests if kind in ("help", "note") else self.options.declarations
        warm = await self.help(warmup_for(n))
        requests = await self.requests(kind, count)
        acks_only = [Request(r.content_type, r.body, "") for r in warm + requests]
        floor_used = cpu_seconds(self.floor_pid)
        _, floor_ms, floor_errors = await self.gen.run(self.floor_events, acks_only, in_flight=n)
        floor_cpu_ms = per_request(self.floor_pid, floor_used, len(acks_only))
        progress(f"{self.database}: {kind} at {n} in flight: the floor done, now the bot")
        used = cpu_seconds(self.pid)
        _, ms, errors = await self.gen.run(self.events, warm + requests, in_flight=n)
        answer_cpu_ms = per_request(self.pid, used, len(warm + requests))
        skip = len(warm)
        ms, errors = ms[skip:], errors[skip:]
        if kind == "button":  # the outcome of a click is said in a follow-up
            said = await followups(self.fake, requests, "Escalation stopped")
            errors = [e or s for e, s in zip(errors, said, strict=True)]
        waited = await drain(self.http, self.base)
        cpu_ms = per_request(self.pid, used, len(warm + requests))
        if waited > 1:
            self.report.notes.append(
                f"{self.database}, {kind} at {n} in flight: the Slack work of the "
                f"{len(requests)} requests was done {waited:.1f} s after the last answer"
            )
        return Row(
            kind,
            self.database,
            n,
            Figures(ms, [e for e in errors if e]),
            Figures(floor_ms[skip:], [e for e in floor_errors[skip:] if e]),
            cpu_ms,
            answer_cpu_ms,
            floor_cpu_ms,
        )

    async def notes(self, count: int) -> list[Request]:
        channels = [a.channel for a in alerts(self.fake)]
        return [
            await self.capture.slash(
                f"note bench note {i}", channel=channels[i % len(channels)], expect="Note added"
            )
            for i in range(count)
        ]

    async def backlog(self, declarations: int, notes: int) -> Backlog:
        """Hold the stand-in's answers while `declarations` are made (their Slack work
        piles up), let go, and time the drain to the last alert: first with nothing else
        sent (the worker's throughput), then again while `notes` are sent one after
        another and their answers timed. The floor gets the same notes first."""
        jobs, alone_s, _ = await self._pile_up_and_drain(declarations, [])
        during = await self.notes(notes)
        acks_only = [Request(r.content_type, r.body, "") for r in during]
        _, floor_ms, floor_errors = await self.gen.run(self.floor_events, acks_only, in_flight=1)
        _, drain_s, answered = await self._pile_up_and_drain(declarations, during)
        return Backlog(
            self.database,
            declarations,
            jobs,
            alone_s,
            drain_s,
            answered,
            Figures(floor_ms, [e for e in floor_errors if e]),
        )

    async def _pile_up_and_drain(
        self, declarations: int, during: list[Request]
    ) -> tuple[int, float, Figures]:
        """(jobs pending when the stand-in answers again, seconds to the last alert, the
        answers to `during`, sent one at a time from then, those sent before the end)."""
        await drain(self.http, self.base)
        first = 100_000 + self.declared
        self.declared += declarations
        requests = [
            await self.capture.slash(
                f"sev3 live {first + i}", channel=self.general, expect="declared ("
            )
            for i in range(declarations)
        ]
        self.fake.hold()
        try:
            _, _, errors = await self.gen.run(self.events, requests, in_flight=20)
            async with self.http.get(f"{self.base}/healthz") as response:
                jobs = int((await response.json()).get("jobs_pending") or 0)
        finally:
            released = time.monotonic()
            self.fake.release()
            progress(f"{self.database}: the backlog of {declarations} declarations released")
        answering = asyncio.create_task(self.gen.run(self.events, during, in_flight=1))
        wanted = range(first, first + declarations)
        with contextlib.suppress(AssertionError):  # wait_for's timeout: counted below
            await self.fake.wait_for(lambda: all(i in self.clock.live for i in wanted), timeout=120)
        posted = [self.clock.live[i] for i in wanted if i in self.clock.live]
        drained = (max(posted) if posted else time.monotonic()) - released
        sent, ms, note_errors = await answering
        # Only the notes sent while the worker was still draining count.
        kept = [
            (m, e) for t, m, e in zip(sent, ms, note_errors, strict=True) if t < released + drained
        ]
        problems = [e for e in errors if e] + [e for _, e in kept if e]
        problems += [
            f"declaration {i} not live after 120 s" for i in wanted if i not in self.clock.live
        ]
        await drain(self.http, self.base)
        return jobs, drained, Figures([m for m, _ in kept] or [0.0], problems)

    async def declaration_to_live(self, rate: float, seconds: float) -> Live:
        await drain(self.http, self.base)
        count = max(1, round(rate * seconds))
        requests = [
            await self.capture.slash(f"sev3 live {i}", channel=self.general, expect="declared (")
            for i in range(count)
        ]
        sent, ms, errors = await self.gen.run(self.events, requests, rate=rate)
        with contextlib.suppress(AssertionError):  # wait_for's timeout: counted below
            await self.fake.wait_for(lambda: len(self.clock.live) >= count, timeout=60)
        created = [(self.clock.created[i] - sent[i]) * 1000 for i in self.clock.created]
        live = [(self.clock.live[i] - sent[i]) * 1000 for i in self.clock.live]
        problems = [e for e in errors if e]
        problems += [
            f"declaration {i} not live 60 s after the last was sent"
            for i in range(count)
            if i not in self.clock.live
        ]
        waited = await drain(self.http, self.base)
        if waited > 1:
            self.report.notes.append(
                f"{self.database}, declaration to live: the Slack work of the {count} "
                f"declarations was done {waited:.1f} s after the last went live"
            )
        return Live(self.database, count, rate, ms, created, live, problems)


async def bot_rows(
    *,
    database: str,
    database_url: str,
    gen: LoadGen,
    floor: str,
    floor_pid: int,
    tmp: Path,
    options: argparse.Namespace,
    report: Report,
) -> None:
    port = free_port()
    async with FakeSlack() as fake:
        clock = CallClock(fake)
        fake.calls = clock
        fake.add_user(ALICE, "alice", "Alice Ops")
        general = fake.add_channel("general", members=[ALICE])
        fake.add_channel("incidents", members=[ALICE])
        env = child_env(
            {
                "SLACK_BOT_TOKEN": fake.bot_token,
                "SLACK_SIGNING_SECRET": SECRET,
                "SLACK_API_URL": fake.api_url,
                "DATABASE_URL": database_url,
                "PORT": str(port),
                "PLAYBOOKS_DIR": str(REPO / "playbooks"),
            }
        )
        workdir = tmp / database.lower()
        workdir.mkdir()
        pids: list[int] = []
        async with (
            serving(
                f"the bot ({database})",
                [sys.executable, "-m", "bot"],
                env=env,
                cwd=workdir,
                log=tmp / f"bot-{database.lower()}.log",
                port=port,
                pids=pids,
            ) as base,
            aiohttp.ClientSession() as http,
            Capture(fake) as capture,
        ):
            run = BotRun(
                gen=gen,
                fake=fake,
                capture=capture,
                clock=clock,
                http=http,
                base=base,
                floor=floor,
                database=database,
                general=general,
                options=options,
                report=report,
                pid=pids[0],
                floor_pid=floor_pid,
            )
            await run.warm_up()
            live = await run.declaration_to_live(options.live_rate, options.live_seconds)
            report.live.append(live)
            progress(f"{database}: declaration to live")
            for kind in options.kinds:
                for n in options.in_flight:
                    report.rows.append(await run.row(kind, n))
                    progress(f"{database}: {kind} at {n} in flight")
            report.backlogs.append(
                await run.backlog(options.backlog_declarations, options.backlog_notes)
            )
            progress(f"{database}: draining a backlog")
        took = [t * 1000 for t in clock.handling]
        report.notes.append(
            f"{database}: the stand-in answered the bot's {len(took)} Web API calls in "
            f"p50 {statistics.median(took):.1f} ms, p99 {percentile(took, 0.99):.1f} ms, "
            f"max {max(took):.0f} ms (no latency injected)"
        )


STARTED = [time.monotonic()]


def progress(what: str) -> None:
    print(f"  [{time.monotonic() - STARTED[0]:5.0f} s] {what}", file=sys.stderr, flush=True)


async def measure(options: argparse.Namespace) -> Report:
    """Everything, in order; SIGTERM stops it cleanly (processes stopped, database dropped,
    temporary directory removed), as Ctrl-C does."""
    task = asyncio.current_task()
    if task is not None:
        with contextlib.suppress(NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmpdir:
        tmp = Path(tmpdir)
        floor_port = free_port()
        floor_argv = [sys.executable, "-m", "bench.floor", "--port", str(floor_port)]
        floor_pids: list[int] = []
        async with (
            LoadGen(tmp) as gen,
            serving(
                "the floor",
                [*floor_argv, "--signing-secret", SECRET],
                env=child_env({}),
                cwd=REPO,
                log=tmp / "floor.log",
                port=floor_port,
                pids=floor_pids,
            ) as floor,
        ):
            await bot_rows(
                database="SQLite",
                database_url=f"sqlite+aiosqlite:///{tmp / 'incidents.db'}",
                gen=gen,
                floor=floor,
                floor_pid=floor_pids[0],
                tmp=tmp,
                options=options,
                report=report,
            )
            if options.postgres_url:
                why = await postgres_reachable(options.postgres_url)
                if why is not None:
                    report.notes.append(f"PostgreSQL skipped: {options.postgres_url}: {why}")
                    return report
                async with postgres_database(options.postgres_url) as (url, version):
                    report.postgres = version
                    await bot_rows(
                        database="PostgreSQL",
                        database_url=url,
                        gen=gen,
                        floor=floor,
                        floor_pid=floor_pids[0],
                        tmp=tmp,
                        options=options,
                        report=report,
                    )
    return report


# --------------------------------------------------------------------------- the table


def machine(postgres: str | None) -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0))
    parts = [f"{cores} cores" + (f" ({model})" if model else ""), platform.system()]
    parts.append(f"Python {platform.python_version()}")
    if postgres:
        parts.append(f"PostgreSQL {postgres}")
    return ", ".join(parts)


REQUEST_NAMES = {
    "help": "`/incident help`",
    "declare": "`/incident sev3 bench <n>`",
    "button": "click Acknowledge",
    "note": "`/incident note …`",
}


def render(report: Report) -> str:
    out = [
        "",
        "Acknowledgement latency under load (milliseconds). Each row: the same Slack-signed "
        "requests sent to the floor (a bare Bolt app that only acks), then to the bot, by a "
        "load generator in its own process keeping N in flight; after a warm-up. "
        "× floor: the bot's p50 / p99 over the floor's. CPU answering: the bot process's CPU "
        "time per request, from the first request to the last answer, beside the floor's; "
        "CPU with Slack work: the bot's, to the end of their Slack work (ms).",
        f"Machine: {machine(report.postgres)}.",
        "",
        "| request | database | in flight | requests | p50 | p99 | max | errors "
        "| floor p50 | floor p99 | p50 × floor | p99 × floor | CPU answering | floor CPU "
        "| CPU with Slack work |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in report.rows:
        bot, floor = row.bot, row.floor
        cpu = " | ".join(
            "—" if ms is None else f"{ms:.2f}"
            for ms in (row.answer_cpu_ms, row.floor_cpu_ms, row.cpu_ms)
        )
        out.append(
            f"| {REQUEST_NAMES.get(row.request, row.request)} | {row.database} | "
            f"{row.in_flight} | {len(bot.ms)} | {bot.p50:.1f} | {bot.p99:.1f} | "
            f"{max(bot.ms):.1f} | {len(bot.errors)} | {floor.p50:.1f} | {floor.p99:.1f} | "
            f"×{bot.p50 / floor.p50:.1f} | ×{bot.p99 / floor.p99:.1f} | {cpu} |"
        )
    if report.live:
        first = report.live[0]
        out += [
            "",
            f"Declaration to live (milliseconds): {first.declarations} declarations at "
            f"{first.rate:g}/s, each timed from the slash command leaving the generator to the "
            "stand-in having created its channel (channel), then posted the alert in it (live).",
            "",
            "| database | declarations | ack p50 | ack p99 | channel p50 | live p50 | live p99 "
            "| live max | errors |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for live in report.live:
            if live.live_ms:
                figures = (
                    f"{statistics.median(live.created_ms):.0f} | "
                    f"{statistics.median(live.live_ms):.0f} | "
                    f"{percentile(live.live_ms, 0.99):.0f} | {max(live.live_ms):.0f}"
                )
            else:
                figures = "— | — | — | —"
            out.append(
                f"| {live.database} | {live.declarations} | "
                f"{statistics.median(live.ack_ms):.1f} | {percentile(live.ack_ms, 0.99):.1f} | "
                f"{figures} | {len(live.errors)} |"
            )
    if report.backlogs:
        out += [
            "",
            "Draining a backlog: the stand-in held its answers while declarations were made, "
            "then answered again. Drained: from then to the last declaration's alert posted; "
            "first alone, then again while `/incident note …` was sent one after another "
            "(the notes' answers in milliseconds; the floor got the same notes).",
            "",
            "| database | declarations | jobs pending | alone: drained in (s) | declarations/s "
            "| with notes: drained in (s) | declarations/s "
            "| notes | p50 | p99 | max | errors | floor p50 | floor p99 | p99 × floor |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for b in report.backlogs:
            out.append(
                f"| {b.database} | {b.declarations} | {b.jobs} | {b.alone_s:.2f} | "
                f"{b.per_second_alone:.0f} | {b.drain_s:.2f} | "
                f"{b.per_second:.0f} | {len(b.bot.ms)} | {b.bot.p50:.1f} | {b.bot.p99:.1f} | "
                f"{max(b.bot.ms):.1f} | {len(b.bot.errors)} | {b.floor.p50:.1f} | "
                f"{b.floor.p99:.1f} | ×{b.bot.p99 / b.floor.p99:.1f} |"
            )
    notes = list(report.notes)
    notes += [
        f"first error, backlog, {b.database}: {b.bot.errors[0]}"
        for b in report.backlogs
        if b.bot.errors
    ]
    for row in report.rows:
        where = f"{row.request}, {row.database}, {row.in_flight} in flight"
        if row.bot.errors:
            notes.append(f"first error, {where}: {row.bot.errors[0]}")
        if row.floor.errors:
            notes.append(f"first floor error, {where}: {row.floor.errors[0]}")
    notes += [
        f"first error, {live.database}: {live.errors[0]}" for live in report.live if live.errors
    ]
    if notes:
        out.append("")
        out += [f"- {note}" for note in notes]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer requests: a smoke run")
    parser.add_argument(
        "--requests", type=int, default=None, help="per help and note row (default 200)"
    )
    parser.add_argument(
        "--declarations",
        type=int,
        default=None,
        help="per declare and Acknowledge row (default 100): each leaves Slack work to wait out",
    )
    parser.add_argument(
        "--in-flight",
        default="1,20,50",
        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
        help="the concurrencies, comma-separated (default 1,20,50)",
    )
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        type=lambda s: [k for k in KINDS if k in s.split(",")],
        help=f"the requests, comma-separated (default {','.join(KINDS)})",
    )
    parser.add_argument("--live-rate", type=float, default=10.0, help="declarations a second")
    parser.add_argument(
        "--backlog-declarations",
        type=int,
        default=None,
        help="declarations made while Slack is held (default 170: about 1,000 jobs)",
    )
    parser.add_argument(
        "--backlog-notes", type=int, default=300, help="notes sent while the backlog drains"
    )
    parser.add_argument(
        "--live-seconds", type=float, default=None, help="for how long (default 10; e.g. 30)"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TEST_DATABASE_URL") or DEFAULT_POSTGRES,
        help="a server where the bench may create and drop a database of its own "
        f"(default TEST_DATABASE_URL, else {DEFAULT_POSTGRES})",
    )
    parser.add_argument(
        "--no-postgres", action="store_const", const="", dest="postgres_url", help="SQLite only"
    )
    options = parser.parse_args()
    if options.requests is None:
        options.requests = 60 if options.quick else 200
    if options.declarations is None:
        options.declarations = 30 if options.quick else 100
    if options.live_seconds is None:
        options.live_seconds = 3.0 if options.quick else 10.0
    if options.backlog_declarations is None:
        options.backlog_declarations = 30 if options.quick else 170
    STARTED[0] = time.monotonic()
    try:
        report = asyncio.run(measure(options))
    except BenchError as error:
        print(f"bench.load: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("bench.load: stopped; what it started is stopped and removed", file=sys.stderr)
        raise SystemExit(130) from None
    print(render(report))
    print(f"\n(the run took {time.monotonic() - STARTED[0]:.0f} s)")


if __name__ == "__main__":
    main()
