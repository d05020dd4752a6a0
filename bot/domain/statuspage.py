"""The public status page, pure: component states, the customer-communication template, and
the public shape of what was published (the JSON that Statuspage-hosted pages serve).

Nothing here reads the incident's internal record: the page is built only from what someone
published (a public title, the affected components and their state, the message), so an
internal title, a channel, a person or an unpublished word can never reach it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.domain.errors import InvalidCommand
from bot.domain.policy import Policy, human_duration
from bot.domain.text import joined

OPERATIONAL = "operational"
DEGRADED = "degraded_performance"
PARTIAL = "partial_outage"
MAJOR = "major_outage"
# Least to most severe: the order decides which state a component shows when several
# public incidents touch it.
COMPONENT_STATES = (OPERATIONAL, DEGRADED, PARTIAL, MAJOR)
STATE_LABELS = {
    OPERATIONAL: "Operational",
    DEGRADED: "Degraded performance",
    PARTIAL: "Partial outage",
    MAJOR: "Major outage",
}
# Words people type for a state (`Payments=partial`).
_STATE_WORDS = {
    "operational": OPERATIONAL,
    "ok": OPERATIONAL,
    "degraded": DEGRADED,
    "degraded_performance": DEGRADED,
    "partial": PARTIAL,
    "partial_outage": PARTIAL,
    "major": MAJOR,
    "major_outage": MAJOR,
    "outage": MAJOR,
}
# A component's state → the impact of an incident (Statuspage's `impact` values).
_IMPACT = {OPERATIONAL: "none", DEGRADED: "minor", PARTIAL: "major", MAJOR: "critical"}
IMPACTS = ("none", "minor", "major", "critical")
# The page's overall state (`status.indicator`) and how it is said.
INDICATOR_TEXT = {
    "none": "All Systems Operational",
    "minor": "Minor Service Outage",
    "major": "Partial System Outage",
    "critical": "Major System Outage",
}
# Public incident statuses (Statuspage's), from the incident's own status.
_PUBLIC_STATUS = {
    "investigating": "investigating",
    "identified": "identified",
    "mitigating": "identified",
    "monitoring": "monitoring",
    "resolved": "resolved",
}
HISTORY_DAYS = 14
PUBLIC_TITLE_MAX = 200
PUBLIC_TEXT_MAX = 2900


def public_status(status: str) -> str:
    """The public status for an incident status (a status of a custom policy that Statuspage
    does not know reads as `investigating`)."""
    return _PUBLIC_STATUS.get(status.lower(), "investigating")


def parse_state(word: str) -> str:
    """`partial`, `partial_outage`, `Partial outage` → `partial_outage`."""
    key = "_".join(word.strip().lower().replace("-", " ").split())
    found = _STATE_WORDS.get(key)
    if found is None:
        raise InvalidCommand(
            f"`{word}` is not a component state. Use operational, degraded, partial or major "
            "(degraded performance, partial outage, major outage)."
        )
    return found


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def component_names(policy: Policy) -> list[str]:
    return [c.name for c in policy.status_page.components] if policy.status_page else []


def known_component(policy: Policy, name: str) -> str:
    """The policy's component that `name` names (case, spaces, `-` and `_` do not matter);
    refused, naming the known ones, when there is none."""
    wanted = _key(name)
    for known in component_names(policy):
        if wanted and _key(known) == wanted:
            return known
    names = component_names(policy)
    known_text = ", ".join(names) if names else "none (the policy has no `status_page.components`)"
    raise InvalidCommand(
        f"There is no status-page component `{name}`. Known components: {known_text}."
    )


def check_components(policy: Policy, components: dict[str, str]) -> dict[str, str]:
    """Components by their policy name with valid states; unknown names and states refused."""
    checked: dict[str, str] = {}
    for name, state in components.items():
        proper = known_component(policy, name)
        checked[proper] = state if state in COMPONENT_STATES else parse_state(state)
    return checked


def suggested_components(policy: Policy, services: list[str]) -> list[str]:
    """The components whose `services` include one of the incident's services."""
    if policy.status_page is None:
        return []
    mine = {_key(s) for s in services}
    return [c.name for c in policy.status_page.components if mine & {_key(s) for s in c.services}]


