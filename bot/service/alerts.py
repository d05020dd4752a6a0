"""Alerts in: an alert group becomes an incident, or joins the incident it belongs to.

One short transaction per request, so monitoring gets its answer at once and the Slack work
goes through the job outbox (a Slack outage never makes Alertmanager retry into duplicates):

1. The keys of the request (each alert's, and the Alertmanager group's) are claimed: a row
   per key is inserted unless there is one, then locked. A second request carrying the same
   keys, on this process or another replica, waits for this transaction and then sees the
   incident it recorded. This, not a check in memory, is what keeps one incident per group.
2. If a key belongs to an open incident, the request joins it: alerts new to it ("fired
   again" with a new start, another alert of the group) and alerts that stopped firing become
   timeline entries and messages in its channel. A notification that brings nothing new
   (Alertmanager re-sending the group every `repeat_interval`, or retrying) changes nothing.
3. Otherwise, a firing alert that is new (never seen, or fired again since it resolved)
   declares an incident as the bot, with the severity the policy's rules give (see
   `bot.domain.alerts`), paging like any declaration. If its keys belonged to an incident
   already resolved, the new one links to it ("fired again 2h after INC-… was resolved").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot import logs
from bot.domain import alerts as domain
from bot.domain.alerts import Alert, AlertGroup, Decision
from bot.domain.incident import Event, Incident
from bot.domain.policy import Policy
from bot.playbooks import PlaybookSet
from bot.service.incidents import IncidentService
from bot.service.ports import AlertKey, IncidentRecord, Tx

log = logging.getLogger(__name__)

DECLARED, JOINED, UNCHANGED, IGNORED = "declared", "joined", "unchanged", "ignored"


@dataclass(frozen=True)
class Receipt:
    """What a request did, as the HTTP answer says it."""

    status: str  # declared | joined | unchanged | ignored
    detail: str
    incident: str | None = None
    firing: int = 0
    resolved: int = 0
    ignored: list[str] = field(default_factory=list)  # why alerts declared nothing

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status, "detail": self.detail}
        if self.incident:
            body["incident"] = self.incident
            body["firing"] = self.firing
        if self.resolved:
            body["resolved"] = self.resolved
        if self.ignored:
            body["ignored"] = self.ignored[:20]
        return body


class IdentityUnknown(Exception):
    """The bot does not know its own Slack user yet (Slack has not answered auth.test)."""


class AlertService:
    """Turns alert groups into incidents; `bot_user` says who the bot is in Slack (the
    declarer and actor of everything an alert does)."""

    def __init__(self, incidents: IncidentService, *, bot_user: Callable[[], str | None]) -> None:
        self.incidents = incidents
        self.bot_user = bot_user

    async def receive(self, group: AlertGroup) -> Receipt:
        """Record what the group says, in one transaction; see the module's docstring."""
        bot = self.bot_user()
        if not bot:
            raise IdentityUnknown("the bot's Slack user is not known yet")
        service = self.incidents
        now = service.clock.now()
        keys = [alert.store_key for alert in group.alerts]
        if group.store_key:
            keys.append(group.store_key)
        async with service.store.transaction() as tx:
            rows = await tx.claim_alert_keys(keys, now=now)
            records = await _records(tx, rows)
            target = _open_incident(group, rows, records)
            if target is None:
                receipt = await self._declare(tx, group, rows, records, bot=bot, now=now)
            else:
                receipt = await self._join(tx, group, rows, records[target], bot=bot, now=now)
            await tx.drop_unclaimed_alert_keys(keys)
        if receipt.incident:
            logs.concerning(receipt.incident)
        if receipt.status in (DECLARED, JOINED):
            service.wake()
        log.info(
            "alerts from %s: %s%s (%d firing, %d resolved read)",
            domain.SOURCES.get(group.source),
            receipt.status,
            f" {receipt.incident}" if receipt.incident else "",
            len(group.firing),
            len(group.resolved),
        )
        for reason in receipt.ignored[:5]:
            log.info("alert ignored: %s", reason)
        return receipt

    async def _declare(
        self,
        tx: Tx,
        group: AlertGroup,
        rows: dict[str, AlertKey],
        records: dict[str, IncidentRecord],
        *,
        bot: str,
        now: datetime,
    ) -> Receipt:
        """No open incident holds these alerts: declare one if a firing alert is new."""
        service = self.incidents
        policy = service.policy
        fresh = [a for a in group.firing if _new(rows.get(a.store_key), a, None)]
        resolved = _settle_resolved(group, rows)
        ignored: list[str] = []
        best: Decision | None = None
        for alert in fresh:
            decision = domain.decide(alert, policy)
            if decision.severity is None:
                ignored.append(f"{alert.name}: {decision.reason}")
            elif best is None or policy.rank(decision.severity) < policy.rank(best.severity or ""):
                best = decision
        if best is None or best.severity is None:
            await tx.set_alert_keys(resolved, now=now)
            if fresh:
                return Receipt(IGNORED, "no alert declares an incident", ignored=ignored)
            previous = _previous(rows, records)
            if group.firing and previous is not None:
                detail = (
                    f"nothing new: these alerts kept firing since before {previous.id} was "
                    "resolved; one that fires again opens a new incident"
                )
            elif group.firing:
                detail = "nothing new: these alerts were already recorded"
            else:
                detail = "no firing alert, and no open incident holds these alerts"
            return Receipt(UNCHANGED if rows_known(rows) else IGNORED, detail, ignored=ignored)
        details = best.alert.details()
        details["firing"] = len(group.firing)
        if group.truncated:
            details["truncated"] = group.truncated
        previous = _previous(rows, records)
        if previous is not None:
            details["previous"] = {
                "id": previous.id,
                "resolved_at": previous.resolved_at.isoformat() if previous.resolved_at else None,
            }
        record, _events = await service.open_in(
            tx,
            level=policy.get(best.severity),
            title=best.title,
            by=bot,
            now=now,
            services=best.services,
            playbook=best.playbook,
            alert=details,
        )
        incident_id = record.incident.id
        await tx.set_alert_keys(
            [
                *(AlertKey(a.store_key, incident_id, True, a.starts_at) for a in group.firing),
                *resolved,
                *_group_key(group, incident_id),
            ],
            now=now,
        )
        log.info(
            "declared %s (%s) from %s: %s",
            incident_id,
            best.severity,
            domain.SOURCES.get(group.source),
            best.reason,
        )
        return Receipt(
            DECLARED,
            f"declared {best.severity}, from {best.reason}",
            incident=incident_id,
            firing=len(group.firing),
            ignored=ignored,
        )

    async def _join(
        self,
        tx: Tx,
        group: AlertGroup,
        rows: dict[str, AlertKey],
        record: IncidentRecord,
        *,
        bot: str,
        now: datetime,
    ) -> Receipt:
        """An open incident holds these alerts: what is new joins its timeline."""
        service = self.incidents
        incident = record.incident
        fired = [a for a in group.firing if _new(rows.get(a.store_key), a, incident.id)]
        stopped = [
            a
            for a in group.resolved
            if (row := rows.get(a.store_key)) is not None
            and row.incident_id == incident.id
            and row.firing
        ]
        others = [
            row
            for row in _settle_resolved(group, rows)
            if row.key not in {a.store_key for a in stopped}
        ]
        await tx.set_alert_keys(
            [
                *(AlertKey(a.store_key, incident.id, True, a.starts_at) for a in fired),
                *(AlertKey(a.store_key, incident.id, False, a.starts_at) for a in stopped),
                *others,
                *_group_key(group, incident.id),
            ],
            now=now,
        )
        if not fired and not stopped:
            return Receipt(
                UNCHANGED,
                f"nothing new for {incident.id}",
                incident=incident.id,
                firing=await tx.firing_alerts(incident.id),
            )
        firing = await tx.firing_alerts(incident.id)
        events: list[Event] = []
        events += incident.alerts_fired(
            by=bot,
            alerts=[_brief(a, again=_was_in(rows, a, incident.id)) for a in fired],
            firing=firing,
            now=now,
        )
        events += incident.alerts_resolved(
            by=bot, alerts=[_brief(a) for a in stopped], firing=firing, now=now
        )
        if incident.alert:  # the alert message shows how many fire now
            incident.alert = {**incident.alert, "firing": firing}
        await service.record_change(tx, incident, events, now)
        return Receipt(
            JOINED,
            f"joined {incident.id}: {len(fired)} alert(s) fired, {len(stopped)} resolved",
            incident=incident.id,
            firing=firing,
            resolved=len(stopped),
        )


