"""`GET /metrics`: Prometheus text exposition, written by `prometheus_client`.

Two kinds of series:
- read from the database on each scrape, so every process reports the same truth:
  incidents by severity, declared and resolved, time to acknowledge, nudges and escalations
  (drills left out of all of these), and the work waiting (Slack jobs and timers, drills
  included);
- this process's own, since it started: the Slack Web API calls it made, by method and
  outcome, and how long it took to answer Slack's requests, by kind.

Each bot has its own `CollectorRegistry` (never the global one), so several bots in one
process, as in the tests, do not share a series.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bot.clock import Clock
from bot.domain.incident import EventKind
from bot.domain.policy import RESOLVED, Policy
from bot.service.ports import Store

TTA_BUCKETS = (60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)
# Slack waits 3 seconds for an answer.
REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
REQUEST_KINDS = ("command", "action", "view", "event", "other")
_OUTCOME_CHARS = 64  # Slack's error codes are short; a label never grows without bound


class Metrics:
    """This bot's metrics: its own registry, and the database read on each scrape."""

    def __init__(self, *, store: Store, policy: Policy, clock: Clock) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.registry = CollectorRegistry()
        self.slack_calls = Counter(
            "incident_bot_slack_api_calls",
            "Slack Web API calls made by this process (each HTTP attempt), by method and "
            "outcome: ok, Slack's error code, http_<status>, or exception.",
            ("method", "outcome"),
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "incident_bot_slack_request_duration_seconds",
            "Time this process took to answer Slack's HTTP requests, by kind "
            "(command, action, view, event, other).",
            ("kind",),
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        # Each kind's series, looked up once: every Slack request is counted in one.
        self._request_series = {
            kind: self.request_seconds.labels(kind=kind) for kind in REQUEST_KINDS
        }
        self.alert_requests = Counter(
            "incident_bot_alert_requests",
            "Requests to the alert endpoints answered by this process, by endpoint "
            "(alertmanager, generic) and outcome: declared, joined, unchanged, ignored, "
            "invalid (400), unauthorized (401), too_large (413), unavailable (503).",
            ("endpoint", "outcome"),
            registry=self.registry,
        )

    def slack_call(self, method: str, outcome: str) -> None:
        self.slack_calls.labels(method=method, outcome=outcome).inc()

    def observe_request(self, kind: str, seconds: float) -> None:
        series = self._request_series
        (series.get(kind) or series["other"]).observe(seconds)

    def alert_request(self, endpoint: str, outcome: str) -> None:
        self.alert_requests.labels(endpoint=endpoint, outcome=outcome).inc()

    def slack_meter(self, base_url: str) -> SlackCallMeter:
        return SlackCallMeter(self, base_url=base_url)

    async def render(self) -> str:
        """The exposition text: the database's figures now, then this process's series."""
        families = await database_families(store=self.store, policy=self.policy, clock=self.clock)
        return generate_latest(_Scrape(families, self.registry)).decode("utf-8")


class _Scrape:
    """One scrape: the figures just read, and the registry. Nothing is shared between two
    scrapes, so concurrent scrapes cannot mix their figures."""

    def __init__(self, families: list[Metric], registry: CollectorRegistry) -> None:
        self.families = families
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        yield from self.families
        yield from self.registry.collect()


class SlackCallMeter(AsyncRetryHandler):
    """Counts each Web API attempt of a client. slack_sdk has no request hook, but it shows
    every attempt's response (or exception) to the client's retry handlers, and Bolt copies
    its client's handlers into the client it hands each listener, so their calls are counted
    too. This handler never retries; it must come first, because slack_sdk stops asking at
    the first handler that does. Calls outside the Web API (a file's upload URL) are left out.
    """

    def __init__(self, metrics: Metrics, *, base_url: str) -> None:
        super().__init__(max_retry_count=0)
        self.metrics = metrics
        self.base_url = base_url

    async def can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if request.url.startswith(self.base_url):
            method = request.url[len(self.base_url) :].split("?", 1)[0][:_OUTCOME_CHARS]
            self.metrics.slack_call(method, call_outcome(response, error))
        return False


def call_outcome(response: HttpResponse | None, error: Exception | None) -> str:
    """`ok`, Slack's error code (HTTP 200, `"ok": false`), `http_<status>`, or `exception`
    (no answer: a timeout, a dropped connection, a body that is not Slack's)."""
    if error is not None or response is None:
        return "exception"
    if response.status_code != 200:
        return f"http_{response.status_code}"
    body: Any = response.body
    if isinstance(body, dict):
        if body.get("ok"):
            return "ok"
        return str(body.get("error") or "invalid_response")[:_OUTCOME_CHARS]
    return "ok" if response.data else "invalid_response"


async def database_families(*, store: Store, policy: Policy, clock: Clock) -> list[Metric]:
    """The series read from the database, as of now (drills excluded except from the queues)."""
    async with store.transaction(read_only=True) as tx:
        counts = await tx.counts()
        pending, oldest = await tx.job_backlog(now=clock.now())
        timers = await tx.pending_timer_count()
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

    families: list[Metric] = []
    open_family = GaugeMetricFamily(
        "incident_bot_open_incidents", "Open incidents (drills excluded).", labels=("severity",)
    )
    for severity, n in opened.items():
        open_family.add_metric((severity,), n)
    families.append(open_family)
    for name, help_text, values in (
        ("incident_bot_incidents_declared", "Incidents declared.", declared),
        ("incident_bot_incidents_resolved", "Incidents resolved.", resolved),
    ):
        counter = CounterMetricFamily(name, help_text, labels=("severity",))
        for severity, n in values.items():
            counter.add_metric((severity,), n)
        families.append(counter)
    buckets: list[tuple[str, float]] = [
        (str(bound), sum(1 for value in tta if value <= bound)) for bound in TTA_BUCKETS
    ]
    buckets.append(("+Inf", len(tta)))
    families.append(
        HistogramMetricFamily(
            "incident_bot_time_to_acknowledge_seconds",
            "Declaration to acknowledgement.",
            buckets=buckets,
            sum_value=sum(tta),
        )
    )
    for name, help_text, kinds_counted in (
        (
            "incident_bot_nudges",
            "Update nudges posted (commander, comms lead, announcement).",
            (EventKind.UPDATE_NUDGED, EventKind.NUDGE_ESCALATED, EventKind.UPDATE_OVERDUE),
        ),
        (
            "incident_bot_escalations",
            "Escalations (manual and automatic) and time-open escalations.",
            (EventKind.ESCALATED, EventKind.OPEN_ESCALATED),
        ),
    ):
        total = sum(kinds.get(str(k), 0) for k in kinds_counted)
        families.append(CounterMetricFamily(name, help_text, value=total))
    for name, help_text, value in (
        (
            "incident_bot_slack_jobs_pending",
            "Slack work recorded but not yet done (the same figure as incident_bot_jobs_pending).",
            float(pending),
        ),
        ("incident_bot_jobs_pending", "Slack jobs pending or running.", float(pending)),
        (
            "incident_bot_oldest_pending_job_seconds",
            "How long the oldest pending or running Slack job has waited (0: none).",
            oldest,
        ),
        (
            "incident_bot_timers_pending",
            "Clocks planned and not fired yet (pending or firing), drills included.",
            float(timers),
        ),
    ):
        families.append(GaugeMetricFamily(name, help_text, value=value))
    return families
