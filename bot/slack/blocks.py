"""Block Kit, in one home: pure functions from incident state to messages and modals.

Blocks are built with `slack_sdk.models.blocks`, whose checks of Slack's limits run when
they are turned into JSON (`plain`); user text is escaped and clipped to the limits before
it gets there.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from slack_sdk.models.basic_objects import EMPTY_ALLOWED_TYPE_AND_PROPERTY_LIST, JsonObject
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    CheckboxesElement,
    ContextBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.views import View

from bot.domain import statuspage
from bot.domain.actions import ActionItem
from bot.domain.policy import Policy
from bot.domain.timeline import TimelineEntry, describe, fired_again
from bot.playbooks import Playbook
from bot.slack import texts
from bot.slack.texts import clip, escape, mention, mentions, when

MAX_BLOCKS = 50
SECTION_MAX = 3000
FIELD_MAX = 2000
HEADER_MAX = 150


class Action(enum.StrEnum):
    """action_id of every button; shared by the renderer and the listeners."""

    ACK = "incident_ack"
    COMMAND = "incident_command"
    UPDATE = "incident_update"
    ESCALATE = "incident_escalate"
    RESOLVE = "incident_resolve"
    NUDGE_UPDATE = "nudge_update"
    NUDGE_SNOOZE = "nudge_snooze"  # prefix: nudge_snooze_15m, nudge_snooze_30m, nudge_snooze_1h
    DUTY_DONE = "duty_done"  # a follow-up or compliance duty marked done
    PLAYBOOK_STEP = "playbook_step"  # prefix: one checkbox group per ten steps
    ACTION_DONE = "action_done"  # an action item completed
    OPEN_CHANNEL = "open_channel"  # a link into the incident channel (nothing to do on click)


class Modal(enum.StrEnum):
    """callback_id of every modal."""

    DECLARE = "incident_declare"
    UPDATE = "incident_update_modal"
    RESOLVE = "incident_resolve_modal"
    PUBLISH = "incident_publish_modal"


@dataclass(frozen=True)
class Message:
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


def _dicts(blocks: list[Block]) -> list[dict[str, Any]]:
    rendered = [plain(block) for block in blocks]
    if len(rendered) > MAX_BLOCKS:
        raise ValueError(f"{len(rendered)} blocks, Slack takes {MAX_BLOCKS}")
    return rendered


# (type, key) pairs whose empty list slack_sdk keeps in the JSON (rich text elements).
_EMPTY_ALLOWED = frozenset(
    (allowed["type"], allowed["property"]) for allowed in EMPTY_ALLOWED_TYPE_AND_PROPERTY_LIST
)
# Each model class's validators (slack_sdk's `JsonValidator` methods), looked up once.
_VALIDATORS: dict[type, tuple[str, ...]] = {}


def _validators(kind: type) -> tuple[str, ...]:
    names = _VALIDATORS.get(kind)
    if names is None:
        names = tuple(
            name
            for name in dir(kind)
            if not name.startswith("__")
            and callable(method := getattr(kind, name, None))
            and hasattr(method, "validator")
        )
        _VALIDATORS[kind] = names
    return names


def _kept(model: JsonObject, key: str, value: Any) -> bool:
    """slack_sdk's rule for a key kept in the JSON: set, and not an empty list or text
    (except where Block Kit allows an empty one)."""
    if value is None:
        return False
    if (getattr(model, "type", None), key) in _EMPTY_ALLOWED:
        return True
    return len(value) > 0 if hasattr(value, "__len__") else True


def plain(value: Any) -> Any:
    """`value.to_dict()` for a Block Kit model, the same dict and the same checks (every
    validator of every object, `SlackObjectFormationError` on a broken limit), without
    slack_sdk's cost of finding each object's validators anew (`dir()` on every object of
    every message: a fifth of the worker's time posting alerts). An option (a checklist
    item) is made in its Block Kit shape here too; another class with a `to_dict` of its
    own (confirmations) is left to it. `test_messages` holds the two equal over every
    message the bot renders."""
    if isinstance(value, JsonObject):
        kind = type(value)
        if kind is not Option and kind.to_dict is not JsonObject.to_dict:
            return value.to_dict()
        for name in _validators(kind):
            getattr(value, name)()
        if isinstance(value, Option):  # its own `to_dict`, made here in its block shape
            return _option_json(value)
        return {
            key: plain(item)
            for key in sorted(value.attributes)
            if _kept(value, key, item := value.get_object_attribute(key))
        }
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def _option_json(option: Option) -> dict[str, Any]:
    """`Option.to_dict()` in a block (its default shape), validators aside."""
    text = option._text or PlainTextObject.from_str(option.label or "")
    made: dict[str, Any] = {"text": plain(text), "value": option.value}
    if option._block_description:
        made["description"] = plain(option._block_description)
    if option.url:
        made["url"] = option.url
    return made


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _md(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=clip(text, SECTION_MAX))


def _section(text: str) -> SectionBlock:
    return SectionBlock(text=_md(text))


def _fields(pairs: list[tuple[str, str]]) -> SectionBlock:
    return SectionBlock(
        fields=[MarkdownTextObject(text=clip(f"*{k}*\n{v}", FIELD_MAX)) for k, v in pairs[:10]]
    )


def _context(text: str) -> ContextBlock:
    return ContextBlock(elements=[_md(text)])


def _header(text: str) -> HeaderBlock:
    return HeaderBlock(text=PlainTextObject(text=clip(text, HEADER_MAX), emoji=True))


def _drill(state: dict[str, Any]) -> str:
    return f"{texts.DRILL_MARK} · " if state.get("drill") else ""


def _targets(state: dict[str, Any], targets: list[str]) -> str:
    """Who is notified: mentions, or for a drill the names only (a drill pages nobody)."""
    if state.get("drill"):
        would = ", ".join(f"`{t}`" for t in targets)
        return f"nobody: this is a drill{f' (would notify {would})' if would else ''}"
    return mentions(targets) if targets else texts.NO_TARGETS


def _title(state: dict[str, Any]) -> str:
    return escape(str(state.get("title", "")))


def _services(state: dict[str, Any]) -> str:
    return escape(", ".join(state.get("services") or []))


def _present(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The fields that have a value: a field without one is left out, not filled with a
    placeholder people must read past."""
    return [(k, v) for k, v in pairs if v]


