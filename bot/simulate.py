"""`python -m bot policy simulate <severity>`: who is notified when, if nobody answers.

It runs the real clock and paging code (domain/clocks.py, domain/paging.py) on a simulated
incident that nobody acknowledges, updates or resolves, and prints each firing as an offset
from declaration: who is invited to the channel and sent a direct message, and what
PagerDuty is told. `--raise-to sev1 --at 20m` raises the severity on the way, as someone
would when a small incident turns out to be a big one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.domain import clocks, paging
from bot.domain.incident import Event, EventKind, Incident
from bot.domain.policy import Policy, human_duration

_START = datetime(2026, 1, 1, tzinfo=UTC)


def _who(targets: list[str]) -> str:
    return ", ".join(targets) if targets else "nobody (no targets configured)"


def _line(event: Event) -> str:
    data = event.data
    match event.kind:
        case EventKind.DECLARED:
            return "declared: alert in the channel and announced"
        case EventKind.ESCALATED:
            return f"escalation level {data['level']}: {_who(data['notify'])}"
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
        case EventKind.SEVERITY_CHANGED:
            return f"severity raised {data['previous']} → {data['severity']}"
    return str(event.kind)


def _lines(at: datetime, incident: Incident, events: list[Event], policy: Policy) -> list[str]:
    offset = f"+{human_duration(at - _START).replace(' ', '')}"
    lines = [f"{offset:>8}  {_line(event)}" for event in events]
    for page in paging.pages(incident, events, policy):
        lines.append(f"{'':>8}    invited + direct message: {_who(page.targets)}")
    for action, key in paging.pagerduty_actions(incident, events):
        lines.append(f"{'':>8}    PagerDuty {action} (routing key {key})")
    return lines


def simulate(
    policy: Policy,
    word: str,
    *,
    raise_to: str | None = None,
    raise_at: timedelta | None = None,
) -> list[str]:
    severity = policy.severity(word)
    if severity is None:
        raise ValueError(f"{word!r} is not a severity; use one of: {policy.severity_words()}")
    raised = policy.severity(raise_to) if raise_to else None
    if raise_to and raised is None:
        raise ValueError(f"{raise_to!r} is not a severity; use one of: {policy.severity_words()}")
    if raised is not None and policy.rank(raised.name) >= policy.rank(severity.name):
        raise ValueError(f"{raised.name} is not more severe than {severity.name}")
    raise_moment = _START + (raise_at or timedelta(0)) if raised is not None else None
    incident, events = Incident.declare(
        incident_id="INC-SIMULATED-001",
        title="simulated",
        severity=severity,
        by="declarer",
        now=_START,
    )
    lines = _lines(_START, incident, events, policy)
    final = raised or severity  # the severity whose clocks run last
    afters = [lvl.after for lvl in final.escalation + final.open_escalation]
    horizon = _START + max([final.resolution_target, final.ack_timeout, *afters])
    if raise_at is not None and raised is not None:
        horizon = max(horizon, _START + raise_at)
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
        if raise_moment is not None and (not due or min(t.due for t in due) > raise_moment):
            assert raised is not None
            now = max(now, raise_moment)
            raise_moment = None
            changed = incident.change_severity(
                by="someone", severity=raised, now=now, policy=policy
            )
            lines += _lines(now, incident, changed, policy)
            continue
        if not due:
            break
        timer = min(due, key=lambda t: (t.due, t.key))
        now = max(now, timer.due)
        fired.add(timer.key)
        del pending[timer.key]
        lines += _lines(now, incident, clocks.fire(incident, timer, policy, now), policy)
    lines.append(f"(until {human_duration(horizon - _START)}: the last escalation or target)")
    return lines
