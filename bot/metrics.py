"""`GET /metrics`: Prometheus text exposition, computed from the database on each scrape."""

from __future__ import annotations

from bot.domain.policy import Policy
from bot.service.ports import Store


async def render_metrics(*, store: Store, policy: Policy) -> str:
    async with store.transaction() as tx:
        open_records = await tx.open_incidents()
        pending = await tx.pending_job_count()
    counts = {severity.name: 0 for severity in policy.severities}
    for record in open_records:
        if not record.incident.drill:
            counts[record.incident.severity] = counts.get(record.incident.severity, 0) + 1
    lines = [
        "# HELP incident_bot_open_incidents Open incidents (drills excluded).",
        "# TYPE incident_bot_open_incidents gauge",
        *(f'incident_bot_open_incidents{{severity="{name}"}} {n}' for name, n in counts.items()),
        "# HELP incident_bot_slack_jobs_pending Slack work recorded but not yet done.",
        "# TYPE incident_bot_slack_jobs_pending gauge",
        f"incident_bot_slack_jobs_pending {pending}",
    ]
    return "\n".join(lines) + "\n"
