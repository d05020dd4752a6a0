"""The incident policy: severities, clocks, escalation chains (pydantic models, pure).

Field names are part of the public interface (docs/policy.md): add fields, never rename them.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> timedelta:
    """`90s`, `15m`, `2h`, `3d` (or a number of seconds) → timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration is written like 90s, 15m, 2h or 3d")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value.lower())
        if match:
            try:  # a number too big for a timedelta (or for int()) is no duration either
                return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
            except (OverflowError, ValueError):
                pass
    raise ValueError(f"{value!r} is not a duration; write it like 90s, 15m, 2h or 3d")


def format_duration(delta: timedelta) -> str:
    """The inverse of `parse_duration`, in the largest whole unit (`5400s` → `90m`)."""
    seconds = int(delta.total_seconds())
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def human_duration(delta: timedelta) -> str:
    """For people: `1h 23m`, `4m 10s`, `2d 3h`."""
    seconds = max(0, int(delta.total_seconds()))
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n][:2]
    return " ".join(shown) or "0s"


# What a policy file may hold where a duration goes (the JSON Schema of `Duration`, as
# `parse_duration` reads it: a number and a unit in any case, or a number of seconds).
DURATION_JSON_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": r"^\s*[0-9]+\s*[smhdSMHD]\s*$"},
        {"type": "number"},
    ],
    "examples": ["90s", "15m", "2h", "3d"],
}

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(DURATION_JSON_SCHEMA, mode="validation"),
]

_TARGET_PATTERN = r"^[UWS][A-Z0-9]{2,}$"
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")
_TARGET = re.compile(_TARGET_PATTERN)
# The JSON Schema of one entry of a `Targets` list (`_check_targets` is the check).
TARGET_JSON_SCHEMA: dict[str, Any] = {"type": "string", "pattern": _TARGET_PATTERN}


def _check_targets(values: list[str]) -> list[str]:
    for value in values:
        if not _TARGET.match(value):
            raise ValueError(
                f"{value!r} is not a Slack user (U…/W…) or user group (S…) id; "
                "find ids in Slack under the profile's ⋮ menu → Copy member ID"
            )
    return values


