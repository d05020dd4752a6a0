"""Alerts from monitoring, as the bot reads them, and the policy's `alerts` rules. Pure.

An alert arrives from Prometheus Alertmanager (or Grafana, which sends the same webhook
shape) or from anything else through the small generic JSON. Either way it becomes an
`Alert`: a key that stays the same while it is the same alert (Alertmanager's `fingerprint`,
the generic `key`), its status, labels and annotations, bounded in number and size so that
whatever a sender puts in, what the bot stores and shows is bounded too.

`decide` says what an alert would declare: the first rule of the policy whose `match` fits
the labels (label equality, or `~regex` matching the whole value) gives the severity, title,
services and playbook; a rule without a severity (or no rule at all) leaves it to the
alert's own `severity`, else `priority`, label read through the policy's aliases. An alert
with no severity either way is ignored, and the decision says why.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.domain.policy import AlertRule, Policy
from bot.domain.text import strip_controls
from bot.domain.timeline import SOURCE_NAMES

FIRING, RESOLVED = "firing", "resolved"
SOURCES = SOURCE_NAMES  # how each source is named to people

# What one request may make the bot read and keep. Beyond these, alerts are counted and not
# read (said in the incident), labels and annotations are dropped, and texts are cut.
ALERTS_MAX = 1000
LABELS_MAX = 64
LABEL_NAME_MAX = 100
LABEL_VALUE_MAX = 500
ANNOTATIONS_MAX = 32
ANNOTATION_MAX = 3000
KEY_MAX = 200
URL_MAX = 2000
CUT = "…"

# Annotations with a meaning of their own (the rest are shown as they come).
SUMMARY, DESCRIPTION, RUNBOOK = "summary", "description", "runbook_url"
DASHBOARD_ANNOTATIONS = ("dashboard", "dashboard_url", "grafana_url")


def cut(text: str, limit: int) -> str:
    """`text` without control characters, at most `limit` characters (`…` marks a cut)."""
    text = strip_controls(text).strip()
    return text if len(text) <= limit else text[: limit - len(CUT)].rstrip() + CUT


# Labels the bot reads itself: kept first, so that the label limit never drops them.
KEY_LABELS = ("alertname", "severity", "priority", "service", "title", "key", "services")


def bounded(values: dict[str, Any], *, count: int, value_max: int) -> dict[str, str]:
    """At most `count` entries (the labels the bot reads, then the first others), names and
    values cut to their limits; values that are not strings are written as JSON."""
    kept: dict[str, str] = {}
    ordered = [(k, values[k]) for k in KEY_LABELS if k in values]
    ordered += [(k, v) for k, v in values.items() if k not in KEY_LABELS]
    for name, value in ordered:
        if len(kept) >= count:
            break
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        kept[cut(str(name), LABEL_NAME_MAX)] = cut(text, value_max)
    return kept


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 time as Alertmanager writes it (nanoseconds, `Z` or an offset), in UTC.
    Go's zero time (`0001-01-01T00:00:00Z`, "not ended") and anything unreadable → None."""
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    # Python reads at most six digits of a fraction: nanoseconds are cut to microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.year <= 1:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def fingerprint(labels: dict[str, str]) -> str:
    """A stable key for an alert that came without a fingerprint: a hash of its labels."""
    text = json.dumps(sorted(labels.items()), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Alert:
    """One alert, bounded. `key` is what makes two notifications the same alert."""

    source: str  # alertmanager | grafana | generic
    key: str
    status: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    url: str = ""  # where the alert comes from (Prometheus' graph, the check's page)
    dashboard: str = ""
    silence: str = ""

    @property
    def name(self) -> str:
        return self.labels.get("alertname") or self.labels.get("title") or self.key

    @property
    def summary(self) -> str:
        return self.annotations.get(SUMMARY, "")

    @property
    def description(self) -> str:
        return self.annotations.get(DESCRIPTION, "")

    @property
    def runbook(self) -> str:
        return self.annotations.get(RUNBOOK, "")

    @property
    def dashboard_link(self) -> str:
        if self.dashboard:
            return self.dashboard
        return next(
            (self.annotations[a] for a in DASHBOARD_ANNOTATIONS if a in self.annotations), ""
        )

    @property
    def store_key(self) -> str:
        """The de-duplication key of this alert in the database."""
        family = "generic" if self.source == "generic" else "am"
        return f"alert:{family}:{self.key}"

    def details(self) -> dict[str, Any]:
        """What the incident, its messages and its timeline keep of the alert (JSON-safe)."""
        return {
            "source": self.source,
            "key": self.key,
            "name": self.name,
            "status": self.status,
            "summary": self.summary,
            "description": self.description,
            "runbook_url": self.runbook,
            "dashboard": self.dashboard_link,
            "url": self.url,
            "silence": self.silence,
            "started_at": self.starts_at.isoformat() if self.starts_at else None,
            "ended_at": self.ends_at.isoformat() if self.ends_at else None,
            "labels": self.labels,
        }


@dataclass(frozen=True)
class AlertGroup:
    """What one request brought: Alertmanager's group (one notification of one group), or
    the one alert of a generic request. `truncated` counts alerts sent or left out beyond
    what was read."""

    source: str
    alerts: list[Alert]
    group_key: str | None = None
    truncated: int = 0

    @property
    def store_key(self) -> str | None:
        """The group's de-duplication key (a hash: group keys can be long)."""
        if not self.group_key:
            return None
        digest = hashlib.sha256(self.group_key.encode("utf-8")).hexdigest()[:40]
        return f"group:{digest}"

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if a.status == FIRING]

    @property
    def resolved(self) -> list[Alert]:
        return [a for a in self.alerts if a.status == RESOLVED]


