"""The policy file's JSON Schema and its Markdown reference, both generated from the pydantic
models the bot validates the file with (`Policy` in bot/domain/policy.py).

`python -m bot policy schema` prints the schema (committed as docs/policy.schema.json, which
policy.example.yaml names for editors); `python -m bot policy docs` prints the reference
(committed as docs/policy.md). tests/test_cli.py keeps both files equal to what this module
generates, so a change to a model shows in the docs in the same commit.

The schema is `Policy.model_json_schema()` in validation mode, so it describes the file as
written, not the parsed model: durations are `15m` or a number of seconds, defaults are
written as in the file. Two additions: `$schema` and a title, and the defaults of fields
filled by a factory (`statuses`, `roles`, …), which pydantic leaves out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, cast

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from bot.domain.policy import (
    DURATION_JSON_SCHEMA,
    PERMISSION_ACTIONS,
    TARGET_JSON_SCHEMA,
    EscalationLevel,
    Policy,
    format_duration,
)

_DAY = 86400


def span(delta: timedelta) -> str:
    """A duration as a policy file writes it, the way the runbooks count: in hours up to
    three days (`24h`, `72h`), in days beyond (`7d`), else in minutes or seconds."""
    seconds = int(delta.total_seconds())
    if seconds > 0 and seconds % _DAY == 0:
        return f"{seconds // _DAY}d" if seconds > 3 * _DAY else f"{seconds // 3600}h"
    return format_duration(delta)


SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_TITLE = "Incident bot policy"
SCHEMA_PATH = "docs/policy.schema.json"  # from the repository's root
DOCS_PATH = "docs/policy.md"


class _PolicyJsonSchema(GenerateJsonSchema):
    """Pydantic's generator, also showing the defaults that factories make, written as a
    policy file writes them (`24h`, not `P1D`)."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            return cast(Callable[[], Any], factory)()
        return super().get_default_value(schema)

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return span(dft)
        if isinstance(dft, list | tuple):
            return [self.encode_default(item) for item in dft]
        return super().encode_default(dft)


def policy_schema() -> dict[str, Any]:
    """The JSON Schema of a policy file."""
    schema = Policy.model_json_schema(schema_generator=_PolicyJsonSchema)
    return {"$schema": SCHEMA_DIALECT, **schema, "title": SCHEMA_TITLE}


def schema_text() -> str:
    """The schema as committed in docs/policy.schema.json."""
    return json.dumps(policy_schema(), indent=2, ensure_ascii=False) + "\n"


# ---- one policy, as the bot will act on it (`policy check`) ----------------------------------
# The fields `describe_policy` words itself; any other (a field added later) is shown as data.
_DESCRIBED = {
    "announce_channel",
    "statuses",
    "roles",
    "severities",
    "followups",
    "compliance",
    "permissions",
    "alerts",
    "status_page",
    "email_details",
}


def describe_policy(policy: Policy) -> list[str]:
    """The policy as the bot will act on it, for people, one fact a line (indented by two)."""
    announce = f"#{policy.announce_channel}" if policy.announce_channel else "none"
    lines = [
        f"  announcement channel: {announce}",
        f"  statuses: {' → '.join(policy.statuses)}",
        f"  roles: {', '.join(policy.roles)}",
        "  severities, most severe first:",
    ]
    for severity in policy.severities:
        updates = (
            f"updates {span(severity.update_interval)}"
            if severity.update_interval
            else "no update nudges"
        )
        lines.append(
            f"  {severity.name} ({', '.join(severity.aliases) or 'no aliases'}): "
            f"ack {span(severity.ack_timeout)}, {updates}, "
            f"resolve {span(severity.resolution_target)}"
        )
        if severity.description:
            lines.append(f"    {severity.description}")
        lines.append(f"    paged at declaration: {_who(severity.declaration_targets)}")
        lines.append("    escalation while nobody has acknowledged, from declaration:")
        lines += _levels(severity.escalation, numbered=True)
        lines.append("    time open, while unresolved, from declaration:")
        lines += _levels(severity.open_escalation, numbered=False)
        if severity.email:
            lines.append(f"    email ({policy.email_details}): {', '.join(severity.email)}")
    followups = policy.followups
    customers = "published incidents"
    if followups.customer_communication_from:
        customers += f" and {followups.customer_communication_from} or more severe"
    lines.append(
        f"  follow-ups after resolution: report {span(followups.report)}, "
        f"post-mortem {span(followups.postmortem)}, "
        f"action review {span(followups.action_review)}, "
        f"customer communication {span(followups.customer_communication)} ({customers})"
    )
    if policy.compliance:
        lines.append("  compliance clocks, from declaration, for incidents with the tag:")
        for clock in policy.compliance:
            reminders = ", ".join(span(before) for before in clock.remind_before)
            text = f"    {clock.tag}: deadline {span(clock.deadline)}"
            text += f", reminders {reminders} before" if reminders else ", no reminders before"
            lines.append(text + (f": {clock.description}" if clock.description else ""))
    else:
        lines.append("  compliance clocks: none")
    rules = []
    for action in PERMISSION_ACTIONS:
        allowed = policy.permissions.allowed(action)
        rules.append(f"{action}: {'anyone' if allowed is None else ', '.join(allowed) or 'nobody'}")
    lines.append(f"  permissions: {'; '.join(rules)}")
    if any(policy.permissions.allowed(action) is not None for action in PERMISSION_ACTIONS):
        lines.append("    (while nobody holds command, anyone may)")
    lines += _alert_rules(policy)
    page = policy.status_page
    if page is None:
        lines.append("  status page: no components (add `status_page` to show some)")
    else:
        lines.append(f"  status page: {page.title}")
        for component in page.components:
            services = ", ".join(component.services) or "no services"
            lines.append(f"    {component.name} (proposed for {services})")
    data = policy.model_dump(mode="json")
    for name in Policy.model_fields:
        if name not in _DESCRIBED:
            lines.append(f"  {name}: {json.dumps(data[name], ensure_ascii=False)}")
    return lines


