"""Incident use cases: load, apply the domain, save state + timeline + Slack work at once.

Each command runs in one transaction: the incident row (locked on PostgreSQL), its new
timeline entries and the Slack jobs that make the change visible are committed together, so
the user is told "done" only once all of it is durable. The worker then carries out the jobs.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot import logs
from bot.clock import Clock
from bot.domain import clocks, paging, statuspage
from bot.domain.actions import parse_action
from bot.domain.drill import drill_report
from bot.domain.errors import AlreadyDone, InvalidCommand, NotAllowed, NotFound, NothingToDo
from bot.domain.incident import Event, EventKind, Incident
from bot.domain.naming import incident_id, is_incident_id
from bot.domain.policy import Policy, Severity, parse_duration
from bot.domain.postmortem import build_postmortem, postmortem_filename
from bot.domain.stats import Stats, compute_stats, parse_window
from bot.domain.text import strip_controls
from bot.domain.timeline import TimelineEntry
from bot.playbooks import PlaybookSet, builtin_generic
from bot.service.ports import (
    ClaimedTimer,
    Directory,
    IncidentRecord,
    JobKind,
    LookupFailed,
    NewJob,
    SlackRefs,
    Store,
    Tx,
)

log = logging.getLogger(__name__)

CLOCK_FAILED = "clock_failed"  # the POST template that says a timer could not fire

CHANNEL = "channel"
ANNOUNCE = "announce"

# Which messages each event posts, and where (the announcement channel hears the big ones).
_POSTS: dict[EventKind, tuple[str, ...]] = {
    EventKind.SNOOZED: (CHANNEL,),
    EventKind.TAGGED: (CHANNEL,),
    EventKind.ACK_TARGET_MISSED: (CHANNEL,),
    EventKind.UPDATE_NUDGED: (CHANNEL,),
    EventKind.NUDGE_ESCALATED: (CHANNEL,),
    EventKind.UPDATE_OVERDUE: (ANNOUNCE,),
    EventKind.OPEN_ESCALATED: (CHANNEL, ANNOUNCE),
    EventKind.RESOLUTION_TARGET_MISSED: (CHANNEL, ANNOUNCE),
    EventKind.FOLLOWUP_DUE: (CHANNEL,),
    EventKind.FOLLOWUP_DONE: (CHANNEL,),
    EventKind.COMPLIANCE_REMINDER: (CHANNEL,),
    EventKind.COMPLIANCE_DONE: (CHANNEL,),
    EventKind.ACTION_ADDED: (CHANNEL,),
    EventKind.ACTION_DONE: (CHANNEL,),
    EventKind.ACKNOWLEDGED: (CHANNEL,),
    EventKind.COMMANDER_CHANGED: (CHANNEL,),
    EventKind.ROLE_ASSIGNED: (CHANNEL,),
    EventKind.STATUS_CHANGED: (CHANNEL,),
    EventKind.SEVERITY_CHANGED: (CHANNEL, ANNOUNCE),
    EventKind.UPDATE_POSTED: (CHANNEL, ANNOUNCE),
    EventKind.NOTE_ADDED: (CHANNEL,),
    EventKind.ESCALATED: (CHANNEL, ANNOUNCE),
    EventKind.RESOLVED: (CHANNEL, ANNOUNCE),
    EventKind.ALERT_FIRED: (CHANNEL,),
    EventKind.ALERT_RESOLVED: (CHANNEL,),
    EventKind.PUBLISHED: (CHANNEL,),
}
# Events after which the alert messages and the channel topic are re-rendered.
_SYNCS = {
    EventKind.ACKNOWLEDGED,
    EventKind.COMMANDER_CHANGED,
    EventKind.STATUS_CHANGED,
    EventKind.SEVERITY_CHANGED,
    EventKind.UPDATE_POSTED,
    EventKind.ESCALATED,
    EventKind.RESOLVED,
    EventKind.SNOOZED,
    EventKind.ALERT_FIRED,
    EventKind.ALERT_RESOLVED,
}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def snapshot(incident: Incident, policy: Policy) -> dict[str, Any]:
    """The incident as a message shows it at this moment (JSON-safe, stored with a job)."""
    severity = policy.get(incident.severity)
    return {
        "id": incident.id,
        "title": incident.title,
        "severity": incident.severity,
        "severity_description": severity.description,
        "status": incident.status,
        "declared_at": _iso(incident.declared_at),
        "declared_by": incident.declared_by,
        "services": incident.services,
        "impact": incident.impact,
        "drill": incident.drill,
        "commander": incident.commander,
        "roles": incident.roles,
        "acknowledged_at": _iso(incident.acknowledged_at),
        "acknowledged_by": incident.acknowledged_by,
        "ack_due_at": _iso(incident.declared_at + severity.ack_timeout),
        "next_update_at": _iso(incident.next_update_due(policy)),
        "resolved_at": _iso(incident.resolved_at),
        "resolution_summary": incident.resolution_summary,
        "root_cause": incident.root_cause,
        "escalation_level": incident.escalation_level,
        "tags": incident.tags,
        "alert": _alert_view(incident.alert),
        "public_title": incident.public_title,
        "components": incident.components,
    }


_ALERT_SHOWN = (
    "source",
    "name",
    "summary",
    "description",
    "runbook_url",
    "dashboard",
    "url",
    "silence",
    "started_at",
    "firing",
    "truncated",
    "previous",
)


def _alert_view(alert: dict[str, Any] | None) -> dict[str, Any] | None:
    """What messages show of the alert an incident was declared from (not its labels: the
    snapshot travels with every Slack job of the incident)."""
    if not alert:
        return None
    return {name: alert[name] for name in _ALERT_SHOWN if alert.get(name) not in (None, "")}


_VERBS = {
    "resolve": "resolve",
    "lower_severity": "lower the severity of",
    "close_compliance": "mark compliance duties done for",
    "publish": "publish status-page updates for",
}


def _refusal(action: str, incident: Incident, allowed: list[str], unknown: list[str]) -> str:
    """Who may, said to the one who may not (an ephemeral reply)."""
    who: list[str] = []
    for entry in allowed:
        if entry.startswith(("U", "W")):
            who.append(f"<@{entry}>")
        elif entry.startswith("S"):
            who.append(f"<!subteam^{entry}>")
        else:
            holder = incident.roles.get(entry.lower())
            name = entry.lower().replace("_", " ")
            who.append(f"the {name} (<@{holder}>)" if holder else f"the {name}")
    text = f"Only {', '.join(who)} may {_VERBS.get(action, action)} {incident.id}."
    if unknown:
        groups = ", ".join(f"<!subteam^{g}>" for g in unknown)
        text += f" Slack could not say just now whether you are in {groups}; try again shortly."
    return text


async def _once(tx: Tx, key: str | None, now: datetime) -> None:
    """A submission (a form's view id) is acted on once: its key is recorded in the same
    transaction as the work, and a second arrival changes nothing."""
    if key is not None and not await tx.remember(key, now=now):
        raise AlreadyDone("That form was already submitted; nothing changed.")


def _pin_key(channel_id: str, ts: str) -> str:
    return f"pin:{channel_id}:{ts}"


@dataclass(frozen=True)
class Where:
    """Which incident a command is about: by id (buttons, forms) or by its channel (commands)."""

    incident_id: str | None = None
    channel_id: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What a command did: the incident after it and the events it produced."""

    record: IncidentRecord
    events: list[Event]

    @property
    def incident(self) -> Incident:
        return self.record.incident


class IncidentService:
    def __init__(
        self,
        *,
        store: Store,
        policy: Policy,
        clock: Clock,
        wake: Callable[[], None] = lambda: None,
        playbooks: PlaybookSet | None = None,
        directory: Directory | None = None,
        email: bool = False,
    ) -> None:
        """`email`: whether email can be sent (SMTP is configured); without it the
        severities' `email` addresses are not written to."""
        self.store = store
        self.email = email
        self.directory = directory
        self.policy = policy
        self.clock = clock
        self.playbooks = playbooks or PlaybookSet([builtin_generic()], policy=policy)
        self._wake = wake
        # (kind, seconds late, did something) of recent firings: read by metrics and benches.
        self.fired: deque[tuple[str, float, bool]] = deque(maxlen=100_000)

    # ---- helpers -----------------------------------------------------------------------
    def severity(self, word: str) -> Severity:
        found = self.policy.severity(word)
        if found is None:
            raise InvalidCommand(
                f"`{word}` is not a severity. Use one of: {self.policy.severity_words()}."
            )
        return found

    def _jobs_for(self, incident: Incident, events: list[Event]) -> list[NewJob]:
        state = snapshot(incident, self.policy)
        # Invitations first: a mention notifies only the members of a channel.
        jobs: list[NewJob] = self._reach_jobs(incident, events)
        for event in events:
            targets = _POSTS.get(event.kind, ())
            if incident.drill:
                targets = tuple(t for t in targets if t != ANNOUNCE)
            if targets:
                jobs.append(
                    NewJob(
                        JobKind.POST,
                        incident.id,
                        {
                            "template": str(event.kind),
                            "to": list(targets),
                            "event": {
                                "at": event.at.isoformat(),
                                "actor": event.actor,
                                **event.data,
                            },
                            "incident": state,
                        },
                    )
                )
            invitees = [
                user
                for user in (event.data.get("commander"), event.data.get("user"))
                if event.kind in (EventKind.COMMANDER_CHANGED, EventKind.ROLE_ASSIGNED) and user
            ]
            if invitees:
                jobs.append(NewJob(JobKind.INVITE, incident.id, {"users": invitees}))
        jobs += self._paging_jobs(incident, events)
        if any(event.kind in _SYNCS for event in events):
            jobs.append(NewJob(JobKind.SYNC, incident.id, {}))
        if any(e.kind in (EventKind.STEP_TICKED, EventKind.STEP_UNTICKED) for e in events):
            jobs.append(NewJob(JobKind.SYNC_PLAYBOOK, incident.id, {}))
        if any(event.kind == EventKind.RESOLVED for event in events):
            jobs.append(NewJob(JobKind.POSTMORTEM, incident.id, {"automatic": True}))
        jobs += self._email_jobs(incident, events)
        return jobs

    def _email_jobs(self, incident: Incident, events: list[Event]) -> list[NewJob]:
        """Emails to the severity's addresses: at declaration, on each published update and
        at resolution (with the published resolution text when there is one). Drills email
        nobody."""
        addresses = self.policy.get(incident.severity).email
        if not self.email or not addresses or incident.drill:
            return []
        kinds = [event.kind for event in events]
        published = [e for e in events if e.kind == EventKind.PUBLISHED]
        jobs: list[NewJob] = []
        for event in events:
            public: dict[str, Any] | None = None
            if event.kind == EventKind.DECLARED:
                what = "declared"
            elif event.kind == EventKind.RESOLVED:
                what = "resolved"
                public = published[-1].data if published else None
            elif event.kind == EventKind.PUBLISHED and EventKind.RESOLVED not in kinds:
                what, public = "update", event.data
            else:
                continue
            jobs.append(
                NewJob(
                    JobKind.EMAIL,
                    incident.id,
                    {
                        "to": list(addresses),
                        "what": what,
                        "at": event.at.isoformat(),
                        "id": incident.id,
                        "severity": incident.severity,
                        "public": public,
                        "internal": self._internal(incident)
                        if self.policy.email_details == "internal"
                        else None,
                    },
                )
            )
        return jobs

    def _internal(self, incident: Incident) -> dict[str, Any]:
        """What an email says of the incident beyond the published text, when the policy
        asks for it (`email_details: internal`)."""
        return {
            "title": incident.title,
            "severity_description": self.policy.get(incident.severity).description,
            "services": list(incident.services),
            "impact": incident.impact,
            "status": incident.status,
            "summary": incident.resolution_summary,
        }

    async def _project(self, tx: Tx, incident: Incident, events: list[Event]) -> None:
        """Published updates go to the status page's tables in the same transaction."""
        for event in events:
            if event.kind == EventKind.PUBLISHED:
                await tx.publish(incident.id, event.data, at=event.at)

    def _reach_jobs(self, incident: Incident, events: list[Event]) -> list[NewJob]:
        """The people the events page: invited to the channel and told directly."""
        return [
            NewJob(JobKind.PAGE, incident.id, page.payload())
            for page in paging.pages(incident, events, self.policy)
        ]

    def _paging_jobs(self, incident: Incident, events: list[Event]) -> list[NewJob]:
        """PagerDuty events (trigger, acknowledge, resolve), dedup key the incident id."""
        summary = f"[{incident.severity}] {incident.id}: {incident.title}"[:1000]
        jobs: list[NewJob] = []
        for action, key in paging.pagerduty_actions(incident, events):
            payload: dict[str, Any] = {"routing_key": key, "action": action, "summary": summary}
            if action == "trigger":
                payload["severity"] = incident.severity
            jobs.append(NewJob(JobKind.PAGERDUTY, incident.id, payload))
        return jobs

    async def _permission(self, action: str, by: str) -> Callable[[Incident], None]:
        """A guard for the policy's `permissions.<action>`: the user groups it names are
        looked up (through the directory, cached) before the transaction, so no lock is
        held while Slack answers."""
        allowed = self.policy.permissions.allowed(action) or []
        groups: set[str] = set()
        unknown: list[str] = []
        for entry in allowed:
            if not entry.startswith("S"):
                continue
            if self.directory is None:
                unknown.append(entry)
                continue
            try:
                if by in await self.directory.group_members(entry):
                    groups.add(entry)
            except LookupFailed:
                unknown.append(entry)

        def guard(incident: Incident) -> None:
            if self.policy.may(
                action, user=by, groups=groups, roles=incident.roles, commander=incident.commander
            ):
                return
            raise NotAllowed(_refusal(action, incident, allowed, unknown))

        return guard

    async def _load(self, tx: Tx, where: Where, *, lock: bool) -> IncidentRecord:
        record = await self._find_record(tx, where, lock=lock)
        logs.concerning(record.incident.id)  # this request's task: its lines name it
        return record

    async def _find_record(self, tx: Tx, where: Where, *, lock: bool) -> IncidentRecord:
        if where.incident_id:
            # Ids come back from buttons and forms, which a forged request can fill with
            # anything (a NUL is refused by PostgreSQL): only a well-formed id is looked up.
            well_formed = is_incident_id(where.incident_id)
            record = await tx.get(where.incident_id, lock=lock) if well_formed else None
            if record is None:
                raise NotFound(f"There is no incident {where.incident_id}.")
            return record
        record = await tx.by_channel(where.channel_id, lock=lock) if where.channel_id else None
        if record is None:
            raise NotFound(
                "This channel is not an incident channel. Run this in the incident's "
                "channel, or declare one with `/incident <severity> <title>`."
            )
        return record

    async def _apply(
        self,
        where: Where,
        change: Callable[[Incident, datetime], list[Event]],
        *,
        enrich: Callable[[Tx, Incident, list[Event]], Awaitable[None]] | None = None,
        guard: Callable[[Incident], None] | None = None,
        once: str | None = None,
    ) -> Outcome:
        """One command: load (locked), check, change, save state + timeline + jobs + timers.

        `guard` refuses (NotAllowed) before anything changes; `once` is a key (a form's view
        id) that makes a repeated submission change nothing."""
        now = self.clock.now()
        async with self.store.transaction() as tx:
            record = await self._load(tx, where, lock=True)
            if guard is not None:
                guard(record.incident)
            await _once(tx, once, now)
            events = change(record.incident, now)
            if enrich is not None:
                await enrich(tx, record.incident, events)
            await self.record_change(tx, record.incident, events, now)
        self._wake()
        return Outcome(record, events)

    async def record_change(
        self, tx: Tx, incident: Incident, events: list[Event], now: datetime
    ) -> None:
        """What every change to an incident records, in its transaction: its state, the
        events on its timeline (and the status page's tables), the Slack and paging work
        they cause, and its clocks re-planned. Commands, clocks and alerts all end here."""
        await tx.save(incident)
        await tx.add_events(incident.id, events)
        await self._project(tx, incident, events)
        await tx.enqueue(self._jobs_for(incident, events), now=now)
        await tx.replan_timers(incident.id, clocks.plan(incident, self.policy, now), now=now)

    def wake(self) -> None:
        """Tell the worker that work was recorded (after the transaction committed)."""
        self._wake()

    # ---- declaration -------------------------------------------------------------------
    async def declare(
        self,
        *,
        severity: str,
        title: str,
        by: str,
        origin_channel_id: str | None = None,
        response_url: str | None = None,
        services: list[str] | None = None,
        impact: str = "",
        drill: bool = False,
        tags: list[str] | None = None,
        once: str | None = None,
    ) -> Outcome:
        """Declare an incident. `once` (the declare form's view id) makes a repeated
        submission of the same form declare nothing more."""
        level = self.severity(severity)
        now = self.clock.now()
        async with self.store.declaring(now.date()) as (taken, tx):
            await _once(tx, once, now)
            record, events = await self.open_in(
                tx,
                number=taken,
                level=level,
                title=title,
                by=by,
                now=now,
                origin_channel_id=origin_channel_id,
                response_url=response_url,
                services=services,
                impact=impact,
                drill=drill,
                tags=tags,
            )
        incident = record.incident
        logs.concerning(incident.id)
        log.info("declared %s (%s)", incident.id, incident.severity)
        self._wake()
        return Outcome(record, events)

    async def open_in(
        self,
        tx: Tx,
        *,
        level: Severity,
        title: str,
        by: str,
        now: datetime,
        origin_channel_id: str | None = None,
        response_url: str | None = None,
        services: list[str] | None = None,
        impact: str = "",
        drill: bool = False,
        tags: list[str] | None = None,
        playbook: str | None = None,
        alert: dict[str, Any] | None = None,
        number: int | None = None,
    ) -> tuple[IncidentRecord, list[Event]]:
        """Declare an incident inside `tx`: the record, its timeline, the Slack work (channel,
        invitations, pages, alert, playbook, announcement, PagerDuty) and its clocks. Used by
        `declare` and by the alert intake, so an alert-declared incident pages exactly like
        a declared one. `playbook` names the playbook to post (default: the best match).
        `number`: the day's number taken beforehand (`Store.declaring`), if it was."""
        seq = number if number is not None else await tx.next_sequence(now.date())
        incident, events = Incident.declare(
            incident_id=incident_id(now.date(), seq),
            title=title,
            severity=level,
            by=by,
            now=now,
            services=services,
            impact=impact,
            drill=drill,
            tags=tags,
            alert=alert,
        )
        chosen, others = self.playbooks.pick(
            title=incident.title,
            services=incident.services,
            severity=incident.severity,
            named=playbook,
        )
        incident.playbook = chosen.id
        record = IncidentRecord(incident, SlackRefs(origin_channel_id=origin_channel_id))
        await tx.add_incident(record)
        await tx.add_events(incident.id, events)
        jobs = [
            NewJob(JobKind.CREATE_CHANNEL, incident.id, {"response_url": response_url}),
            NewJob(JobKind.INVITE, incident.id, {"users": [by]}),
            # The paged are invited before the alert mentions them (and told directly).
            *self._reach_jobs(incident, events),
            NewJob(JobKind.POST_ALERT, incident.id, {}),
            NewJob(JobKind.POST_PLAYBOOK, incident.id, {"others": others}),
        ]
        if self.policy.announce_channel and not drill:
            jobs.append(NewJob(JobKind.ANNOUNCE, incident.id, {}))
        if response_url:
            jobs.append(
                NewJob(
                    JobKind.RESPOND,
                    incident.id,
                    {"url": response_url, "template": "channel_ready"},
                )
            )
        jobs += self._paging_jobs(incident, events)
        jobs += self._email_jobs(incident, events)
        await tx.enqueue(jobs, now=now)
        planned = clocks.plan(incident, self.policy, now)
        await tx.replan_timers(incident.id, planned, now=now, new=True)
        return record, events

    # ---- commands on an incident (each one transaction through `_apply`) -----------------
    async def acknowledge(self, where: Where, *, by: str) -> Outcome:
        return await self._apply(where, lambda i, now: i.acknowledge(by=by, now=now))

    async def take_command(self, where: Where, *, by: str, user: str | None = None) -> Outcome:
        return await self._apply(where, lambda i, now: i.take_command(by=by, now=now, user=user))

    async def assign_role(self, where: Where, *, by: str, role: str, user: str) -> Outcome:
        return await self._apply(
            where,
            lambda i, now: i.assign_role(by=by, role=role, user=user, now=now, policy=self.policy),
        )

    async def set_status(self, where: Where, *, by: str, status: str) -> Outcome:
        return await self._apply(
            where, lambda i, now: i.set_status(by=by, status=status, now=now, policy=self.policy)
        )

    async def change_severity(self, where: Where, *, by: str, severity: str) -> Outcome:
        level = self.severity(severity)
        may_lower = await self._permission("lower_severity", by)

        def guard(incident: Incident) -> None:
            if self.policy.rank(level.name) > self.policy.rank(incident.severity):
                may_lower(incident)

        return await self._apply(
            where,
            lambda i, now: i.change_severity(by=by, severity=level, now=now, policy=self.policy),
            guard=guard,
        )

    async def post_update(
        self,
        where: Where,
        *,
        by: str,
        text: str,
        status: str | None = None,
        next_steps: str = "",
        impact: str = "",
        form: bool = False,
        once: str | None = None,
    ) -> Outcome:
        return await self._apply(
            where,
            lambda i, now: i.post_update(
                by=by,
                text=text,
                now=now,
                policy=self.policy,
                status=status,
                next_steps=next_steps,
                impact=impact,
                form=form,
            ),
            once=once,
        )

    async def add_note(self, where: Where, *, by: str, text: str) -> Outcome:
        return await self._apply(where, lambda i, now: i.add_note(by=by, text=text, now=now))

    async def escalate(
        self, where: Where, *, by: str, reason: str = "", seen: str | None = None
    ) -> Outcome:
        """Escalate one level; `seen` is the level a button was rendered for (stale: no-op)."""
        return await self._apply(
            where,
            lambda i, now: i.escalate(by=by, now=now, policy=self.policy, reason=reason, seen=seen),
        )

    async def resolve(
        self,
        where: Where,
        *,
        by: str,
        summary: str,
        root_cause: str = "",
        public_text: str = "",
        once: str | None = None,
    ) -> Outcome:
        """Resolve; a public incident publishes its resolution too (`public_text`, or the
        usual resolution message). Whoever may resolve publishes it: the page must never
        show an ended incident as ongoing."""
        return await self._apply(
            where,
            lambda i, now: i.resolve(
                by=by, summary=summary, root_cause=root_cause, now=now, public_text=public_text
            ),
            enrich=self._drill_report,
            guard=await self._permission("resolve", by),
            once=once,
        )

    async def publish(
        self,
        where: Where,
        *,
        by: str,
        text: str,
        title: str = "",
        components: dict[str, str] | None = None,
        merge: bool = False,
        once: str | None = None,
    ) -> Outcome:
        """A customer-facing update on the status page (`components`: name → state, checked
        against the policy's `status_page.components`; None keeps the current ones, and a
        first publish proposes those of the incident's services). `merge`: the components
        named change and the others stay (the typed command); otherwise they are the whole
        list (the form), where an operational component is kept only if it was affected."""
        checked = (
            statuspage.check_components(self.policy, components) if components is not None else None
        )

        def change(incident: Incident, now: datetime) -> list[Event]:
            chosen = checked
            if chosen is not None and merge:
                chosen = {**incident.components, **chosen}
            elif chosen is not None:
                chosen = {
                    name: state
                    for name, state in chosen.items()
                    if state != statuspage.OPERATIONAL or name in incident.components
                }
            if chosen is None and not incident.public:
                state = statuspage.default_state(self.policy, incident.severity)
                suggested = statuspage.suggested_components(self.policy, incident.services)
                chosen = {name: state for name in suggested}
            return incident.publish(by=by, text=text, now=now, title=title, components=chosen)

        return await self._apply(
            where, change, guard=await self._permission("publish", by), once=once
        )

    async def _drill_report(self, tx: Tx, incident: Incident, events: list[Event]) -> None:
        """A drill's resolution carries the team's times against the policy's targets."""
        if not incident.drill:
            return
        entries = await tx.timeline(incident.id)
        report = drill_report(incident, entries, self.policy)
        for event in events:
            if event.kind == EventKind.RESOLVED:
                event.data["drill_report"] = report

    async def snooze(
        self, where: Where, *, by: str, duration: str, seen_due: datetime | None = None
    ) -> Outcome:
        """Postpone the update nudge; `seen_due` is the due time a nudge's button was
        rendered for (once answered, its buttons are stale)."""
        try:
            delta = parse_duration(duration)
        except ValueError:
            raise InvalidCommand(
                f"`{duration}` is not a duration. Write `/incident snooze 30m` (or 15m, 1h)."
            ) from None
        return await self._apply(
            where,
            lambda i, now: i.snooze(
                by=by, duration=delta, now=now, policy=self.policy, seen_due=seen_due
            ),
        )

    async def tag(self, where: Where, *, by: str, tag: str) -> Outcome:
        return await self._apply(where, lambda i, now: i.tag(by=by, tag=tag, now=now))

    async def complete(self, where: Where, *, by: str, duty: str) -> Outcome:
        guard = (
            await self._permission("close_compliance", by)
            if duty.startswith("compliance:")
            else None
        )
        return await self._apply(
            where,
            lambda i, now: i.complete(by=by, duty=duty, now=now, policy=self.policy),
            guard=guard,
        )

    # ---- the record --------------------------------------------------------------------
    async def add_action(self, where: Where, *, by: str, text: str) -> Outcome:
        body, owner, due = parse_action(
            text, now=self.clock.now(), default_due=self.policy.followups.action_review
        )
        return await self._apply(
            where,
            lambda i, now: i.add_action(by=by, text=body, owner=owner, due=due, now=now),
        )

    async def complete_action(self, where: Where, *, by: str, number: int) -> Outcome:
        return await self._apply(
            where, lambda i, now: i.complete_action(by=by, number=number, now=now)
        )

    async def set_ticks(self, where: Where, *, by: str, group: int, selected: list[str]) -> Outcome:
        """A checklist group (ten steps from `group`) was changed; `selected` are the steps
        ticked now. Each step whose state changed becomes a timeline entry."""

        def change(incident: Incident, now: datetime) -> list[Event]:
            playbook = self.playbooks.get(incident.playbook or "")
            if playbook is None:
                raise NotFound("This incident has no playbook checklist.")
            events: list[Event] = []
            for step in playbook.steps[group : group + 10]:
                step_id = step.id
                checked = step_id in selected
                if checked != (step_id in incident.ticks):
                    events += incident.tick(
                        by=by, step=step_id, text=step.text, checked=checked, now=now
                    )
            if not events:
                raise NothingToDo("Nothing changed on the checklist.")
            return events

        return await self._apply(where, change)

    async def capture(
        self,
        *,
        channel_id: str,
        ts: str,
        author: str | None,
        text: str,
        permalink: str,
        pinned_by: str,
    ) -> bool:
        """A message pinned with 📌 joins the timeline at its own time, once."""
        async with self.store.transaction() as tx:
            record = await tx.by_channel(channel_id)
            if record is None:
                return False
            entry = TimelineEntry(
                incident_id=record.incident.id,
                at=datetime.fromtimestamp(float(ts), tz=UTC),
                kind=str(EventKind.MESSAGE_PINNED),
                actor=author,
                data={
                    "text": strip_controls(text)[:3000],
                    "permalink": permalink,
                    "ts": ts,
                    "by": pinned_by,
                },
            )
            return await tx.add_entry(entry, source_key=_pin_key(channel_id, ts))

    async def request_capture(self, *, channel_id: str, ts: str, by: str) -> bool:
        """Someone pinned a message with 📌: fetching it is Slack work, done by the worker."""
        now = self.clock.now()
        async with self.store.transaction() as tx:
            record = await tx.by_channel(channel_id)
            if record is None:
                return False
            await tx.enqueue(
                [
                    NewJob(
                        JobKind.CAPTURE,
                        record.incident.id,
                        {"channel": channel_id, "ts": ts, "by": by},
                    )
                ],
                now=now,
            )
        self._wake()
        return True

    async def uncapture(self, *, channel_id: str, ts: str, unmark: bool = False) -> bool:
        """The 📌 was taken off (`unmark`: the bot's ✅ goes too) or the message deleted."""
        async with self.store.transaction() as tx:
            removed = await tx.remove_entry(_pin_key(channel_id, ts))
            record = await tx.by_channel(channel_id) if removed and unmark else None
            if record is not None:
                job = NewJob(
                    JobKind.CAPTURE,
                    record.incident.id,
                    {"channel": channel_id, "ts": ts, "undo": True},
                )
                await tx.enqueue([job], now=self.clock.now())
        if record is not None:
            self._wake()
        return removed

    async def recapture(self, *, channel_id: str, ts: str, text: str) -> bool:
        """The pinned message was edited: the entry follows it."""
        async with self.store.transaction() as tx:
            return await tx.edit_entry(
                _pin_key(channel_id, ts), text=strip_controls(text)[:3000], edited=True
            )

    async def postmortem(
        self, incident_id: str, *, name: Callable[[str], str] | None = None
    ) -> tuple[str, str]:
        """The post-mortem draft of an incident: (file name, Markdown)."""
        async with self.store.transaction(read_only=True) as tx:
            record = await tx.get(incident_id) if is_incident_id(incident_id) else None
            if record is None:
                raise NotFound(f"There is no incident {incident_id}.")
            entries = await tx.timeline(record.incident.id)
        incident = record.incident
        markdown = build_postmortem(
            incident,
            entries,
            incident.actions,
            policy=self.policy,
            now=self.clock.now(),
            name=name,
        )
        return postmortem_filename(incident), markdown

    async def request_postmortem(self, where: Where, *, by: str) -> IncidentRecord:
        now = self.clock.now()
        async with self.store.transaction() as tx:
            record = await self._load(tx, where, lock=False)
            await tx.enqueue([NewJob(JobKind.POSTMORTEM, record.incident.id, {"by": by})], now=now)
        self._wake()
        return record

    async def stats(self, window: str) -> Stats:
        now = self.clock.now()
        since = now - parse_window(window)
        async with self.store.transaction(read_only=True) as tx:
            records = await tx.declared_since(since)
            entries = await tx.timelines([r.incident.id for r in records])
        pairs = [(r.incident, entries[r.incident.id]) for r in records]
        return compute_stats(pairs, policy=self.policy, since=since, now=now)

    # ---- clocks ------------------------------------------------------------------------
    async def fire_due_timers(
        self, *, worker: str, limit: int = 50, lease_seconds: int = 60
    ) -> int:
        """Fire every due timer (each exactly once, even with several processes)."""
        async with self.store.transaction(autocommit=True) as tx:  # one statement
            claimed = await tx.claim_timers(
                now=self.clock.now(), worker=worker, limit=limit, lease_seconds=lease_seconds
            )
        together = len(claimed) > 1 and await self._fire_together(claimed, worker=worker)
        for timer in [] if together else claimed:
            try:
                await self._fire(timer, worker=worker)
            except Exception as exc:  # one bad timer must not stall the others
                if not await self.store.ping():
                    raise  # the database is away, not the timer: it fires once it is back
                log.exception(
                    "timer %s of %s could not fire; recorded as failed",
                    timer.timer.key,
                    timer.incident_id,
                )
                reason = f"{type(exc).__name__}: {exc}"
                async with self.store.transaction() as tx:
                    held = await tx.fail_timer(
                        timer.id, worker=worker, now=self.clock.now(), error=reason
                    )
                    if held:
                        # Said where people look: a clock they count on will not tick.
                        notice = NewJob(
                            JobKind.POST,
                            timer.incident_id,
                            {
                                "template": CLOCK_FAILED,
                                "to": [CHANNEL],
                                "event": {"clock": timer.timer.key, "reason": str(exc)[:300]},
                                "incident": {"id": timer.incident_id},
                            },
                        )
                        await tx.enqueue([notice], now=self.clock.now())
        if claimed:
            self._wake()
        return len(claimed)

    async def _fire_together(self, claimed: list[ClaimedTimer], *, worker: str) -> bool:
        """Fire a batch of timers in one transaction (their incidents locked in id order, as
        every worker does, so two never wait on each other). False when one of them raised:
        the whole batch is rolled back and the caller fires them one by one, so that one bad
        timer stays one failure."""
        now = self.clock.now()
        fired: list[tuple[ClaimedTimer, list[Event] | None]] = []
        try:
            async with self.store.transaction() as tx:
                for timer in sorted(claimed, key=lambda t: (t.incident_id, t.id)):
                    with logs.about(timer.incident_id):
                        fired.append((timer, await self._fire_in(tx, timer, worker, now)))
        except Exception:  # told again, with the reason, when fired one by one
            log.debug("a batch of %d timers is fired one by one", len(claimed), exc_info=True)
            return False
        for timer, events in fired:
            with logs.about(timer.incident_id):
                self._fired(timer, events, now)
        return True

    async def _fire(self, claimed: ClaimedTimer, *, worker: str) -> None:
        with logs.about(claimed.incident_id):
            now = self.clock.now()
            async with self.store.transaction() as tx:
                events = await self._fire_in(tx, claimed, worker, now)
            self._fired(claimed, events, now)

    async def _fire_in(
        self, tx: Tx, claimed: ClaimedTimer, worker: str, now: datetime
    ) -> list[Event] | None:
        """Fire one claimed timer inside `tx`, under its incident's lock: the events it made
        (none: moot), or None when it is not this worker's to fire any more (another took
        it over after its lease) or its incident is gone."""
        record = await tx.get(claimed.incident_id, lock=True)
        if not await tx.mark_fired(claimed.id, worker=worker, now=now):
            log.warning(
                "timer %s of %s was claimed elsewhere", claimed.timer.key, claimed.incident_id
            )
            return None
        if record is None:
            return None
        incident = record.incident
        if self.policy.severity(incident.severity) is None:
            raise InvalidCommand(
                f"{incident.severity} is no longer in the policy; change the incident's "
                "severity to one that is"
            )
        events = clocks.fire(incident, claimed.timer, self.policy, now)
        if events:
            await self.record_change(tx, incident, events, now)
        else:  # moot: nothing changed, but what the clocks should be may have
            await tx.replan_timers(incident.id, clocks.plan(incident, self.policy, now), now=now)
        return events

    def _fired(self, claimed: ClaimedTimer, events: list[Event] | None, now: datetime) -> None:
        if events is None:
            return
        lateness = (now - claimed.timer.due).total_seconds()
        log.info(
            "fired %s for %s (%.2fs after due)%s",
            claimed.timer.key,
            claimed.incident_id,
            lateness,
            "" if events else "; moot",
        )
        self.fired.append((claimed.timer.kind, lateness, bool(events)))

    async def next_timer_due(self) -> datetime | None:
        async with self.store.transaction(read_only=True) as tx:
            return await tx.next_timer_due()

    # ---- queries -----------------------------------------------------------------------
    async def find(self, where: Where) -> IncidentRecord:
        async with self.store.transaction(read_only=True) as tx:
            return await self._load(tx, where, lock=False)

    async def open_incidents(self) -> list[IncidentRecord]:
        async with self.store.transaction(read_only=True) as tx:
            return await tx.open_incidents()

    async def timeline(self, incident_id: str) -> list[TimelineEntry]:
        async with self.store.transaction(read_only=True) as tx:
            return await tx.timeline(incident_id)

    async def status_view(self) -> statuspage.StatusView:
        """The status page: public incidents still open or of the last 14 days."""
        now = self.clock.now()
        async with self.store.transaction(read_only=True) as tx:
            found = await tx.public_incidents(since=statuspage.history_since(now))
        return statuspage.build_view(self.policy, found, now)