def _severity_line(state: dict[str, Any]) -> str:
    """The severity with its description, on one short line."""
    description = escape(state.get("severity_description") or "")
    line = f"{state['severity']} · {description}" if description else str(state["severity"])
    return clip(line, 90)


# ---- the alert -----------------------------------------------------------------------------
def channel_link(channel_id: str) -> str:
    """A URL that opens the channel in Slack (the app or the browser)."""
    return f"https://slack.com/app_redirect?channel={channel_id}"


def open_channel_button(channel_id: str) -> ButtonElement:
    return ButtonElement(
        text="Open the incident channel",
        action_id=Action.OPEN_CHANNEL,
        url=channel_link(channel_id),
        value=channel_id,
    )


def alert(
    state: dict[str, Any],
    *,
    channel_id: str | None,
    paging: list[str],
    announce: bool = False,
) -> Message:
    """🚨 INCIDENT ALERT (the procedure's alert template), edited in place as the incident changes.

    In the incident channel it carries the actions; the announcement-channel copy
    (`announce=True`) carries only the way into the incident channel, so people outside
    the incident cannot act on it from there."""
    severity = state["severity"]
    resolved = state["status"] == "resolved"
    open_ = not resolved
    head = "✅ INCIDENT RESOLVED" if resolved else "🚨 INCIDENT ALERT"
    if state.get("acknowledged_by"):
        acknowledged = (
            f"{mention(state['acknowledged_by'])} {when(_time(state['acknowledged_at']))}"
        )
    elif open_ and state.get("ack_due_at"):
        acknowledged = f"*Not yet* (due {when(_time(state['ack_due_at']), fmt='{time}')})"
    else:
        acknowledged = ""
    blocks: list[Block] = [
        _header(f"{'🧪 DRILL · ' if state.get('drill') else ''}{head} - {severity}"),
        _section(f"*{_title(state)}*\n{_severity_line(state)}"),
        *_from_alert(state),
        _fields(
            _present(
                [
                    ("Incident", state["id"]),
                    ("Status", str(state["status"]).capitalize()),
                    ("Declared", when(_time(state.get("declared_at")))),
                    ("Services Affected", _services(state)),
                    ("Impact", escape(state.get("impact") or "")),
                    (
                        "Incident Commander",
                        mention(state["commander"]) if state.get("commander") else "",
                    ),
                    # In the incident channel the channel is where one is already.
                    ("Channel", f"<#{channel_id}>" if announce and channel_id else ""),
                    (
                        "Next Update",
                        when(_time(state["next_update_at"]))
                        if open_ and state.get("next_update_at")
                        else "",
                    ),
                    ("Acknowledged", acknowledged),
                ]
            )
        ),
    ]
    if resolved:
        blocks.append(
            _context(
                f"Resolved {when(_time(state.get('resolved_at')))}; the resolution follows "
                "in its own message."
            )
        )
    else:
        blocks.append(
            _context(
                f"Paging: {_targets(state, paging)}"
                if paging or state.get("drill")
                else f"⚠️ {texts.NO_TARGETS}"
            )
        )
        if not announce:
            blocks.append(alert_buttons(state))
    if announce and channel_id:
        blocks.append(
            ActionsBlock(block_id="incident_link", elements=[open_channel_button(channel_id)])
        )
    fallback = f"{_drill(state)}{head} - {severity}: {clip(_title(state), 200)} ({state['id']})"
    if paging and not resolved and not state.get("drill"):
        fallback += f" · {mentions(paging)}"
    return Message(fallback, _dicts(blocks))


def link(url: Any, label: str) -> str:
    """A link for a URL that came from outside (an alert): only http(s), escaped, and never
    able to close the link early or change its label; empty otherwise."""
    text = str(url or "").strip()
    if not text.startswith(("http://", "https://")) or any(c.isspace() for c in text):
        return ""
    return f"<{escape(text).replace('|', '%7C')}|{label}>"


def firing_text(count: int) -> str:
    return texts.firing(count)


