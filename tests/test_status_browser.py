"""The status page in a real browser (Playwright driving the system's Chromium): what a
customer sees on a phone, with JavaScript off. A screenshot is kept under test-artifacts/.

Where Chromium is missing the test is skipped with that reason, except in CI (`CI` set),
where a missing browser fails: the test set-up installs it (`make test`, `.ci/run`)."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from bot.domain.policy import Policy
from tests.harness import ALICE, Slack
from tests.statuspage import INTERNAL_TITLE, declare_with_services, status_policy

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
HOSTILE = "Payments fail <script>document.title='pwned'</script> <!channel>"


def chromium() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if Path(found).exists():
        return found
    if os.environ.get("CI"):
        raise RuntimeError("CI is set but Chromium is missing: the test set-up must install it")
    pytest.skip("Chromium is not installed (apt-get install chromium); `make test` installs it")


@pytest.fixture
def policy() -> Policy:
    return status_policy()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_page_in_a_browser(slack: Slack) -> None:
    executable = chromium()
    from playwright.async_api import async_playwright

    channel = await declare_with_services(slack)
    await slack.command(f"publish Payments=partial {HOSTILE}", channel=channel.id)
    slack.clock.advance(timedelta(minutes=20))
    await slack.command("status monitoring", channel=channel.id)
    await slack.command(
        "publish Payments=degraded A fix is in place; we are watching.", channel=channel.id
    )
    record = await slack.record(channel)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox"], headless=True
        )
        try:
            context = await browser.new_context(
                java_script_enabled=False,  # the page needs none
                viewport={"width": 390, "height": 844},  # a phone
                device_scale_factor=1,
            )
            page = await context.new_page()
            response = await page.goto(slack.bot_url + "/status")
            assert response is not None
            assert response.status == 200
            assert await page.title() == "Example status: Minor Service Outage"

            headings = await page.get_by_role("heading").all_inner_texts()
            assert headings[:3] == [
                "Example status",
                "Current incidents",
                "Service disruption affecting Payments",
            ]
            banner = page.get_by_role("status")
            assert (await banner.inner_text()).strip().endswith("Minor Service Outage")
            components = await page.locator("ul.components li").all_inner_texts()
            assert [" ".join(c.split()) for c in components] == [
                "Payments Degraded performance",
                "Messaging Operational",
                "Status API Operational The public API",
            ]
            updates = page.locator("article ol.updates li")
            texts = [" ".join(t.split()) for t in await updates.all_inner_texts()]
            assert len(texts) == 2
            assert texts[0].startswith("Monitoring")
            assert "A fix is in place" in texts[0]
            assert texts[1].startswith("Investigating")
            assert "<script>" in texts[1]
            assert "<!channel>" in texts[1]  # shown as text, not run, not a mention

            shown = await page.locator("body").inner_text()
            for internal in (INTERNAL_TITLE, channel.name, record.incident.id, ALICE, "alice"):
                assert internal not in shown
            assert await page.locator("script").count() == 0

            # Readable on a phone: nothing wider than the screen.
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390
            assert await page.get_attribute("html", "lang") == "en"

            # With JavaScript on, the published <script> still does not run.
            scripted = await browser.new_page()
            await scripted.goto(slack.bot_url + "/status")
            assert await scripted.title() == "Example status: Minor Service Outage"
            assert await scripted.locator("script").count() == 0
            await scripted.close()

            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "status-page.png"
            await page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 1000
        finally:
            await browser.close()
