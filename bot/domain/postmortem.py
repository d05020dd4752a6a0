"""The post-mortem draft: the runbooks' template, filled in from the record. Pure.

Headings and their order follow the seeds' "Post-Mortem Template" exactly. What the record
proves (times, people, the timeline, action items, the root cause if given at resolution)
is filled in; what only people can write is marked with one recognisable placeholder line,
`_To be written by the team: <hint>_`. Facts the bot drafts itself are marked as such.

User text never breaks the Markdown: table cells have `|` escaped and line breaks turned into
`<br>`, `<` and `>` become entities, and lines that would start a heading are escaped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

from bot.domain.actions import ActionItem
from bot.domain.incident import EventKind, Incident
from bot.domain.policy import Policy, Severity, human_duration
from bot.domain.stats import update_punctuality
from bot.domain.timeline import TimelineEntry, describe

PLACEHOLDER = "_To be written by the team: {hint}_"
DRAFTED = "_(drafted by the bot from the timeline)_"

HEADINGS = (
    "# Post-Mortem: ",
    "## Incident Summary",
    "## Timeline",
    "## Root Cause",
    "## Contributing Factors",
    "## What Went Well",
    "## What Could Be Improved",
    "## Action Items",
    "## Lessons Learned",
)

KIND_WORDS: dict[str, str] = {
    EventKind.DECLARED: "Declared",
    EventKind.ACKNOWLEDGED: "Acknowledged",
    EventKind.COMMANDER_CHANGED: "Commander changed",
    EventKind.ROLE_ASSIGNED: "Role assigned",
    EventKind.STATUS_CHANGED: "Status changed",
    EventKind.SEVERITY_CHANGED: "Severity changed",
    EventKind.UPDATE_POSTED: "Status update",
    EventKind.NOTE_ADDED: "Note",
    EventKind.ESCALATED: "Escalated",
    EventKind.RESOLVED: "Resolved",
    EventKind.SNOOZED: "Update reminder snoozed",
    EventKind.TAGGED: "Tagged",
    EventKind.ACK_TARGET_MISSED: "Acknowledgement target missed",
    EventKind.UPDATE_NUDGED: "Update reminder",
    EventKind.NUDGE_ESCALATED: "Update reminder escalated",
    EventKind.UPDATE_OVERDUE: "Update overdue",
    EventKind.OPEN_ESCALATED: "Escalated (open too long)",
    EventKind.RESOLUTION_TARGET_MISSED: "Resolution target missed",
    EventKind.FOLLOWUP_DUE: "Follow-up due",
    EventKind.FOLLOWUP_DONE: "Follow-up done",
    EventKind.COMPLIANCE_REMINDER: "Compliance reminder",
    EventKind.COMPLIANCE_DONE: "Compliance duty done",
}

_SLACK_USER = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_SLACK_CHANNEL = re.compile(r"<#[CG][A-Z0-9]+\|([^>]*)>")
_SLACK_LINK = re.compile(r"<((?:https?|mailto):[^|>\s]+)(?:\|([^>]*))?>")
_PIPE = re.compile(r"(\\*)\|")
_BLOCK_START = re.compile(r"^( {0,3})(#|=+\s*$|-+\s*$)")


def postmortem_filename(incident: Incident) -> str:
    """`INC-20261122-001-postmortem.md`."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", incident.id).strip("-") or "incident"
    return f"{safe}-postmortem.md"


def placeholder(hint: str) -> str:
    return PLACEHOLDER.format(hint=hint)