def _from_alert(state: dict[str, Any]) -> list[Block]:
    """For an incident the bot declared from an alert: where the alert came from, its
    summary and description (escaped and cut), and its links (runbook, dashboard, source,
    silence)."""
    alert = state.get("alert")
    if not isinstance(alert, dict):
        return []
    name = clip(escape(str(alert.get("name", ""))), 200)
    head = f"🤖 Declared by the bot {texts.alert_source(alert)}: *{name}*"
    facts = [firing_text(int(alert.get("firing", 1)))]
    if alert.get("truncated"):
        facts.append(f"{alert['truncated']} more not read")
    if alert.get("started_at"):
        facts.append(f"firing since {when(_time(alert['started_at']))}")
    declared = _time(state.get("declared_at"))
    again = fired_again(alert, declared) if declared else ""
    lines = [f"{head}\n{' · '.join(facts)}" + (f"\n🔁 {again}" if again else "")]
    summary = escape(str(alert.get("summary") or ""))
    if summary and summary != _title(state):
        lines.append(f"*Summary:* {clip(summary, 500)}")
    description = escape(str(alert.get("description") or ""))
    if description:
        lines.append(f"*Description:* {clip(description, 1500)}")
    links = [
        link(alert.get("runbook_url"), "Runbook"),
        link(alert.get("dashboard"), "Dashboard"),
        link(alert.get("url"), "Source"),
        link(alert.get("silence"), "Silence"),
    ]
    shown = " · ".join(x for x in links if x)
    if shown:
        lines.append(shown)
    return [_section("\n".join(lines))]


def _alert_names(event: dict[str, Any]) -> str:
    listed = list(event.get("alerts") or [])
    names = []
    for item in listed[:10]:
        name = f"*{clip(escape(str(item.get('name', ''))), 100)}*"
        summary = clip(escape(str(item.get("summary") or "")), 200)
        again = " (fired again)" if item.get("again") else ""
        names.append(f"{name}{again}" + (f": {summary}" if summary else ""))
    more = int(event.get("count") or len(listed)) - len(names)
    if more > 0:
        names.append(f"and {more} more")
    return "\n".join(f"• {n}" for n in names)


def alert_fired_message(state: dict[str, Any], event: dict[str, Any]) -> Message:
    count = int(event.get("count") or 1)
    what = "An alert" if count == 1 else f"{count} alerts"
    text = (
        f"🔔 {what} of this incident fired ({firing_text(int(event.get('firing', 0)))}):\n"
        f"{_alert_names(event)}"
    )
    return _line(state, text)


def alert_resolved_message(state: dict[str, Any], event: dict[str, Any]) -> Message:
    """A resolved alert, with **Resolve**: monitoring says it stopped; people decide."""
    count = int(event.get("count") or 1)
    what = "An alert" if count == 1 else f"{count} alerts"
    firing = int(event.get("firing", 0))
    if firing:
        status = f"Still firing: {firing} alert{'s' if firing != 1 else ''}."
    else:
        status = "*Every alert of this incident is resolved.*"
    text = f"✅ {what} of this incident resolved:\n{_alert_names(event)}\n{status}"
    if state.get("status") == "resolved":
        return _line(state, text)
    text += " Resolve the incident when you are sure it is over."
    button = ActionsBlock(
        block_id="alert_resolved",
        elements=[
            ButtonElement(
                text="Resolve",
                action_id=Action.RESOLVE,
                value=str(state["id"]),
                style="primary",
            )
        ],
    )
    return _with(state, text, button)


def escalation_mark(state: dict[str, Any]) -> str:
    """The level an Escalate button is rendered for (see `Incident.escalation_mark`)."""
    return f"{state['severity']}:{state.get('escalation_level', 0)}"


def alert_buttons(state: dict[str, Any]) -> ActionsBlock:
    incident_id = str(state["id"])

    def button(
        label: str, action: Action, style: str | None = None, value: str = incident_id
    ) -> ButtonElement:
        return ButtonElement(text=label, action_id=action, value=value, style=style)

    return ActionsBlock(
        block_id="incident_actions",
        elements=[
            button("Acknowledge", Action.ACK, "primary"),
            button("Take command", Action.COMMAND),
            button("Post update", Action.UPDATE),
            # Carries the level it was rendered for: a second click is stale.
            button(
                "Escalate", Action.ESCALATE, "danger", f"{incident_id}|{escalation_mark(state)}"
            ),
            button("Resolve", Action.RESOLVE),
        ],
    )


def topic(state: dict[str, Any]) -> str:
    parts = [
        "DRILL" if state.get("drill") else "",
        state["severity"],
        str(state["status"]),
        f"IC: {mention(state['commander'])}" if state.get("commander") else "IC: unassigned",
        state["id"],
    ]
    return clip(" | ".join(p for p in parts if p), 250)


# ---- messages posted as the incident moves ---------------------------------------------------
def update_message(state: dict[str, Any], event: dict[str, Any]) -> Message:
    """📊 INCIDENT UPDATE with the procedure's fields: status, impact, services, next update,
    then what was done and what comes next. A free-text update is shown as written; the
    form's fields fill their own sections."""
    severity = state["severity"]
    impact = event.get("impact") or state.get("impact") or ""
    blocks: list[Block] = [
        _header(f"{'🧪 DRILL · ' if state.get('drill') else ''}📊 INCIDENT UPDATE - {severity}"),
        _fields(
            _present(
                [
                    ("Status", str(event.get("status") or state["status"]).capitalize()),
                    ("Impact", escape(impact)),
                    ("Services Affected", _services(state)),
                    (
                        "Next Update",
                        when(_time(state.get("next_update_at")))
                        if state.get("next_update_at")
                        else "",
                    ),
                ]
            )
        ),
    ]
    body = escape(event.get("text", ""))
    blocks.append(_section(f"*Actions taken*\n{body}" if event.get("form") else body))
    if event.get("next_steps"):
        blocks.append(_section(f"*Next steps*\n{escape(event['next_steps'])}"))
    blocks.append(_context(f"Posted by {mention(event.get('actor'))}"))
    fallback = (
        f"{_drill(state)}📊 INCIDENT UPDATE - {severity} ({state['id']}): "
        f"{clip(escape(event.get('text', '')), 300)}"
    )
    return Message(fallback, _dicts(blocks))


