"""Every text the bot says to people, in one place. Pure functions, mrkdwn-safe.

User-typed text goes through `escape` (and `mentions` renders only ids the bot trusts): a
title of `<!channel>` shows as text and pings nobody, in blocks and in the `text` fallback.
"""

from __future__ import annotations

import re
from datetime import datetime

from bot.domain.policy import Policy, human_duration

_UNSAFE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ESCAPED_MENTION = re.compile(r"&lt;(@[UW][A-Z0-9]+|!subteam\^S[A-Z0-9]+)&gt;")


def escape(text: str) -> str:
    """Escape `&`, `<`, `>` as Slack asks, so typed text cannot form mentions or links."""
    return text.translate(_UNSAFE)


def escape_error(text: str) -> str:
    """An error message for its author: everything escaped except bare user and user-group
    mentions (an ephemeral reply notifies nobody; the names make it readable)."""
    return _ESCAPED_MENTION.sub(r"<\1>", escape(text))


def mention(target: str | None) -> str:
    """A Slack mention for a user (U…/W…) or user group (S…) id the policy or Slack gave us."""
    if not target:
        return "_unassigned_"
    if target.startswith("S"):
        return f"<!subteam^{target}>"
    return f"<@{target}>"


def mentions(targets: list[str]) -> str:
    return " ".join(mention(t) for t in targets)


def when(moment: datetime | None, *, fmt: str = "{date_short_pretty} {time}") -> str:
    """A time each reader sees in their own time zone, with a UTC fallback."""
    if moment is None:
        return "—"
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{fmt}|{fallback}>"


def utc(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "—"


def clip(text: str, limit: int) -> str:
    """`text` within `limit` characters, cut with "…" at a safe place: never inside an
    `&…;` entity or a `<…>` mention, link or date (half of one shows as raw markup), and
    at a word boundary when one is near."""
    if len(text) <= limit:
        return text
    end = limit - 1
    moved = True
    while moved:  # back off before any `<…>` or `&…;` the cut would split
        moved = False
        for opener, closer in (("<", ">"), ("&", ";")):
            start = text.rfind(opener, 0, end)
            if start >= 0 and not 0 <= text.find(closer, start) < end:
                end, moved = start, True
    space = text.rfind(" ", 0, end)
    if space > 0 and space >= end - 15 and space > end // 2:
        end = space
    return text[:end].rstrip() + "…"


NO_TARGETS = (
    "No escalation targets are configured: nobody is paged. Name users and groups "
    "in the policy file (POLICY_FILE)."
)
DRILL_MARK = "🧪 DRILL"


def help_text(policy: Policy) -> str:
    return "\n".join(
        [
            "*Incident bot*: run the incident procedure from Slack.",
            f"`/incident <severity> <title>`: declare (severities: {policy.severity_words()})",
            "`/incident`: open the declare form",
            "`/incident list [severity] [page N]`: open incidents, worst first, 20 a page",
            "`/incident help`: this text",
            "`/incident drill <severity> <title>`: a practice incident (pages nobody)",
            "*In an incident's channel:*",
            "`/incident ack`: acknowledge (stops the escalation)",
            "`/incident update <text>`: post a status update (no text: the form)",
            f"`/incident status <state>`: {' | '.join(policy.open_statuses)}",
            "`/incident sev <severity>`: change severity",
            "`/incident ic [@user]`: take, or hand over, incident command",
            f"`/incident role <role> @user`: roles: {', '.join(policy.roles)}",
            "`/incident note <text>`: add a note to the timeline",
            "`/incident escalate [reason]`: escalate now to the next level",
            "`/incident snooze <duration>`: postpone the next update nudge (15m, 30m, 1h)",
            "`/incident tag <tag>`: tag the incident (e.g. `security` starts its compliance clock)",
            "`/incident resolve <summary>`: resolve (no text: the form)",
            "`/incident timeline [page]`: show the timeline (react with 📌 to add a message)",
            "`/incident action <text> [@owner] [due 2w]`: record a follow-up action item "
            "(no text: list them)",
            "`/incident postmortem`: build the post-mortem draft and upload it here",
            "`/incident stats [30d]`: counts, time to acknowledge and to resolve (anywhere)",
        ]
    )


def usage_declare(policy: Policy) -> str:
    return (
        "Write `/incident <severity> <title>`, e.g. `/incident sev1 payment down`. "
        f"Severities: {policy.severity_words()}."
    )


def declared(
    incident_id: str, severity: str, title: str, channel_name: str, *, drill: bool = False
) -> str:
    kind = "🧪 Drill" if drill else "🚨"
    return (
        f"{kind} *{incident_id}* declared ({severity}): {escape(title)}. "
        f"Opening its channel #{channel_name} and posting the alert…"
    )


def channel_ready(incident_id: str, channel_id: str) -> str:
    return f"✅ *{incident_id}*: the incident channel is ready: <#{channel_id}>"


def channel_failed(incident_id: str, error: str) -> str:
    return (
        f"⚠️ *{incident_id}* is recorded, but Slack refused to create its channel "
        f"(`{escape(error)}`). The bot keeps the clocks; ask an admin to check the app's scopes."
    )


def announce_failed(error: str) -> str:
    return f"⚠️ Could not post the alert to the announcement channel: `{escape(error)}`."


def pagerduty_trouble(error: str, *, retrying: bool) -> str:
    then = (
        "The bot keeps retrying." if retrying else "It will not be retried: check the routing key."
    )
    return f"⚠️ PagerDuty page not delivered: {escape(error)}. {then}"


def pagerduty_recovered(action: str) -> str:
    done = "page sent" if action == "trigger" else "page resolved"
    return f"✅ PagerDuty reached after retrying ({done})."


def postmortem_posted(incident_id: str, *, automatic: bool, drill: bool = False) -> str:
    why = "The incident is resolved: here" if automatic else "Here"
    mark = f"{DRILL_MARK} · " if drill else ""
    return (
        f"{mark}📝 {why} is the post-mortem draft for *{incident_id}*, filled from the timeline. "
        "Sections marked _To be written by the team_ still need your words."
    )


def unknown_subcommand(word: str, policy: Policy) -> str:
    """An error message (the word as typed): escaped once, where every error is shown."""
    return (
        f"`{clip(word, 40)}` is neither a severity nor a subcommand. "
        + usage_declare(policy)
        + " See `/incident help`."
    )


def duration_text(seconds: int) -> str:
    from datetime import timedelta

    return human_duration(timedelta(seconds=seconds))