# ---- escaping ------------------------------------------------------------------------------
def _utc(moment: datetime) -> datetime:
    """Aware times converted to UTC; naive ones are taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _stamp(moment: datetime) -> str:
    return f"{_utc(moment):%Y-%m-%d %H:%M:%S}"


def _html(text: str) -> str:
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _inline(text: str) -> str:
    """One line of Markdown from any text: entities for `<`/`>`, `<br>` for line breaks."""
    lines = [line.strip() for line in _html(text).splitlines()]
    return "<br>".join(line for line in lines if line)


def cell(text: str) -> str:
    """A table cell that cannot break its table: pipes escaped (with any backslashes before
    them doubled, so that `\\|` typed by a user stays text), newlines as `<br>`."""
    escaped = _PIPE.sub(lambda m: m.group(1) * 2 + "\\|", _inline(text))
    return escaped or " "


def _block(text: str) -> str:
    """Free text as paragraphs, with lines that would start a heading, a setext underline
    or a quote escaped, so that the document keeps its sections."""
    lines = []
    for line in _html(text.strip()).splitlines():
        lines.append(_BLOCK_START.sub(lambda m: m.group(1) + "\\" + m.group(2), line.rstrip()))
    return "\n".join(lines)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cell(c) for c in cells) + " |"


def _slack_text(name: Callable[[str], str]) -> Callable[[str], str]:
    """Slack markup in what people typed (`<@U…|bob>`, `<#C…|general>`, `<https://…|x>`)
    rendered for a document."""

    def render(text: str) -> str:
        text = _SLACK_USER.sub(lambda m: name(m.group(1)), text)
        text = _SLACK_CHANNEL.sub(lambda m: "#" + m.group(1), text)
        return _SLACK_LINK.sub(
            lambda m: f"[{m.group(2)}]({m.group(1)})" if m.group(2) else m.group(1), text
        )

    return render


def _kind_words(kind: str) -> str:
    return KIND_WORDS.get(kind) or kind.replace("_", " ").strip().capitalize() or "Event"


# ---- facts the record proves -------------------------------------------------------------
def _facts(
    incident: Incident,
    entries: list[TimelineEntry],
    severity: Severity | None,
    now: datetime,
) -> tuple[list[str], list[str]]:
    """(what went well, what could be improved), as far as the timeline proves it."""
    good: list[str] = []
    bad: list[str] = []
    tta = incident.time_to_acknowledge()
    if severity is not None:
        target = severity.ack_timeout
        if tta is not None:
            (good if tta <= target else bad).append(
                f"Acknowledged in {human_duration(tta)}, "
                + ("within" if tta <= target else "over")
                + f" the {human_duration(target)} target"
            )
        elif now - incident.declared_at > target:
            bad.append(f"Never acknowledged (target {human_duration(target)})")
        goal = severity.resolution_target
        took = incident.duration(now)
        if incident.resolved_at is not None:
            (good if took <= goal else bad).append(
                f"Resolved in {human_duration(took)}, "
                + ("within" if took <= goal else "over")
                + f" the {human_duration(goal)} target"
            )
        elif took > goal:
            bad.append(
                f"Still open after {human_duration(took)}, over the "
                f"{human_duration(goal)} resolution target"
            )
    posted, on_time = update_punctuality(entries)
    if posted and posted == on_time:
        updates = "1 update" if posted == 1 else f"{posted} updates"
        good.append(f"Every status update was on time ({updates}, no reminder needed)")
    elif posted:
        bad.append(f"{posted - on_time} of {posted} status updates came only after a reminder")
    automatic = sum(
        1
        for e in entries
        if (e.kind == EventKind.ESCALATED and not e.data.get("manual"))
        or e.kind == EventKind.OPEN_ESCALATED
    )
    if automatic:
        times = "once" if automatic == 1 else f"{automatic} times"
        bad.append(f"The bot had to escalate automatically {times}")
    if incident.commander is None:
        bad.append("Nobody took incident command")
    return good, bad


# ---- the document --------------------------------------------------------------------------
def build_postmortem(
    incident: Incident,
    entries: list[TimelineEntry],
    actions: list[ActionItem],
    *,
    policy: Policy,
    now: datetime,
    name: Callable[[str], str] | None = None,
) -> str:
    """The post-mortem draft in Markdown (see the module docstring).

    `name(user_id)` renders people (default `@U0BOB`). Every timeline entry gets one row of
    the Timeline table, in time order; every action item one row of the Action Items table.
    """
    who = name or (lambda user: f"@{user}")
    severity = policy.severity(incident.severity)
    ordered = sorted(entries, key=lambda e: _utc(e.at))
    drill = " (drill)" if incident.drill else ""
    title = " ".join(_html(incident.title).split())
    if title.endswith("#"):
        title = title[:-1] + "\\#"

    out: list[str] = [
        f"# Post-Mortem: {title}{drill}",
        "",
        f"_Draft generated by the incident bot on {_utc(now):%Y-%m-%d %H:%M} UTC; edit freely. "
        "Lines starting “To be written by the team” still need the team's words._",
    ]
    if incident.drill:
        out += ["", "> **This was a drill.** Nobody was paged; it is left out of the statistics."]

    # -- Incident Summary
    declared = _utc(incident.declared_at)
    if incident.resolved_at is not None:
        duration = (
            f"{human_duration(incident.duration(now))} "
            f"(declared {_stamp(incident.declared_at)} UTC → resolved "
            f"{_stamp(incident.resolved_at)} UTC)"
        )
    else:
        duration = f"ongoing (so far {human_duration(incident.duration(now))})"
    first = next((e for e in ordered if e.kind == EventKind.DECLARED), None)
    declared_as = str(first.data.get("severity") or "") if first is not None else ""
    severity_text = incident.severity
    if severity is not None and severity.description:
        severity_text += f" — {severity.description}"
    if declared_as and declared_as != incident.severity:
        severity_text += f" (declared as {declared_as})"
    tta = incident.time_to_acknowledge()
    if tta is not None and incident.acknowledged_by is not None:
        ack = f"{human_duration(tta)} by {who(incident.acknowledged_by)}"
    else:
        ack = "not acknowledged"
    if severity is not None:
        ack += f" (target {human_duration(severity.ack_timeout)})"
    status = incident.status
    if incident.resolved_at is not None and incident.resolved_by is not None:
        status += f" by {who(incident.resolved_by)}"
    summary = [
        ("Date", f"{declared:%Y-%m-%d} (declared {declared:%H:%M} UTC)"),
        ("Duration", duration),
        ("Severity", severity_text),
        (
            "Services Affected",
            ", ".join(incident.services) or placeholder("which services were affected"),
        ),
        (
            "Customer Impact",
            incident.impact or placeholder("who was affected, how, and for how long"),
        ),
        ("Incident ID", incident.id),
        ("Incident Commander", who(incident.commander) if incident.commander else "nobody"),
        ("Time to acknowledge", ack),
        ("Status", status),
    ]
    other_roles = [(r, u) for r, u in incident.roles.items() if r != "commander"]
    if other_roles:
        summary.append(
            ("Roles", ", ".join(f"{r.replace('_', ' ')}: {who(u)}" for r, u in other_roles))
        )
    if incident.resolution_summary:
        summary.append(("Resolution", incident.resolution_summary))
    if incident.tags:
        summary.append(("Tags", ", ".join(incident.tags)))
    if incident.drill:
        summary.append(("Drill", "yes — a practice incident, not a real one"))
    out += ["", "## Incident Summary"]
    out += [f"- **{label}**: {_inline(value)}" for label, value in summary]

    # -- Timeline
    quote = _slack_text(who)
    out += ["", "## Timeline", "| Time | Event | Action Taken |", "|------|-------|--------------|"]
    out += [
        _row([_stamp(e.at), _kind_words(e.kind), describe(e, mention=who, quote=quote)])
        for e in ordered
    ]

    # -- Root Cause
    out += ["", "## Root Cause"]
    if incident.root_cause.strip():
        out.append(_block(quote(incident.root_cause)))
    else:
        out.append(
            placeholder(
                "the technical cause in detail: what failed, why, and why it was not caught earlier"
            )
        )

    # -- Contributing Factors
    out += [
        "",
        "## Contributing Factors",
        "- "
        + placeholder(
            "conditions that made it possible or worse (recent changes, missing alerts, "
            "load, gaps in the runbook)"
        ),
    ]

    # -- What Went Well / What Could Be Improved
    good, bad = _facts(incident, ordered, severity, now)
    out += ["", "## What Went Well"]
    out += [f"- {fact} {DRAFTED}" for fact in good]
    out.append("- " + placeholder("what helped: detection, tools, people, communication"))
    out += ["", "## What Could Be Improved"]
    out += [f"- {fact} {DRAFTED}" for fact in bad]
    out.append(
        "- " + placeholder("what slowed the response: detection delay, access, handoffs, docs")
    )

    # -- Action Items
    out += [
        "",
        "## Action Items",
        "| Action | Owner | Due Date | Status |",
        "|--------|-------|----------|--------|",
    ]
    for item in sorted(actions, key=lambda a: a.id):
        out.append(
            _row(
                [
                    quote(item.text),
                    who(item.owner) if item.owner else "unassigned",
                    item.due.isoformat() if item.due else "—",
                    "Done" if item.done else "Open",
                ]
            )
        )
    if not actions:
        out.append(
            _row([placeholder("preventive fixes, process and monitoring changes"), "", "", ""])
        )

    # -- Lessons Learned
    out += [
        "",
        "## Lessons Learned",
        placeholder("the key takeaways, for this team and for others"),
        "",
    ]
    return "\n".join(out)
