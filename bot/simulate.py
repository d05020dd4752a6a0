"""`python -m bot policy simulate <severity>`: who is notified when, if nobody answers.

It runs the real clock code (domain/clocks.py) on a simulated incident that nobody
acknowledges, updates or resolves, and prints each firing as an offset from declaration.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bot.domain import clocks
from bot.domain.incident import Event, EventKind, Incident
from bot.domain.policy import Policy, human_duration

_START = datetime(2026, 1, 1, tzinfo=UTC)


def _who(targets: list[str]) -> str:
    return ", ".join(targets) if targets else "nobody (no targets configured)"


def _line(event: Event) -> str:
    data = event.data
    match event.kind:
        case EventKind.ESCALATED:
            paged = f"; PagerDuty {data['pagerduty']}" if data.get("pagerduty") else ""
            return f"escalation level {data['level']}: {_who(data['notify'])}{paged}"
        case EventKind.ACK_TARGET_MISSED:
            return f"response target ({data['target']}) missed: {_who(data['notify'])} reminded"
        case EventKind.UPDATE_NUDGED:
            return "update overdue: the incident commander (or declarer) is nudged"
        case EventKind.NUDGE_ESCALATED:
            return "update still missing: the comms lead is mentioned"
        case EventKind.UPDATE_OVERDUE:
            return "update overdue: the announcement channel is told"
        case EventKind.OPEN_ESCALATED:
            return f"open for {data['after']}: {_who(data['notify'])}"
        case EventKind.RESOLUTION_TARGET_MISSED:
            return f"resolution target ({data['target']}) missed: said in the channel and announced"
    return str(event.kind)


def simulate(policy: Policy, word: str) -> list[str]:
    severity = policy.severity(word)
    if severity is None:
        raise ValueError(f"{word!r} is not a severity; use one of: {policy.severity_words()}")
    incident, _ = Incident.declare(
        incident_id="INC-SIMULATED-001",
        title="simulated",
        severity=severity,
        by="declarer",
        now=_START,
    )
    told = severity.declaration_targets
    lines = [
        f"{'+0m':>8}  declared {severity.name}: alert in the channel and announced; "
        f"paged: {_who(told)}"
    ]
    afters = [lvl.after for lvl in severity.escalation + severity.open_escalation]
    horizon = _START + max([severity.resolution_target, severity.ack_timeout, *afters])
    fired: set[str] = set()
    pending: dict[str, clocks.Timer] = {}
    now = _START
    for _ in range(1000):
        planned = [t for t in clocks.plan(incident, policy, now) if t.key not in fired]
        pending = clocks.replan(pending, planned, now)
        due = [
            t
            for t in pending.values()
            if t.due <= horizon and t.kind != clocks.TimerKind.COMPLIANCE
        ]
        if not due:
            break
        timer = min(due, key=lambda t: (t.due, t.key))
        now = max(now, timer.due)
        fired.add(timer.key)
        del pending[timer.key]
        for event in clocks.fire(incident, timer, policy, now):
            offset = "+" + human_duration(now - _START).replace(" ", "")
            lines.append(f"{offset:>8}  {_line(event)}")
    lines.append(f"(until {human_duration(horizon - _START)}: the last escalation or target)")
    return lines
