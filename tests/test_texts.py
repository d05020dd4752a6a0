"""Cutting text for Slack's limits: never inside markup, always within the limit."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.slack.texts import clip

PIECES = [
    "word",
    " ",
    "&amp;",
    "&lt;",
    "<@U0BOB>",
    "<#C1|x>",
    "<https://x.io/?a=1&amp;b=2|go>",
    "🚨",
]


def test_a_cut_never_splits_markup() -> None:
    assert clip("a &amp; b &lt;c&gt; dddddd", 8) == "a &amp;…"
    assert clip("ab <@U0BOB> cd", 7) == "ab…"
    assert clip("go <https://x.io/?a=1&amp;b=2|link> ok", 20) == "go…"
    assert clip("x" * 50, 10) == "x" * 9 + "…"
    assert clip("short", 10) == "short"


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40), st.integers(min_value=2, max_value=120))
def test_cut_text_stays_whole_and_within_the_limit(parts: list[str], limit: int) -> None:
    text = "".join(parts)
    cut = clip(text, limit)
    assert len(cut) <= limit
    if cut != text:
        kept = cut.removesuffix("…")
        assert text.startswith(kept)
        assert kept.count("<") == kept.count(">"), cut
        assert not re.search(r"&[a-z]*$", kept), cut
