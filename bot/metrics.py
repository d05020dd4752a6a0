"""`GET /metrics`: Prometheus text exposition, computed from the database on each scrape.

Drills are left out of every figure except the job queue.
"""

from __future__ import annotations

from bot.clock import Clock
from bot.domain.incident import EventKind
from bot.domain.policy import RESOLVED, Policy
from bot.service.ports import Store

TTA_BUCKETS = (60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)


def _escape(value: str) -> str:
    return value.replace("\\\\", "\\\\\\\\").replace('"', '\\\\"').replace("\\n", "\\\\n")


async def render_metrics(*, store: Store, policy: Policy, clock: Clock) -> str:
    async with store.transaction() as tx:
        counts = await tx.counts()
        pending, oldest = await tx.job_backlog(now=clock.now())
    names = [s.name for s in policy.severities]
    opened = dict.fromkeys(names, 0)
    declared = dict.fromkeys(names, 0)
    resolved = dict.fromkeys(names, 0)
    for severity, status, n in counts["by_severity"]:
        declared[severity] = declared.get(severity, 0) + n
        if status == RESOLVED:
            resolved[severity] = resolved.get(severity, 0) + n
        else:
            opened[severity] = opened.get(severity, 0) + n
    kinds: dict[str, int] = counts["kinds"]
    tta: list[float] = counts["tta_seconds"]
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, values: dict[str, int]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f'{name}{{severity="{_escape(k)}"}} {v}' for k, v in values.items())

    family("incident_bot_open_incidents", "gauge", "Open incidents (drills excluded).", opened)
    family("incident_bot_incidents_declared_total", "counter", "Incidents declared.", declared)
    family("incident_bot_incidents_resolved_total", "counter", "Incidents resolved.", resolved)
    lines.append("# HELP incident_bot_time_to_acknowledge_seconds Declaration to acknowledgement.")
    lines.append("# TYPE incident_bot_time_to_acknowledge_seconds histogram")
    for bound in TTA_BUCKETS:
        below = sum(1 for value in tta if value <= bound)
        lines.append(f'incident_bot_time_to_acknowledge_seconds_bucket{{le="{bound}"}} {below}')
    lines.append(f'incident_bot_time_to_acknowledge_seconds_bucket{{le="+Inf"}} {len(tta)}')
    lines.append(f"incident_bot_time_to_acknowledge_seconds_sum {sum(tta):.3f}")
    lines.append(f"incident_bot_time_to_acknowledge_seconds_count {len(tta)}")
    for name, help_text, kinds_counted in (
        (
            "incident_bot_nudges_total",
            "Update nudges posted (commander, comms lead, announcement).",
            (EventKind.UPDATE_NUDGED, EventKind.NUDGE_ESCALATED, EventKind.UPDATE_OVERDUE),
        ),
        (
            "incident_bot_escalations_total",
            "Escalations (manual and automatic) and time-open escalations.",
            (EventKind.ESCALATED, EventKind.OPEN_ESCALATED),
        ),
    ):
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} counter")
        lines.append(f"{name} {sum(kinds.get(str(k), 0) for k in kinds_counted)}")
    lines.append("# HELP incident_bot_slack_jobs_pending Slack work recorded but not yet done.")
    lines.append("# TYPE incident_bot_slack_jobs_pending gauge")
    lines.append(f"incident_bot_slack_jobs_pending {pending}")
    for name, help_text, value in (
        ("incident_bot_jobs_pending", "Slack jobs pending or running.", f"{pending}"),
        (
            "incident_bot_oldest_pending_job_seconds",
            "How long the oldest pending or running Slack job has waited (0: none).",
            f"{oldest:.3f}",
        ),
    ):
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        lines.append(f"{name} {value}")
    return "\n".join(lines) + "\n"
