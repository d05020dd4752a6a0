"""PagerDuty Events API v2 over httpx: trigger a page, resolve it (dedup key = incident id)."""

from __future__ import annotations

from typing import Any

import httpx

from bot.service.ports import JobFailed, JobRetry

DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
_SEVERITY = {0: "critical", 1: "error", 2: "warning"}


def pd_severity(rank: int) -> str:
    """PagerDuty's severity for a policy rank (0 = most severe)."""
    return _SEVERITY.get(rank, "info")


class PagerDuty:
    def __init__(self, *, events_url: str = DEFAULT_EVENTS_URL, timeout: float = 10.0) -> None:
        self.events_url = events_url
        self.timeout = timeout

    async def send(
        self,
        *,
        routing_key: str,
        action: str,
        dedup_key: str,
        summary: str = "",
        severity: str = "critical",
        source: str = "incident-bot",
        links: list[dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        """Send one event; JobRetry for 429/5xx/network trouble, JobFailed when refused."""
        event: dict[str, Any] = {
            "routing_key": routing_key,
            "event_action": action,
            "dedup_key": dedup_key,
        }
        if action == "trigger":
            event["payload"] = {"summary": summary[:1024], "source": source, "severity": severity}
            if links:
                event["links"] = links
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(self.events_url, json=event)
        except httpx.HTTPError as exc:
            raise JobRetry(f"PagerDuty unreachable: {type(exc).__name__}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            after = response.headers.get("Retry-After")
            raise JobRetry(
                f"PagerDuty answered {response.status_code}",
                after=float(after) if after and after.isdigit() else None,
            )
        if response.status_code >= 400:
            raise JobFailed(
                f"PagerDuty refused the event ({response.status_code}: {response.text[:200]})"
            )
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {}
        return {"status": response.status_code, "dedup_key": body.get("dedup_key", dedup_key)}