Targets = Annotated[
    list[str], Field(default_factory=list, json_schema_extra={"items": TARGET_JSON_SCHEMA})
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EscalationLevel(_Model):
    """One level of a chain: whom to page, and when, counted from the declaration."""

    after: Duration = Field(
        description="When this level is paged, counted from the declaration (`0s`: at once). "
        "Levels are listed in increasing `after` order."
    )
    notify: Annotated[
        Targets,
        Field(
            description="Whom this level pages: Slack user ids (`U…`/`W…`) and user-group ids "
            "(`S…`; every member is paged). Each is invited to the incident channel, "
            "mentioned there and in the announcement channel, and sent a direct message. "
            "Empty: the level pages nobody, and the alert says so."
        ),
    ]
    pagerduty: str | None = Field(
        default=None,
        description="A PagerDuty Events API v2 routing key. When this level is reached (by "
        "the clock, by **Escalate** or by a raise) a PagerDuty event is triggered; it is "
        "acknowledged when someone acknowledges in Slack and resolved with the incident. "
        "Drills page nobody.",
    )

    _targets = field_validator("notify")(_check_targets)


class Severity(_Model):
    """A severity: the words that declare it, its targets, and whom it pages when."""

    name: str = Field(
        description="The name shown everywhere (`SEV1`): one word of letters, digits, `_` or "
        "`-`, at most 20 characters. Declaring with it is case-insensitive "
        "(`/incident sev1 …`).",
        json_schema_extra={"pattern": "^[A-Za-z0-9_-]{1,20}$"},
    )
    aliases: list[str] = Field(
        default_factory=list,
        description="Other words that declare this severity, case-insensitive (`p0`, "
        "`critical`). No word may name two severities.",
    )
    description: str = Field(
        default="",
        description="What the severity means, in one line: shown in the alert, in the "
        "declare form's severity menu and in the post-mortem.",
    )
    ack_timeout: Duration = Field(
        description="The response target: when nobody has acknowledged by then, the channel "
        "is told and the current escalation level is paged again. It does not move the "
        "escalation chain, which follows its own `after` values."
    )
    update_interval: Duration | None = Field(
        default=None,
        description="How often an update is due, from the last update (or the declaration, or "
        "a snooze). When one is overdue the commander (or the declarer) is nudged, half an "
        "interval later the comms lead is mentioned, one interval later the announcement "
        "channel is told; then again until an update. null: no update nudges.",
    )
    resolution_target: Duration = Field(
        description="How long the incident may stay open: past it, the incident channel and "
        "the announcement channel are told."
    )
    notify_on_declare: Annotated[
        Targets,
        Field(
            description="Whom to page at once when an incident of this severity is declared "
            "(or raised to it), together with the first escalation level: Slack user ids "
            "(`U…`/`W…`) and user-group ids (`S…`)."
        ),
    ]
    escalation: list[EscalationLevel] = Field(
        default_factory=list,
        description="The acknowledgement chain: while nobody has acknowledged, each level is "
        "paged at its `after`, counted from the declaration. The first level is paged with "
        "the alert; **Acknowledge** (or taking command) stops the chain; **Escalate** pages "
        "the next level at once.",
    )
    open_escalation: list[EscalationLevel] = Field(
        default_factory=list,
        description="The time-open chain: while the incident is unresolved, acknowledged or "
        "not, each level is paged at its `after`, counted from the declaration (e.g. VP "
        "Engineering at 2h, the CTO at 4h).",
    )

    email: list[str] = Field(
        default_factory=list,
        description="Email addresses told at declaration, on each update published to the "
        "status page and at resolution (needs `SMTP_URL` and `EMAIL_FROM`). Only what was "
        "published is sent, unless `email_details` is `internal`. Drills email nobody.",
        json_schema_extra={"items": {"type": "string", "pattern": r"^[^@\s<>]+@[^@\s<>]+$"}},
    )

    _targets = field_validator("notify_on_declare")(_check_targets)

    @field_validator("email")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _EMAIL.match(value):
                raise ValueError(f"{value!r} is not an email address (name@example.com)")
        return values

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,20}", value):
            raise ValueError("a severity name is one word of letters and digits, e.g. SEV1")
        return value

    @field_validator("escalation", "open_escalation")
    @classmethod
    def _ordered(cls, levels: list[EscalationLevel]) -> list[EscalationLevel]:
        afters = [level.after for level in levels]
        if afters != sorted(afters):
            raise ValueError("levels must be listed in increasing `after` order")
        return levels

    @property
    def declaration_targets(self) -> list[str]:
        """Who the alert pages at declaration: those told at once, then the chain's first level."""
        first = self.escalation[0].notify if self.escalation else []
        return list(dict.fromkeys([*self.notify_on_declare, *first]))

    @property
    def words(self) -> list[str]:
        return [self.name.lower(), *(alias.lower() for alias in self.aliases)]


class Followups(_Model):
    """The duties after resolution. Each reminds the commander at its time after the
    resolution, then daily until someone clicks **Mark done**."""

    report: Duration = Field(
        default=timedelta(hours=24),
        description="When the incident report is due, after the resolution.",
    )
    postmortem: Duration = Field(
        default=timedelta(hours=48),
        description="When the post-mortem is due, after the resolution.",
    )
    action_review: Duration = Field(
        default=timedelta(days=7),
        description="When the action-item review is due, after the resolution; also the "
        "default due date of an action item (`/incident action`).",
    )
    customer_communication: Duration = Field(
        default=timedelta(hours=24),
        description="When the customer communication is due, after the resolution, for an "
        "incident that was published on the status page (or is at least as severe as "
        "`customer_communication_from`).",
    )
    customer_communication_from: str | None = Field(
        default=None,
        description="A severity (`SEV2`): incidents this severe or more are also reminded "
        "to send the customer communication, published or not. null: only published ones.",
    )


