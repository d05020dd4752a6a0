"""The lists of open incidents: `/incident list` and the App Home, within Slack's limits.

Slack's documented limits these lists are built to:
- a message holds at most 50 blocks, a modal or Home tab at most 100
  (https://docs.slack.dev/reference/block-kit/blocks, "up to 50 blocks in each message, and
  100 blocks in modals or Home tabs"; https://docs.slack.dev/reference/views/home-tab-views,
  `blocks`: "Max of 100 blocks");
- a text object, so a section's text or a context element, at most 3000 characters
  (https://docs.slack.dev/reference/block-kit/composition-objects/text-object, and the section
  block reference, https://api.slack.com/reference/block-kit/blocks#section);
- a header's text at most 150 characters
  (https://docs.slack.dev/reference/block-kit/blocks/header-block);
- a context block at most 10 elements
  (https://docs.slack.dev/reference/block-kit/blocks/context-block). A context element has no
  75-character limit: 75 is the limit of button and option texts.

Nothing is dropped silently. `/incident list` shows the worst `PAGE_SIZE` incidents, then one
line naming how many more there are, of which severities, and the command that shows them
(`/incident list page 2`, `/incident list sev3`). The Home shows the worst `HOME_FULL` in full,
the next ones a line each, and past its 100 blocks the same summary line. Every text is cut
with `texts.clip`, which never cuts inside a mention, link or date (`<…>`), an entity (`&amp;`), an
emoji short code (`:fire:`) or a character sequence drawn as one (an emoji with its skin tone,
a ZWJ family, a flag, a letter with its accent).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    Block,
)
from slack_sdk.models.views import View

from bot.domain.errors import InvalidCommand
from bot.domain.policy import Policy
from bot.slack.blocks import SECTION_MAX, Message, _context, _header, _section
from bot.slack.texts import clip, duration_text, escape, mention, when

MESSAGE_BLOCKS = 50  # blocks in a message
HOME_BLOCKS = 100  # blocks in a Home tab view
TEXT_MAX = SECTION_MAX  # characters in a text object: a section's text, a context element

PAGE_SIZE = 20  # incidents on a page of `/incident list`
HOME_FULL = 2 * PAGE_SIZE  # incidents the Home shows in full (the first two list pages)
TITLE_MAX = 150  # characters of an (escaped) title in a line
LINE_MAX = 600  # characters of one incident's line; a section holds at least 4 of them


# ---- blocks ------------------------------------------------------------------------------------
def _pack(lines: Iterable[str], *, sections: int) -> tuple[list[Block], int]:
    """At most `sections` sections holding as many of `lines` (in order) as fit in full;
    and how many lines they hold."""
    if sections <= 0:
        return [], 0
    blocks: list[Block] = []
    chunk: list[str] = []
    size = taken = 0
    for raw in lines:
        text = clip(raw, LINE_MAX)
        if chunk and size + 1 + len(text) > TEXT_MAX:
            if len(blocks) + 1 >= sections:
                break
            blocks.append(_section("\n".join(chunk)))
            chunk, size = [], 0
        size += len(text) + (1 if chunk else 0)
        chunk.append(text)
        taken += 1
    if chunk and len(blocks) < sections:
        blocks.append(_section("\n".join(chunk)))
    return blocks, taken


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


# ---- what a list shows of an incident -------------------------------------------------------
def _title(row: dict[str, Any]) -> str:
    return clip(escape(str(row.get("title", ""))), TITLE_MAX)


def _drill(row: dict[str, Any]) -> str:
    return "🧪 " if row.get("drill") else ""


def _channel(row: dict[str, Any]) -> str:
    return f"<#{row['channel_id']}>" if row.get("channel_id") else ""


def line(row: dict[str, Any]) -> str:
    """One incident on one line: severity, id, channel, title, status, commander."""
    channel = f" {_channel(row)}" if row.get("channel_id") else ""
    return clip(
        f"{_drill(row)}*{row['severity']}* {row['id']}{channel} {_title(row)}"
        f" · {escape(str(row['status']))} · IC {mention(row.get('commander'))}",
        LINE_MAX,
    )


def _flags(row: dict[str, Any], now: datetime) -> list[str]:
    flags = []
    if not row.get("acknowledged_at"):
        flags.append("⚠️ not acknowledged")
    due = _time(row.get("next_update_at"))
    if due is not None and due < now:
        flags.append("⏰ update overdue")
    if row.get("resolution_overdue"):
        flags.append("⌛ past resolution target")
    return flags


def _card(row: dict[str, Any], now: datetime) -> str:
    """One incident in full, for the Home: what it is, how it goes, what is overdue."""
    declared = _time(row.get("declared_at"))
    age = duration_text(int((now - declared).total_seconds())) if declared else "—"
    status = escape(str(row["status"]).capitalize())
    due = when(_time(row.get("next_update_at")))
    lines = [
        f"{_drill(row)}*{row['severity']}* {_channel(row) or row['id']} {_title(row)}",
        f"Open {age} · {status} · IC {mention(row.get('commander'))} · next update {due}",
    ]
    flags = _flags(row, now)
    if flags:
        lines.append(" · ".join(flags))
    return "\n".join(clip(text, LINE_MAX) for text in lines)


def tally(rows: list[dict[str, Any]]) -> str:
    """`SEV2 ×3, SEV3 ×5`: how many of `rows` each severity has, in the order first seen
    (the rows come worst first)."""
    counts = Counter(str(row["severity"]) for row in rows)
    return ", ".join(f"{severity} ×{count}" for severity, count in counts.items())


def _worst_first(rows: list[dict[str, Any]], policy: Policy) -> list[dict[str, Any]]:
    def rank(row: dict[str, Any]) -> tuple[int, str]:
        found = policy.severity(str(row["severity"]))
        order = policy.rank(found.name) if found else len(policy.severities)
        return order, str(row.get("declared_at") or "")

    return sorted(rows, key=rank)


# ---- /incident list [severity] [page N] ------------------------------------------------------
LIST_USAGE = (
    "`/incident list [severity] [page N]`, e.g. `/incident list sev3` or `/incident list page 2`"
)


@dataclass(frozen=True)
class ListQuery:
    """What `/incident list` was asked for: one severity (its policy name) or all, a page."""

    severity: str | None = None
    page: int = 1


def parse_list(args: str, policy: Policy) -> ListQuery:
    """`sev3`, `page 2`, `2`, `sev3 page 2` … in any order; anything else is an error."""
    severity: str | None = None
    page = 1
    words = args.split()
    index = 0
    while index < len(words):
        word = words[index].lower()
        index += 1
        if word == "page" and index < len(words) and words[index].isdecimal():
            word = words[index]
            index += 1
        if word.isdecimal():
            page = max(1, int(word) if len(word) < 10 else 10**9)
            continue
        found = policy.severity(word)
        if found is not None and severity is None:
            severity = found.name
            continue
        raise InvalidCommand(
            f"`{clip(words[index - 1], 40)}`: write {LIST_USAGE}. "
            f"Severities: {policy.severity_words()}."
        )
    return ListQuery(severity=severity, page=page)


def incident_list(rows: list[dict[str, Any]], policy: Policy, args: str = "") -> Message:
    """`/incident list`: open incidents worst first, a page at a time; the last line says how
    many more there are, of which severities, and how to see them."""
    query = parse_list(args, policy)
    if not rows:
        return Message("No open incidents. 🎉")
    everything = _worst_first(rows, policy)
    chosen = [r for r in everything if query.severity in (None, str(r["severity"]))]
    kind = f"{query.severity} " if query.severity else ""
    if not chosen:
        text = (
            f"No open {kind}incidents. {len(everything)} open in all ({tally(everything)}): "
            "`/incident list`."
        )
        return Message(text, [_section(text).to_dict()])
    pages = (len(chosen) + PAGE_SIZE - 1) // PAGE_SIZE
    page = min(query.page, pages)
    first = (page - 1) * PAGE_SIZE
    shown = chosen[first : first + PAGE_SIZE]
    total = f"{len(chosen)} of {len(everything)}" if query.severity else f"{len(chosen)}"
    blocks: list[Block] = [_header(f"Open {kind}incidents ({total})")]
    sections, taken = _pack((line(r) for r in shown), sections=MESSAGE_BLOCKS - 3)
    assert taken == len(shown), "a page always fits a message"
    blocks += sections
    command = f"/incident list {query.severity.lower()} " if query.severity else "/incident list "
    span = f"{first + 1}–{first + len(shown)}"
    rest = chosen[first + len(shown) :]
    if rest:
        hint = f"`{command}page {page + 1}`"
        if not query.severity:  # name the worst severity left
            hint += f", or one severity: `/incident list {str(rest[0]['severity']).lower()}`"
        blocks.append(_context(f"…and {len(rest)} more: {tally(rest)} — {hint}"))
    notes = [f"Page {page} of {pages} · {span}, worst first"] if pages > 1 else []
    if page > 1:
        notes.append(f"`{command}page 1` for the worst")
    if query.severity:
        notes.append(f"`/incident list` for all {len(everything)}")
    if notes:
        blocks.append(_context(" · ".join(notes)))
    fallback = f"{len(chosen)} open {kind}incident(s); showing {span}, worst first"
    if query.severity:
        fallback += f" ({len(everything)} open in all)"
    return Message(fallback, [block.to_dict() for block in blocks])


# ---- the App Home ----------------------------------------------------------------------------
def home_view(rows: list[dict[str, Any]], *, now: datetime) -> dict[str, Any]:
    """The App Home tab: open incidents as given (worst first), the first `HOME_FULL` in
    full, the next a line each; past Slack's 100 blocks, one line counts the rest and names
    the `/incident list` page that shows them."""
    blocks: list[Block] = [_header(f"Open incidents ({len(rows)})")]
    if not rows:
        blocks.append(
            _section("No open incidents. 🎉 Declare one with `/incident <severity> <title>`.")
        )
    full = rows[:HOME_FULL]
    blocks += [_section(_card(row, now)) for row in full]
    rest = rows[len(full) :]
    room = HOME_BLOCKS - len(blocks) - 2  # the summary line and "Updated …"
    sections, taken = _pack((line(r) for r in rest), sections=room)
    blocks += sections
    unseen = rest[taken:]
    if unseen:
        page = (len(full) + taken) // PAGE_SIZE + 1
        blocks.append(
            _context(
                f"…and {len(unseen)} more: {tally(unseen)} — `/incident list page {page}` "
                "shows them"
            )
        )
    blocks.append(_context(f"Updated {when(now)}"))
    view: dict[str, Any] = View(type="home", blocks=blocks).to_dict()
    return view
