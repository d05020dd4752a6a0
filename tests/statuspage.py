"""Helpers for the status-page tests: a policy with a status page and email, declaring an
incident through the declare form, reading the page over HTTP as a visitor would, and the
public JSON shape that Statuspage-hosted pages serve (what aggregators parse)."""

from __future__ import annotations

from typing import Any

import httpx

from bot.devtools.fakeslack import Channel
from bot.domain.policy import Policy, default_policy, parse_policy
from bot.slack.blocks import Modal
from tests.harness import ALICE, Slack

INTERNAL_TITLE = "db-primary-7 failover zebracorn"
STAKEHOLDERS = ["stakeholders@example.com", "cto@example.com"]


def status_policy(**extra: Any) -> Policy:
    """The built-in policy with a status page of three components, and email for SEV1."""
    data = default_policy().model_dump(mode="json")
    data["status_page"] = {
        "title": "Example status",
        "components": [
            {"name": "Payments", "services": ["payments", "stripe"]},
            {"name": "Messaging", "services": ["messaging"]},
            {"name": "Status API", "description": "The public API"},
        ],
    }
    data["severities"][0]["email"] = STAKEHOLDERS
    data.update(extra)
    return parse_policy(data)


async def declare_with_services(
    slack: Slack,
    *,
    severity: str = "SEV1",
    title: str = INTERNAL_TITLE,
    services: str = "payments",
    user: str = ALICE,
) -> Channel:
    """Declare through the declare form (the way to name the services affected)."""
    await slack.command("", user=user)
    await slack.submit_modal(
        Modal.DECLARE,
        {"severity": severity, "title": title, "services": services},
        user=user,
    )
    return slack.incident_channel()


async def fetch(slack: Slack, path: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(slack.bot_url + path, headers=headers)


_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"]}
_COMPONENT_STATUS = {
    "enum": ["operational", "degraded_performance", "partial_outage", "major_outage"]
}
_PAGE = {
    "type": "object",
    "required": ["id", "name", "url", "updated_at"],
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "name": {"type": "string"},
        "url": {"type": "string", "pattern": "^https?://"},
        "time_zone": {"type": "string"},
        "updated_at": _TIME,
    },
}
_STATUS = {
    "type": "object",
    "required": ["indicator", "description"],
    "properties": {
        "indicator": {"enum": ["none", "minor", "major", "critical", "maintenance"]},
        "description": {"type": "string", "minLength": 1},
    },
}
_COMPONENT = {
    "type": "object",
    "required": ["id", "name", "status", "created_at", "updated_at", "position", "page_id"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "status": _COMPONENT_STATUS,
        "created_at": _TIME,
        "updated_at": _TIME,
        "position": {"type": "integer"},
        "description": {"type": ["string", "null"]},
        "page_id": {"type": "string"},
        "group": {"type": "boolean"},
        "only_show_if_degraded": {"type": "boolean"},
    },
}
_UPDATE = {
    "type": "object",
    "required": ["id", "status", "body", "created_at", "updated_at", "display_at"],
    "properties": {
        "id": {"type": "string"},
        "status": {"enum": ["investigating", "identified", "monitoring", "resolved", "postmortem"]},
        "body": {"type": "string"},
        "incident_id": {"type": "string"},
        "created_at": _TIME,
        "updated_at": _TIME,
        "display_at": _TIME,
        "affected_components": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "new_status"],
                "properties": {"name": {"type": "string"}, "new_status": _COMPONENT_STATUS},
            },
        },
    },
}
_INCIDENT = {
    "type": "object",
    "required": [
        "id",
        "name",
        "status",
        "impact",
        "shortlink",
        "created_at",
        "updated_at",
        "incident_updates",
    ],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "status": {"enum": ["investigating", "identified", "monitoring", "resolved", "postmortem"]},
        "impact": {"enum": ["none", "minor", "major", "critical", "maintenance"]},
        "shortlink": {"type": "string"},
        "created_at": _TIME,
        "updated_at": _TIME,
        "monitoring_at": _NULLABLE_TIME,
        "resolved_at": _NULLABLE_TIME,
        "page_id": {"type": "string"},
        "incident_updates": {"type": "array", "items": _UPDATE},
        "components": {"type": "array", "items": _COMPONENT},
    },
}
# The public shape of Statuspage's /api/v2/summary.json and /api/v2/status.json.
SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["page", "status", "components", "incidents", "scheduled_maintenances"],
    "properties": {
        "page": _PAGE,
        "status": _STATUS,
        "components": {"type": "array", "items": _COMPONENT},
        "incidents": {"type": "array", "items": _INCIDENT},
        "scheduled_maintenances": {"type": "array"},
    },
}
STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["page", "status"],
    "properties": {"page": _PAGE, "status": _STATUS},
}
