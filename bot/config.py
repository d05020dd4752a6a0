"""Settings: read once from the environment (and `.env`) in `__main__`, then passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SLACK_API_URL = "https://slack.com/api/"


def database_url(value: str) -> str:
    """Accept postgres:// URLs as platforms give them; insist on an async driver."""
    if value.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + value.split("://", 1)[1]
    if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
    return value


class Settings(BaseSettings):
    """Every setting the README lists. Secrets are `SecretStr`: a repr or a log never shows them."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    slack_bot_token: SecretStr = Field(description="Bot token, xoxb-…")
    slack_signing_secret: SecretStr = Field(description="Signing secret of the Slack app")
    slack_app_token: SecretStr | None = Field(
        default=None, description="App-level token, xapp-…; set it for Socket Mode"
    )
    slack_api_url: str = DEFAULT_SLACK_API_URL
    database_url: str = "sqlite+aiosqlite:///incidents.db"
    port: int = Field(default=3000, ge=1, le=65535)
    policy_file: Path | None = None
    playbooks_dir: Path = Path("playbooks")
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text", description="text, or json: one JSON object per line"
    )
    pagerduty_events_url: str = "https://events.pagerduty.com/v2/enqueue"
    metrics_token: SecretStr | None = None
    alerts_token: SecretStr | None = Field(
        default=None,
        description="Enables POST /alerts/alertmanager and /alerts/generic, which then need "
        "Authorization: Bearer <this token>",
    )
    public_url: str | None = Field(
        default=None, description="The address people reach the bot at (status page links)"
    )
    smtp_url: SecretStr | None = Field(
        default=None, description="smtp://user:pass@host:587 (STARTTLS when offered) or smtps://"
    )
    email_from: str | None = Field(default=None, description="The sender of the emails")

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token_shape(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith("xoxb-"):
            raise ValueError("must be a bot token starting with xoxb-")
        return value

    @field_validator("slack_signing_secret")
    @classmethod
    def _secret_present(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if not value.get_secret_value().startswith("xapp-"):
            raise ValueError("must be an app-level token starting with xapp-")
        return value

    @field_validator("alerts_token")
    @classmethod
    def _alerts_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None  # unset or empty: the alert endpoints do not exist
        token = value.get_secret_value()
        if token != token.strip() or any(c.isspace() or not c.isprintable() for c in token):
            raise ValueError("must be one word: no spaces or control characters")
        return value

    @field_validator("slack_api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL such as https://slack.com/api/")
        return value if value.endswith("/") else value + "/"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return database_url(value)

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL such as https://incidents.example.com")
        return value.strip().rstrip("/")

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        from bot.integrations.email import parse_smtp_url

        parse_smtp_url(value.get_secret_value().strip())  # its message never shows the URL
        return value

    @field_validator("email_from")
    @classmethod
    def _email_from(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        address = value.strip()
        if "@" not in address or any(c in address for c in "\r\n"):
            raise ValueError("must be an email address, e.g. incidents@example.com")
        return address

    @model_validator(mode="after")
    def _email_pair(self) -> Settings:
        if self.smtp_url is not None and self.email_from is None:
            raise ValueError("EMAIL_FROM is required when SMTP_URL is set")
        return self

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None


class StorageSettings(BaseSettings):
    """What the offline tools (post-mortem export) need: the database and the policy."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    database_url: str = "sqlite+aiosqlite:///incidents.db"
    policy_file: Path | None = None

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return database_url(value)


class SettingsError(Exception):
    """A setting is missing or malformed; the message is one line naming it."""


def load_settings(**overrides: object) -> Settings:
    """Build the settings, turning pydantic's report into one line per problem (no values shown)."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            name = str(error["loc"][0]).upper() if error["loc"] else ""
            message = "is required" if error["type"] == "missing" else error["msg"]
            message = message.removeprefix("Value error, ")
            problems.append(f"{name} {message}" if name else message)
        raise SettingsError("; ".join(problems)) from None
