"""Timeline entries and their plain-text description (used by Slack and the post-mortem)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.domain.incident import EventKind
from bot.domain.policy import human_duration


@dataclass(frozen=True)
class TimelineEntry:
    incident_id: str
    at: datetime
    kind: str
    actor: str | None
    data: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


def describe(
    entry: TimelineEntry,
    *,
    mention: Callable[[str], str] | None = None,
    quote: Callable[[str], str] | None = None,
) -> str:
    """One line saying what happened.

    `mention(user_id)` renders people (default: the id); `quote(text)` renders what people
    typed (default: as it is; Slack passes its escaping function).
    """
    who = mention or (lambda user: user)
    q = quote or (lambda text: text)
    actor = who(entry.actor) if entry.actor else "the bot"
    data = entry.data
    match entry.kind:
        case EventKind.DECLARED:
            drill = " (drill)" if data.get("drill") else ""
            return f"{actor} declared {data.get('severity')}{drill}: {q(str(data.get('title')))}"
        case EventKind.ACKNOWLEDGED:
            waited = human_duration(timedelta(seconds=int(data.get("seconds", 0))))
            return f"{actor} acknowledged ({waited} after declaration)"
        case EventKind.COMMANDER_CHANGED:
            commander = who(data["commander"])
            if data.get("commander") == entry.actor:
                return f"{commander} took incident command"
            return f"{actor} handed incident command to {commander}"
        case EventKind.ROLE_ASSIGNED:
            return f"{actor} assigned {data['role']} to {who(data['user'])}"
        case EventKind.STATUS_CHANGED:
            return f"{actor} changed status {data.get('previous')} → {data['status']}"
        case EventKind.SEVERITY_CHANGED:
            return f"{actor} changed severity {data.get('previous')} → {data['severity']}"
        case EventKind.UPDATE_POSTED:
            return f"{actor} posted an update: {q(str(data.get('text', '')))}"
        case EventKind.NOTE_ADDED:
            return f"{actor} noted: {q(str(data.get('text', '')))}"
        case EventKind.ESCALATED:
            reason = f" ({q(data['reason'])})" if data.get("reason") else ""
            how = f"{actor} escalated" if data.get("manual") else "Escalated automatically"
            return f"{how} to level {data.get('level')}{reason}"
        case EventKind.RESOLVED:
            return f"{actor} resolved: {q(str(data.get('summary', '')))}"
    text = data.get("text")
    return f"{actor}: {q(str(text))}" if text else f"{actor}: {entry.kind}"
