"""Start-up as an operator sees it: a refused Slack app token, Slack not there yet or gone,
a second process on one SQLite file, a stop signal at any moment, and Slack work that
waits too long.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from bot.devtools.fakeslack import FakeSlack
from bot.store.single import single_process
from tests.harness import ALICE, SIGNING_SECRET, Slack
from tests.test_process import free_port

# Every line the bot writes is one log record (or the one configuration-error line).
RECORD = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
STOP_SECONDS = 10.0


@dataclass
class Bot:
    """A `python -m bot` process: its HTTP port, and what it wrote (stdout and stderr)."""

    process: asyncio.subprocess.Process
    port: int
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)

    async def health(self) -> tuple[int, dict[str, object]] | None:
        """/healthz's status and body; None while nothing listens."""
        try:
            async with httpx.AsyncClient(timeout=3) as client:
                response = await client.get(f"http://127.0.0.1:{self.port}/healthz")
        except httpx.TransportError:
            return None
        return response.status_code, response.json()

    async def health_until(
        self, socket: str, timeout: float = 10.0
    ) -> tuple[int, dict[str, object]]:
        """Poll /healthz until its body says `socket`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise AssertionError("the bot exited:\n" + "".join(self.err))
            answer = await self.health()
            if answer is not None and answer[1].get("socket") == socket:
                return answer
            await asyncio.sleep(0.1)
        raise AssertionError(f"/healthz never said socket={socket}:\n" + "".join(self.err))

    async def healthy(self, timeout: float = 20.0) -> None:
        """Wait until /healthz answers 200."""
        deadline = time.monotonic() + timeout
        while (answer := await self.health()) is None or answer[0] != 200:
            assert self.process.returncode is None, "the bot exited:\n" + "".join(self.err)
            assert time.monotonic() < deadline, "not healthy:\n" + "".join(self.err)
            await asyncio.sleep(0.1)

    async def exit_code(self, timeout: float) -> int:
        """Wait for the process to end; fails if it is still running after `timeout`."""
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"still running after {timeout:.0f} s:\n" + "".join(self.err)
            ) from None

    async def stop(self) -> tuple[int, float]:
        """SIGTERM; the exit code and how long it took."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = await self.exit_code(STOP_SECONDS)
        return code, time.monotonic() - started


def bot_env(api_url: str, database: Path, **extra: str) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": "xoxb-fake-token",
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": api_url,
        "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        **extra,
    }


@asynccontextmanager
async def bot(env: dict[str, str], cwd: Path, *args: str) -> AsyncIterator[Bot]:
    """`python -m bot [args]` with only `env`'s bot settings; killed if still running at the end."""
    port = free_port()
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SLACK_") and k not in {"DATABASE_URL", "PORT", "LOG_LEVEL"}
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=cwd,
        env=clean | {"PORT": str(port)} | env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Bot(process, port)

    async def read(stream: asyncio.StreamReader | None, into: list[str]) -> None:
        assert stream is not None
        async for line in stream:
            into.append(line.decode(errors="replace"))

    readers = [
        asyncio.create_task(read(process.stdout, running.out)),
        asyncio.create_task(read(process.stderr, running.err)),
    ]
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await asyncio.gather(*readers)


