"""Every clock of the procedure, as pure functions of the incident, the policy and `now`.

`plan` says which timers an incident needs at this moment; each has a stable key, so the
store can re-plan after any change (cancel what is no longer wanted, add what is new, never
re-arm what already fired). `fire` says what a due timer does, or nothing when the incident
has moved on (acknowledged, updated, resolved) since it was planned.

The clocks:
- acknowledgement: the response target (`ack_timeout`) and each level of the escalation
  chain, measured from declaration, while nobody has acknowledged;
- update nudges: when an update is overdue (`update_interval` after the last one, or after a
  snooze), the commander is nudged; half an interval later the comms lead is mentioned; one
  interval later the announcement channel is told; then the cycle repeats until an update;
- time open: the resolution target and the `open_escalation` chain, while unresolved;
- after resolution: the follow-ups (report, post-mortem, action review, and the customer
  communication for an incident that was public or severe enough), repeated daily until
  marked done;
- compliance: for incidents with a tag the policy names, reminders before the deadline and
  the deadline itself, until marked done.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.domain.incident import Event, EventKind, Incident
from bot.domain.policy import Policy, format_duration

FOLLOWUP_REPEAT = timedelta(days=1)


class TimerKind(enum.StrEnum):
    ACK_TARGET = "ack_target"
    ESCALATE = "escalate"
    NUDGE = "nudge"
    NUDGE_COMMS = "nudge_comms"
    NUDGE_ANNOUNCE = "nudge_announce"
    OPEN_ESCALATION = "open_escalation"
    RESOLUTION_TARGET = "resolution_target"
    FOLLOWUP = "followup"
    COMPLIANCE = "compliance"


@dataclass(frozen=True)
class Timer:
    key: str  # stable identity within the incident: the same clock plans the same key
    kind: TimerKind
    due: datetime
    data: dict[str, Any] = field(default_factory=dict)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%S")


def plan(incident: Incident, policy: Policy, now: datetime) -> list[Timer]:
    """The timers the incident needs now (due times may be past: they fire at once)."""
    severity = policy.get(incident.severity)
    name, start = severity.name, incident.declared_at
    timers: list[Timer] = []
    if incident.is_open:
        if not incident.acknowledged:
            due = start + severity.ack_timeout
            # Already past when first planned: the severity was just raised past its target,
            # and the raise has just paged the people a reminder would go to.
            late = {"late": True} if due <= now else {}
            timers.append(Timer(f"ack_target:{name}", TimerKind.ACK_TARGET, due, late))
            for index, level in enumerate(severity.escalation):
                if index > incident.escalation_level:
                    timers.append(
                        Timer(
                            f"escalate:{name}:{index}",
                            TimerKind.ESCALATE,
                            start + level.after,
                            {"level": index},
                        )
                    )
        for index, level in enumerate(severity.open_escalation):
            timers.append(
                Timer(
                    f"open:{name}:{index}",
                    TimerKind.OPEN_ESCALATION,
                    start + level.after,
                    {"index": index},
                )
            )
        timers.append(
            Timer(
                f"resolution_target:{name}",
                TimerKind.RESOLUTION_TARGET,
                start + severity.resolution_target,
            )
        )
        timers += _nudges(incident, policy, now)
    elif incident.resolved_at is not None:
        for duty in incident.followups(policy):
            delay: timedelta = getattr(policy.followups, duty)
            if f"followup:{duty}" in incident.done:
                continue
            # The first reminder, then one a day: always the next one not yet due.
            first = incident.resolved_at + delay
            repeat = 0 if now < first else int((now - first) / FOLLOWUP_REPEAT) + 1
            due = first + repeat * FOLLOWUP_REPEAT
            timers.append(
                Timer(
                    f"followup:{duty}:{repeat}",
                    TimerKind.FOLLOWUP,
                    due,
                    {"duty": duty, "reminder": repeat + 1},
                )
            )
    for rule in policy.compliance:
        if rule.tag not in incident.tags or f"compliance:{rule.tag}" in incident.done:
            continue
        deadline = start + rule.deadline
        for before in rule.remind_before:
            timers.append(
                Timer(
                    f"compliance:{rule.tag}:{format_duration(before)}",
                    TimerKind.COMPLIANCE,
                    deadline - before,
                    {"tag": rule.tag, "left": int(before.total_seconds())},
                )
            )
        timers.append(
            Timer(
                f"compliance:{rule.tag}:deadline",
                TimerKind.COMPLIANCE,
                deadline,
                {"tag": rule.tag, "left": 0},
            )
        )
    return timers


def replan(pending: dict[str, Timer], planned: list[Timer], now: datetime) -> dict[str, Timer]:
    """The re-planning rule (the store applies the same rule to its rows): planned timers
    are added or moved; a pending timer no longer planned is dropped unless it is already
    due (a due timer always fires, and `fire` decides whether it still matters)."""
    result = {key: timer for key, timer in pending.items() if timer.due <= now}
    result.update({timer.key: timer for timer in planned})
    return result


def _nudges(incident: Incident, policy: Policy, now: datetime) -> list[Timer]:
    interval = policy.get(incident.severity).update_interval
    due = incident.next_update_due(policy)
    if interval is None or due is None:
        return []
    cycle = max(0, int((now - due) / interval)) if now > due else 0
    due = due + cycle * interval
    stamp = _iso(due)
    data = {"due": due.isoformat(), "cycle": cycle}
    return [
        Timer(f"nudge:{stamp}", TimerKind.NUDGE, due, data),
        Timer(f"nudge_comms:{stamp}", TimerKind.NUDGE_COMMS, due + interval / 2, data),
        Timer(f"nudge_announce:{stamp}", TimerKind.NUDGE_ANNOUNCE, due + interval, data),
    ]


def fire(incident: Incident, timer: Timer, policy: Policy, now: datetime) -> list[Event]:
    """What a due timer does to the incident: the events to record, or [] if it is moot."""
    severity = policy.get(incident.severity)
    data = timer.data
    match timer.kind:
        case TimerKind.ACK_TARGET:
            if not incident.is_open or incident.acknowledged:
                return []
            return [
                Event(
                    EventKind.ACK_TARGET_MISSED,
                    now,
                    None,
                    {
                        "target": format_duration(severity.ack_timeout),
                        # Said in the channel; the level is reminded directly unless the
                        # target was already past when planned (a raise paged it just now).
                        "notify": [] if data.get("late") else _current_targets(incident, policy),
                    },
                )
            ]
        case TimerKind.ESCALATE:
            index = int(data["level"])
            chain = severity.escalation
            if (
                not incident.is_open
                or incident.acknowledged
                or index <= incident.escalation_level
                or index >= len(chain)
            ):
                return []
            waited = format_duration(chain[index].after)
            return incident._escalate_to(
                index, by=None, now=now, policy=policy, reason=f"not acknowledged after {waited}"
            )
        case TimerKind.NUDGE | TimerKind.NUDGE_COMMS | TimerKind.NUDGE_ANNOUNCE:
            due = incident.next_update_due(policy)
            interval = severity.update_interval
            if due is None or interval is None or now < due:
                return []
            overdue = int((now - due).total_seconds())
            payload = {
                "due": due.isoformat(),
                "overdue": overdue,
                "commander": incident.owner,
                "comms_lead": incident.roles.get("comms_lead"),
                "interval": format_duration(interval),
            }
            kind = {
                TimerKind.NUDGE: EventKind.UPDATE_NUDGED,
                TimerKind.NUDGE_COMMS: EventKind.NUDGE_ESCALATED,
                TimerKind.NUDGE_ANNOUNCE: EventKind.UPDATE_OVERDUE,
            }[timer.kind]
            return [Event(kind, now, None, payload)]
        case TimerKind.OPEN_ESCALATION:
            index = int(data["index"])
            if not incident.is_open or index >= len(severity.open_escalation):
                return []
            level = severity.open_escalation[index]
            return [
                Event(
                    EventKind.OPEN_ESCALATED,
                    now,
                    None,
                    {"after": format_duration(level.after), "notify": list(level.notify)},
                )
            ]
        case TimerKind.RESOLUTION_TARGET:
            if not incident.is_open:
                return []
            return [
                Event(
                    EventKind.RESOLUTION_TARGET_MISSED,
                    now,
                    None,
                    {
                        "target": format_duration(severity.resolution_target),
                        "commander": incident.commander,
                    },
                )
            ]
        case TimerKind.FOLLOWUP:
            duty = str(data["duty"])
            if f"followup:{duty}" in incident.done:
                return []
            return [
                Event(
                    EventKind.FOLLOWUP_DUE,
                    now,
                    None,
                    {
                        "duty": duty,
                        "reminder": data.get("reminder", 1),
                        "commander": incident.owner,
                    },
                )
            ]
        case TimerKind.COMPLIANCE:
            tag = str(data["tag"])
            rule = next((r for r in policy.compliance if r.tag == tag), None)
            if rule is None or f"compliance:{tag}" in incident.done:
                return []
            return [
                Event(
                    EventKind.COMPLIANCE_REMINDER,
                    now,
                    None,
                    {
                        "tag": tag,
                        "left": int(data.get("left", 0)),
                        "deadline": (incident.declared_at + rule.deadline).isoformat(),
                        "description": rule.description,
                        "commander": incident.owner,
                    },
                )
            ]
    return []


def _current_targets(incident: Incident, policy: Policy) -> list[str]:
    chain = policy.get(incident.severity).escalation
    if not chain:
        return []
    return list(chain[min(incident.escalation_level, len(chain) - 1)].notify)
