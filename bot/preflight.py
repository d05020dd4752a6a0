"""Start-up checks: each wrong setting stops `python -m bot` with one line that names it.

The line names the setting and what is wrong with it, never a secret (no password, no
token). Slack being unreachable is not a wrong setting: the bot starts and keeps trying.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.engine.url import make_url

from bot.config import Settings, SettingsError
from bot.domain.policy import Policy, PolicyError, load_policy, yaml_line

log = logging.getLogger(__name__)

# What Slack answers auth.test when the token itself is wrong (not when Slack is in trouble).
REFUSED_TOKEN = {
    "invalid_auth",
    "not_authed",
    "token_revoked",
    "token_expired",
    "account_inactive",
    "not_allowed_token_type",
    "missing_scope",
    "no_permission",
    "team_access_not_granted",
}
CONNECT_SECONDS = 5.0


def policy(settings: Settings) -> Policy:
    """The policy file, or one line naming POLICY_FILE, the line and the field."""
    path = settings.policy_file
    if path is None:
        return load_policy(None)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"POLICY_FILE: cannot read {path}: {exc.strerror}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise SettingsError(f"POLICY_FILE: {path}{where}: {problem}") from None
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            field = ".".join(str(part) for part in error["loc"]) or "(top level)"
            line = yaml_line(root, list(error["loc"]))
            at = f" line {line}" if line else ""
            problems.append(f"{field}{at}: {error['msg'].removeprefix('Value error, ')}")
        raise SettingsError(f"POLICY_FILE: {path}: {'; '.join(problems)}") from None
    except PolicyError as exc:  # a model validator's own message
        raise SettingsError(f"POLICY_FILE: {' '.join(str(exc).split())}") from None


def playbooks_dir(settings: Settings) -> Path:
    """A PLAYBOOKS_DIR that was set must exist (the default may be absent: built-in only)."""
    folder = settings.playbooks_dir
    if "playbooks_dir" in settings.model_fields_set and not folder.is_dir():
        state = "is not a directory" if folder.exists() else "does not exist"
        raise SettingsError(f"PLAYBOOKS_DIR: {folder} {state}")
    return folder


def _folder_missing(name: str) -> bool:
    return bool(name) and name != ":memory:" and not Path(name).resolve().parent.is_dir()


async def database(url: str) -> None:
    """Connect once: one line naming DATABASE_URL's host and database (never the password)
    when that fails. SQLite is a file the bot creates; only its folder must exist."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        name = parsed.database or ""
        if _folder_missing(name):
            raise SettingsError(f"DATABASE_URL: the folder of {name} does not exist")
        return
    import asyncpg  # type: ignore[import-untyped]  # the driver the URL names

    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    try:
        connection = await asyncpg.connect(
            host=parsed.host,
            port=parsed.port,
            user=parsed.username,
            password=parsed.password,
            database=parsed.database,
            timeout=CONNECT_SECONDS,
        )
    except TimeoutError:
        raise SettingsError(
            f"DATABASE_URL: cannot connect to {where} (no answer in {CONNECT_SECONDS:.0f} s)"
        ) from None
    except OSError as exc:
        reason = (os.strerror(exc.errno) if exc.errno else str(exc)).lower()
        raise SettingsError(f"DATABASE_URL: cannot connect to {where} ({reason})") from None
    except asyncpg.PostgresError as exc:
        detail = str(exc).replace(parsed.password or "\0", "***")
        raise SettingsError(f"DATABASE_URL: {where} refused: {detail}") from None
    await connection.close()


async def bot_token(settings: Settings) -> dict[str, Any] | None:
    """auth.test: a token Slack refuses stops start-up; Slack unreachable does not. Returns
    Slack's answer (the bot's identity) when it gave one."""
    client = AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        timeout=10,
    )
    try:
        response = await client.auth_test()
    except SlackApiError as exc:
        error = str(exc.response.get("error") or "")
        if error in REFUSED_TOKEN:
            raise SettingsError(f"SLACK_BOT_TOKEN: Slack says {error}") from None
        log.warning("auth.test answered %s; starting anyway", error or exc.response.status_code)
    except Exception as exc:  # unreachable: start, the identity is learned later
        log.warning("Slack could not be reached to check SLACK_BOT_TOKEN (%s); starting", exc)
    else:
        return dict(response.data) if isinstance(response.data, dict) else None
    return None