@dataclass(frozen=True)
class Decision:
    """What an alert declares (`severity` set) or why it declares nothing (`severity` None)."""

    alert: Alert
    severity: str | None
    reason: str
    rule: int | None = None  # 0-based index in the policy's `alerts`
    title: str = ""
    services: list[str] = field(default_factory=list)
    playbook: str | None = None


def matches(rule: AlertRule, labels: dict[str, str]) -> bool:
    """Every label of `match` is there with that value (`~regex`: the whole value matches)."""
    for label, wanted in rule.match.items():
        value = labels.get(label)
        if value is None:
            return False
        if wanted.startswith("~"):
            if re.fullmatch(wanted[1:], value) is None:
                return False
        elif value != wanted:
            return False
    return True


def _own_severity(alert: Alert, policy: Policy) -> tuple[str | None, str]:
    """The severity the alert's `severity` (else `priority`) label names, with how it was
    found; or None, with what the labels said."""
    given = [
        (label, alert.labels[label])
        for label in ("severity", "priority")
        if alert.labels.get(label)
    ]
    for label, word in given:
        found = policy.severity(word)
        if found is not None:
            return found.name, f"its {label} label {word!r}"
    return None, " and ".join(f"the {label} label {word!r}" for label, word in given)


def decide(alert: Alert, policy: Policy) -> Decision:
    """The first rule that matches decides; see the module's docstring."""
    rule_index = next((n for n, r in enumerate(policy.alerts) if matches(r, alert.labels)), None)
    rule = policy.alerts[rule_index] if rule_index is not None else None
    title = (rule.title if rule and rule.title else None) or alert.summary or alert.name
    services = list(rule.services) if rule and rule.services else _services(alert)
    playbook = rule.playbook if rule else None
    where = f"rule {rule_index + 1} of the policy's alerts" if rule_index is not None else ""
    if rule is not None and rule.severity:
        severity = policy.get(rule.severity).name
        return Decision(alert, severity, where, rule_index, title, services, playbook)
    own, said = _own_severity(alert, policy)
    if own is not None:
        why = f"{said} ({where} names no severity)" if where else f"{said} (no rule matched)"
        return Decision(alert, own, why, rule_index, title, services, playbook)
    label = f"{said}, which names no severity of the policy" if said else "no severity label"
    reason = (
        f"{where} names no severity and the alert has {label}"
        if where
        else f"no rule of the policy's alerts matched and the alert has {label}"
    )
    return Decision(alert, None, reason, rule_index, title, services, playbook)


def _services(alert: Alert) -> list[str]:
    if alert.source == "generic":
        return [s for s in alert.labels.get("services", "").split(",") if s]
    service = alert.labels.get("service", "")
    return [service] if service else []


def decide_group(group: AlertGroup, policy: Policy) -> tuple[Decision | None, list[Decision]]:
    """The decision for the group's incident: of its firing alerts that declare something,
    the most severe (the first of equals); with every alert's decision."""
    decisions = [decide(alert, policy) for alert in group.firing]
    declaring = [d for d in decisions if d.severity is not None]
    if not declaring:
        return None, decisions
    best = min(declaring, key=lambda d: policy.rank(d.severity or ""))
    return best, decisions