class ComplianceClock(_Model):
    """A legal or contractual deadline that starts when an incident carries a tag."""

    tag: str = Field(
        description="The tag that starts this clock (`/incident tag security`), for the "
        "incident that carries it."
    )
    deadline: Duration = Field(
        description="The deadline, counted from the declaration. At it the channel is told, "
        "until someone clicks **Done**."
    )
    remind_before: list[Duration] = Field(
        default_factory=list,
        description="Reminders this long before the deadline (`[48h, 24h, 2h]`).",
    )
    description: str = Field(
        default="",
        description="What must be done by the deadline, shown in every reminder "
        "(`Personal-data breach: notify the regulator`).",
    )


class Permissions(_Model):
    """Who may take the actions that end or weaken an incident. Each list names roles of the
    policy (`commander`, `tech_lead`, …), users (U…/W…) and user groups (S…); an action
    left out (or null) is open to every full member. While nobody holds command, anyone may."""

    resolve: list[str] | None = Field(
        default=None, description="Who may resolve an incident (`/incident resolve`, **Resolve**)."
    )
    lower_severity: list[str] | None = Field(
        default=None,
        description="Who may lower an incident's severity. Raising it is never restricted.",
    )
    close_compliance: list[str] | None = Field(
        default=None,
        description="Who may mark a compliance duty (e.g. notifying the regulator) done.",
    )
    publish: list[str] | None = Field(  # customer-facing status-page updates
        default=None,
        description="Who may publish customer-facing updates on the status page "
        "(`/incident publish` and its form). The resolution of a public incident is "
        "published by whoever may resolve it.",
    )

    def allowed(self, action: str) -> list[str] | None:
        """The entries allowed to take `action`, or None when it is not restricted."""
        value: list[str] | None = getattr(self, action)
        return value


PERMISSION_ACTIONS = ("resolve", "lower_severity", "close_compliance", "publish")


ALERT_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")


class AlertRule(_Model):
    """How incoming alerts become incidents: the first rule whose `match` fits an alert's
    labels decides its severity, title, services and playbook."""

    match: dict[str, str] = Field(
        default_factory=dict,
        description="Labels the alert must carry, all of them: `{alertname: HighErrorRate}` "
        "asks for that exact value; a value starting with `~` is a regular expression the "
        'whole value must match (`{service: "~payments|checkout"}`). Empty (`{}`): every '
        "alert. A generic alert's labels are `key`, `title`, `severity`, `services` (joined "
        "with commas) and the `labels` it sends.",
    )
    severity: str | None = Field(
        default=None,
        description="The severity to declare (a name or alias of `severities`). Left out: "
        "the alert's own `severity` (else `priority`) label, read through the severities' "
        "aliases (`critical`, `p0`…); an alert whose label names no severity is ignored.",
    )
    title: str | None = Field(
        default=None,
        description="The incident's title. Left out: the alert's `summary` annotation, else "
        "its name (`alertname`; a generic alert's `title`).",
    )
    services: list[str] = Field(
        default_factory=list,
        description="The services affected. Left out: the alert's `service` label (a "
        "generic alert's `services`).",
    )
    playbook: str | None = Field(
        default=None,
        description="The id of the playbook to post (its file name without `.yaml`). Left "
        "out: the playbook that matches the title and services, as for any incident.",
    )

    @field_validator("match")
    @classmethod
    def _patterns(cls, value: dict[str, str]) -> dict[str, str]:
        for label, wanted in value.items():
            if not ALERT_LABEL.match(label):
                raise ValueError(
                    f"{label!r} is not a label name (letters, digits and _, not starting "
                    "with a digit)"
                )
            if wanted.startswith("~"):
                try:
                    re.compile(wanted[1:])
                except re.error as exc:
                    raise ValueError(
                        f"{label}: {wanted!r} is not a valid regular expression ({exc})"
                    ) from None
        return value


