"""`/incident …`: the command grammar (README, "Using it"), parsed into service calls.
Returns what to reply."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bot.domain import statuspage
from bot.domain.errors import InvalidCommand
from bot.domain.incident import EventKind
from bot.domain.naming import channel_name
from bot.domain.stats import parse_window, render_stats_text
from bot.domain.text import strip_controls
from bot.service.incidents import IncidentService, Outcome, Where, snapshot
from bot.slack import blocks, lists, texts
from bot.slack.texts import mention

_USER = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$")
_LABELLED = re.compile(r"<([@#])([UWC][A-Z0-9]+)\|([^>]+)>")

IN_CHANNEL = frozenset(
    {"ack", "update", "status", "sev", "severity", "ic", "commander", "role", "note"}
    | {"escalate", "resolve", "timeline", "snooze", "tag", "action", "postmortem", "publish"}
)


@dataclass
class Reply:
    """What the listener acknowledges with, and any modal to open afterwards."""

    text: str
    blocks: list[dict[str, Any]] | None = None
    in_channel: bool = False
    view: dict[str, Any] | None = None
    # Work too slow for the acknowledgement: run after it, its reply sent to response_url.
    later: Callable[[], Awaitable[Reply]] | None = None

    def body(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "response_type": "in_channel" if self.in_channel else "ephemeral",
            "text": self.text,
        }
        if self.blocks:
            payload["blocks"] = self.blocks
        return payload


@dataclass
class Context:
    service: IncidentService
    user: str
    channel: str
    response_url: str | None = None
    trigger_id: str | None = None
    raw_rest: str = ""  # the arguments as Slack sent them (mentions as <@U…|name>)


def plain(text: str) -> str:
    """Text as the user typed it: labelled mentions Slack wrote shown by their label
    (`<@U1|alice>` → `@alice`), then Slack's entity escaping undone, in that order: a typed
    `<@U1|alice>` arrives as `&lt;@U1|alice&gt;` and stays as typed. Everything is escaped
    again on output."""
    labelled = _LABELLED.sub(lambda m: f"{m.group(1)}{m.group(3)}", text)
    return (html.unescape(labelled) if "&" in labelled else labelled).strip()


def typed(text: str) -> str:
    """A form field as the user typed it: Slack sends input values unescaped, so only
    control characters go and the ends are trimmed (everything is escaped on output)."""
    return strip_controls(text).strip()


def user_id(word: str) -> str:
    match = _USER.match(word.strip())
    if not match:
        raise InvalidCommand(
            f"`{plain(word)}` is not a person. Mention them with @ (e.g. `@alice`) "
            "so that Slack sends their id."
        )
    return match.group(1)


def split(text: str) -> tuple[str, str]:
    parts = text.strip().split(None, 1)
    if not parts:
        return "", ""
    return parts[0].lower(), parts[1] if len(parts) > 1 else ""


def confirm(outcome: Outcome) -> str:
    """One ephemeral line telling the user what their command did."""
    incident = outcome.incident
    kinds = [event.kind for event in outcome.events]
    if EventKind.RESOLVED in kinds:
        public = " and published on the status page" if EventKind.PUBLISHED in kinds else ""
        return f"✅ {incident.id} resolved. The resolution is posted in the channel{public}."
    if EventKind.PUBLISHED in kinds:
        return f"📣 Published on the status page for {incident.id}."
    if EventKind.UPDATE_POSTED in kinds:
        return f"📊 Update posted for {incident.id}."
    if EventKind.COMMANDER_CHANGED in kinds:
        return f"🧑‍✈️ {mention(incident.commander)} is the incident commander of {incident.id}."
    if EventKind.ACKNOWLEDGED in kinds:
        return f"👀 {incident.id} acknowledged. Escalation stopped."
    if EventKind.ESCALATED in kinds:
        return f"📣 {incident.id} escalated to level {incident.escalation_level + 1}."
    if EventKind.SEVERITY_CHANGED in kinds:
        return f"⚠️ {incident.id} is now {incident.severity}."
    if EventKind.STATUS_CHANGED in kinds:
        return f"🔄 {incident.id} is now {incident.status}."
    if EventKind.ROLE_ASSIGNED in kinds:
        return f"🎭 Role assigned on {incident.id}."
    if EventKind.SNOOZED in kinds:
        due = incident.snoozed_until
        return f"😴 Update nudge for {incident.id} snoozed until {texts.utc(due)}."
    if EventKind.TAGGED in kinds:
        return f"🏷️ {incident.id} tagged: {', '.join(incident.tags)}."
    if EventKind.FOLLOWUP_DONE in kinds or EventKind.COMPLIANCE_DONE in kinds:
        return f"✅ Marked done for {incident.id}."
    if EventKind.ACTION_ADDED in kinds:
        item = incident.actions[-1]
        return f"📋 Action item #{item.id} added to {incident.id} (due {item.due or '—'})."
    if EventKind.ACTION_DONE in kinds:
        return f"✅ Action item done on {incident.id}."
    if EventKind.STEP_TICKED in kinds or EventKind.STEP_UNTICKED in kinds:
        return f"☑️ Checklist updated on {incident.id}."
    if EventKind.NOTE_ADDED in kinds:
        return f"📝 Note added to the timeline of {incident.id}."
    return "Done."


def _page(rest: str) -> int:
    """`/incident timeline [page]`: the page number, 1 when there is none. Only digits
    `int()` reads count (`²` is a digit it does not), and the last page is shown for a
    number past it however long."""
    word = rest.split()[0] if rest.split() else ""
    if not word.isdecimal():
        return 1
    return int(word) if len(word) < 10 else 10**9


async def overview(service: IncidentService) -> list[dict[str, Any]]:
    """Open incidents as /incident list and the App Home show them, in declaration order."""
    now, policy = service.clock.now(), service.policy
    rows = []
    for record in await service.open_incidents():
        row = snapshot(record.incident, policy)
        row["channel_id"] = record.slack.channel_id
        target = policy.get(record.incident.severity).resolution_target
        row["resolution_overdue"] = now - record.incident.declared_at > target
        rows.append(row)
    return rows


async def handle(text: str, ctx: Context) -> Reply:
    """Run `/incident <text>` for `ctx.user` in `ctx.channel`."""
    service, policy = ctx.service, ctx.service.policy
    word, raw = split(text)
    ctx.raw_rest = raw.strip()
    # `ic` and `role` need the raw mention (`<@U1|alice>`) to find the person's id.
    rest = raw.strip() if word in ("ic", "commander", "role") else plain(raw)
    if not word:
        metadata = json.dumps({"channel": ctx.channel, "response_url": ctx.response_url})
        return Reply(
            "Opening the declare form…",
            view=blocks.declare_modal(policy, private_metadata=metadata),
        )
    if word == "help":
        return Reply(texts.help_text(policy))
    if word == "list":
        rows = await overview(service)
        message = lists.incident_list(rows, policy, rest)
        return Reply(message.text, message.blocks)
    if word == "stats":
        parse_window(rest)  # a wrong window is said at once

        async def compute() -> Reply:
            message = blocks.stats_message(render_stats_text(await service.stats(rest)))
            return Reply(message.text, message.blocks)

        return Reply("📈 Computing the statistics…", later=compute)
    drill = word == "drill"
    if drill:
        word, rest = split(rest)
        if not word:
            raise InvalidCommand(
                "Write `/incident drill <severity> <title>`, e.g. "
                "`/incident drill sev2 practice: payment down`."
            )
        if policy.severity(word) is None:
            raise InvalidCommand(f"`{word}` is not a severity. {texts.usage_declare(policy)}")
    if policy.severity(word) is not None:
        title = rest
        if not title.strip():
            raise InvalidCommand(f"The title is empty. {texts.usage_declare(policy)}")
        outcome = await service.declare(
            severity=word,
            title=title,
            by=ctx.user,
            origin_channel_id=ctx.channel,
            response_url=ctx.response_url,
            drill=drill,
        )
        incident = outcome.incident
        return Reply(
            texts.declared(
                incident.id,
                incident.severity,
                incident.title,
                channel_name(incident.id, incident.title, drill=incident.drill),
                drill=incident.drill,
            )
        )
    if word not in IN_CHANNEL:
        raise InvalidCommand(texts.unknown_subcommand(plain(word), policy))
    return await _in_channel(word, rest, ctx)


async def _in_channel(word: str, rest: str, ctx: Context) -> Reply:
    service, policy, by = ctx.service, ctx.service.policy, ctx.user
    here = Where(channel_id=ctx.channel)
    outcome: Outcome
    match word:
        case "ack":
            outcome = await service.acknowledge(
                here,
                by=by,
            )
        case "update":
            if not rest:
                record = await service.find(here)
                view = blocks.update_modal(snapshot(record.incident, policy), policy)
                return Reply("Opening the update form…", view=view)
            outcome = await service.post_update(
                here,
                by=by,
                text=rest,
            )
        case "status":
            if not rest:
                raise InvalidCommand(
                    f"Write `/incident status <state>`: {' | '.join(policy.open_statuses)}."
                )
            outcome = await service.set_status(
                here,
                by=by,
                status=rest.split()[0],
            )
        case "sev" | "severity":
            if not rest:
                raise InvalidCommand(
                    f"Write `/incident sev <severity>`: {policy.severity_words()}."
                )
            outcome = await service.change_severity(
                here,
                by=by,
                severity=rest.split()[0],
            )
        case "ic" | "commander":
            target = user_id(rest.split()[0]) if rest else None
            outcome = await service.take_command(
                here,
                by=by,
                user=target,
            )
        case "role":
            parts = rest.split()
            if len(parts) != 2:
                raise InvalidCommand(
                    f"Write `/incident role <role> @user`; roles: {', '.join(policy.roles)}."
                )
            outcome = await service.assign_role(
                here,
                by=by,
                role=plain(parts[0]),
                user=user_id(parts[1]),
            )
        case "note":
            if not rest:
                raise InvalidCommand("Write `/incident note <text>`.")
            outcome = await service.add_note(
                here,
                by=by,
                text=rest,
            )
        case "escalate":
            outcome = await service.escalate(
                here,
                by=by,
                reason=rest,
            )
        case "resolve":
            if not rest:
                record = await service.find(here)
                if not record.incident.is_open:
                    raise InvalidCommand(f"{record.incident.id} is already resolved.")
                view = blocks.resolve_modal(snapshot(record.incident, policy))
                return Reply("Opening the resolve form…", view=view)
            outcome = await service.resolve(
                here,
                by=by,
                summary=rest,
            )
        case "snooze":
            if not rest:
                raise InvalidCommand("Write `/incident snooze <duration>`, e.g. 30m.")
            outcome = await service.snooze(
                here,
                by=by,
                duration=rest.split()[0],
            )
        case "tag":
            if not rest:
                raise InvalidCommand("Write `/incident tag <tag>`, e.g. `/incident tag security`.")
            outcome = await service.tag(
                here,
                by=by,
                tag=rest.split()[0],
            )
        case "timeline":
            record = await service.find(here)
            entries = await service.timeline(record.incident.id)
            message = blocks.timeline_message(record.incident.id, entries, page=_page(rest))
            return Reply(message.text, message.blocks)
        case "action":
            if not rest:
                record = await service.find(here)
                message = blocks.action_list(record.incident.id, record.incident.actions)
                return Reply(message.text, message.blocks)
            # the owner mention is needed raw: take it from the text as Slack sent it
            outcome = await service.add_action(
                here,
                by=by,
                text=ctx.raw_rest,
            )
        case "publish":
            if not rest:
                record = await service.find(here)
                incident = record.incident
                if incident.drill:
                    raise InvalidCommand(
                        f"{incident.id} is a drill: nothing of a drill goes on the status page."
                    )
                if not incident.is_open:
                    raise InvalidCommand(
                        f"{incident.id} is already resolved; its resolution was published."
                    )
                view = blocks.publish_modal(snapshot(incident, policy), policy)
                return Reply("Opening the status page form…", view=view)
            components, public_text = statuspage.parse_typed(policy, rest)
            if not public_text:
                raise InvalidCommand(
                    "Write `/incident publish <message>`, optionally after the components "
                    "and their state: `/incident publish Payments=partial We are investigating…`."
                )
            outcome = await service.publish(
                here, by=by, text=public_text, components=components or None, merge=True
            )
        case "postmortem":
            record = await service.request_postmortem(here, by=by)
            return Reply(
                f"📝 Building the post-mortem draft for {record.incident.id}; it will be "
                "uploaded to this channel in a moment."
            )
        case _:
            raise InvalidCommand(texts.unknown_subcommand(plain(word), policy))
    return Reply(confirm(outcome))
