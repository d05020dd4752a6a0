"""Logging set-up: one line per record, and no secret ever reaches a log.

`LOG_FORMAT=json` writes one JSON object per line for log pipelines. A line that concerns
an incident carries its id: as the `incident` field in JSON, as `[INC-…]` in text. The id is
taken from `about(incident_id)`, which the worker and the service set around their work.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime

_TOKENS = re.compile(r"\b(xox[abposre]|xapp)-[A-Za-z0-9-]+")


class Redact(logging.Filter):
    """Masks Slack tokens, and any configured secret, in every record's final text."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 6]

    def _clean(self, text: str) -> str:
        text = _TOKENS.sub(lambda m: f"{m.group(1)}-***", text)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self._clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self._clean(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


_incident: ContextVar[str | None] = ContextVar("log_incident", default=None)


@contextlib.contextmanager
def about(incident_id: str | None) -> Iterator[None]:
    """Every record logged inside concerns `incident_id`."""
    token = _incident.set(incident_id)
    try:
        yield
    finally:
        _incident.reset(token)


def concerning(incident_id: str) -> None:
    """From here on, the current task's records concern `incident_id` (a request, a job)."""
    _incident.set(incident_id)


class Incident(logging.Filter):
    """Puts the incident id of the current work (if any) on the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.incident = getattr(record, "incident", None) or _incident.get()
        return True


class Text(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        incident = getattr(record, "incident", None)
        if incident and incident not in record.getMessage():
            head, _, rest = line.partition(": ")
            line = f"{head}: [{incident}] {rest}"
        return line


class Json(logging.Formatter):
    """One JSON object per line: time, level, logger, message, incident, error."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        incident = getattr(record, "incident", None)
        if incident:
            out["incident"] = incident
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["error"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


# The loggers slack_sdk's clients log through (each module's own).
SLACK_SDK_CLIENT_LOGGERS = (
    "slack_sdk.web.async_base_client",
    "slack_sdk.web.base_client",
    "slack_sdk.webhook.async_client",
    "slack_sdk.webhook.client",
)


def setup(level: str, *, secrets: list[str], fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(Json() if fmt == "json" else Text())
    handler.addFilter(Redact(secrets))
    handler.addFilter(Incident())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet = max(logging.WARNING, root.level)
    # slack_sdk logs request headers at DEBUG (the filter masks them) and each retry at
    # INFO, which the bot's own retry lines already say; Bolt's INFO lines repeat requests.
    logging.getLogger("slack_sdk").setLevel(quiet)
    # Its clients build those DEBUG lines (every request's parameters, every response's
    # body) whenever their own logger has no level of its own, whatever level it inherits,
    # and only then drop them: the same level set on each spares that work on every call.
    for client in SLACK_SDK_CLIENT_LOGGERS:
        logging.getLogger(client).setLevel(quiet)
    logging.getLogger("slack_bolt").setLevel(quiet)
    # Alembic announces its plugins and DDL mode at every start.
    logging.getLogger("alembic").setLevel(quiet)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