def default_state(policy: Policy, severity: str) -> str:
    """The state proposed for an affected component: the most severe level a major outage,
    the next a partial outage, the others degraded performance."""
    rank = policy.rank(severity)
    return MAJOR if rank == 0 else PARTIAL if rank == 1 else DEGRADED


def affected(components: dict[str, str]) -> list[str]:
    return [name for name, state in components.items() if state != OPERATIONAL]


def _listed(names: list[str]) -> str:
    return joined(names) or "some of our services"


def default_title(components: dict[str, str]) -> str:
    """A public title that says what customers see, never the internal title."""
    names = affected(components)
    return f"Service disruption affecting {_listed(names)}" if names else "Service disruption"


def customer_template(components: dict[str, str], update_interval: timedelta | None) -> str:
    """The customer-communication message, pre-filled: what is affected, what we are doing,
    when the next update comes."""
    names = affected(components)
    cadence = (
        f"We will post an update every {human_duration(update_interval)} until it is resolved."
        if update_interval
        else "We will post updates here as we learn more."
    )
    return (
        f"We are currently experiencing issues with {_listed(names)}. Our team is "
        f"investigating and working on a resolution. {cadence}\n\n"
        f"Affected services: {', '.join(names) if names else 'under investigation'}\n"
        "Estimated resolution: under investigation\n"
        "Workaround: none at the moment\n\n"
        "We apologize for the inconvenience."
    )


def resolution_template(components: dict[str, str]) -> str:
    """The public resolution message a resolve form proposes."""
    names = [name for name in components] or []
    return (
        f"This incident has been resolved: {_listed(names)} "
        f"{'is' if len(names) == 1 else 'are'} working normally again. "
        "We apologize for the inconvenience and thank you for your patience."
    )


def impact_of(components: dict[str, str]) -> str:
    """An incident's impact: that of its worst component (`minor` when it names none)."""
    worst = max(
        (COMPONENT_STATES.index(s) for s in components.values() if s in COMPONENT_STATES),
        default=0,
    )
    return _IMPACT[COMPONENT_STATES[worst]] if worst else "minor"


def parse_typed(policy: Policy, text: str) -> tuple[dict[str, str], str]:
    """`/incident publish [Component=state …] <message>`: the leading `name=state` words
    (a name with spaces written with `-` or `_`, or quoted) and the message after them."""
    components: dict[str, str] = {}
    rest = text.strip()
    pattern = re.compile(r'^(?:"([^"]+)"|([^\s=]+))=(\S+)(?:\s+|$)')
    while True:
        match = pattern.match(rest)
        if match is None:
            break
        name = match.group(1) or match.group(2)
        components[known_component(policy, name)] = parse_state(match.group(3))
        rest = rest[match.end() :]
    return components, rest.strip()


