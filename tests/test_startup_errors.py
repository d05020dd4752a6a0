"""Every wrong setting stops `python -m bot` with one line naming it (exit code 2), never a
secret; Slack being unreachable is not a wrong setting."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.devtools.fakeslack import FakeSlack
from tests.conftest import PG_URL
from tests.test_process import bot_process, free_port

pytestmark = pytest.mark.slow

PASSWORD = "s3cret-pw-7731"


def start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DATABASE_"))}
    base |= {
        "SLACK_BOT_TOKEN": "xoxb-test-1",
        "SLACK_SIGNING_SECRET": "signing-secret-1",
        "SLACK_API_URL": "http://127.0.0.1:9/api/",  # nothing listens: Slack unreachable
        "PORT": str(free_port()),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
    }
    return subprocess.run(
        [sys.executable, "-m", "bot"],
        env=base | env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str], setting: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"configuration error: {setting}"), lines[0]
    assert PASSWORD not in lines[0]
    return lines[0]


def test_an_unreachable_database(tmp_path: Path) -> None:
    port = free_port()
    url = f"postgresql+asyncpg://bot:{PASSWORD}@127.0.0.1:{port}/incidents"
    line = one_line(start(tmp_path, DATABASE_URL=url), "DATABASE_URL")
    assert f"cannot connect to 127.0.0.1:{port} (connection refused)" in line


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="TEST_DATABASE_URL is not set")
def test_a_database_that_does_not_exist(tmp_path: Path) -> None:
    url = PG_URL.rsplit("/", 1)[0].replace("postgres@", f"postgres:{PASSWORD}@") + "/no_such_db"
    line = one_line(start(tmp_path, DATABASE_URL=url), "DATABASE_URL")
    assert 'database "no_such_db" does not exist' in line


def test_a_sqlite_folder_that_does_not_exist(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/missing/bot.db"
    assert "does not exist" in one_line(start(tmp_path, DATABASE_URL=url), "DATABASE_URL")


def test_a_broken_policy_names_the_file_the_line_and_the_field(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(
        "severities:\n  - name: SEV1\n    ack_timeout: 5x\n    resolution_target: 1h\n"
    )
    line = one_line(start(tmp_path, POLICY_FILE="policy.yaml"), "POLICY_FILE")
    assert "policy.yaml: severities.0.ack_timeout line 3: '5x' is not a duration" in line
    (tmp_path / "policy.yaml").write_text("severities: [\n")
    line = one_line(start(tmp_path, POLICY_FILE="policy.yaml"), "POLICY_FILE")
    assert "policy.yaml line 2" in line
    line = one_line(start(tmp_path, POLICY_FILE="nowhere.yaml"), "POLICY_FILE")
    assert "cannot read nowhere.yaml" in line


def test_a_playbooks_folder_that_does_not_exist(tmp_path: Path) -> None:
    line = one_line(start(tmp_path, PLAYBOOKS_DIR="my-playbooks"), "PLAYBOOKS_DIR")
    assert "my-playbooks does not exist" in line


async def test_a_bot_token_slack_refuses(tmp_path: Path) -> None:
    async with FakeSlack() as fake:
        result = await asyncio.to_thread(
            start, tmp_path, SLACK_API_URL=fake.api_url, SLACK_BOT_TOKEN="xoxb-revoked-0"
        )
    line = one_line(result, "SLACK_BOT_TOKEN")
    assert line == "configuration error: SLACK_BOT_TOKEN: Slack says invalid_auth"
    assert "xoxb-revoked-0" not in result.stdout + result.stderr


async def test_slack_unreachable_is_not_a_wrong_setting(tmp_path: Path) -> None:
    env = {
        "SLACK_BOT_TOKEN": "xoxb-test-1",
        "SLACK_SIGNING_SECRET": "signing-secret-1",
        "SLACK_API_URL": "http://127.0.0.1:9/api/",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
    }
    async with bot_process(env, tmp_path) as (_, log):
        pass
    assert any("incident bot ready" in line for line in log)


async def test_slack_is_asked_who_the_bot_is_once(tmp_path: Path) -> None:
    async with FakeSlack() as fake:
        env = {
            "SLACK_BOT_TOKEN": fake.bot_token,
            "SLACK_SIGNING_SECRET": "signing-secret-1",
            "SLACK_API_URL": fake.api_url,
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
        }
        async with bot_process(env, tmp_path) as (_, log):
            await asyncio.sleep(0.5)  # start() would ask again in the background
        assert len(fake.calls_to("auth.test")) == 1
    assert any("signed in as" in line for line in log)
