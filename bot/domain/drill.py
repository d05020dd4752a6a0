"""The drill report: how the team did against the policy's targets (teams run incident-response
drills monthly). Pure."""

from __future__ import annotations

from bot.domain.incident import EventKind, Incident
from bot.domain.policy import Policy, format_duration, human_duration
from bot.domain.timeline import TimelineEntry


def _mark(ok: bool) -> str:
    return "✅" if ok else "❌"


def drill_report(incident: Incident, entries: list[TimelineEntry], policy: Policy) -> list[str]:
    severity = policy.get(incident.severity)
    lines = []
    tta = incident.time_to_acknowledge()
    target = format_duration(severity.ack_timeout)
    if tta is None:
        lines.append(f"Acknowledged: never (target {target}) ❌")
    else:
        ok = tta <= severity.ack_timeout
        lines.append(f"Time to acknowledge: {human_duration(tta)} (target {target}) {_mark(ok)}")
    if incident.resolved_at is not None:
        ttr = incident.resolved_at - incident.declared_at
        ok = ttr <= severity.resolution_target
        lines.append(
            f"Time to resolve: {human_duration(ttr)} "
            f"(target {format_duration(severity.resolution_target)}) {_mark(ok)}"
        )
    updates = on_time = 0
    nudged = False
    for entry in entries:
        if entry.kind == EventKind.UPDATE_NUDGED:
            nudged = True
        elif entry.kind == EventKind.UPDATE_POSTED:
            updates += 1
            on_time += not nudged
            nudged = False
    if severity.update_interval is None:
        lines.append(f"Status updates: {updates} (none required for {severity.name})")
    else:
        late = nudged or on_time < updates
        lines.append(
            f"Status updates: {updates}, {on_time} before their nudge "
            f"(every {format_duration(severity.update_interval)}) {_mark(not late)}"
        )
    automatic = sum(
        1 for e in entries if e.kind == EventKind.ESCALATED and not e.data.get("manual")
    )
    if automatic:
        lines.append(f"Escalated automatically {automatic} time(s): nobody acknowledged in time")
    return lines
