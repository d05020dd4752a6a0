"""What the offline commands (`policy check`, `policy simulate`, `postmortem`) read: the
settings the bot itself reads, from the same places.

Like `python -m bot`, they read the environment and the `.env` file in the current directory
(the environment wins). `--env-file FILE` reads another `.env` instead, to check a bot that
runs from another directory: everything then reads as it does for a bot started in the
directory that holds FILE.

Relative paths (`POLICY_FILE`, `PLAYBOOKS_DIR`, a SQLite `DATABASE_URL`) are relative to the
directory of the `.env` that was read, which for the `.env` of the current directory (or
none) is the current directory: exactly where the bot, started there, looks. Paths given as
command-line arguments are relative to the current directory, like any command's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import ArgumentError

from bot.config import DEFAULT_SLACK_API_URL, SettingsError, database_url

ENV_FILE = ".env"


class ToolSettings(BaseSettings):
    """The settings the offline commands use; the names and defaults of `Settings`."""

    model_config = SettingsConfigDict(
        env_file=ENV_FILE, env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    database_url: str = "sqlite+aiosqlite:///incidents.db"
    policy_file: Path | None = None
    playbooks_dir: Path = Path("playbooks")
    slack_bot_token: SecretStr | None = None
    slack_api_url: str = DEFAULT_SLACK_API_URL


@dataclass(frozen=True)
class ToolConfig:
    """The settings as read, with relative paths resolved (see the module's docstring)."""

    env_file: Path | None  # the `.env` that was read; None: there was none
    policy_file: Path | None  # None: the built-in policy
    playbooks_dir: Path
    playbooks_dir_set: bool  # PLAYBOOKS_DIR was set (then, as for the bot, it must exist)
    database_url: str  # as written, validated only by `checked_database_url`
    slack_bot_token: str
    slack_api_url: str

    @property
    def source(self) -> str:
        """Where the settings came from, for people."""
        if self.env_file is None:
            return "the environment (no .env)"
        return f"{self.env_file} and the environment"

    def checked_database_url(self) -> str:
        """DATABASE_URL as the bot takes it; SettingsError (one line naming it) if malformed."""
        try:
            return database_url(self.database_url)
        except ValueError as error:
            raise SettingsError(f"DATABASE_URL {error}") from None


def load_tool_settings(env_file: Path | None = None) -> ToolConfig:
    """Read the settings from the environment and `env_file` (default: `./.env` if present).

    Raises SettingsError when `env_file` was named but cannot be read.
    """
    read: Path | None = None
    base: Path | None = None  # None: the current directory, where relative paths already point
    if env_file is not None:
        if not env_file.is_file():
            raise SettingsError(f"--env-file {env_file}: no such file")
        read = Path(os.path.abspath(env_file))
        base = read.parent
    elif Path(ENV_FILE).is_file():
        read = Path(os.path.abspath(ENV_FILE))
    try:
        settings = ToolSettings(_env_file=read)
    except ValidationError as error:
        problem = error.errors(include_input=False, include_url=False)[0]
        where = str(problem["loc"][0]).upper() if problem["loc"] else "settings"
        message = str(problem["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"{where} {message}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"{read}: cannot read: {error}") from None
    token = settings.slack_bot_token.get_secret_value().strip() if settings.slack_bot_token else ""
    return ToolConfig(
        env_file=read,
        policy_file=_under(base, settings.policy_file) if settings.policy_file else None,
        playbooks_dir=_under(base, settings.playbooks_dir),
        playbooks_dir_set="playbooks_dir" in settings.model_fields_set,
        database_url=_sqlite_under(base, settings.database_url),
        slack_bot_token=token,
        slack_api_url=settings.slack_api_url,
    )


def _under(base: Path | None, path: Path) -> Path:
    if base is None or path.is_absolute():
        return path
    return base / path


def _sqlite_under(base: Path | None, url: str) -> str:
    """A SQLite URL whose file is relative, made relative to `base`; any other URL as is."""
    if base is None:
        return url
    try:
        parsed = make_url(url)
    except ArgumentError:  # malformed: left for `checked_database_url` to name
        return url
    database = parsed.database or ""
    if (
        parsed.get_backend_name() != "sqlite"
        or database in ("", ":memory:")
        or parsed.query.get("uri")
        or parsed.query.get("mode") == "memory"
        or Path(database).is_absolute()
    ):
        return url
    return parsed.set(database=str(base / database)).render_as_string(hide_password=False)
