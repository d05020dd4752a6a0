"""`make demo` runs from start to end and shows what a new user is meant to see."""

from __future__ import annotations

import pytest

from bot.demo import run_demo


async def test_the_demo_shows_the_whole_journey(capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_demo() == 0
    out = capsys.readouterr().out
    assert "INCIDENT ALERT - SEV1" in out
    # Published: the public page shows the component down, and never the internal title.
    assert "Payments: major outage" in out
    assert "internal title on it: False" in out
    assert "internal title on it: True" not in out
    assert "overall: All Systems Operational" in out  # after the resolution
    assert "Post-Mortem: payment processing down" in out
    # Monitoring declares the second incident; the repeat changes nothing.
    assert "HTTP 202 declared" in out
    assert "HTTP 202 unchanged" in out
    assert "Declared by the bot from Alertmanager: *HighErrorRate*" in out
    assert "Every alert of this incident is resolved." in out
    assert "Done: two incidents" in out