def _alert_rules(policy: Policy) -> list[str]:
    """The `alerts` rules, one a line, in the order they are tried."""
    if not policy.alerts:
        return [
            "  alert rules: none (an alert declares only with its own severity or priority label)"
        ]
    lines = ["  alert rules, the first that matches decides:"]
    for number, rule in enumerate(policy.alerts, start=1):
        match = ", ".join(
            f"{label}~{wanted[1:]}" if wanted.startswith("~") else f"{label}={wanted}"
            for label, wanted in rule.match.items()
        )
        severity = (
            policy.get(rule.severity).name
            if rule.severity
            else "the alert's own severity or priority label"
        )
        extra = [
            f"title {rule.title!r}" if rule.title else "",
            f"services {', '.join(rule.services)}" if rule.services else "",
            f"playbook {rule.playbook}" if rule.playbook else "",
        ]
        shown = "; ".join(x for x in extra if x)
        lines.append(
            f"    {number}. {match or 'any alert'} → {severity}" + (f" ({shown})" if shown else "")
        )
    return lines


def _who(targets: list[str]) -> str:
    return ", ".join(targets) if targets else "nobody"


def _levels(levels: list[EscalationLevel], *, numbered: bool) -> list[str]:
    if not levels:
        return ["      none"]
    lines = []
    for number, level in enumerate(levels, start=1):
        name = f"level {number} at " if numbered else "at "
        pagerduty = f" + PagerDuty (routing key {level.pagerduty})" if level.pagerduty else ""
        lines.append(f"      {name}{span(level.after)}: {_who(level.notify)}{pagerduty}")
    return lines


# ---- the Markdown reference ----------------------------------------------------------------
_INTRO = """\
# The policy file

> Generated from the policy models (`bot/domain/policy.py`) by
> `python -m bot policy docs > docs/policy.md`. Edit the models' descriptions, not this file,
> and regenerate it and the schema (`python -m bot policy schema > docs/policy.schema.json`);
> `tests/test_cli.py` fails while either is out of date.

The policy says how the bot runs your incident procedure: the severities and their clocks,
who is paged when, the compliance deadlines, and who may end or weaken an incident.
[`policy.example.yaml`](../policy.example.yaml) is a complete one, with the numbers of the
teams' runbooks: copy it to `policy.yaml`, put in your workspace's ids, and set
`POLICY_FILE=policy.yaml`. Without `POLICY_FILE` the bot uses the built-in policy, which has
the same numbers and pages nobody.

## Where the bot finds it

The bot reads its settings (`POLICY_FILE`, `PLAYBOOKS_DIR`, `DATABASE_URL` …) from the
environment and from the `.env` file of the directory it is started in; the environment
wins. The command-line tools (`policy check`, `policy simulate`, `postmortem`) read the same
settings from the same places, so they check and use what the bot will. A relative path is
relative to the directory of the `.env` that was read: for the `.env` of the current
directory (or none), the current directory, which is where the bot started there looks.
`--env-file FILE` reads another `.env`, as a bot started in FILE's directory would: run from
anywhere, `python -m bot policy check --env-file /srv/incident-bot/.env` checks that bot's
policy and playbooks. A path given as an argument (`policy check FILE`, `--playbooks`,
`--policy`) is relative to the current directory, like any command's.

## Checking it

- `python -m bot policy check` validates the policy and the playbooks, then prints the
  policy as the bot will act on it: each severity with its aliases, targets, update
  interval, who is paged at declaration, the escalation chain and the time-open chain; the
  follow-ups, the compliance clocks, the permissions, the announcement channel, and how many
  playbooks there are. `python -m bot policy check FILE` checks another file.
- `python -m bot policy simulate sev1` prints who is paged when, minute by minute, if nobody
  answers (`--raise-to sev1 --at 20m` raises the severity on the way).
- [`policy.schema.json`](policy.schema.json) is the file's JSON Schema (also
  `python -m bot policy schema`). `policy.example.yaml` starts with
  `# yaml-language-server: $schema=docs/policy.schema.json`, so an editor with the YAML
  language server (VS Code's YAML extension, for one) completes and checks the file as you
  type; in a copy kept elsewhere, make that path point at the schema.

The schema checks each field's type and shape. `policy check` and start-up check the rest
too: escalation levels in increasing `after` order, no word naming two severities, the
statuses starting with `investigating` and ending with `resolved`, a `commander` role, and
every `permissions` entry being a role of the policy or a Slack id.

## Values

- **Durations** are a whole number and a unit: `90s`, `15m`, `2h`, `3d` (or a number of
  seconds).
- **Slack ids**: a user is `U…` or `W…` (their profile's ⋮ menu → *Copy member ID*), a user
  group `S…` (from its URL). Paging a group pages every member.
- Every field not marked *required* may be left out; a field the policy does not know is an
  error, so a misspelt one is never ignored.

## Reference
"""