_TBD = "_to be determined in the post-mortem_"


def resolution_message(state: dict[str, Any], event: dict[str, Any]) -> Message:
    severity = state["severity"]
    duration = texts.duration_text(int(event.get("seconds", 0)))
    blocks: list[Block] = [
        _header(f"{'🧪 DRILL · ' if state.get('drill') else ''}✅ INCIDENT RESOLVED - {severity}"),
        _section(f"*{_title(state)}*"),
        _fields(
            _present(
                [
                    ("Resolved", when(_time(event.get("at")))),
                    ("Duration", duration),
                    ("Services Affected", _services(state)),
                    (
                        "Incident Commander",
                        mention(state["commander"]) if state.get("commander") else "",
                    ),
                    ("Resolved by", mention(event.get("actor"))),
                ]
            )
        ),
        _section(f"*Resolution*\n{escape(event.get('summary', ''))}"),
        _section(f"*Root cause*\n{escape(event.get('root_cause') or '') or _TBD}"),
    ]
    if state.get("drill") and event.get("drill_report"):
        blocks.append(_section("*🧪 Drill report*\n" + "\n".join(event["drill_report"])))
    fallback = (
        f"{_drill(state)}✅ INCIDENT RESOLVED - {severity} ({state['id']}) after {duration}: "
        f"{clip(escape(event.get('summary', '')), 300)}"
    )
    return Message(fallback, _dicts(blocks))


SNOOZES = ("15m", "30m", "1h")


def nudge_buttons(incident_id: str, due: str | None = None) -> ActionsBlock:
    """Post update, and snoozes that carry the due time the nudge was for (`due`, ISO):
    once the nudge is answered they are stale and change nothing."""
    mark = f"|{due}" if due else ""
    return ActionsBlock(
        block_id="nudge_actions",
        elements=[
            ButtonElement(
                text="Post update",
                action_id=Action.NUDGE_UPDATE,
                value=incident_id,
                style="primary",
            ),
            *(
                ButtonElement(
                    text=f"Snooze {d}",
                    action_id=f"{Action.NUDGE_SNOOZE}_{d}",
                    value=f"{incident_id}|{d}{mark}",
                )
                for d in SNOOZES
            ),
        ],
    )


def done_button(incident_id: str, duty: str, label: str) -> ActionsBlock:
    return ActionsBlock(
        block_id="duty_actions",
        elements=[
            ButtonElement(
                text=label,
                action_id=Action.DUTY_DONE,
                value=f"{incident_id}|{duty}",
                style="primary",
            )
        ],
    )


_DUTIES = {
    "report": "the incident report",
    "postmortem": "the post-mortem review",
    "action_review": "the review of the action items",
    "customer_communication": "the customer communication",
}


def _since(seconds: int) -> str:
    return texts.duration_text(seconds)


def _with(state: dict[str, Any], text: str, actions: ActionsBlock) -> Message:
    fallback = f"{_drill(state)}{state['id']}: {text}"
    mark = [_context(texts.DRILL_MARK)] if state.get("drill") else []
    return Message(fallback, _dicts([_section(text), actions, *mark]))


def clock_message(template: str, state: dict[str, Any], event: dict[str, Any]) -> Message | None:
    """Messages posted when a clock runs out (the actor is the bot)."""
    match template:
        case "ack_target_missed":
            targets = list(event.get("notify") or [])
            who = _targets(state, targets)
            return _line(
                state,
                f"⏰ Nobody has acknowledged within the {event.get('target')} response target "
                f"for {state['severity']}. {who}",
            )
        case "update_nudged":
            overdue = int(event.get("overdue", 0))
            late = f" ({_since(overdue)} overdue)" if overdue >= 60 else ""
            return _with(
                state,
                f"⏰ {mention(event.get('commander'))}, a status update is due{late}: "
                f"{state['severity']} updates go out every {event.get('interval')}.",
                nudge_buttons(state["id"], event.get("due")),
            )
        case "nudge_escalated":
            comms = event.get("comms_lead")
            who = (
                f"{mention(comms)} (comms lead)"
                if comms
                else "No comms lead is assigned (`/incident role comms_lead @user`)"
            )
            return _with(
                state,
                f"⏰ The status update is {_since(int(event.get('overdue', 0)))} overdue. {who}, "
                f"{mention(event.get('commander'))}: please post one.",
                nudge_buttons(state["id"], event.get("due")),
            )
        case "update_overdue":
            return _line(
                state,
                f"⏰ The status update for *{state['id']}* ({state['severity']}: "
                f"{clip(_title(state), 150)}) is {_since(int(event.get('overdue', 0)))} overdue.",
            )
        case "open_escalated":
            targets = list(event.get("notify") or [])
            who = _targets(state, targets)
            return _line(
                state,
                f"📣 {state['severity']} open for {event.get('after')}, still unresolved: {who}",
            )
        case "resolution_target_missed":
            return _line(
                state,
                f"⚠️ Resolution target missed: {state['severity']} incidents are to be resolved "
                f"within {event.get('target')}. Incident commander: "
                f"{mention(event.get('commander'))}.",
            )
        case "followup_due":
            duty = str(event.get("duty", ""))
            return _with(
                state,
                f"📝 {mention(event.get('commander'))}, {_DUTIES.get(duty, duty)} for "
                f"{state['id']} is due (reminder {event.get('reminder', 1)}).",
                done_button(state["id"], f"followup:{duty}", "Mark done"),
            )
        case "followup_done" | "compliance_done":
            name = str(event.get("name", "")).replace("_", " ")
            return _line(state, f"✅ {mention(event.get('actor'))} marked *{escape(name)}* done.")
        case "compliance_reminder":
            left = int(event.get("left", 0))
            description = escape(str(event.get("description") or event.get("tag")))
            deadline = when(_time(event.get("deadline")))
            when_text = f"due in {_since(left)}" if left else "due *now*"
            return _with(
                state,
                f"⚖️ {mention(event.get('commander'))}: {description}: deadline {deadline}, "
                f"{when_text}.",
                done_button(state["id"], f"compliance:{event.get('tag')}", "Done"),
            )
        case "snoozed":
            return _line(
                state,
                f"😴 {mention(event.get('actor'))} snoozed the update nudge: next update due "
                f"{when(_time(event.get('until')))}.",
            )
        case "tagged":
            tag = escape(str(event.get("tag")))
            return _line(state, f"🏷️ {mention(event.get('actor'))} tagged the incident *{tag}*.")
    return None