def stable_id(*parts: str) -> str:
    """A short, stable public id (no internal id is shown)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return digest[:12]


# ---- the page, as read from the store ------------------------------------------------------
@dataclass(frozen=True)
class PublicUpdate:
    id: int
    at: datetime
    status: str
    body: str
    components: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PublicIncident:
    key: str  # the internal id: never shown, only hashed into `id`
    title: str
    status: str
    impact: str
    components: dict[str, str]
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    updates: list[PublicUpdate] = field(default_factory=list)  # newest first

    @property
    def id(self) -> str:
        return stable_id("incident", self.key)

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


@dataclass(frozen=True)
class ComponentView:
    name: str
    description: str
    status: str
    position: int

    @property
    def id(self) -> str:
        return stable_id("component", self.name)

    @property
    def label(self) -> str:
        return STATE_LABELS[self.status]


@dataclass(frozen=True)
class StatusView:
    """Everything the page shows: built from public incidents only."""

    title: str
    now: datetime
    components: list[ComponentView]
    incidents: list[PublicIncident]  # newest first; open ones and the last 14 days
    indicator: str
    updated_at: datetime

    @property
    def description(self) -> str:
        return INDICATOR_TEXT[self.indicator]

    @property
    def open_incidents(self) -> list[PublicIncident]:
        return [i for i in self.incidents if i.is_open]

    @property
    def past_incidents(self) -> list[PublicIncident]:
        return [i for i in self.incidents if not i.is_open]

    @property
    def page_id(self) -> str:
        return stable_id("page", self.title)

    @property
    def feed(self) -> list[tuple[PublicIncident, PublicUpdate]]:
        """Every published update with its incident, newest first (the Atom feed)."""
        pairs = [(i, u) for i in self.incidents for u in i.updates]
        return sorted(pairs, key=lambda pair: (pair[1].at, pair[1].id), reverse=True)


def build_view(policy: Policy, incidents: list[PublicIncident], now: datetime) -> StatusView:
    """The page: each component at the worst state an open public incident gives it, the
    overall indicator the worst open impact."""
    worst: dict[str, str] = {}
    for incident in incidents:
        if not incident.is_open:
            continue
        for name, state in incident.components.items():
            if COMPONENT_STATES.index(state) > COMPONENT_STATES.index(worst.get(name, OPERATIONAL)):
                worst[name] = state
    components = [
        ComponentView(c.name, c.description, worst.get(c.name, OPERATIONAL), index + 1)
        for index, c in enumerate(policy.status_page.components if policy.status_page else [])
    ]
    impacts = [IMPACTS.index(i.impact) for i in incidents if i.is_open and i.impact in IMPACTS]
    indicator = IMPACTS[max(impacts, default=0)]
    title = policy.status_page.title if policy.status_page else "Status"
    updated = max((i.updated_at for i in incidents), default=None)
    epoch = datetime(2020, 1, 1, tzinfo=now.tzinfo)
    return StatusView(title, now, components, incidents, indicator, updated or epoch)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _page_json(view: StatusView, url: str) -> dict[str, Any]:
    return {
        "id": view.page_id,
        "name": view.title,
        "url": url,
        "time_zone": "Etc/UTC",
        "updated_at": _iso(view.updated_at),
    }


def _component_json(view: StatusView, component: ComponentView) -> dict[str, Any]:
    return {
        "id": component.id,
        "name": component.name,
        "status": component.status,
        "created_at": _iso(view.updated_at),
        "updated_at": _iso(view.updated_at),
        "position": component.position,
        "description": component.description or None,
        "showcase": True,
        "start_date": None,
        "group_id": None,
        "page_id": view.page_id,
        "group": False,
        "only_show_if_degraded": False,
    }


def incident_json(view: StatusView, incident: PublicIncident, url: str) -> dict[str, Any]:
    """One incident as Statuspage serves it (`incident_updates` newest first)."""
    updates = [
        {
            "id": stable_id("update", incident.key, str(update.id)),
            "status": update.status,
            "body": update.body,
            "incident_id": incident.id,
            "created_at": _iso(update.at),
            "updated_at": _iso(update.at),
            "display_at": _iso(update.at),
            "affected_components": [
                {
                    "code": stable_id("component", name),
                    "name": name,
                    "old_status": None,
                    "new_status": state,
                }
                for name, state in update.components.items()
            ],
            "deliver_notifications": True,
            "custom_tweet": None,
            "tweet_id": None,
        }
        for update in incident.updates
    ]
    monitoring = next((u.at for u in reversed(incident.updates) if u.status == "monitoring"), None)
    by_name = {c.name: c for c in view.components}
    return {
        "id": incident.id,
        "name": incident.title,
        "status": incident.status,
        "created_at": _iso(incident.created_at),
        "updated_at": _iso(incident.updated_at),
        "monitoring_at": _iso(monitoring),
        "resolved_at": _iso(incident.resolved_at),
        "impact": incident.impact,
        "shortlink": f"{url}#incident-{incident.id}",
        "started_at": _iso(incident.created_at),
        "page_id": view.page_id,
        "incident_updates": updates,
        "components": [
            _component_json(view, by_name[name]) for name in incident.components if name in by_name
        ],
    }


def status_json(view: StatusView, url: str) -> dict[str, Any]:
    """`/api/v2/status.json`: the page and its overall state."""
    return {
        "page": _page_json(view, url),
        "status": {"indicator": view.indicator, "description": view.description},
    }


def summary_json(view: StatusView, url: str) -> dict[str, Any]:
    """`/api/v2/summary.json`: the page, its state, every component, the unresolved
    incidents (as Statuspage serves it) and scheduled maintenances (none)."""
    return {
        **status_json(view, url),
        "components": [_component_json(view, c) for c in view.components],
        "incidents": [incident_json(view, i, url) for i in view.open_incidents],
        "scheduled_maintenances": [],
    }


def history_since(now: datetime) -> datetime:
    return now - timedelta(days=HISTORY_DAYS)
