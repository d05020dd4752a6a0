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


SOURCE_NAMES = {"alertmanager": "Alertmanager", "grafana": "Grafana", "generic": "a webhook"}


def alert_source(alert: dict[str, Any], quote: Callable[[str], str] | None = None) -> str:
    """`from Alertmanager: HighErrorRate`; `quote` renders the alert's name (as typed text)."""
    source = SOURCE_NAMES.get(str(alert.get("source")), "a webhook")
    name = str(alert.get("name", ""))
    return f"from {source}: {quote(name) if quote else name}"


def fired_again(alert: dict[str, Any], at: datetime) -> str:
    """`fired again 2h after INC-… was resolved`, for an alert whose earlier incident was
    resolved; empty otherwise."""
    previous = alert.get("previous")
    if not isinstance(previous, dict) or not previous.get("id"):
        return ""
    resolved = previous.get("resolved_at")
    if not isinstance(resolved, str) or not resolved:
        return f"fired again after {previous['id']}"
    gap = human_duration(at - datetime.fromisoformat(resolved))
    return f"fired again {gap} after {previous['id']} was resolved"


def firing(data: dict[str, Any]) -> str:
    """`3 alerts firing`, `1 alert firing`, or `every alert resolved`."""
    count = int(data.get("firing", 0))
    if count <= 0:
        return "every alert resolved"
    return f"{count} alert{'s' if count != 1 else ''} firing"


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
            alert = data.get("alert")
            if isinstance(alert, dict):
                source = alert_source(alert, q)
                said = (
                    f"{actor} declared {data.get('severity')} {source}: {q(str(data.get('title')))}"
                )
                again = fired_again(alert, entry.at)
                said = f"{said} ({again})" if again else said
                told = [
                    f"{name}: {q(str(alert[key])[:300])}"
                    for key, name in (
                        ("summary", "summary"),
                        ("description", "description"),
                        ("runbook_url", "runbook"),
                        ("dashboard", "dashboard"),
                    )
                    if alert.get(key) and alert.get(key) != data.get("title")
                ]
                return "; ".join([said, *told])
            return f"{actor} declared {data.get('severity')}{drill}: {q(str(data.get('title')))}"
        case EventKind.ALERT_FIRED:
            names = ", ".join(q(str(a.get("name", ""))) for a in data.get("alerts", [])[:5])
            return f"Alert fired: {names} ({firing(data)})"
        case EventKind.ALERT_RESOLVED:
            names = ", ".join(q(str(a.get("name", ""))) for a in data.get("alerts", [])[:5])
            return f"Alert resolved: {names} ({firing(data)})"
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
        case EventKind.SNOOZED:
            return f"{actor} snoozed the update nudge until {str(data.get('until', ''))[:16]}"
        case EventKind.TAGGED:
            return f"{actor} tagged the incident {q(str(data.get('tag', '')))}"
        case EventKind.ACK_TARGET_MISSED:
            return f"Not acknowledged within the {data.get('target')} response target"
        case EventKind.UPDATE_NUDGED:
            return f"Status update overdue: {who(str(data.get('commander')))} nudged"
        case EventKind.NUDGE_ESCALATED:
            comms = data.get("comms_lead")
            return "Status update still missing: " + (
                f"comms lead {who(str(comms))} mentioned" if comms else "no comms lead assigned"
            )
        case EventKind.UPDATE_OVERDUE:
            return "Status update overdue: the announcement channel was told"
        case EventKind.OPEN_ESCALATED:
            return f"Open for {data.get('after')}: escalated to management"
        case EventKind.RESOLUTION_TARGET_MISSED:
            return f"Resolution target ({data.get('target')}) missed"
        case EventKind.FOLLOWUP_DUE:
            return f"Follow-up due: {str(data.get('duty', '')).replace('_', ' ')}"
        case EventKind.FOLLOWUP_DONE | EventKind.COMPLIANCE_DONE:
            return f"{actor} marked {str(data.get('name', '')).replace('_', ' ')} done"
        case EventKind.COMPLIANCE_REMINDER:
            return f"Compliance reminder: {q(str(data.get('description') or data.get('tag')))}"
        case EventKind.ACTION_ADDED:
            owner = f" (owner {who(str(data['owner']))})" if data.get("owner") else ""
            return f"{actor} added action item #{data.get('id')}: {q(str(data.get('text')))}{owner}"
        case EventKind.ACTION_DONE:
            return f"{actor} completed action item #{data.get('id')}: {q(str(data.get('text')))}"
        case EventKind.STEP_TICKED:
            return f"{actor} ticked playbook step: {q(str(data.get('text', '')))}"
        case EventKind.STEP_UNTICKED:
            return f"{actor} unticked playbook step: {q(str(data.get('text', '')))}"
        case EventKind.PUBLISHED:
            where = "made the incident public" if data.get("first") else "published"
            return (
                f"{actor} {where} on the status page ({data.get('status')}): "
                f"{q(str(data.get('title', '')))}: {q(str(data.get('text', '')))}"
            )
        case EventKind.MESSAGE_PINNED:
            return f"📌 {actor}: {q(str(data.get('text', '')))}"
    text = data.get("text")
    return f"{actor}: {q(str(text))}" if text else f"{actor}: {entry.kind}"