STEPS_PER_GROUP = 10


def playbook_message(
    playbook: Playbook,
    *,
    state: dict[str, Any],
    ticks: dict[str, dict[str, str]],
    others: list[Playbook],
) -> Message:
    """The matched playbook as a checklist: ticking a step records who and when."""
    blocks: list[Block] = [
        _header(f"{'🧪 DRILL · ' if state.get('drill') else ''}📖 Playbook: {playbook.title}"),
    ]
    if playbook.description:
        blocks.append(_section(escape(playbook.description)))
    for start in range(0, len(playbook.steps), STEPS_PER_GROUP):
        options = []
        ticked = []
        for step in playbook.steps[start : start + STEPS_PER_GROUP]:
            tick = ticks.get(step.id)
            note = " · ".join(
                part
                for part in (escape(step.when or ""), f"✓ {mention(tick['by'])}" if tick else "")
                if part
            )
            option = Option(
                value=step.id,
                text=MarkdownTextObject(text=clip(escape(step.text), 75)),
                description=MarkdownTextObject(text=clip(note, 75)) if note else None,
            )
            options.append(option)
            if tick:
                ticked.append(option)
        blocks.append(
            ActionsBlock(
                block_id=f"steps:{start}",
                elements=[
                    CheckboxesElement(
                        action_id=f"{Action.PLAYBOOK_STEP}_{start}",
                        options=options,
                        initial_options=ticked or None,
                    )
                ],
            )
        )
    if playbook.diagnostics:
        # Slack reads `<…>` and `&` as markup even inside a code block: escaped, so that
        # `redis-cli -h <host>` and `query_start < NOW()` show as written.
        lines = [f"{escape(d.label)}\n{escape(d.command)}" for d in playbook.diagnostics]
        heading = "*Diagnostics*"
        if playbook.examples:
            heading += " _(examples from the runbook: adapt them to your systems)_"
        blocks.append(_section(f"{heading}\n```" + clip("\n\n".join(lines), 2700) + "```"))
    if playbook.escalation:
        blocks.append(_context("Escalation: " + escape("; ".join(playbook.escalation))))
    if others:
        names = ", ".join(escape(p.title) for p in others)
        blocks.append(_context(f"Other playbooks that match: {names}"))
    progress = f"{len(ticks)}/{len(playbook.steps)} done"
    fallback = (
        f"{_drill(state)}📖 Playbook for {state['id']}: {escape(playbook.title)} ({progress})"
    )
    return Message(fallback, _dicts(blocks))


def action_message(state: dict[str, Any], event: dict[str, Any]) -> Message:
    owner = mention(event.get("owner")) if event.get("owner") else "_no owner_"
    due = event.get("due") or "no due date"
    text = (
        f"📋 Action item #{event.get('id')}: {escape(str(event.get('text', '')))}\n"
        f"Owner: {owner} · Due: {due} · added by {mention(event.get('actor'))}"
    )
    button = ActionsBlock(
        block_id="action_item",
        elements=[
            ButtonElement(
                text="Done",
                action_id=Action.ACTION_DONE,
                value=f"{state['id']}|{event.get('id')}",
            )
        ],
    )
    return _with(state, text, button)


def action_list(incident_id: str, items: list[ActionItem]) -> Message:
    if not items:
        return Message(
            f"{incident_id} has no action items yet. Add one: "
            "`/incident action <text> [@owner] [due 2w]`."
        )
    blocks: list[Block] = [_header(f"Action items of {incident_id}")]
    for item in items[:45]:
        owner = mention(item.owner) if item.owner else "_no owner_"
        status = "✅ done" if item.done else f"due {item.due or '—'}"
        section = SectionBlock(
            text=_md(f"*#{item.id}* {escape(item.text)}\n{owner} · {status}"),
            accessory=None
            if item.done
            else ButtonElement(
                text="Done", action_id=Action.ACTION_DONE, value=f"{incident_id}|{item.id}"
            ),
        )
        blocks.append(section)
    return Message(f"{len(items)} action item(s) of {incident_id}", _dicts(blocks))