def dry_run(group: AlertGroup, policy: Policy, playbooks: PlaybookSet) -> list[str]:
    """What the group would declare, in words, without doing it (`python -m bot alerts
    test`). The database is not consulted: this says what the rules do with these alerts;
    an open incident already holding them would take them in instead."""
    best, decisions = domain.decide_group(group, policy)
    lines = [
        f"{len(group.alerts)} alert(s) read from {domain.SOURCES.get(group.source)}: "
        f"{len(group.firing)} firing, {len(group.resolved)} resolved"
        + (f"; {group.truncated} more not read" if group.truncated else "")
    ]
    lines += [f"  {_said(decision)}" for decision in decisions]
    lines += [
        f"  {alert.name} ({alert.key}): resolved: said in its incident's channel, if it has one"
        for alert in group.resolved
    ]
    if best is None or best.severity is None:
        lines.append("would declare nothing" + ("" if decisions else ": no alert is firing"))
        return lines
    severity = policy.get(best.severity)
    playbook, _ = playbooks.pick(
        title=best.title, services=best.services, severity=severity.name, named=best.playbook
    )
    targets = ", ".join(severity.declaration_targets) or "nobody (no targets in the policy)"
    lines.append(
        f"would declare {severity.name}: {best.title!r} (services: "
        f"{', '.join(best.services) or 'none'}; playbook: {playbook.id}; paging {targets}), "
        "unless an open incident already holds these alerts: then they join it"
    )
    return lines


