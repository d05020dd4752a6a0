"""The real program: `python -m bot` as an operator starts it, over HTTP and Socket Mode."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from bot.devtools.driver import SlackDriver
from bot.devtools.fakeslack import FakeSlack
from bot.store.db import Database
from tests.conftest import PG_URL
from tests.harness import ALICE, SIGNING_SECRET, message_text

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def bot_process(env: dict[str, str], cwd: Path) -> AsyncIterator[tuple[int, list[str]]]:
    """Start `python -m bot`, wait for /healthz, stop it with SIGTERM; yields (port, log)."""
    port = int(env.get("PORT") or free_port())
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    full_env |= {"PORT": str(port), **env}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        cwd=cwd,
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    log: list[str] = []

    async def read() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            log.append(line.decode(errors="replace"))

    reader = asyncio.create_task(read())
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                if process.returncode is not None:
                    raise AssertionError("the bot exited:\n" + "".join(log))
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the bot did not become healthy:\n" + "".join(log))
        yield port, log
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()
        await reader


def base_env(fake: FakeSlack, database_url: str) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": fake.bot_token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": fake.api_url,
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "DEBUG",
    }


async def journey(fake: FakeSlack, port: int) -> None:
    general = fake.add_channel("general", members=[ALICE])
    fake.add_channel("incidents", bot_is_member=False)
    async with SlackDriver(
        bot_url=f"http://127.0.0.1:{port}", signing_secret=SIGNING_SECRET, fake=fake
    ) as driver:
        reply = await driver.command("sev1 payment down", channel=general, channel_name="general")
        assert reply.text is not None
        assert "INC-" in reply.text
        channel = await fake.wait_for(
            lambda: next(
                (c for c in fake.channels.values() if c.name.startswith("inc-") and c.messages),
                None,
            )
        )
        assert "INCIDENT ALERT - SEV1" in message_text(channel.messages[0])
        ack = await driver.command("ack", channel=channel.id, channel_name=channel.name)
        assert ack.text is not None
        assert "acknowledged" in ack.text
        await fake.wait_for(lambda: "acknowledged the incident" in channel.messages[-1].text)
        metrics = (await driver._http.get(f"http://127.0.0.1:{port}/metrics")).text
        assert 'incident_bot_open_incidents{severity="SEV1"} 1' in metrics


async def test_http_mode_on_sqlite(fake: FakeSlack, tmp_path: Path) -> None:
    env = base_env(fake, f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    async with bot_process(env, tmp_path) as (port, log):
        await journey(fake, port)
    output = "".join(log)
    assert "incident bot ready: HTTP" in output
    assert "objects kept out of the garbage collector's full passes" in output
    assert fake.bot_token not in output, "the token never reaches a log"
    assert SIGNING_SECRET not in output


async def test_alerts_open_an_incident_in_the_real_program(fake: FakeSlack, tmp_path: Path) -> None:
    """`python -m bot` with ALERTS_TOKEN: Alertmanager's payload declares, its resolution is
    said in the channel, and the token never reaches the log."""
    token = "alerts-token-in-a-process-7d1e"
    fixtures = Path(__file__).parent / "fixtures" / "alerts"
    firing = (fixtures / "alertmanager_firing.json").read_bytes()
    resolved = (fixtures / "alertmanager_resolved.json").read_bytes()
    fake.add_channel("incidents", bot_is_member=False)
    env = base_env(fake, f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}") | {"ALERTS_TOKEN": token}
    async with bot_process(env, tmp_path) as (port, log), httpx.AsyncClient() as client:
        url = f"http://127.0.0.1:{port}/alerts/alertmanager"
        refused = await client.post(url, content=firing, headers={"Authorization": "Bearer x"})
        assert refused.status_code == 401
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        declared = await client.post(url, content=firing, headers=headers)
        assert declared.status_code == 202, declared.text
        assert declared.json()["status"] == "declared"
        channel = await fake.wait_for(
            lambda: next(
                (c for c in fake.channels.values() if c.name.startswith("inc-") and c.messages),
                None,
            )
        )
        assert "Declared by the bot from Alertmanager" in message_text(channel.messages[0])
        again = await client.post(url, content=firing, headers=headers)
        assert again.json()["status"] == "unchanged"
        done = await client.post(url, content=resolved, headers=headers)
        assert done.json()["status"] == "joined"
        await fake.wait_for(
            lambda: any(
                "Every alert of this incident is resolved" in m.text for m in channel.messages
            )
        )
    assert len([c for c in fake.channels.values() if c.name.startswith("inc-")]) == 1
    assert token not in "".join(log), "the token never reaches a log"


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="TEST_DATABASE_URL is not set")
async def test_http_mode_on_postgres(fake: FakeSlack, tmp_path: Path) -> None:
    name = f"bot_{uuid.uuid4().hex[:10]}"
    admin = Database(PG_URL, isolation_level="AUTOCOMMIT")
    async with admin.engine.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_URL.rsplit("/", 1)[0] + "/" + name
    try:
        async with bot_process(base_env(fake, url), tmp_path) as (port, _):
            await journey(fake, port)
    finally:
        async with admin.engine.connect() as connection:
            await connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        await admin.dispose()


async def test_socket_mode(fake: FakeSlack, tmp_path: Path) -> None:
    general = fake.add_channel("general", members=[ALICE])
    fake.add_channel("incidents", bot_is_member=False)
    env = base_env(fake, f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    env["SLACK_APP_TOKEN"] = fake.app_token
    async with bot_process(env, tmp_path) as (_, log):
        await fake.wait_for_socket(timeout=10)
        payload = {
            "token": "legacy",
            "team_id": "T0FAKE",
            "team_domain": "fake",
            "channel_id": general,
            "channel_name": "general",
            "user_id": ALICE,
            "user_name": "alice",
            "command": "/incident",
            "text": "sev2 socket mode works",
            "api_app_id": "A0FAKE",
            "is_enterprise_install": "false",
            "response_url": fake.new_response_url(),
            "trigger_id": fake.new_trigger_id(),
        }
        ack = await fake.socket_send("slash_commands", payload, timeout=10)
        assert "envelope_id" in ack
        assert "INC-20261122" in str(ack.get("payload")) or "declared" in str(ack.get("payload"))
        channel = await fake.wait_for(
            lambda: next(
                (c for c in fake.channels.values() if c.name.startswith("inc-") and c.messages),
                None,
            ),
            timeout=10,
        )
        assert "INCIDENT ALERT - SEV2" in message_text(channel.messages[0])
    assert "Socket Mode" in "".join(log)


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith("SLACK_") and k != "DATABASE_URL"
    }
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bot", *args],
        env=clean | env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_missing_settings_stop_with_one_line(tmp_path: Path) -> None:
    result = run_cli(env={}, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "configuration error: SLACK_BOT_TOKEN is required; SLACK_SIGNING_SECRET is required"
    ]


def test_malformed_settings_are_named_but_never_shown(tmp_path: Path) -> None:
    result = run_cli(
        env={
            "SLACK_BOT_TOKEN": "xoxp-user-token-supersecret",
            "SLACK_SIGNING_SECRET": "s3cr3t",
            "PORT": "eighty",
        },
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "SLACK_BOT_TOKEN must be a bot token starting with xoxb-" in result.stderr
    assert "PORT" in result.stderr
    assert "supersecret" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def test_policy_check(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    good = run_cli("policy", "check", str(root / "policy.example.yaml"), env={}, cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert "SEV1 (p0, critical): ack 5m, updates 30m, resolve 1h" in good.stdout
    bad = tmp_path / "policy.yaml"
    bad.write_text(
        "severities:\n  - name: SEV1\n    ack_timeout: soon\n    resolution_target: 1h\n"
    )
    result = run_cli("policy", "check", str(bad), env={}, cwd=tmp_path)
    assert result.returncode == 1
    assert f"{bad}: invalid policy" in result.stderr
    assert "severities.0.ack_timeout" in result.stderr


def test_broken_playbook_is_named_by_check_and_stops_start_up(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "cache-issues.yaml").write_text("title: Cache\nsteps:\n  - {when: now}\n")
    check = run_cli(
        "policy",
        "check",
        str(root / "policy.example.yaml"),
        "--playbooks",
        str(folder),
        env={},
        cwd=tmp_path,
    )
    assert check.returncode == 1
    assert "cache-issues.yaml: steps.0.text: Field required" in check.stderr
    serve = run_cli(
        env={
            "SLACK_BOT_TOKEN": "xoxb-1",
            "SLACK_SIGNING_SECRET": "secret",
            "PLAYBOOKS_DIR": str(folder),
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
        },
        cwd=tmp_path,
    )
    assert serve.returncode == 2
    assert "configuration error:" in serve.stderr
    assert "cache-issues.yaml: steps.0.text" in serve.stderr
