"""The Incident aggregate: commands in, events out. Pure: no Slack, no SQL, no clock.

Life cycle: declared (status `investigating`) → acknowledged → identified → mitigating →
monitoring → resolved. Open statuses may move in any order (an incident can regress from
monitoring back to investigating); `resolved` is reached only through `resolve`, and nothing
but the post-incident record changes afterwards.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from bot.domain import statuspage
from bot.domain.actions import ActionItem
from bot.domain.errors import IllegalTransition, InvalidCommand, NothingToDo
from bot.domain.policy import RESOLVED, Policy, Severity
from bot.domain.text import strip_controls

TITLE_MAX = 500
ALERTS_LISTED = 20  # alerts a timeline entry names (the others are counted)
TEXT_MAX = 2900
FOLLOWUPS = ("report", "postmortem", "action_review")
CUSTOMER_COMMUNICATION = "customer_communication"


class EventKind(enum.StrEnum):
    DECLARED = "declared"
    ACKNOWLEDGED = "acknowledged"
    COMMANDER_CHANGED = "commander_changed"
    ROLE_ASSIGNED = "role_assigned"
    STATUS_CHANGED = "status_changed"
    SEVERITY_CHANGED = "severity_changed"
    UPDATE_POSTED = "update_posted"
    NOTE_ADDED = "note_added"
    ESCALATED = "escalated"
    RESOLVED = "resolved"
    SNOOZED = "snoozed"
    TAGGED = "tagged"
    # Clocks that ran out (fired by timers; the actor is the bot).
    ACK_TARGET_MISSED = "ack_target_missed"
    UPDATE_NUDGED = "update_nudged"
    NUDGE_ESCALATED = "nudge_escalated"
    UPDATE_OVERDUE = "update_overdue"
    OPEN_ESCALATED = "open_escalated"
    RESOLUTION_TARGET_MISSED = "resolution_target_missed"
    FOLLOWUP_DUE = "followup_due"
    FOLLOWUP_DONE = "followup_done"
    COMPLIANCE_REMINDER = "compliance_reminder"
    COMPLIANCE_DONE = "compliance_done"
    # The record: action items, playbook steps, messages pinned with 📌.
    ACTION_ADDED = "action_added"
    ACTION_DONE = "action_done"
    STEP_TICKED = "step_ticked"
    STEP_UNTICKED = "step_unticked"
    MESSAGE_PINNED = "message_pinned"
    # Monitoring: more alerts of an alert-declared incident firing, or alerts resolved.
    ALERT_FIRED = "alert_fired"
    ALERT_RESOLVED = "alert_resolved"
    # Customer-facing: an update published on the status page.
    PUBLISHED = "published"


@dataclass(frozen=True)
class Event:
    """Something that happened to an incident; every event becomes a timeline entry."""

    kind: EventKind
    at: datetime
    actor: str | None
    data: dict[str, Any] = field(default_factory=dict)


def trimmed(text: str, limit: int = TEXT_MAX) -> str:
    """Optional typed text: without control characters, trimmed, cut at `limit`."""
    return strip_controls(text).strip()[:limit]


def clean_text(text: str, *, what: str, limit: int = TEXT_MAX) -> str:
    """Trimmed text without control characters, refused when empty, cut at `limit`."""
    text = strip_controls(text)
    cleaned = " ".join(text.split()) if "\n" not in text else text.strip()
    if not cleaned:
        raise InvalidCommand(f"The {what} is empty.")
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1].rstrip() + "…"
    return cleaned


def _alert_event(
    kind: EventKind, by: str, alerts: list[dict[str, Any]], firing: int, now: datetime
) -> list[Event]:
    if not alerts:
        return []
    data = {"alerts": alerts[:ALERTS_LISTED], "count": len(alerts), "firing": firing}
    return [Event(kind, now, by, data)]


@dataclass
class Incident:
    id: str
    title: str
    severity: str
    declared_at: datetime
    declared_by: str
    status: str = "investigating"
    services: list[str] = field(default_factory=list)
    impact: str = ""
    drill: bool = False
    tags: list[str] = field(default_factory=list)
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    commander: str | None = None
    roles: dict[str, str] = field(default_factory=dict)
    last_update_at: datetime | None = None
    escalation_level: int = 0
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution_summary: str = ""
    root_cause: str = ""
    snoozed_until: datetime | None = None
    done: list[str] = field(default_factory=list)  # follow-ups and compliance duties done
    paged: list[str] = field(default_factory=list)  # PagerDuty routing keys triggered
    actions: list[ActionItem] = field(default_factory=list)
    playbook: str | None = None  # the playbook posted as the channel's checklist
    ticks: dict[str, dict[str, str]] = field(default_factory=dict)  # step id → {by, at}
    # Declared by the bot from an alert: the alert as it first fired (source, name, summary,
    # links, start) and, when it fired again after an earlier incident, that incident.
    alert: dict[str, Any] | None = None
    # The status page: empty until the first publish makes the incident public.
    public_title: str = ""
    components: dict[str, str] = field(default_factory=dict)  # component → its state
    version: int = 0

    # ---- declaration -------------------------------------------------------------------
    @classmethod
    def declare(
        cls,
        *,
        incident_id: str,
        title: str,
        severity: Severity,
        by: str,
        now: datetime,
        services: list[str] | None = None,
        impact: str = "",
        drill: bool = False,
        tags: list[str] | None = None,
        alert: dict[str, Any] | None = None,
    ) -> tuple[Incident, list[Event]]:
        """A new incident. `alert`: declared by the bot from that alert (its details)."""
        incident = cls(
            id=incident_id,
            title=clean_text(title, what="title", limit=TITLE_MAX),
            severity=severity.name,
            declared_at=now,
            declared_by=by,
            services=[s for s in (strip_controls(s).strip() for s in services or []) if s],
            impact=trimmed(impact),
            drill=drill,
            tags=sorted({t for t in (strip_controls(t).strip().lower() for t in tags or []) if t}),
            alert=alert,
        )
        first = severity.escalation[0] if severity.escalation else None
        if first is not None and first.pagerduty and not drill:
            incident.paged.append(first.pagerduty)
        event = Event(
            EventKind.DECLARED,
            now,
            by,
            {
                "title": incident.title,
                "severity": severity.name,
                "drill": drill,
                "pagerduty": incident.paged[0] if incident.paged else None,
                **({"alert": alert} if alert else {}),
            },
        )
        return incident, [event]

    # ---- queries -----------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self.status != RESOLVED

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_at is not None

    def duration(self, now: datetime) -> timedelta:
        return (self.resolved_at or now) - self.declared_at

    def next_update_due(self, policy: Policy) -> datetime | None:
        """When the next status update is expected, or None (resolved, or none for the level).

        Measured from the last update (or the declaration); a snooze pushes it later.
        """
        interval = policy.get(self.severity).update_interval
        if not self.is_open or interval is None:
            return None
        due = (self.last_update_at or self.declared_at) + interval
        if self.snoozed_until is not None and self.snoozed_until > due:
            return self.snoozed_until
        return due

    @property
    def from_alert(self) -> bool:
        """Declared by the bot from an alert, not by a person."""
        return bool(self.alert)

    @property
    def owner(self) -> str | None:
        """Who is asked for what the incident needs (updates, follow-ups): the commander;
        without one, the declarer, or for an alert-declared incident whoever acknowledged
        it (the bot declared it, and is nobody to ask)."""
        if self.commander:
            return self.commander
        return self.acknowledged_by if self.from_alert else self.declared_by

    @property
    def public(self) -> bool:
        """Whether anything of the incident was published on the status page."""
        return bool(self.public_title)

    def time_to_acknowledge(self) -> timedelta | None:
        return None if self.acknowledged_at is None else self.acknowledged_at - self.declared_at

    # ---- commands ----------------------------------------------------------------------
    def _require_open(self) -> None:
        if not self.is_open:
            raise IllegalTransition(
                f"{self.id} is already resolved; start a new incident if the problem is back."
            )

    def acknowledge(self, *, by: str, now: datetime) -> list[Event]:
        self._require_open()
        if self.acknowledged_at is not None:
            raise NothingToDo(f"{self.id} was already acknowledged by <@{self.acknowledged_by}>.")
        self.acknowledged_at, self.acknowledged_by = now, by
        return [
            Event(
                EventKind.ACKNOWLEDGED,
                now,
                by,
                {
                    "seconds": int((now - self.declared_at).total_seconds()),
                    # PagerDuty pages open for this incident: acknowledged there too.
                    "pagerduty": list(self.paged),
                },
            )
        ]

    def take_command(self, *, by: str, now: datetime, user: str | None = None) -> list[Event]:
        """`user` takes command (default: `by` takes it). Taking command acknowledges."""
        self._require_open()
        new = user or by
        if self.commander == new:
            raise NothingToDo(f"<@{new}> is already the incident commander of {self.id}.")
        events: list[Event] = []
        if self.acknowledged_at is None:
            events += self.acknowledge(by=by, now=now)
        previous, self.commander = self.commander, new
        self.roles["commander"] = new
        events.append(
            Event(EventKind.COMMANDER_CHANGED, now, by, {"commander": new, "previous": previous})
        )
        return events

    def assign_role(
        self, *, by: str, role: str, user: str, now: datetime, policy: Policy
    ) -> list[Event]:
        self._require_open()
        wanted = role.strip().lower().replace("-", "_")
        if wanted not in policy.roles:
            raise InvalidCommand(f"There is no role {role!r}. Roles: {', '.join(policy.roles)}.")
        if wanted == "commander":
            return self.take_command(by=by, now=now, user=user)
        if self.roles.get(wanted) == user:
            raise NothingToDo(f"<@{user}> is already {wanted} of {self.id}.")
        previous = self.roles.get(wanted)
        self.roles[wanted] = user
        return [
            Event(
                EventKind.ROLE_ASSIGNED,
                now,
                by,
                {"role": wanted, "user": user, "previous": previous},
            )
        ]

    def set_status(self, *, by: str, status: str, now: datetime, policy: Policy) -> list[Event]:
        self._require_open()
        wanted = status.strip().lower()
        if wanted == RESOLVED:
            raise InvalidCommand("To resolve, write `/incident resolve <summary>`.")
        if wanted not in policy.open_statuses:
            raise InvalidCommand(
                f"{status!r} is not a status. Use one of: {', '.join(policy.open_statuses)}."
            )
        if wanted == self.status:
            raise NothingToDo(f"{self.id} is already {wanted}.")
        previous, self.status = self.status, wanted
        return [Event(EventKind.STATUS_CHANGED, now, by, {"status": wanted, "previous": previous})]

    def change_severity(
        self, *, by: str, severity: Severity, now: datetime, policy: Policy
    ) -> list[Event]:
        """Move to another severity; every clock is re-planned for it.

        Raising pages at once whom the new severity pages at declaration (its
        `notify_on_declare` and its first escalation level, PagerDuty included); its chain
        then goes on from that first level while unacknowledged, measured from declaration,
        so levels already past fire now, once each. Lowering pages nobody.
        """
        self._require_open()
        if severity.name == self.severity:
            raise NothingToDo(f"{self.id} is already {severity.name}.")
        raised = policy.rank(severity.name) < policy.rank(self.severity)
        previous, self.severity = self.severity, severity.name
        data: dict[str, Any] = {"severity": severity.name, "previous": previous, "raised": raised}
        if raised:
            self.escalation_level = 0
            first = severity.escalation[0] if severity.escalation else None
            data["notify"] = [] if self.drill else severity.declaration_targets
            key = first.pagerduty if first is not None and not self.drill else None
            if key:
                data["pagerduty"] = key
                if key not in self.paged:
                    self.paged.append(key)
        else:
            self.escalation_level = min(self.escalation_level, max(0, len(severity.escalation) - 1))
        return [Event(EventKind.SEVERITY_CHANGED, now, by, data)]

    def post_update(
        self,
        *,
        by: str,
        text: str,
        now: datetime,
        policy: Policy,
        status: str | None = None,
        next_steps: str = "",
        impact: str = "",
        form: bool = False,
    ) -> list[Event]:
        """A status update: resets the update clock; may move the status and restate the
        current impact at the same time. `form`: the text is the form's "actions taken"
        (a typed update is shown as written)."""
        self._require_open()
        body = clean_text(text, what="update")
        events: list[Event] = []
        if status and status.strip().lower() != self.status:
            events += self.set_status(by=by, status=status, now=now, policy=policy)
        current_impact = trimmed(impact)
        if current_impact:
            self.impact = current_impact
        self.last_update_at = now
        self.snoozed_until = None
        data: dict[str, Any] = {
            "text": body,
            "status": self.status,
            "next_steps": trimmed(next_steps),
        }
        if current_impact:
            data["impact"] = current_impact
        if form:
            data["form"] = True
        events.append(Event(EventKind.UPDATE_POSTED, now, by, data))
        return events

    def add_note(self, *, by: str, text: str, now: datetime) -> list[Event]:
        body = clean_text(text, what="note")
        return [Event(EventKind.NOTE_ADDED, now, by, {"text": body})]

    @property
    def escalation_mark(self) -> str:
        """What an Escalate button is rendered for (`SEV1:0`): a click on a button rendered
        for another level or severity is stale and changes nothing."""
        return f"{self.severity}:{self.escalation_level}"

    def escalate(
        self,
        *,
        by: str | None,
        now: datetime,
        policy: Policy,
        reason: str = "",
        seen: str | None = None,
    ) -> list[Event]:
        """Move up one level of the severity's escalation chain. `seen` is the level the
        button was rendered for (None for the typed command)."""
        self._require_open()
        if seen and seen != self.escalation_mark:
            raise NothingToDo(
                f"{self.id} was already escalated (it is at level {self.escalation_level + 1} "
                f"of {self.severity}); nothing changed. Escalate again from the latest alert "
                "or with `/incident escalate`."
            )
        chain = policy.get(self.severity).escalation
        if self.escalation_level + 1 >= len(chain):
            raise IllegalTransition(
                f"{self.id} is already at the last escalation level ({len(chain)})."
            )
        return self._escalate_to(
            self.escalation_level + 1, by=by, now=now, policy=policy, reason=reason
        )

    def _escalate_to(
        self, index: int, *, by: str | None, now: datetime, policy: Policy, reason: str
    ) -> list[Event]:
        level = policy.get(self.severity).escalation[index]
        self.escalation_level = index
        if level.pagerduty and level.pagerduty not in self.paged and not self.drill:
            self.paged.append(level.pagerduty)
        return [
            Event(
                EventKind.ESCALATED,
                now,
                by,
                {
                    "level": index + 1,
                    "notify": list(level.notify),
                    "reason": trimmed(reason),
                    "manual": by is not None,
                    "pagerduty": level.pagerduty if not self.drill else None,
                },
            )
        ]

    def snooze(
        self,
        *,
        by: str,
        duration: timedelta,
        now: datetime,
        policy: Policy,
        seen_due: datetime | None = None,
    ) -> list[Event]:
        """Postpone the next update nudge by `duration` (from its due time, or from now if
        it is already overdue). `seen_due` is the due time the nudge's button was rendered
        for: once the update is snoozed or posted, that button is stale."""
        self._require_open()
        due = self.next_update_due(policy)
        if due is None:
            raise InvalidCommand(f"{self.severity} incidents get no update nudges to snooze.")
        if seen_due is not None and seen_due != due:
            raise NothingToDo(
                f"That nudge was already answered: the next update of {self.id} is due "
                f"{due.strftime('%H:%M UTC')}. Nothing changed; use `/incident snooze <duration>` "
                "to postpone it further."
            )
        if not timedelta(minutes=1) <= duration <= timedelta(hours=24):
            raise InvalidCommand("Snooze for between 1m and 24h, e.g. `/incident snooze 30m`.")
        self.snoozed_until = max(due, now) + duration
        return [
            Event(
                EventKind.SNOOZED,
                now,
                by,
                {"until": self.snoozed_until.isoformat(), "seconds": int(duration.total_seconds())},
            )
        ]

    def tag(self, *, by: str, tag: str, now: datetime) -> list[Event]:
        cleaned = tag.strip().lower().lstrip("#")
        if not cleaned or not all(c.isalnum() or c in "-_" for c in cleaned):
            raise InvalidCommand("A tag is one word, e.g. `/incident tag security`.")
        if cleaned in self.tags:
            raise NothingToDo(f"{self.id} is already tagged {cleaned}.")
        self.tags = sorted({*self.tags, cleaned})
        return [Event(EventKind.TAGGED, now, by, {"tag": cleaned})]

    def followups(self, policy: Policy) -> list[str]:
        """The follow-ups this incident has once resolved: report, post-mortem, action review,
        and the customer communication for a public (or severe enough) one."""
        names = list(FOLLOWUPS)
        if not self.drill and policy.wants_customer_communication(
            severity=self.severity, public=self.public
        ):
            names.append(CUSTOMER_COMMUNICATION)
        return names

    def duties(self, policy: Policy) -> list[str]:
        """The duties this incident has: compliance duties of its tags, follow-ups once
        resolved."""
        found = [f"compliance:{r.tag}" for r in policy.compliance if r.tag in self.tags]
        if not self.is_open:
            found += [f"followup:{name}" for name in self.followups(policy)]
        return found

    def complete(self, *, by: str, duty: str, now: datetime, policy: Policy) -> list[Event]:
        """Mark a follow-up (`followup:report`) or compliance duty (`compliance:security`) done;
        its reminders stop. Only a duty the incident has can be marked done."""
        if duty in self.done:
            raise NothingToDo(f"That is already marked done for {self.id}.")
        kind, _, name = duty.partition(":")
        if kind not in ("followup", "compliance") or not name:
            raise InvalidCommand(f"Unknown duty {duty!r}.")
        if duty not in self.duties(policy):
            raise InvalidCommand(f"{self.id} has no duty {name!r} to mark done.")
        self.done = [*self.done, duty]
        event = EventKind.FOLLOWUP_DONE if kind == "followup" else EventKind.COMPLIANCE_DONE
        return [Event(event, now, by, {"duty": duty, "name": name})]

    def add_action(
        self, *, by: str, text: str, owner: str | None, due: date | None, now: datetime
    ) -> list[Event]:
        """A follow-up action item (also after resolution: post-mortems produce them)."""
        number = max((item.id for item in self.actions), default=0) + 1
        item = ActionItem(
            id=number,
            text=clean_text(text, what="action"),
            owner=owner,
            due=due,
            added_by=by,
            added_at=now,
        )
        self.actions = [*self.actions, item]
        data = {
            "id": number,
            "text": item.text,
            "owner": owner,
            "due": due.isoformat() if due else None,
        }
        return [Event(EventKind.ACTION_ADDED, now, by, data)]

    def complete_action(self, *, by: str, number: int, now: datetime) -> list[Event]:
        for index, item in enumerate(self.actions):
            if item.id == number:
                done = item.mark_done(by=by, now=now)
                self.actions = [*self.actions[:index], done, *self.actions[index + 1 :]]
                return [Event(EventKind.ACTION_DONE, now, by, {"id": number, "text": item.text})]
        raise InvalidCommand(f"{self.id} has no action item #{number}.")

    def tick(self, *, by: str, step: str, text: str, checked: bool, now: datetime) -> list[Event]:
        """Tick (or untick) a step of the channel's playbook checklist."""
        if checked == (step in self.ticks):
            raise NothingToDo("That step is already " + ("ticked." if checked else "unticked."))
        if checked:
            self.ticks = {**self.ticks, step: {"by": by, "at": now.isoformat()}}
        else:
            self.ticks = {k: v for k, v in self.ticks.items() if k != step}
        kind = EventKind.STEP_TICKED if checked else EventKind.STEP_UNTICKED
        return [Event(kind, now, by, {"step": step, "text": text, "playbook": self.playbook})]

    def alerts_fired(
        self, *, by: str, alerts: list[dict[str, Any]], firing: int, now: datetime
    ) -> list[Event]:
        """Alerts of this incident fired (again, or for the first time in its group):
        `alerts` are their details, `firing` how many of the incident's alerts fire now."""
        return _alert_event(EventKind.ALERT_FIRED, by, alerts, firing, now)

    def alerts_resolved(
        self, *, by: str, alerts: list[dict[str, Any]], firing: int, now: datetime
    ) -> list[Event]:
        """Alerts of this incident stopped firing; `firing` are the ones still firing. The
        incident stays as it is: people decide when it is resolved."""
        return _alert_event(EventKind.ALERT_RESOLVED, by, alerts, firing, now)

    def publish(
        self,
        *,
        by: str,
        text: str,
        now: datetime,
        title: str = "",
        components: dict[str, str] | None = None,
    ) -> list[Event]:
        """A customer-facing update on the status page. The first makes the incident public
        (under `title`, never the internal title); later ones add updates and may change the
        title and the components' states (`components`: name → state, already checked
        against the policy; None keeps them as they are)."""
        self._require_open()
        if self.drill:
            raise InvalidCommand(
                f"{self.id} is a drill: nothing of a drill goes on the status page. Practise "
                "the wording in the channel instead."
            )
        body = clean_text(text, what="public message", limit=statuspage.PUBLIC_TEXT_MAX)
        if components is not None:
            self.components = dict(components)
        wanted = " ".join(strip_controls(title).split())[: statuspage.PUBLIC_TITLE_MAX]
        first = not self.public
        self.public_title = wanted or self.public_title or statuspage.default_title(self.components)
        status = statuspage.public_status(self.status)
        return [self._published(by, now, body, status, self.components, first=first)]

    def _published(
        self,
        by: str,
        now: datetime,
        body: str,
        status: str,
        affected: dict[str, str],
        *,
        first: bool,
    ) -> Event:
        """What a publish records: the page's text and state (`affected`: the components
        whose states give the impact)."""
        data = {
            "title": self.public_title,
            "text": body,
            "status": status,
            "components": dict(self.components),
            "impact": statuspage.impact_of(affected),
            "first": first,
        }
        return Event(EventKind.PUBLISHED, now, by, data)

    def resolve(
        self,
        *,
        by: str,
        summary: str,
        now: datetime,
        root_cause: str = "",
        public_text: str = "",
    ) -> list[Event]:
        """Resolve. A public incident also publishes its resolution (`public_text`, or the
        usual resolution message) with every component back to operational."""
        self._require_open()
        events = self._resolve(by=by, summary=summary, now=now, root_cause=root_cause)
        if self.public:
            message = trimmed(public_text) or statuspage.resolution_template(self.components)
            affected = dict(self.components)
            self.components = {name: statuspage.OPERATIONAL for name in affected}
            body = clean_text(message, what="public message", limit=statuspage.PUBLIC_TEXT_MAX)
            events.append(self._published(by, now, body, "resolved", affected, first=False))
        return events

    def _resolve(self, *, by: str, summary: str, now: datetime, root_cause: str) -> list[Event]:
        self.snoozed_until = None
        self.resolution_summary = clean_text(summary, what="resolution summary")
        self.root_cause = trimmed(root_cause)
        previous = self.status
        self.status, self.resolved_at, self.resolved_by = RESOLVED, now, by
        return [
            Event(
                EventKind.RESOLVED,
                now,
                by,
                {
                    "summary": self.resolution_summary,
                    "root_cause": self.root_cause,
                    "previous": previous,
                    "seconds": int((now - self.declared_at).total_seconds()),
                    "pagerduty": list(self.paged),
                },
            )
        ]
