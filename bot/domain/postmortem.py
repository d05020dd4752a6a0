"""The post-mortem draft: the runbooks' template, filled in from the record. Pure.

Headings and their order follow the procedure's post-mortem template (docs/procedure.md)
exactly. What the record proves (times, people, the timeline, action items, the root cause
if given at resolution) is filled in; what only people can write is marked with one
recognisable placeholder line,
`_To be written by the team: <hint>_`. Facts the bot drafts itself are marked as such.

Every sentence the bot drafts is derived from the record, none is stated unconditionally:
- the time to acknowledge is judged against the response target of the severity in force
  when it was acknowledged (a severity change is a timeline entry), not the final one;
- the time to resolve against the severity at resolution, and every resolution target the
  clock saw pass is said;
- "every update was on time" only when no update reminder fired (`update_nudged`,
  `nudge_escalated`, `update_overdue`); otherwise how many updates were late;
- escalations level by level, by the clock or by whom; the severity history when it changed.

Text people typed is stored as typed and shown as typed: no HTML entities. Messages pinned
with 📌 hold Slack's wire format (`&amp;`, `<@U…>`, `<#C…|name>`, `<!channel>`) and are
rendered as people read them. Only what would break the document is escaped: in table cells
`|` (with any backslashes before it doubled) and line breaks (as `<br>`); in free-text
blocks, lines that would start a heading, a setext underline or an HTML block.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

from bot.domain.actions import ActionItem
from bot.domain.incident import EventKind, Incident
from bot.domain.policy import Policy, human_duration
from bot.domain.text import joined
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
    EventKind.PUBLISHED: "Published on the status page",
}

# The reminders the update clock sends when an update is overdue (see `clocks.fire`).
UPDATE_REMINDERS = frozenset(
    {EventKind.UPDATE_NUDGED, EventKind.NUDGE_ESCALATED, EventKind.UPDATE_OVERDUE}
)

# Slack's wire format: `<…>` markup and the three entities Slack escapes, read in one pass.
_WIRE = re.compile(r"<([^<>]*)>|&(amp|lt|gt);")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">"}
_WIRE_USER = re.compile(r"@([UW][A-Z0-9]+)")
_WIRE_LINK = re.compile(r"(?:https?|mailto|tel|ftp):\S*", re.IGNORECASE)
_LABELLED_USER = re.compile(r"<@([UW][A-Z0-9]+)\|([^<>]+)>")
_PIPE = re.compile(r"(\\*)\|")
_BLOCK_START = re.compile(r"^( {0,3})(#|=+\s*$|-+\s*$|<(?=[A-Za-z!/?]))")


def postmortem_filename(incident: Incident) -> str:
    """`INC-20261122-001-postmortem.md`."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", incident.id).strip("-") or "incident"
    return f"{safe}-postmortem.md"


def placeholder(hint: str) -> str:
    return PLACEHOLDER.format(hint=hint)


