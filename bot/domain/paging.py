"""Who an event pages, and what PagerDuty is told: pure, shared by the service (which
records the work) and `policy simulate` (which prints it).

A page reaches people three ways: invited to the incident channel (a mention notifies only
a channel's members), mentioned there and in the announcement channel, and a direct
message. Drills page nobody outside their channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.domain.incident import Event, EventKind, Incident
from bot.domain.policy import Policy


@dataclass(frozen=True)
class Page:
    """Targets (users U…/W…, user groups S…) to invite and message, and why."""

    targets: list[str]
    why: str  # declared | level | manual | ack_target | open | raised
    detail: dict[str, Any]

    def payload(self) -> dict[str, Any]:
        return {"targets": list(self.targets), "why": self.why, **self.detail}


def pages(incident: Incident, events: list[Event], policy: Policy) -> list[Page]:
    """The pages `events` cause: declaration, escalation (by the clock or by hand), a missed
    response target (the current level reminded), time-open escalation, a severity raise."""
    if incident.drill:
        return []
    found: list[Page] = []
    for event in events:
        data = event.data
        minutes = int((event.at - incident.declared_at).total_seconds() // 60)
        common = {"severity": incident.severity, "minutes": minutes}
        targets: list[str] = list(data.get("notify") or [])
        why: str | None = None
        detail: dict[str, Any] = {}
        match event.kind:
            case EventKind.DECLARED:
                targets, why = policy.get(incident.severity).declaration_targets, "declared"
            case EventKind.ESCALATED:
                why = "manual" if data.get("manual") else "level"
                detail = {"level": data.get("level"), "by": event.actor}
            case EventKind.ACK_TARGET_MISSED:
                why, detail = "ack_target", {"target": data.get("target")}
            case EventKind.OPEN_ESCALATED:
                why, detail = "open", {"after": data.get("after")}
            case EventKind.SEVERITY_CHANGED if data.get("raised"):
                why, detail = "raised", {"previous": data.get("previous"), "by": event.actor}
        if why is not None and targets:
            found.append(Page(targets, why, {**common, **detail}))
    return found


def pagerduty_actions(incident: Incident, events: list[Event]) -> list[tuple[str, str]]:
    """(action, routing key) pairs: trigger when a level naming a key is reached
    (declaration, escalation, a raise); acknowledge every open page when someone
    acknowledges in Slack; resolve them all at resolution. Never for drills."""
    if incident.drill:
        return []
    actions: list[tuple[str, str]] = []
    for event in events:
        match event.kind:
            case EventKind.DECLARED | EventKind.ESCALATED | EventKind.SEVERITY_CHANGED:
                if event.data.get("pagerduty"):
                    actions.append(("trigger", str(event.data["pagerduty"])))
            case EventKind.ACKNOWLEDGED:
                actions += [("acknowledge", str(k)) for k in event.data.get("pagerduty") or []]
            case EventKind.RESOLVED:
                actions += [("resolve", str(k)) for k in event.data.get("pagerduty") or []]
    return actions