def rows_known(rows: dict[str, AlertKey]) -> bool:
    """Whether any of the keys was seen before (belongs to some incident)."""
    return any(row.incident_id for row in rows.values())


async def _records(tx: Tx, rows: dict[str, AlertKey]) -> dict[str, IncidentRecord]:
    """The incidents the keys belong to (open ones locked, as any command locks them)."""
    found: dict[str, IncidentRecord] = {}
    for incident_id in dict.fromkeys(r.incident_id for r in rows.values() if r.incident_id):
        record = await tx.get(incident_id, lock=True)
        if record is not None:
            found[incident_id] = record
    return found


def _open_incident(
    group: AlertGroup, rows: dict[str, AlertKey], records: dict[str, IncidentRecord]
) -> str | None:
    """The open incident these alerts belong to: the group's, else the first alert's."""
    order = [group.store_key] if group.store_key else []
    order += [a.store_key for a in group.alerts]
    for key in order:
        row = rows.get(key or "")
        if row is None or row.incident_id is None:
            continue
        record = records.get(row.incident_id)
        if record is not None and record.incident.is_open:
            return row.incident_id
    return None


def _previous(rows: dict[str, AlertKey], records: dict[str, IncidentRecord]) -> Incident | None:
    """Of the resolved incidents these alerts belonged to, the last resolved."""
    closed = [
        records[r.incident_id].incident
        for r in rows.values()
        if r.incident_id in records and not records[r.incident_id].incident.is_open
    ]
    return max(closed, key=lambda i: i.resolved_at or i.declared_at, default=None)


def _new(row: AlertKey | None, alert: Alert, incident_id: str | None) -> bool:
    """Whether a firing alert brings news: never seen, fired again (another start than the
    one recorded; without a start, any firing after it stopped), or new to `incident_id`
    (None: to any incident). A firing notice with the start already recorded for an alert
    that stopped was sent before it stopped and arrived late (a retry): not news."""
    if row is None or row.incident_id is None:
        return True
    if incident_id is not None and row.incident_id != incident_id:
        return True
    if not row.firing and alert.starts_at is None:
        return True
    return row.starts_at != alert.starts_at


def _settle_resolved(group: AlertGroup, rows: dict[str, AlertKey]) -> list[AlertKey]:
    """Resolved alerts no longer fire, whichever incident they belong to."""
    return [
        AlertKey(row.key, row.incident_id, False, row.starts_at)
        for alert in group.resolved
        if (row := rows.get(alert.store_key)) is not None and row.incident_id and row.firing
    ]


def _group_key(group: AlertGroup, incident_id: str) -> list[AlertKey]:
    if not group.store_key:
        return []
    return [AlertKey(group.store_key, incident_id, True, None)]


def _was_in(rows: dict[str, AlertKey], alert: Alert, incident_id: str) -> bool:
    row = rows.get(alert.store_key)
    return row is not None and row.incident_id == incident_id


def _brief(alert: Alert, *, again: bool = False) -> dict[str, Any]:
    """What a timeline entry keeps of an alert that fired (`again`: it had fired in this
    incident before) or resolved."""
    return {
        "again": again,
        "name": alert.name,
        "key": alert.key,
        "summary": domain.cut(alert.summary, 300),
        "url": alert.url,
        "started_at": alert.starts_at.isoformat() if alert.starts_at else None,
        "ended_at": alert.ends_at.isoformat() if alert.ends_at else None,
    }


def _said(decision: Decision) -> str:
    alert = decision.alert
    head = f"{alert.name} ({alert.key}): firing"
    if decision.severity is None:
        return f"{head}: ignored: {decision.reason}"
    return f"{head}: {decision.severity}, from {decision.reason}"
