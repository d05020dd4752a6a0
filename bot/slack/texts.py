"""Every text the bot says to people, in one place. Pure functions, mrkdwn-safe.

User-typed text goes through `escape` (and `mentions` renders only ids the bot trusts): a
title of `<!channel>` shows as text and pings nobody, in blocks and in the `text` fallback.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime

from bot.domain.policy import Policy, human_duration
from bot.domain.timeline import SOURCE_NAMES
from bot.domain.timeline import firing as firing_count

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


ELLIPSIS = "…"
# Tokens a cut must not split: `<…>` (mentions, channels, links, dates; an unclosed `<` runs to
# the end), entities (`&amp;`, `&#128293;`) and emoji short codes (`:fire:`, `:+1:`).
_TOKEN = re.compile(
    r"<[^<>]*>?"  # <@U…>, <#C…>, <!date^…|…>, <https://…|…>
    r"|&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);"  # &amp; &lt; &#128293;
    r"|:[a-z0-9_+'-]+:"  # :fire: :+1: :skin-tone-3:
)
_ZWJ = "\u200d"


def _continues(char: str) -> bool:
    """Whether `char` belongs to the character before it (drawn as one with it)."""
    code = ord(char)
    return (
        unicodedata.category(char) in ("Mn", "Mc", "Me")  # accents, the keycap's enclosing mark
        or code == 0x200D  # zero-width joiner (family and profession emoji)
        or 0xFE00 <= code <= 0xFE0F  # variation selectors (the red heart is U+2764 U+FE0F)
        or 0x1F3FB <= code <= 0x1F3FF  # skin tones
        or 0xE0020 <= code <= 0xE007F  # tags (the flags of England, Scotland, Wales)
        or 0xE0100 <= code <= 0xE01EF  # variation selectors supplement
        or 0xDC00 <= code <= 0xDFFF  # a low surrogate (text decoded with surrogatepass)
    )


def _regional(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF  # two regional indicators make a country flag


def _splits_a_character(text: str, at: int) -> bool:
    if at <= 0 or at >= len(text):
        return False
    before, after = text[at - 1], text[at]
    if _continues(after) or before == _ZWJ or 0xD800 <= ord(before) <= 0xDBFF:
        return True
    if _regional(before) and _regional(after):
        run = 0
        while at - 1 - run >= 0 and _regional(text[at - 1 - run]):
            run += 1
        return run % 2 == 1  # `before` opens a flag that `after` closes
    return False


def _safe(text: str, at: int) -> int:
    """The nearest place at or before `at` where `text` can be cut."""
    while True:
        moved = at
        for token in _TOKEN.finditer(text, 0, len(text)):
            if token.start() >= at:
                break
            if token.start() < at < token.end():
                at = token.start()
                break
        while _splits_a_character(text, at):
            at -= 1
        if at == moved:
            return at


def clip(text: str, limit: int) -> str:
    """`text` in at most `limit` characters: as it is when it fits, else cut at a safe place
    (never inside `<…>`, an `&…;` entity, a `:short_code:` or a character drawn as several
    code points) with `…` at the end. Lengths are Python characters (code points), as
    slack_sdk checks them."""
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    return text[: _safe(text, limit - len(ELLIPSIS))].rstrip() + ELLIPSIS


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
            "`/incident publish [Component=state …] <text>`: a customer-facing update on the "
            "status page (no text: the customer-communication form; states: degraded, "
            "partial, major, operational)",
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


def email_trouble(error: str, *, retrying: bool) -> str:
    then = (
        "It waits and is sent when the server answers; nothing else waits for it."
        if retrying
        else "It will not be retried: check SMTP_URL, EMAIL_FROM and the addresses."
    )
    return f"⚠️ Email to stakeholders not sent yet: {escape(error)}. {then}"


def email_recovered(recipients: int) -> str:
    return f"✅ Email sent to {recipients} address{'es' if recipients != 1 else ''} after waiting."


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


def alert_source(alert: dict[str, object]) -> str:
    """`from Alertmanager` (Grafana, a webhook) for an alert's details."""
    return f"from {SOURCE_NAMES.get(str(alert.get('source')), 'a webhook')}"


def firing(count: int) -> str:
    """`3 alerts firing`, `1 alert firing`, `every alert resolved`."""
    return firing_count({"firing": count})
