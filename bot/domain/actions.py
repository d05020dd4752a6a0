"""Post-incident action items (`/incident action …`). Pure: no Slack, no SQL, no clock.

An action item is a follow-up task with an owner and a due date: "add retry with backoff",
owned by a Slack user, due in two weeks. They appear in the post-mortem's Action Items table.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from bot.domain.errors import InvalidCommand, NothingToDo
from bot.domain.text import strip_controls

ACTION_MAX = 1000
DUE_MAX = timedelta(days=3650)

# `<@U0BOB>` or `<@U0BOB|bob>`, as Slack sends a user mention in slash-command text.
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
# `<#C0ROOM|room>`, a channel Slack named in the text: shown as `#room`.
_CHANNEL = re.compile(r"<#C[A-Z0-9]+\|([^>]*)>")
# `due <word>` anywhere in the text; whether it is really a due clause is decided below.
_DUE = re.compile(r"(?<!\S)due:?\s+(?:in\s+)?(\S+)", re.IGNORECASE)
_DATE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}$")
_RELATIVE = re.compile(r"^(\d+)\s*([dw])$", re.IGNORECASE)
_EXAMPLE = "e.g. `/incident action add retry with backoff <@U…> due 2w` or `due 2026-12-01`"


@dataclass(frozen=True, kw_only=True)
class ActionItem:
    """A follow-up task. Keyword-only, so that the optional fields may sit in reading order."""

    id: int
    text: str
    owner: str | None  # a Slack user id
    due: date | None
    done: bool = False
    added_by: str
    added_at: datetime
    done_by: str | None = None
    done_at: datetime | None = None

    def mark_done(self, *, by: str, now: datetime) -> ActionItem:
        """This item, done by `by` at `now` (a copy: items are immutable)."""
        if self.done:
            raise NothingToDo(f"Action item {self.id} is already done.")
        return replace(self, done=True, done_by=by, done_at=now)

    def overdue(self, now: datetime) -> bool:
        return not self.done and self.due is not None and self.due < now.date()


def _due_date(word: str, *, now: datetime) -> date:
    """`2026-12-01`, `3d`, `2w` → a date; InvalidCommand with an example otherwise."""
    relative = _RELATIVE.match(word)
    if relative:
        too_far = f"`due {word}` is too far away; pick a date within 10 years."
        if len(relative.group(1).lstrip("0")) > 6:  # before int() and timedelta() overflow
            raise InvalidCommand(too_far)
        amount = int(relative.group(1))
        delta = timedelta(days=amount * (7 if relative.group(2).lower() == "w" else 1))
        if delta > DUE_MAX:
            raise InvalidCommand(too_far)
        return now.date() + delta
    if _DATE.match(word):
        try:
            due = date.fromisoformat("-".join(part.zfill(2) for part in word.split("-")))
        except ValueError:
            raise InvalidCommand(f"`{word}` is not a date on the calendar; {_EXAMPLE}.") from None
        if due < now.date():
            raise InvalidCommand(f"The due date {due.isoformat()} is in the past.")
        if due - now.date() > DUE_MAX:
            raise InvalidCommand(f"`due {word}` is too far away; pick a date within 10 years.")
        return due
    raise InvalidCommand(
        f"I can't read the due date `{word}`: write a date (YYYY-MM-DD) or days/weeks "
        f"from today (3d, 2w); {_EXAMPLE}."
    )


def parse_action(
    text: str, *, now: datetime, default_due: timedelta
) -> tuple[str, str | None, date | None]:
    """What the user typed after `/incident action`, as Slack sends it → (text, owner, due).

    Slack sends `&`, `<` and `>` escaped (`&amp;`, `&lt;`, `&gt;`): only what Slack itself
    wrote is markup, so a typed `<@U0BOB>` is text, not an owner. The text is returned as
    it was typed, without control characters.

    The owner is the one user mention (`<@U0BOB>` or `<@U0BOB|bob>`); the due clause is
    `due YYYY-MM-DD`, or `due 3d` / `due 2w` counted from `now`'s date (an optional `in`
    is allowed: `due in 2w`). Both are removed from the text. Without a due clause the item
    is due `default_due` after today. "due" followed by an ordinary word in the middle of the
    text ("errors due to caching") is left alone; at the very end, or followed by something
    that starts with a digit, it must be a readable due date.

    Subcommand words (`add`, `done`) are the caller's business: they are kept as text.
    """
    owners = _MENTION.findall(text)
    if len(set(owners)) > 1:
        raise InvalidCommand(
            "An action item has one owner; mention just one person, " + _EXAMPLE + "."
        )
    owner = owners[0] if owners else None
    rest = _MENTION.sub(" ", text)

    due: date | None = None
    clauses: list[re.Match[str]] = []
    for match in _DUE.finditer(rest):
        word = match.group(1).rstrip(".,;")
        at_end = not rest[match.end() :].strip()
        if word[:1].isdigit() or at_end:
            clauses.append(match)
    if len(clauses) > 1:
        raise InvalidCommand("Give one due date per action item, " + _EXAMPLE + ".")
    if clauses:
        clause = clauses[0]
        due = _due_date(html.unescape(clause.group(1).rstrip(".,;")), now=now)
        rest = rest[: clause.start()] + " " + rest[clause.end() :]
    else:
        due = now.date() + default_due

    typed = _CHANNEL.sub(lambda m: f"#{m.group(1)}", rest)
    typed = strip_controls(html.unescape(typed) if "&" in typed else typed)
    words = " ".join(typed.split()).strip(" ,;-–—")
    if not words:
        raise InvalidCommand("Say what needs doing, " + _EXAMPLE + ".")
    if len(words) > ACTION_MAX:
        words = words[: ACTION_MAX - 1].rstrip() + "…"
    return words, owner, due