class Component(_Model):
    """A part of the product that customers know by name, shown on the status page."""

    name: str = Field(
        description="The name customers see (`Payments`); unique. `/incident publish "
        "Payments=partial …` names it (case, spaces, `-` and `_` do not matter).",
        json_schema_extra={"minLength": 1, "maxLength": 80},
    )
    services: list[str] = Field(
        default_factory=list,
        description="The incident services (as declared) that this component stands for: "
        "the publish form proposes the component when an incident names one of them.",
    )
    description: str = Field(default="", description="One line shown under the name.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value or len(value) > 80:
            raise ValueError("a component name is 1 to 80 characters")
        return value


class StatusPage(_Model):
    """The public status page at `/status`: its title and the components it shows."""

    title: str = Field(default="Status", description="The page's title (and its name in the JSON).")
    components: list[Component] = Field(
        default_factory=list,
        description="The components, in the order the page shows them.",
    )

    @field_validator("components")
    @classmethod
    def _unique(cls, value: list[Component]) -> list[Component]:
        seen: set[str] = set()
        for component in value:
            key = re.sub(r"[^a-z0-9]", "", component.name.lower())
            if key in seen:
                raise ValueError(f"component {component.name!r} is listed twice")
            seen.add(key)
        return value


OPEN_STATUSES = ("investigating", "identified", "mitigating", "monitoring")
RESOLVED = "resolved"


class Policy(_Model):
    """The incident policy (`POLICY_FILE`): severities and their clocks, who is paged when,
    the compliance deadlines, and who may end or weaken an incident."""

    announce_channel: str | None = Field(
        default="incidents",
        description="Where every incident is announced: its alert, edited in place as the "
        "incident changes, with the updates, escalations and resolution as replies in its "
        "thread. A channel name (a leading `#` is dropped) or id (`C…`). The bot joins a "
        "public channel by itself; invite it to a private one. Empty or null: no "
        "announcement channel.",
    )
    statuses: list[str] = Field(
        default_factory=lambda: [*OPEN_STATUSES, RESOLVED],
        description="The statuses an incident goes through (`/incident status`), in order, "
        "case-insensitive: the first must be `investigating`, the last `resolved`; none "
        "may repeat.",
    )
    roles: list[str] = Field(
        default_factory=lambda: ["commander", "tech_lead", "comms_lead", "scribe"],
        description="The roles `/incident role <role> @user` assigns, case-insensitive. "
        "`commander` is required; the `comms_lead` is mentioned when an update is overdue. "
        "`permissions` may name them.",
    )
    severities: list[Severity] = Field(
        description="The severities, most severe first: the order says which change is a "
        "raise and which a lowering, and sorts the incident lists. At least one.",
        json_schema_extra={"minItems": 1},
    )
    followups: Followups = Field(
        default_factory=Followups,
        description="The reminders after resolution: report, post-mortem, action review.",
    )
    compliance: list[ComplianceClock] = Field(
        default_factory=list,
        description="Deadlines started by a tag (`/incident tag security`), e.g. the 72-hour "
        "regulator notification for a personal-data breach.",
    )
    permissions: Permissions = Field(
        default_factory=Permissions,
        description="Who may take the actions that end or weaken an incident; by default, "
        "every full member.",
    )
    alerts: list[AlertRule] = Field(
        default_factory=list,
        description="How alerts sent to `POST /alerts/alertmanager` and `POST /alerts/generic` "
        "(with `ALERTS_TOKEN` set) become incidents: rules tried in order, the first whose "
        "`match` fits decides. No rule fits, or the rule names no severity: the alert's own "
        "`severity` / `priority` label decides, read through the aliases; none either: the "
        "alert is ignored (logged, and answered 202 `ignored`).",
    )

    @field_validator("alerts")
    @classmethod
    def _alert_severities(cls, rules: list[AlertRule], info: ValidationInfo) -> list[AlertRule]:
        """Each rule's severity names one of the severities (listed before `alerts`). When
        the severities themselves failed to load, their own error says so: nothing to check."""
        if "severities" not in info.data:
            return rules
        words = {w for s in info.data["severities"] for w in s.words}
        for number, rule in enumerate(rules):
            if rule.severity is not None and rule.severity.strip().lower() not in words:
                raise ValueError(
                    f"alerts.{number}.severity: {rule.severity!r} is not a severity of this "
                    f"policy; use one of {', '.join(sorted(words))}"
                )
        return rules

    status_page: StatusPage | None = Field(
        default=None,
        description="The public status page at `/status`: nothing is on it until someone "
        "publishes (`/incident publish`). Absent: the page shows no components.",
    )
    email_details: Literal["public", "internal"] = Field(
        default="public",
        description="What the severities' `email` addresses are sent: `public`, only what "
        "was published on the status page (and that an incident of a severity was declared "
        "or resolved); `internal`, also the incident's title, services, impact and "
        "resolution summary.",
    )

    @field_validator("announce_channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return value.strip().lstrip("#")

    @field_validator("statuses")
    @classmethod
    def _statuses(cls, value: list[str]) -> list[str]:
        lowered = [status.lower() for status in value]
        if not lowered or lowered[0] != "investigating" or lowered[-1] != RESOLVED:
            raise ValueError("statuses must start with investigating and end with resolved")
        if len(set(lowered)) != len(lowered):
            raise ValueError("statuses must not repeat")
        return lowered

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: list[str]) -> list[str]:
        lowered = [role.lower() for role in value]
        if "commander" not in lowered:
            raise ValueError("roles must include commander")
        return lowered

    @model_validator(mode="after")
    def _unique_words(self) -> Policy:
        if not self.severities:
            raise ValueError("at least one severity is needed")
        seen: dict[str, str] = {}
        for severity in self.severities:
            for word in severity.words:
                if word in seen and seen[word] != severity.name:
                    raise ValueError(f"{word!r} names both {seen[word]} and {severity.name}")
                seen[word] = severity.name
        for action in PERMISSION_ACTIONS:
            for entry in self.permissions.allowed(action) or []:
                if _TARGET.match(entry) or entry.lower() in self.roles:
                    continue
                raise ValueError(
                    f"permissions.{action}: {entry!r} is neither a role of this policy "
                    f"({', '.join(self.roles)}) nor a Slack user (U…) or user group (S…) id"
                )
        wanted = self.followups.customer_communication_from
        if wanted is not None and wanted.strip().lower() not in seen:
            raise ValueError(
                f"followups.customer_communication_from: {wanted!r} is not a severity of this "
                "policy"
            )
        return self

    def wants_customer_communication(self, *, severity: str, public: bool) -> bool:
        """Whether a resolved incident gets the "customer communication sent" follow-up."""
        wanted = self.followups.customer_communication_from
        if public:
            return True
        if wanted is None or self.severity(severity) is None:
            return False
        return self.rank(severity) <= self.rank(wanted)

    def may(
        self,
        action: str,
        *,
        user: str,
        groups: set[str],
        roles: dict[str, str],
        commander: str | None,
    ) -> bool:
        """Whether `user` (a member of `groups`) may take `action` on an incident whose roles
        are `roles`. Unrestricted actions, and any action while nobody holds command, are
        open to everyone."""
        allowed = self.permissions.allowed(action)
        if allowed is None or commander is None:
            return True
        for entry in allowed:
            if entry == user or entry in groups:
                return True
            if roles.get(entry.lower()) == user:
                return True
        return False

    def severity(self, word: str) -> Severity | None:
        """The severity a word names (name or alias, case-insensitive), or None."""
        wanted = word.strip().lower()
        for severity in self.severities:
            if wanted in severity.words:
                return severity
        return None

    def get(self, name: str) -> Severity:
        found = self.severity(name)
        if found is None:
            raise KeyError(name)
        return found

    def rank(self, name: str) -> int:
        """0 for the most severe."""
        return [s.name for s in self.severities].index(self.get(name).name)

    @property
    def open_statuses(self) -> list[str]:
        return [s for s in self.statuses if s != RESOLVED]

    def severity_words(self) -> str:
        return ", ".join(
            f"{s.name.lower()} ({'/'.join(a.lower() for a in s.aliases)})"
            if s.aliases
            else s.name.lower()
            for s in self.severities
        )


class PolicyError(Exception):
    """The policy file is unreadable or invalid; the message names the file and the field."""


def yaml_line(node: Any, loc: list[Any]) -> int | None:
    """The 1-based line of the YAML node at `loc` (or of its nearest parent that exists) in
    a document composed with `yaml.compose`."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        else:
            child = None
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line


def _describe(exc: ValidationError, source: str, root: Any = None) -> str:
    lines = [f"{source}: invalid policy"]
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        line = yaml_line(root, list(error["loc"])) if root is not None else None
        at = f" (line {line})" if line else ""
        lines.append(f"  {where}{at}: {error['msg']}")
    return "\n".join(lines)


def parse_policy(data: Any, *, source: str = "policy", root: Any = None) -> Policy:
    """Validate `data`; `root` (the composed YAML document) adds each problem's line."""
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(_describe(exc, source, root)) from None


def load_policy(path: Path | None) -> Policy:
    """The policy in `path`, or the built-in default when `path` is None."""
    if path is None:
        return default_policy()
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from None
    return parse_policy(data, source=str(path), root=root)


def default_policy() -> Policy:
    """The built-in policy, the procedure of docs/procedure.md; it names nobody.

    SEV1/P0: respond < 5 min, resolve < 1 h, updates every 30 min, secondary after 15 min,
    engineering manager after 30 min, VP Engineering after 2 h open, CTO after 4 h.
    SEV2/P1: respond < 15 min, resolve < 4 h, updates every 30 min.
    SEV3/P2: respond < 1 h, resolve < 24 h, updates hourly.  SEV4/P3: respond < 4 h,
    resolve < 72 h, no update nudges. Security incidents: regulator notification < 72 h.
    """
    return parse_policy(
        {
            "announce_channel": "incidents",
            "severities": [
                {
                    "name": "SEV1",
                    "aliases": ["p0", "critical"],
                    "description": "Complete outage, data loss or corruption, security breach, "
                    "payments down",
                    "ack_timeout": "5m",
                    "update_interval": "30m",
                    "resolution_target": "1h",
                    "escalation": [
                        {"after": "0s"},
                        {"after": "15m"},
                        {"after": "30m"},
                        {"after": "1h"},
                    ],
                    "open_escalation": [{"after": "2h"}, {"after": "4h"}],
                },
                {
                    "name": "SEV2",
                    "aliases": ["p1", "high"],
                    "description": "Major feature unavailable, performance severely degraded, "
                    "authentication issues",
                    "ack_timeout": "15m",
                    "update_interval": "30m",
                    "resolution_target": "4h",
                    "escalation": [{"after": "0s"}, {"after": "15m"}, {"after": "30m"}],
                },
                {
                    "name": "SEV3",
                    "aliases": ["p2", "medium"],
                    "description": "Minor feature broken, non-critical API errors, slow responses",
                    "ack_timeout": "1h",
                    "update_interval": "1h",
                    "resolution_target": "24h",
                    "escalation": [{"after": "0s"}, {"after": "1h"}],
                },
                {
                    "name": "SEV4",
                    "aliases": ["p3", "low"],
                    "description": "Cosmetic issues, non-blocking bugs",
                    "ack_timeout": "4h",
                    "update_interval": None,
                    "resolution_target": "72h",
                    "escalation": [{"after": "0s"}],
                },
            ],
            "followups": {"report": "24h", "postmortem": "48h", "action_review": "7d"},
            "compliance": [
                {
                    "tag": "security",
                    "deadline": "72h",
                    "remind_before": ["48h", "24h", "2h"],
                    "description": "Personal-data breach: notify the regulator",
                }
            ],
        },
        source="built-in default policy",
    )