@asynccontextmanager
async def silent_slack() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A Web API that takes every request and never answers; yields its URL and an event set
    once the bot has asked it for a Socket Mode connection."""
    asked = asyncio.Event()

    async def never(request: web.Request) -> web.Response:
        if request.match_info["method"] == "apps.connections.open":
            asked.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_route("*", "/api/{method}", never)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        yield f"http://127.0.0.1:{port}/api/", asked
    finally:
        await runner.cleanup()


def one_record_a_line(lines: list[str]) -> None:
    """No traceback and no multi-line record: every line starts a record."""
    strays = [line for line in lines if not RECORD.match(line)]
    assert not strays, "".join(strays)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("token", "refusal"),
    [("xapp-not-this-apps-token-5f3c", "invalid_auth"), ("xapp-fake-token", "token_revoked")],
)
async def test_a_refused_app_token_stops_start_up_with_one_line(
    fake: FakeSlack, tmp_path: Path, token: str, refusal: str
) -> None:
    if refusal != "invalid_auth":
        fake.error("apps.connections.open", refusal)
    env = bot_env(fake.api_url, tmp_path / "incidents.db", SLACK_APP_TOKEN=token)
    async with bot(env, tmp_path) as running:
        assert await running.exit_code(15) == 2
    assert running.err == [f"configuration error: SLACK_APP_TOKEN: Slack says {refusal}\n"]
    assert token not in "".join(running.out + running.err)
    assert [c.method for c in fake.calls] == ["apps.connections.open"], "nothing else was tried"


@pytest.mark.slow
async def test_socket_mode_waits_for_slack_and_reconnects_after_losing_it(tmp_path: Path) -> None:
    slack_port = free_port()
    fake = FakeSlack()
    env = bot_env(f"http://127.0.0.1:{slack_port}/api/", tmp_path / "incidents.db")
    env["SLACK_APP_TOKEN"] = fake.app_token
    try:
        async with bot(env, tmp_path) as running:
            status, body = await running.health_until("connecting", timeout=20)
            assert status == 503, body
            assert body["database"] == "reachable"

            await fake.start(port=slack_port)  # Slack comes up: the bot connects by itself
            status, body = await running.health_until("connected")
            assert status == 200, body
            await fake.wait_for_socket()

            await fake.stop()  # the connection is lost
            status, body = await running.health_until("connecting")
            assert status == 503, body

            await fake.start(port=slack_port)
            status, _ = await running.health_until("connected")
            assert status == 200
            general = fake.add_channel("general", members=[ALICE])
            command = {
                "command": "/incident",
                "text": "help",
                "user_id": ALICE,
                "team_id": fake.team_id,
                "channel_id": general,
                "channel_name": "general",
                "response_url": fake.new_response_url(),
                "trigger_id": fake.new_trigger_id(),
            }
            ack = await fake.socket_send("slash_commands", command)
            assert "/incident" in json.dumps(ack.get("payload")), "commands work again"

            code, took = await running.stop()
            assert code == 0
            assert took < STOP_SECONDS
    finally:
        await fake.stop()
    one_record_a_line(running.err)
    log = "".join(running.err)
    assert "Socket Mode: Slack cannot be reached yet" in log
    assert "Socket Mode: the connection to Slack was lost" in log
    assert fake.app_token not in log


@pytest.mark.slow
async def test_a_stop_signal_ends_a_start_up_that_slack_does_not_answer(tmp_path: Path) -> None:
    async with silent_slack() as (api_url, asked):
        env = bot_env(api_url, tmp_path / "incidents.db", SLACK_APP_TOKEN="xapp-fake-token")
        async with bot(env, tmp_path) as running:
            await asyncio.wait_for(asked.wait(), 15)
            code, took = await running.stop()
    assert code == 0
    assert took < STOP_SECONDS
    one_record_a_line(running.err)


@pytest.mark.slow
async def test_a_second_process_on_one_sqlite_file_is_refused_and_a_crash_frees_it(
    fake: FakeSlack, tmp_path: Path
) -> None:
    database = tmp_path / "incidents.db"
    env = bot_env(fake.api_url, database)
    async with bot(env, tmp_path) as first:
        await first.healthy()
        async with bot(env, tmp_path) as second:
            assert await second.exit_code(15) == 2
        assert second.err == [
            f"configuration error: DATABASE_URL: another bot process (pid {first.process.pid})"
            f" is using {database}; SQLite serves one process"
            " — use PostgreSQL for several replicas\n"
        ]
        first.process.kill()  # a crash: the operating system lets the lock go
        await first.process.wait()
    async with bot(env, tmp_path) as restarted:
        await restarted.healthy()
        code, _ = await restarted.stop()
        assert code == 0


def test_in_memory_sqlite_and_postgresql_need_no_lock(tmp_path: Path) -> None:
    for url in ("sqlite+aiosqlite:///:memory:", "postgresql+asyncpg://bot@db.example/bot"):
        with single_process(url) as lock, single_process(url) as again:
            assert lock is None
            assert again is None
    with single_process(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}") as lock:
        assert lock == tmp_path / "a.db.lock"


async def test_work_waiting_too_long_shows_in_metrics_and_health(
    slack: Slack, backend: str
) -> None:
    base = slack.driver.events_url.rsplit("/slack/", 1)[0]
    slack.fake.fail("conversations.create", status=503)
    await slack.command("sev1 payment down")  # the channel is not created: Slack failed
    slack.clock.advance(timedelta(minutes=7))

    metrics = (await slack.driver._http.get(f"{base}/metrics")).text
    series = re.search(r"^incident_bot_jobs_pending (\d+)\.0$", metrics, re.MULTILINE)
    assert series is not None, metrics
    pending = int(series[1])
    assert pending >= 1
    assert "\nincident_bot_oldest_pending_job_seconds 420.0\n" in metrics
    assert "# TYPE incident_bot_oldest_pending_job_seconds gauge" in metrics
    health = await slack.driver._http.get(f"{base}/healthz")
    assert health.status_code == 200, "waiting work is reported, not judged"
    body = health.json()
    assert (body["jobs_pending"], body["oldest_pending_job_seconds"]) == (pending, 420)

    await slack.settle()  # Slack is back: the work is done
    slack.clock.advance(timedelta(minutes=1))
    metrics = (await slack.driver._http.get(f"{base}/metrics")).text
    assert "\nincident_bot_jobs_pending 0.0\n" in metrics
    assert "\nincident_bot_oldest_pending_job_seconds 0.0\n" in metrics

    if backend == "sqlite":  # another program holding SQLite's write lock
        holder = sqlite3.connect(slack.bot.database.url.split("///", 1)[1], isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # SQLite's write lock, held by someone else
        try:
            started = time.monotonic()
            health = await slack.driver._http.get(f"{base}/healthz")
            took = time.monotonic() - started
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # The health check only reads, and reading never waits for a writer (WAL): the
        # answer is immediate and true — the database answers.
        assert took < 1.5, f"answered after {took:.2f} s"
        assert health.status_code == 200, health.text
        assert health.json()["database"] == "reachable"
        assert health.json()["jobs_pending"] == 0