def stats_message(lines: list[str]) -> Message:
    body = "\n".join(lines[1:])
    blocks: list[Block] = [
        _header("Incident statistics"),
        _context(escape(lines[0]) if lines else ""),
        _section("```" + clip(body, 2900) + "```"),
        _context("TTA: time to acknowledge · TTR: time to resolve · drills are excluded"),
    ]
    return Message(lines[0] if lines else "Incident statistics", _dicts(blocks))


def _line(state: dict[str, Any], text: str) -> Message:
    """A one-line message. The incident's id is in the notification text, not under the
    message: in the incident channel the channel's name says it, and in the announcement
    channel the message is a reply in the incident's thread."""
    fallback = f"{_drill(state)}{state['id']}: {text}"
    mark = [_context(texts.DRILL_MARK)] if state.get("drill") else []
    return Message(fallback, _dicts([_section(text), *mark]))


def event_message(template: str, state: dict[str, Any], event: dict[str, Any]) -> Message:
    """The message a timeline event posts (`template` is the event kind)."""
    clocked = clock_message(template, state, event)
    if clocked is not None:
        return clocked
    actor = mention(event.get("actor"))
    match template:
        case "clock_failed":
            return _line(
                state,
                f"⚠️ A clock of this incident could not run (`{escape(str(event.get('clock')))}`:"
                f" {escape(str(event.get('reason')))}). The other clocks still run; "
                "whoever runs the bot will find the details in its log.",
            )
        case "email_trouble":
            error, retrying = str(event.get("error")), bool(event.get("retrying"))
            return _line(state, texts.email_trouble(error, retrying=retrying))
        case "email_recovered":
            return _line(state, texts.email_recovered(int(event.get("recipients") or 0)))
        case "update_posted":
            return update_message(state, event)
        case "action_added":
            return action_message(state, event)
        case "action_done":
            return _line(
                state,
                f"✅ {actor} completed action item #{event.get('id')}: "
                f"{escape(str(event.get('text', '')))}",
            )
        case "resolved":
            return resolution_message(state, event)
        case "alert_fired":
            return alert_fired_message(state, event)
        case "alert_resolved":
            return alert_resolved_message(state, event)
        case "published":
            return published_message(state, event)
        case "acknowledged":
            waited = texts.duration_text(int(event.get("seconds", 0)))
            return _line(
                state, f"👀 {actor} acknowledged the incident ({waited} after declaration)."
            )
        case "commander_changed":
            if event.get("commander") == event.get("actor"):
                return _line(state, f"🧑‍✈️ {actor} is now the incident commander.")
            return _line(
                state, f"🧑‍✈️ {actor} handed incident command to {mention(event.get('commander'))}."
            )
        case "role_assigned":
            role = escape(str(event.get("role", "")).replace("_", " "))
            return _line(state, f"🎭 {actor} assigned *{role}* to {mention(event.get('user'))}.")
        case "status_changed":
            return _line(
                state,
                f"🔄 {actor} changed the status: {event.get('previous')} → "
                f"*{event.get('status')}*.",
            )
        case "severity_changed":
            return _line(
                state,
                f"⚠️ {actor} changed the severity: {event.get('previous')} → "
                f"*{event.get('severity')}*. The clocks follow the new severity.",
            )
        case "note_added":
            return _line(state, f"📝 Note from {actor}: {escape(event.get('text', ''))}")
        case "escalated":
            targets = list(event.get("notify") or [])
            who = (
                _targets(state, targets)
                if targets or state.get("drill")
                else (f"nobody ({texts.NO_TARGETS})")
            )
            reason = f" Reason: {escape(event['reason'])}" if event.get("reason") else ""
            how = (
                f"{actor} escalated" if event.get("manual") else "⏰ Nobody acknowledged: escalated"
            )
            paged = " PagerDuty paged." if event.get("pagerduty") else ""
            return _line(state, f"📣 {how} to level {event.get('level')}: {who}.{reason}{paged}")
    return _line(state, escape(str(event.get("text", template))))


# ---- reaching people -----------------------------------------------------------------------
def page_reason(page: dict[str, Any]) -> str:
    """Why someone is paged, in one sentence (`page` is a PAGE job's payload)."""
    minutes = int(page.get("minutes") or 0)
    unacked = f"{minutes} min" if minutes else "less than a minute"
    match page.get("why"):
        case "declared":
            return f"You are paged for a new {page.get('severity')} incident."
        case "level":
            return (
                f"Nobody has acknowledged for {unacked}: escalation level {page.get('level')} "
                "is you."
            )
        case "manual":
            return f"{mention(page.get('by'))} escalated the incident to level {page.get('level')}."
        case "ack_target":
            return (
                f"The {page.get('target')} response target was missed ({unacked} "
                "unacknowledged): a reminder."
            )
        case "open":
            return f"Still unresolved after {page.get('after')}: you are told, as the policy says."
        case "raised":
            return (
                f"{mention(page.get('by'))} raised the severity from {page.get('previous')} to "
                f"{page.get('severity')}."
            )
    return "You are paged."


