"""The lists of open incidents within Slack's limits: `cut`, `/incident list`, the App Home.

Nothing is dropped silently: with 30 (or 300) open incidents every one is shown or counted,
and the line that counts them names the command that shows them. Every text is cut at a safe
place: never inside a mention, an entity or an emoji."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.errors import InvalidCommand
from bot.domain.policy import default_policy
from bot.slack import lists
from bot.slack.lists import PAGE_SIZE, home_view, incident_list, parse_list
from bot.slack.texts import clip
from tests.harness import Slack

POLICY = default_policy()
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SEVERITIES = ("SEV1", "SEV2", "SEV3", "SEV4")

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # man ZWJ woman ZWJ girl
THUMB = "\U0001f44d\U0001f3fd"  # thumbs up, medium skin tone
FLAG = "\U0001f1eb\U0001f1f7"  # regional indicators F R
HEART = "\u2764\ufe0f"  # heart, emoji presentation
KEYCAP = "1\ufe0f\u20e3"
ACCENT = "e\u0301"  # e, combining acute accent
SCOTLAND = "\U0001f3f4" + "".join(chr(0xE0000 + ord(c)) for c in "gbsct") + "\U000e007f"
FIRE = "\U0001f525"

# Pieces no cut may split; single characters elsewhere, so that every boundary between pieces
# is a place `cut` may choose and the longest fitting prefix of pieces is what it must keep.
ATOMS = [
    "<@U0ALICE>",
    "<#C0123ABC|ops>",
    "<!subteam^S0SRE>",
    "<!date^1795348500^{date_short_pretty} {time}|2026-11-22 11:55 UTC>",
    "<https://example.com/a?b=1&amp;c=2|the dashboard>",
    "&amp;",
    "&lt;",
    "&gt;",
    "&#128293;",
    ":fire:",
    ":+1:",
    FAMILY,
    THUMB,
    FLAG,
    HEART,
    KEYCAP,
    ACCENT,
    SCOTLAND,
    FIRE,
    "a",
    "Z",
    " ",
    "*",
    "é",
]


# ---- cut -------------------------------------------------------------------------------------
def test_text_that_fits_is_kept_as_it_is() -> None:
    assert clip("payment down", 12) == "payment down"
    assert clip("", 0) == ""


def test_a_long_text_is_cut_with_an_ellipsis_within_the_limit() -> None:
    assert clip("payment service down", 10) == "payment s…"
    assert clip("abcdef", 1) == "…"
    assert clip("abcdef", 0) == ""


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("IC <@U0ALICE> now", 8, "IC…"),  # not "IC <@U0A…"
        ("see <#C0123|ops> please", 12, "see…"),
        ("at <!date^1795348500^{time}|11:55 UTC> ok", 20, "at…"),
        ("Q&amp;A down", 4, "Q…"),  # not "Q&a…"
        ("Q&amp;A down", 8, "Q&amp;A…"),
        ("a &#128293; b", 5, "a…"),
        ("it is :fire: now", 10, "it is…"),
        (f"ab{FAMILY}cd", 4, "ab…"),  # not the man alone, nor a dangling joiner
        (f"ab{THUMB}c", 4, "ab…"),  # not the thumb without its skin tone
        (f"ab{FLAG}{FLAG}", 5, f"ab{FLAG}…"),  # a flag is two regional indicators
        (f"ab{FLAG}{FLAG}", 4, "ab…"),
        (f"ab{HEART}cd", 4, "ab…"),  # not the heart without its presentation selector
        (f"ab{KEYCAP}cd", 5, "ab…"),
        (f"caf{ACCENT} ouvert", 5, "caf…"),  # not the e without its accent
        (f"go {SCOTLAND} go", 6, "go…"),
    ],
)
def test_a_cut_never_lands_inside_markup_or_a_character(
    text: str, limit: int, expected: str
) -> None:
    assert clip(text, limit) == expected


def test_a_cut_never_leaves_half_a_surrogate_pair() -> None:
    split = "ab\ud83d\udd25cd"  # U+1F525 as two UTF-16 halves, as JSON can write it
    assert len(split) == 6
    assert clip(split, 4) == "ab…"
    assert clip(split, 5) == "ab\ud83d\udd25…"
    assert clip(f"ab{FIRE}cd", 4) == f"ab{FIRE}…"


def _longest_fitting_prefix(atoms: list[str], room: int) -> str:
    best = ""
    for count in range(len(atoms) + 1):
        prefix = "".join(atoms[:count])
        if len(prefix) > room:
            break
        best = prefix
    return best.rstrip()


@given(st.lists(st.sampled_from(ATOMS), max_size=40), st.integers(min_value=0, max_value=300))
def test_a_cut_keeps_the_longest_prefix_of_whole_pieces(atoms: list[str], limit: int) -> None:
    text = "".join(atoms)
    result = clip(text, limit)
    assert len(result) <= limit
    if len(text) <= limit:
        assert result == text
    elif limit > 0:
        assert result.endswith("…")
        assert result[:-1] == _longest_fitting_prefix(atoms, limit - 1)


# ---- what a rendered list must be ------------------------------------------------------------
_ENTITY = re.compile(r"&(amp|lt|gt);")


def texts_of(blocks: list[dict[str, Any]]) -> list[str]:
    found = []
    for block in blocks:
        if "text" in block:
            found.append(block["text"]["text"])
        found += [element["text"] for element in block.get("elements", [])]
    return found


def assert_within_slack_limits(blocks: list[dict[str, Any]], *, max_blocks: int) -> None:
    assert len(blocks) <= max_blocks
    for block in blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        if block["type"] == "context":
            assert len(block["elements"]) <= 10
    for text in texts_of(blocks):
        assert 1 <= len(text) <= 3000
        # every `<` opens a token that closes, and a user's `<`/`&` only appear escaped
        assert re.fullmatch(r"(?:[^<>]|<[^<>]+>)*", text), text
        assert all(_ENTITY.match(text, m.start()) for m in re.finditer("&", text)), text
        for part in re.split(r"[\s·…]", text):
            assert not part.startswith(("\u200d", "\ufe0f", "\u0301", "\U0001f3fd")), text
            assert not part.endswith("\u200d"), text


def shown_ids(blocks: list[dict[str, Any]]) -> list[str]:
    return re.findall(r"INC-\d{8}-\d{3}", "\n".join(texts_of(blocks)))


NASTY = f"<!channel> & <@U0BOB> {FAMILY}{THUMB}{FLAG} &amp; :fire: {ACCENT} " * 12


def incidents(count: int, *, title: str = NASTY) -> list[dict[str, Any]]:
    """`count` open incidents as `commands.overview` gives them (declaration order)."""
    rows = []
    for n in range(count):
        rows.append(
            {
                "id": f"INC-20261122-{n + 1:03d}",
                "title": f"{n} {title}",
                "severity": SEVERITIES[n % 4],
                "status": "investigating",
                "drill": n == 5,
                "commander": "U0ALICE" if n % 2 else None,
                "channel_id": f"C{n:08d}",
                "acknowledged_at": None if n % 3 else (NOW - timedelta(minutes=50)).isoformat(),
                "next_update_at": (NOW - timedelta(minutes=n)).isoformat(),
                "declared_at": (NOW - timedelta(hours=2) + timedelta(minutes=n)).isoformat(),
                "resolution_overdue": n % 5 == 0,
            }
        )
    return rows


def worst_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """As the App Home is given them (bot/slack/app.py sorts them)."""
    return sorted(rows, key=lambda r: (POLICY.rank(r["severity"]), r["declared_at"]))


# ---- /incident list --------------------------------------------------------------------------
def test_thirty_open_incidents_are_all_reachable_a_page_at_a_time() -> None:
    rows = incidents(30)
    first = incident_list(rows, POLICY)
    assert_within_slack_limits(first.blocks, max_blocks=50)
    ids = shown_ids(first.blocks)
    assert len(ids) == PAGE_SIZE
    assert ids == [r["id"] for r in worst_first(rows)][:PAGE_SIZE], "worst first"
    shown = json.dumps(first.blocks, ensure_ascii=False)
    assert "Open incidents (30)" in shown
    assert "…and 10 more: SEV3 ×3, SEV4 ×7 — `/incident list page 2`" in shown
    assert "`/incident list sev3`" in shown
    assert "Page 1 of 2" in shown
    second = incident_list(rows, POLICY, "page 2")
    assert_within_slack_limits(second.blocks, max_blocks=50)
    assert sorted(ids + shown_ids(second.blocks)) == sorted(r["id"] for r in rows)
    assert "more:" not in json.dumps(second.blocks, ensure_ascii=False)
    assert "30 open incident(s); showing 21–30" in second.text
    past = incident_list(rows, POLICY, "page 99")
    assert shown_ids(past.blocks) == shown_ids(second.blocks), "past the end: the last page"


def test_one_severity_at_a_time() -> None:
    rows = incidents(30)
    sev3 = incident_list(rows, POLICY, "sev3")
    assert_within_slack_limits(sev3.blocks, max_blocks=50)
    assert {r["severity"] for r in rows if r["id"] in shown_ids(sev3.blocks)} == {"SEV3"}
    assert len(shown_ids(sev3.blocks)) == 7
    shown = json.dumps(sev3.blocks, ensure_ascii=False)
    assert "Open SEV3 incidents (7 of 30)" in shown
    assert "`/incident list` for all 30" in shown
    # any severity word, in any order with the page
    assert shown_ids(incident_list(rows, POLICY, "P2 page 1").blocks) == shown_ids(sev3.blocks)
    nothing = incident_list(incidents(3), POLICY, "low")
    assert "No open SEV4 incidents. 3 open in all (SEV1 ×1, SEV2 ×1, SEV3 ×1)" in nothing.text


def test_a_severity_with_more_than_a_page_is_paged_too() -> None:
    rows = [dict(r, severity="SEV2") for r in incidents(45)]
    first = incident_list(rows, POLICY, "sev2")
    assert "…and 25 more: SEV2 ×25 — `/incident list sev2 page 2`" in json.dumps(
        first.blocks, ensure_ascii=False
    )
    pages = [incident_list(rows, POLICY, f"sev2 page {n}") for n in (1, 2, 3)]
    assert sorted(i for page in pages for i in shown_ids(page.blocks)) == sorted(
        r["id"] for r in rows
    )


@pytest.mark.parametrize("args", ["bogus", "page", "sev1 sev2", "page two"])
def test_a_wrong_argument_says_how_to_write_it(args: str) -> None:
    with pytest.raises(InvalidCommand) as caught:
        parse_list(args, POLICY)
    assert "/incident list [severity] [page N]" in str(caught.value)


def test_page_numbers() -> None:
    assert parse_list("", POLICY) == lists.ListQuery(None, 1)
    assert parse_list("page 3", POLICY) == lists.ListQuery(None, 3)
    assert parse_list("3 critical", POLICY) == lists.ListQuery("SEV1", 3)
    assert parse_list("0", POLICY).page == 1
    assert parse_list("9" * 40, POLICY).page == 10**9


@pytest.mark.parametrize(
    "title",
    [
        "<" * 400,
        "&" * 400,
        FAMILY * 100,
        "x" * 148 + FAMILY,
        "x" * 147 + "&" + "y" * 10,
        "x" * 146 + "<!here>",
        "x" * 149 + THUMB,
        FLAG * 80,
    ],
)
def test_titles_full_of_markup_and_emoji_are_cut_safely(title: str) -> None:
    rows = incidents(30, title=title)
    for args in ("", "page 2"):
        assert_within_slack_limits(incident_list(rows, POLICY, args).blocks, max_blocks=50)
    view = home_view(worst_first(rows), now=NOW)
    assert_within_slack_limits(view["blocks"], max_blocks=100)


def test_no_incidents() -> None:
    assert incident_list([], POLICY).text == "No open incidents. 🎉"
    view = home_view([], now=NOW)
    assert "No open incidents" in json.dumps(view, ensure_ascii=False)


# ---- the App Home ----------------------------------------------------------------------------
def test_the_home_shows_thirty_open_incidents_in_full() -> None:
    rows = worst_first(incidents(30))
    view = home_view(rows, now=NOW)
    assert view["type"] == "home"
    assert_within_slack_limits(view["blocks"], max_blocks=100)
    cards = re.findall(r"<#(C\d{8})>", "\n".join(texts_of(view["blocks"])))
    assert cards == [r["channel_id"] for r in rows], "every one, worst first"
    shown = json.dumps(view, ensure_ascii=False)
    assert "Open incidents (30)" in shown
    assert "more:" not in shown


def test_the_home_counts_what_its_100_blocks_cannot_show() -> None:
    rows = worst_first(incidents(1000))
    view = home_view(rows, now=NOW)
    blocks = view["blocks"]
    assert_within_slack_limits(blocks, max_blocks=100)
    cards = re.findall(r"<#(C\d{8})>", "\n".join(texts_of(blocks[1 : 1 + lists.HOME_FULL])))
    assert cards == [r["channel_id"] for r in rows[: lists.HOME_FULL]], "the worst, in full"
    listed = shown_ids(blocks)
    seen = lists.HOME_FULL + len(listed)
    assert listed == [r["id"] for r in rows[lists.HOME_FULL : seen]]
    summary = blocks[-2]["elements"][0]["text"]
    unseen = rows[seen:]
    assert summary.startswith(f"…and {len(unseen)} more: ")
    assert lists.tally(unseen) in summary
    page = int(re.search(r"`/incident list page (\d+)`", summary).group(1))  # type: ignore[union-attr]
    on_that_page = shown_ids(incident_list(rows, POLICY, f"page {page}").blocks)
    assert unseen[0]["id"] in on_that_page, "the page named starts the ones not shown"
    assert blocks[-1]["elements"][0]["text"].startswith("Updated ")


# ---- through Slack ---------------------------------------------------------------------------
async def test_incident_list_with_30_open_incidents_through_slack(slack: Slack) -> None:
    words = ("sev1", "sev2", "sev3", "sev4")
    for n in range(30):
        title = f"{n} <@U0BOB> & {FAMILY} checkout & payments {'x' * 120}"
        await slack.command(f"{words[n % 4]} {title}", settle=False)
    await slack.settle()
    assert len(await slack.bot.service.open_incidents()) == 30
    every = {r.incident.id for r in await slack.bot.service.open_incidents()}
    reached: list[str] = []
    for args in ("list", "list page 2"):
        reply = await slack.command(args)
        assert isinstance(reply.body, dict), reply
        assert_within_slack_limits(reply.body["blocks"], max_blocks=50)
        reached += shown_ids(reply.body["blocks"])
    assert sorted(reached) == sorted(every)
    wrong = await slack.command("list sev9")
    assert wrong.text is not None
    assert "/incident list [severity] [page N]" in wrong.text
    await slack.driver.app_home_opened(user="U0ALICE")
    await slack.settle()
    view = slack.fake.home_views["U0ALICE"]
    assert_within_slack_limits(view["blocks"], max_blocks=100)
    assert "Open incidents (30)" in json.dumps(view, ensure_ascii=False)
    assert len(re.findall(r"<#C[A-Z0-9]+>", json.dumps(view))) == 30