def reference_markdown() -> str:
    """docs/policy.md: the introduction, then a table per model (field, type, default,
    description), drawn from `policy_schema()`."""
    schema = policy_schema()
    definitions: dict[str, Any] = schema.get("$defs", {})
    sections = [_INTRO]
    for name, model, used_in in _models(schema, definitions):
        sections.append(_section(name, model, used_in))
    return "\n".join(sections)


def _models(
    schema: dict[str, Any], definitions: dict[str, Any]
) -> Iterator[tuple[str, dict[str, Any], dict[str, list[str]]]]:
    """Policy, then each model it refers to, depth first in the order of the fields; with,
    for each, the fields of other models that hold it."""
    models: dict[str, dict[str, Any]] = {"Policy": schema}
    used_in: dict[str, dict[str, list[str]]] = {"Policy": {}}
    order: list[str] = []

    def visit(name: str) -> None:
        order.append(name)
        for field, prop in models[name].get("properties", {}).items():
            for ref in _refs(prop):
                used_in.setdefault(ref, {}).setdefault(name, []).append(field)
                if ref not in models:
                    models[ref] = definitions[ref]
                    visit(ref)

    visit("Policy")
    for name in order:
        yield name, models[name], used_in[name]


def _refs(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str):
            yield ref.rsplit("/", 1)[-1]
        for value in schema.values():
            yield from _refs(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _refs(value)


def _link(name: str) -> str:
    return f"[{name}](#{name.lower()})"


def _section(name: str, model: dict[str, Any], used_in: dict[str, list[str]]) -> str:
    where = "; ".join(
        f"{_link(parent)} {', '.join(f'`{field}`' for field in fields)}"
        for parent, fields in used_in.items()
    )
    lines = [f"### {name}", ""]
    if model.get("description"):
        lines += [_one_line(model["description"]), ""]
    lines += [
        f"Used in: {where}." if where else "The top level of the file.",
        "",
        "| Field | Type | Default | Description |",
        "|---|---|---|---|",
    ]
    required = set(model.get("required", []))
    for field, prop in model.get("properties", {}).items():
        if "default" in prop:
            default = f"`{_yaml(prop['default'])}`"
        else:
            default = "*required*" if field in required else ""
        description = _cell(prop.get("description", ""))
        lines.append(f"| `{field}` | {_type(prop)} | {_cell(default)} | {description} |")
    return "\n".join(lines) + "\n"


def _type(schema: JsonSchemaValue, *, plural: bool = False) -> str:
    """A schema's type in words: `duration`, `list of Slack ids`, `[Severity](#severity)`."""
    if "$ref" in schema:
        return _link(str(schema["$ref"]).rsplit("/", 1)[-1])
    if schema.get("anyOf") == DURATION_JSON_SCHEMA["anyOf"]:
        return "durations" if plural else "duration"
    if "anyOf" in schema:
        return " or ".join(_type(choice, plural=plural) for choice in schema["anyOf"])
    kind = schema.get("type")
    if kind == "array":
        return "list of " + _type(schema.get("items", {}), plural=True)
    if kind == "string" and schema.get("pattern") == TARGET_JSON_SCHEMA["pattern"]:
        word = "Slack id"
    elif kind == "null":
        return "null"
    else:
        word = str(kind or "anything")
    return word + "s" if plural else word


def _yaml(value: Any) -> str:
    """A default as a policy file writes it (YAML flow style)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value and value.strip() == value else json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_yaml(item)}" for key, item in value.items()) + "}"
    return str(value)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|")