def page_message(state: dict[str, Any], page: dict[str, Any], *, channel_id: str) -> Message:
    """The direct message a paged person gets: which incident, why, Acknowledge, the way in."""
    reason = page_reason(page)
    head = f"🚨 *{state['severity']} · {state['id']}*: {clip(_title(state), 200)}"
    elements = [open_channel_button(channel_id)]
    if not state.get("acknowledged_at"):
        elements.insert(
            0,
            ButtonElement(
                text="Acknowledge", action_id=Action.ACK, value=str(state["id"]), style="primary"
            ),
        )
    blocks: list[Block] = [
        _section(f"{head}\n{reason}\nChannel: <#{channel_id}>"),
        ActionsBlock(block_id="page_actions", elements=elements),
    ]
    fallback = f"🚨 Paged: {state['severity']} {state['id']}: {clip(_title(state), 150)}. {reason}"
    return Message(fallback, _dicts(blocks))


def unreached_message(state: dict[str, Any], unreached: list[dict[str, str]]) -> Message:
    """Said in the incident channel: who could not be paged, and why."""
    reasons = {
        "no_such_subteam": "no such user group",
        "user_not_found": "no such user",
        "user_disabled": "deactivated",
        "user_is_deactivated": "deactivated",
        "user_is_restricted": "a guest: cannot be invited",
        "user_is_ultra_restricted": "a guest: cannot be invited",
        "cant_invite": "cannot be invited",
        "cannot_dm_bot": "a bot",
    }
    lines = [
        f"• `{escape(item['target'])}` ({escape(item.get('step', ''))}: "
        f"{escape(reasons.get(item.get('error', ''), item.get('error', '')))})"
        for item in unreached[:40]
    ]
    text = (
        "⚠️ Not everyone could be reached; the others were paged. Check the ids in the "
        "policy file (POLICY_FILE):\n" + "\n".join(lines)
    )
    return _line(state, text)


# ---- replies -------------------------------------------------------------------------------
def timeline_message(incident_id: str, entries: list[TimelineEntry], *, page: int = 1) -> Message:
    """The timeline, a page at a time (each page fits Slack's 50 blocks and 3,000 characters
    a section)."""

    def render(entry: TimelineEntry) -> str:
        said = describe(entry, mention=mention, quote=escape)
        link = f" (<{entry.data['permalink']}|message>)" if entry.data.get("permalink") else ""
        return f"{when(entry.at, fmt='{date_short} {time}')} {said}{link}"

    lines = [render(entry) for entry in entries]
    pages: list[list[str]] = [[]]
    size = 0
    for line in lines:
        line = clip(line, 1000)
        if len(pages[-1]) >= 40 or size + len(line) > 2900 * 4:
            pages.append([])
            size = 0
        pages[-1].append(line)
        size += len(line) + 1
    page = max(1, min(page, len(pages)))
    blocks: list[Block] = [_header(f"Timeline of {incident_id}")]
    chunk: list[str] = []
    for line in pages[page - 1]:
        if sum(len(x) + 1 for x in chunk) + len(line) > SECTION_MAX - 10:
            blocks.append(_section("\n".join(chunk)))
            chunk = []
        chunk.append(line)
    if chunk:
        blocks.append(_section("\n".join(chunk)))
    if len(pages) > 1:
        more = f" · `/incident timeline {page + 1}` for more" if page < len(pages) else ""
        blocks.append(_context(f"Page {page} of {len(pages)}{more}"))
    return Message(f"Timeline of {incident_id}: {len(entries)} entries", _dicts(blocks))


# ---- modals --------------------------------------------------------------------------------
def _option(text: str, value: str) -> Option:
    return Option(text=PlainTextObject(text=clip(text, 75)), value=value)


def declare_modal(policy: Policy, *, private_metadata: str) -> dict[str, Any]:
    """The declare form; `private_metadata` carries where it was opened from."""
    severities = [
        _option(f"{s.name}: {s.description}" if s.description else s.name, s.name)
        for s in policy.severities
    ]
    view = View(
        type="modal",
        callback_id=Modal.DECLARE,
        private_metadata=private_metadata,
        title=PlainTextObject(text="Declare an incident"),
        submit=PlainTextObject(text="Declare"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            InputBlock(
                block_id="severity",
                label="Severity",
                element=StaticSelectElement(
                    action_id="value", options=severities, initial_option=severities[0]
                ),
            ),
            InputBlock(
                block_id="title",
                label="Title",
                element=PlainTextInputElement(
                    action_id="value", max_length=500, placeholder="payment processing down"
                ),
            ),
            InputBlock(
                block_id="services",
                label="Services affected (comma-separated)",
                optional=True,
                element=PlainTextInputElement(action_id="value", max_length=500),
            ),
            InputBlock(
                block_id="impact",
                label="Impact",
                optional=True,
                element=PlainTextInputElement(action_id="value", multiline=True, max_length=2000),
            ),
        ],
    )
    return view.to_dict()


def update_modal(state: dict[str, Any], policy: Policy) -> dict[str, Any]:
    statuses = [_option(s.capitalize(), s) for s in policy.open_statuses]
    current = next((o for o in statuses if o.value == state["status"]), statuses[0])
    view = View(
        type="modal",
        callback_id=Modal.UPDATE,
        private_metadata=state["id"],
        title=PlainTextObject(text="Post an update"),
        submit=PlainTextObject(text="Post"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            _context(f"*{state['id']}* · {state['severity']} · {clip(_title(state), 200)}"),
            InputBlock(
                block_id="status",
                label="Status",
                element=StaticSelectElement(
                    action_id="value", options=statuses, initial_option=current
                ),
            ),
            InputBlock(
                block_id="text",
                label="Actions taken",
                element=PlainTextInputElement(action_id="value", multiline=True, max_length=2900),
            ),
            InputBlock(
                block_id="impact",
                label="Current impact",
                optional=True,
                element=PlainTextInputElement(
                    action_id="value",
                    multiline=True,
                    max_length=2000,
                    initial_value=state.get("impact") or None,
                ),
            ),
            InputBlock(
                block_id="next_steps",
                label="Next steps",
                optional=True,
                element=PlainTextInputElement(action_id="value", multiline=True, max_length=2000),
            ),
        ],
    )
    return view.to_dict()


