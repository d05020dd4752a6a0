"""Renders what the fake Slack holds as plain text a person can read (the demo's output)."""

from __future__ import annotations

import html
import re
from typing import Any

from bot.devtools.fakeslack import FakeSlack, Message

_DATE = re.compile(r"<!date\^\d+\^[^|>]*\|([^>]*)>")
_USER = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_GROUP = re.compile(r"<!subteam\^([A-Z0-9]+)(?:\|[^>]*)?>")
_CHANNEL = re.compile(r"<#([CG][A-Z0-9]+)(?:\|[^>]*)?>")
_LINK = re.compile(r"<(https?://[^|>]+)\|([^>]+)>")


def readable(fake: FakeSlack, text: str) -> str:
    """mrkdwn as Slack would show it: mentions as @name, dates as text, entities decoded."""

    def user(match: re.Match[str]) -> str:
        found = fake.users.get(match.group(1))
        return f"@{found.name}" if found else f"@{match.group(1)}"

    def channel(match: re.Match[str]) -> str:
        found = fake.channels.get(match.group(1))
        return f"#{found.name}" if found else f"#{match.group(1)}"

    text = _DATE.sub(r"\1", text)
    text = _USER.sub(user, text)
    text = _GROUP.sub(r"@group:\1", text)
    text = _CHANNEL.sub(channel, text)
    text = _LINK.sub(r"\2 (\1)", text)
    return html.unescape(text)


def _block_lines(fake: FakeSlack, block: dict[str, Any]) -> list[str]:
    kind = block.get("type")
    if kind == "header":
        return [f"▌{block['text']['text']}"]
    if kind == "section":
        lines: list[str] = []
        if block.get("text"):
            lines += readable(fake, block["text"]["text"]).splitlines()
        for field in block.get("fields") or []:
            lines.append("  ".join(readable(fake, field["text"]).replace("*", "").splitlines()))
        return lines
    if kind == "context":
        return [
            "  " + readable(fake, element.get("text", "")) for element in block.get("elements", [])
        ]
    if kind == "actions":
        lines = []
        buttons = []
        for element in block.get("elements", []):
            if element.get("type") == "checkboxes":
                ticked = {o["value"] for o in element.get("initial_options") or []}
                for option in element.get("options", []):
                    box = "☑" if option["value"] in ticked else "☐"
                    note = (option.get("description") or {}).get("text", "")
                    note = f"  ({readable(fake, note)})" if note else ""
                    lines.append(f"{box} {readable(fake, option['text']['text'])}{note}")
            elif isinstance(element.get("text"), dict):
                buttons.append(f"[{element['text']['text']}]")
        return lines + ([" ".join(buttons)] if buttons else [])
    if kind == "divider":
        return ["─" * 40]
    return []


def message_lines(fake: FakeSlack, text: str, blocks: list[dict[str, Any]] | None) -> list[str]:
    """The lines a person reads in a message (its blocks, else its text)."""
    lines: list[str] = []
    for block in blocks or []:
        lines += _block_lines(fake, block)
    return lines or readable(fake, text).splitlines()


def _author(fake: FakeSlack, message: Message) -> str:
    return "bot" if message.user == fake.bot_user_id else readable(fake, f"<@{message.user}>")


def render_message(fake: FakeSlack, message: Message) -> str:
    lines = message_lines(fake, message.text, message.blocks)
    lines += [f"📎 {f.get('name') or f.get('title')}" for f in message.files]
    body = "\n".join(f"    {line}" for line in lines)
    where = ""
    if message.thread_ts and message.thread_ts != message.ts:
        parent = next(
            (m for c in fake.channels.values() for m in c.messages if m.ts == message.thread_ts),
            None,
        )
        first = message_lines(fake, parent.text, parent.blocks)[:1] if parent else []
        title = first[0].strip() if first else "a message"
        also = ", also shown in the channel" if message.broadcast else ""
        where = f" (in the thread of “{title}”{also})"
    return f"  {_author(fake, message)}{where}:\n{body}"


def render_edit(fake: FakeSlack, message: Message, *, seen_edits: int) -> str:
    """What changed in a message edited in place since `seen_edits` edits had been shown."""
    before = message.edits[seen_edits] if seen_edits < len(message.edits) else None
    old = message_lines(fake, before.text, before.blocks) if before else []
    new = message_lines(fake, message.text, message.blocks)
    changed = [line for line in new if line not in old] or ["(no visible change)"]
    title = new[0].strip() if new else "message"
    body = "\n".join(f"    {line}" for line in changed)
    return f"  {_author(fake, message)} edited “{title}” in place:\n{body}"