# ---- text ----------------------------------------------------------------------------------
def _utc(moment: datetime) -> datetime:
    """Aware times converted to UTC; naive ones are taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _stamp(moment: datetime) -> str:
    return f"{_utc(moment):%Y-%m-%d %H:%M:%S}"


def _inline(text: str) -> str:
    """One line of Markdown from any text, as written: line breaks become `<br>`."""
    lines = [line.strip() for line in text.splitlines()]
    return "<br>".join(line for line in lines if line)


def cell(text: str) -> str:
    """A table cell that cannot break its table: pipes escaped (with any backslashes before
    them doubled, so that `\\|` typed by a user stays text), newlines as `<br>`."""
    escaped = _PIPE.sub(lambda m: m.group(1) * 2 + "\\|", _inline(text))
    return escaped or " "


def _block(text: str) -> str:
    """Free text as paragraphs, as written, with lines that would start a heading, a setext
    underline or an HTML block escaped, so that the document keeps its sections."""
    lines = []
    for line in text.strip().splitlines():
        lines.append(_BLOCK_START.sub(lambda m: m.group(1) + "\\" + m.group(2), line.rstrip()))
    return "\n".join(lines)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cell(c) for c in cells) + " |"


def _unescape(text: str) -> str:
    return re.sub(r"&(amp|lt|gt);", lambda m: _ENTITIES[m.group(1)], text)


def slack_message(text: str, name: Callable[[str], str]) -> str:
    """A message as Slack stores it (wire format) as people read it in Slack: `&amp;`,
    `&lt;`, `&gt;` unescaped, `<@U1>` as `name("U1")`, `<#C1|general>` as `#general`,
    `<!channel>` as `@channel`, `<!subteam^S1|@ops>` as `@ops`, `<!date^…|fallback>` as its
    fallback, `<https://x|label>` as a Markdown link. Text Slack escaped (`&lt;b&gt;`) is
    text, never markup."""

    def render(match: re.Match[str]) -> str:
        if match.group(2):
            return _ENTITIES[match.group(2)]
        inner = match.group(1)
        target, _, label = inner.partition("|")
        label = _unescape(label)
        user = _WIRE_USER.fullmatch(target)
        if user:
            return name(user.group(1))
        if target.startswith("#"):
            return "#" + (label or target[1:])
        if target.startswith("!"):
            special = target[1:]
            if special.startswith("subteam^"):
                return label or "@" + special.split("^", 1)[1]
            if special.startswith("date^"):
                return label or _unescape(special)
            return label or "@" + _unescape(special)
        if _WIRE_LINK.fullmatch(target):
            url = _unescape(target)
            return f"[{label}]({url})" if label and label != url else url
        return "<" + _unescape(inner) + ">"

    return _WIRE.sub(render, text)


def recorded_names(entries: list[TimelineEntry]) -> dict[str, str]:
    """The names the record itself holds for people: the labels Slack may give mentions in
    pinned messages (`<@U0BOB|bob>`). The incident and the other entries hold ids only."""
    found: dict[str, str] = {}
    for entry in entries:
        if entry.kind != EventKind.MESSAGE_PINNED:
            continue
        for user, label in _LABELLED_USER.findall(str(entry.data.get("text") or "")):
            label = _unescape(label).strip().lstrip("@")
            if label:
                found.setdefault(user, label)
    return found


def _kind_words(kind: str) -> str:
    return KIND_WORDS.get(kind) or kind.replace("_", " ").strip().capitalize() or "Event"


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# ---- what the timeline proves ----------------------------------------------------------------
class _Record:
    """The facts the timeline proves, read once: severities, people, clocks."""

    def __init__(self, incident: Incident, ordered: list[TimelineEntry]) -> None:
        self.incident = incident
        self.ordered = ordered
        self.declared_as = self._declared_as()
        self.severity_changes = [e for e in ordered if e.kind == EventKind.SEVERITY_CHANGED]

    def _declared_as(self) -> str:
        for entry in self.ordered:
            if entry.kind == EventKind.DECLARED and entry.data.get("severity"):
                return str(entry.data["severity"])
        for entry in self.ordered:
            if entry.kind == EventKind.SEVERITY_CHANGED and entry.data.get("previous"):
                return str(entry.data["previous"])
        return self.incident.severity

    @property
    def severity_changed(self) -> bool:
        return bool(self.severity_changes)

    def severity_of(self, entry: TimelineEntry) -> str:
        """The severity in force when `entry` happened (changes recorded before it)."""
        current = self.declared_as
        for other in self.ordered:
            if other is entry:
                break
            if other.kind == EventKind.SEVERITY_CHANGED and other.data.get("severity"):
                current = str(other.data["severity"])
        return current

    def severity_at(self, moment: datetime) -> str:
        """The severity in force at `moment` (changes at or before it)."""
        current = self.declared_as
        for other in self.severity_changes:
            if _utc(other.at) <= _utc(moment) and other.data.get("severity"):
                current = str(other.data["severity"])
        return current

    def severity_when_acknowledged(self) -> str | None:
        if self.incident.acknowledged_at is None:
            return None
        entry = next((e for e in self.ordered if e.kind == EventKind.ACKNOWLEDGED), None)
        if entry is not None:
            return self.severity_of(entry)
        return self.severity_at(self.incident.acknowledged_at)

    def clock(self, moment: datetime) -> str:
        """`14:20 UTC`, with the date when it is not the day of declaration."""
        moment = _utc(moment)
        if moment.date() == _utc(self.incident.declared_at).date():
            return f"{moment:%H:%M} UTC"
        return f"{moment:%Y-%m-%d %H:%M} UTC"


def _severity_history(record: _Record, who: Callable[[str], str]) -> str:
    """`SEV3 → SEV1 at 14:20 UTC by @bob; …` (empty when the severity never changed)."""
    parts = []
    for entry in record.severity_changes:
        previous = entry.data.get("previous") or record.severity_of(entry)
        by = f" by {who(entry.actor)}" if entry.actor else ""
        parts.append(f"{previous} → {entry.data.get('severity')} at {record.clock(entry.at)}{by}")
    return "; ".join(parts)


def _commander_history(record: _Record, who: Callable[[str], str]) -> str:
    commander = record.incident.commander
    if commander is None:
        return "nobody"
    changes = [
        e
        for e in record.ordered
        if e.kind == EventKind.COMMANDER_CHANGED and e.data.get("commander")
    ]
    if len(changes) <= 1:
        return who(commander)
    return ", then ".join(
        f"{who(str(e.data['commander']))} from {record.clock(e.at)}" for e in changes
    )


def _escalations(record: _Record, who: Callable[[str], str]) -> list[str]:
    """Each escalation the timeline shows: which level, when, by the clock or by whom."""
    found = []
    for entry in record.ordered:
        data = entry.data
        if entry.kind == EventKind.ESCALATED:
            severity = record.severity_of(entry)
            reason = str(data.get("reason") or "")
            if data.get("manual") and entry.actor:
                how = f"by {who(entry.actor)}" + (f" ({reason})" if reason else "")
            else:
                how = "by the clock" + (f" ({reason})" if reason else "")
            nobody = (
                ", a level that names nobody"
                if not data.get("notify") and not data.get("pagerduty")
                else ""
            )
            found.append(
                f"level {data.get('level')} of {severity} at {record.clock(entry.at)} {how}{nobody}"
            )
        elif entry.kind == EventKind.OPEN_ESCALATED:
            found.append(
                f"management at {record.clock(entry.at)} by the clock "
                f"(open for {data.get('after')})"
            )
    return found


def _ack_facts(
    record: _Record, policy: Policy, now: datetime, good: list[str], bad: list[str]
) -> None:
    incident = record.incident
    tta = incident.time_to_acknowledge()
    if tta is not None:
        then = record.severity_when_acknowledged() or incident.severity
        severity = policy.severity(then)
        if severity is None:
            return
        target = severity.ack_timeout
        met = tta <= target
        (good if met else bad).append(
            f"Acknowledged in {human_duration(tta)}, "
            + ("within" if met else "over")
            + f" the {human_duration(target)} target"
            + (
                f" for {then} (the severity when it was acknowledged)"
                if record.severity_changed
                else ""
            )
        )
        return
    severity = policy.severity(incident.severity)
    if severity is None:
        return
    waited = (incident.resolved_at or now) - incident.declared_at
    of = f" for {incident.severity}" if record.severity_changed else ""
    if waited > severity.ack_timeout:
        if incident.resolved_at is not None:
            bad.append(f"Never acknowledged (target {human_duration(severity.ack_timeout)}{of})")
        else:
            bad.append(
                f"Not acknowledged after {human_duration(waited)} "
                f"(target {human_duration(severity.ack_timeout)}{of})"
            )


def _resolution_facts(
    record: _Record, policy: Policy, now: datetime, good: list[str], bad: list[str]
) -> None:
    incident = record.incident
    severity = policy.severity(incident.severity)
    took = incident.duration(now)
    of = f" for {incident.severity}" if record.severity_changed else ""
    over_now = severity is not None and took > severity.resolution_target
    # Targets the clock saw pass under another severity than the final one (the final
    # severity's own miss is said by the sentence on the final target below).
    for entry in record.ordered:
        if entry.kind != EventKind.RESOLUTION_TARGET_MISSED:
            continue
        then = record.severity_of(entry)
        if then == incident.severity and (over_now or severity is None):
            continue
        bad.append(
            f"The {entry.data.get('target')} resolution target for {then} passed at "
            f"{record.clock(entry.at)} with the incident still open"
        )
    missed = any(
        e.kind == EventKind.RESOLUTION_TARGET_MISSED and record.severity_of(e) == incident.severity
        for e in record.ordered
    )
    if severity is None:
        return
    goal = severity.resolution_target
    at_resolution = " (the severity at resolution)" if record.severity_changed else ""
    if incident.resolved_at is not None:
        if took <= goal and not missed:
            good.append(
                f"Resolved in {human_duration(took)}, within the {human_duration(goal)} "
                f"target{of}{at_resolution}"
            )
        elif took > goal:
            bad.append(
                f"Resolved in {human_duration(took)}, over the {human_duration(goal)} "
                f"target{of}{at_resolution}"
            )
    elif took > goal:
        bad.append(
            f"Still open after {human_duration(took)}, over the {human_duration(goal)} "
            f"resolution target{of}"
        )


def _update_facts(record: _Record, good: list[str], bad: list[str]) -> None:
    """Updates against the update clock: on time only when no reminder fired before them."""
    posted = late = 0
    nudged = comms = no_comms = told = snoozed = 0
    reminded, cycles = False, 0  # since the last update (or the declaration)
    for entry in record.ordered:
        if entry.kind == EventKind.UPDATE_POSTED:
            posted += 1
            if reminded:
                late += max(1, cycles)
            reminded, cycles = False, 0
        elif entry.kind in UPDATE_REMINDERS:
            reminded = True
            if entry.kind == EventKind.UPDATE_NUDGED:
                nudged += 1
                cycles += 1
            elif entry.kind == EventKind.NUDGE_ESCALATED:
                if entry.data.get("comms_lead"):
                    comms += 1
                else:
                    no_comms += 1
            else:
                told += 1
        elif entry.kind == EventKind.SNOOZED:
            snoozed += 1
    missing = reminded
    if missing:
        late += max(1, cycles)
    if not late:
        if posted:
            snoozes = f"; the reminder was snoozed {_times(snoozed)}" if snoozed else ""
            good.append(
                f"Every status update was on time ({_plural(posted, 'update')}, "
                f"no reminder needed{snoozes})"
            )
        return
    did = []
    if nudged:
        did.append(f"nudged the commander {_times(nudged)}")
    if comms:
        did.append(f"mentioned the comms lead {_times(comms)}")
    if no_comms:
        did.append("found no comms lead to mention")
    if told:
        did.append(f"told the announcement channel {_times(told)}")
    sentence = (
        f"{_plural(late, 'status update')} {'was' if late == 1 else 'were'} late: "
        f"the bot {joined(did)}"
    )
    if missing:
        sentence += "; no update followed the last reminder" + (
            " before resolution" if record.incident.resolved_at is not None else " so far"
        )
    bad.append(sentence)


def _escalation_facts(record: _Record, bad: list[str]) -> None:
    automatic = [
        e
        for e in record.ordered
        if e.kind == EventKind.ESCALATED and not (e.data.get("manual") and e.actor)
    ]
    if automatic:
        levels = joined(
            [f"level {e.data.get('level')} of {record.severity_of(e)}" for e in automatic]
        )
        bad.append(
            f"The bot had to escalate automatically {_times(len(automatic))}, "
            f"because nobody had acknowledged (to {levels})"
        )
    opened = [e for e in record.ordered if e.kind == EventKind.OPEN_ESCALATED]
    if opened:
        afters = joined([str(e.data.get("after")) for e in opened])
        bad.append(
            f"Open long enough for the bot to escalate to management {_times(len(opened))} "
            f"(after {afters})"
        )


def _facts(record: _Record, policy: Policy, now: datetime) -> tuple[list[str], list[str]]:
    """(what went well, what could be improved), as far as the timeline proves it."""
    good: list[str] = []
    bad: list[str] = []
    _ack_facts(record, policy, now, good, bad)
    _resolution_facts(record, policy, now, good, bad)
    _update_facts(record, good, bad)
    _escalation_facts(record, bad)
    if record.incident.commander is None:
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
    record = _Record(incident, ordered)
    drill = " (drill)" if incident.drill else ""
    title = " ".join(incident.title.split())
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
    severity_text = incident.severity
    if severity is not None and severity.description:
        severity_text += f" — {severity.description}"
    tta = incident.time_to_acknowledge()
    if tta is not None and incident.acknowledged_by is not None:
        ack = f"{human_duration(tta)} by {who(incident.acknowledged_by)}"
        then = record.severity_when_acknowledged() or incident.severity
        at_ack = policy.severity(then)
        if at_ack is not None:
            ack += f" (target {human_duration(at_ack.ack_timeout)}"
            ack += f" for {then}, the severity then)" if record.severity_changed else ")"
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
    ]
    if record.severity_changed:
        summary.append(("Severity history", _severity_history(record, who)))
    summary += [
        (
            "Services Affected",
            ", ".join(incident.services) or placeholder("which services were affected"),
        ),
        (
            "Customer Impact",
            incident.impact or placeholder("who was affected, how, and for how long"),
        ),
        ("Incident ID", incident.id),
        ("Incident Commander", _commander_history(record, who)),
        ("Time to acknowledge", ack),
        ("Status", status),
    ]
    escalations = _escalations(record, who)
    if escalations:
        summary.append(("Escalations", f"{len(escalations)} — " + "; ".join(escalations)))
    other_roles = [(r, u) for r, u in incident.roles.items() if r != "commander"]
    if other_roles:
        summary.append(
            ("Roles", ", ".join(f"{r.replace('_', ' ')}: {who(u)}" for r, u in other_roles))
        )
    if incident.resolution_summary:
        summary.append(("Resolution", incident.resolution_summary))
    published = [e for e in ordered if e.kind == EventKind.PUBLISHED]
    if published:
        summary.append(
            (
                "Customer communication",
                f"{_plural(len(published), 'update')} published on the status page as "
                f"“{incident.public_title}”, the first at {_stamp(published[0].at)} UTC",
            )
        )
    if incident.tags:
        summary.append(("Tags", ", ".join(incident.tags)))
    if incident.drill:
        summary.append(("Drill", "yes — a practice incident, not a real one"))
    out += ["", "## Incident Summary"]
    out += [f"- **{label}**: {_inline(value)}" for label, value in summary]

    # -- Timeline
    def pinned(text: str) -> str:
        return slack_message(text, who)

    out += ["", "## Timeline", "| Time | Event | Action Taken |", "|------|-------|--------------|"]
    out += [
        _row(
            [
                _stamp(e.at),
                _kind_words(e.kind),
                describe(
                    e, mention=who, quote=pinned if e.kind == EventKind.MESSAGE_PINNED else None
                ),
            ]
        )
        for e in ordered
    ]

    # -- Root Cause
    out += ["", "## Root Cause"]
    if incident.root_cause.strip():
        out.append(_block(incident.root_cause))
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
    good, bad = _facts(record, policy, now)
    out += ["", "## What Went Well"]
    out += [f"- {_inline(fact)} {DRAFTED}" for fact in good]
    out.append("- " + placeholder("what helped: detection, tools, people, communication"))
    out += ["", "## What Could Be Improved"]
    out += [f"- {_inline(fact)} {DRAFTED}" for fact in bad]
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
                    item.text,
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