def published_message(state: dict[str, Any], event: dict[str, Any]) -> Message:
    """What was published on the status page, said in the incident channel (escaped: the
    text is shown as typed and pings nobody)."""
    components = dict(event.get("components") or {})
    states = ", ".join(
        f"{escape(str(name))}: {statuspage.STATE_LABELS.get(str(value), escape(str(value)))}"
        for name, value in components.items()
    )
    how = "made the incident public on" if event.get("first") else "published an update to"
    if event.get("status") == "resolved":
        how = "published the resolution to"
    quoted = "\n".join(f">{line}" for line in escape(str(event.get("text", ""))).splitlines())
    lines = [
        f"📣 {mention(event.get('actor'))} {how} the status page: "
        f"*{clip(escape(str(event.get('title', ''))), 300)}* ({escape(str(event.get('status')))})",
        clip(quoted, 2500),
    ]
    if states:
        lines.append(f"Components: {clip(states, 400)}")
    return _line(state, "\n".join(lines))


MAX_COMPONENTS = 40  # select menus in the publish form (a modal holds 100 blocks)


def _state_options() -> list[Option]:
    return [
        _option("Operational (not affected)", statuspage.OPERATIONAL),
        _option("Degraded performance", statuspage.DEGRADED),
        _option("Partial outage", statuspage.PARTIAL),
        _option("Major outage", statuspage.MAJOR),
    ]


def publish_modal(state: dict[str, Any], policy: Policy) -> dict[str, Any]:
    """The customer-communication form: a public title (never the internal one), each
    component of the status page and its state (proposed from the incident's services on a
    first publish), and the message, pre-filled from the customer-communication template."""
    names = statuspage.component_names(policy)[:MAX_COMPONENTS]
    current: dict[str, str] = dict(state.get("components") or {})
    public = bool(state.get("public_title"))
    if not public:
        proposed = statuspage.default_state(policy, state["severity"])
        for name in statuspage.suggested_components(policy, list(state.get("services") or [])):
            current.setdefault(name, proposed)
    interval = policy.get(state["severity"]).update_interval
    options = _state_options()
    chosen = {name: current.get(name, statuspage.OPERATIONAL) for name in names}
    title = str(state.get("public_title") or statuspage.default_title(chosen))
    selects: list[Block] = [
        InputBlock(
            block_id=f"component:{index}",
            label=clip(name, 150),
            element=StaticSelectElement(
                action_id="value",
                options=options,
                initial_option=next(o for o in options if o.value == chosen[name]),
            ),
        )
        for index, name in enumerate(names)
    ]
    view = View(
        type="modal",
        callback_id=Modal.PUBLISH,
        private_metadata=state["id"],
        title=PlainTextObject(text="Status page update"),
        submit=PlainTextObject(text="Publish"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            _context(
                f"*{state['id']}* · {state['severity']} · what you write here is public: "
                "customers read it on the status page"
                + (" and stakeholders by email." if policy.get(state["severity"]).email else ".")
            ),
            InputBlock(
                block_id="title",
                label="Public title",
                element=PlainTextInputElement(
                    action_id="value",
                    max_length=statuspage.PUBLIC_TITLE_MAX,
                    initial_value=clip(title, statuspage.PUBLIC_TITLE_MAX),
                ),
            ),
            *selects,
            InputBlock(
                block_id="text",
                label="Message to customers",
                element=PlainTextInputElement(
                    action_id="value",
                    multiline=True,
                    max_length=statuspage.PUBLIC_TEXT_MAX,
                    initial_value=statuspage.customer_template(chosen, interval),
                ),
            ),
        ],
    )
    return view.to_dict()


def resolve_modal(state: dict[str, Any]) -> dict[str, Any]:
    public: list[Block] = []
    if state.get("public_title"):
        public = [
            InputBlock(
                block_id="public",
                label="Public resolution message (status page)",
                element=PlainTextInputElement(
                    action_id="value",
                    multiline=True,
                    max_length=statuspage.PUBLIC_TEXT_MAX,
                    initial_value=statuspage.resolution_template(
                        dict(state.get("components") or {})
                    ),
                ),
            )
        ]
    view = View(
        type="modal",
        callback_id=Modal.RESOLVE,
        private_metadata=state["id"],
        title=PlainTextObject(text="Resolve the incident"),
        submit=PlainTextObject(text="Resolve"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            _context(f"*{state['id']}* · {state['severity']} · {clip(_title(state), 200)}"),
            InputBlock(
                block_id="summary",
                label="Resolution summary",
                element=PlainTextInputElement(action_id="value", multiline=True, max_length=2900),
            ),
            InputBlock(
                block_id="root_cause",
                label="Root cause",
                optional=True,
                element=PlainTextInputElement(action_id="value", multiline=True, max_length=2900),
            ),
            *public,
        ],
    )
    return view.to_dict()
