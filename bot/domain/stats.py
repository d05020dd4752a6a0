"""Response statistics over a window (`/incident stats 30d`). Pure: `now` is a parameter.

Every figure is computed from the incident records and their timelines; drills are left
out (and counted separately), because a practice run says nothing about real response.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bot.domain.errors import InvalidCommand
from bot.domain.incident import EventKind, Incident
from bot.domain.policy import Policy, Severity, format_duration, human_duration
from bot.domain.timeline import TimelineEntry

DEFAULT_WINDOW = timedelta(days=30)
WINDOW_MAX = timedelta(days=3650)
OVERALL = "all"
FROM_ALERTS = "from alerts"
BY_PEOPLE = "by people"
NONE = "—"

_WINDOW = re.compile(r"^(\d+)\s*([dw])$")


@dataclass(frozen=True)
class SeverityStats:
    """Figures for one severity (or `severity == "all"` for every incident).

    Shares are fractions in [0, 1], None when nothing was there to measure. An incident is
    judged against the targets of its severity at the end of the window (after any change).
    """

    severity: str
    count: int
    resolved: int
    tta_median: timedelta | None
    tta_p90: timedelta | None
    ttr_median: timedelta | None
    ttr_p90: timedelta | None
    ack_within_target: float | None
    resolved_within_target: float | None
    update_punctuality: float | None
    updates: int = 0
    updates_on_time: int = 0


@dataclass(frozen=True)
class Stats:
    by_severity: list[SeverityStats]
    overall: SeverityStats
    since: datetime
    now: datetime
    drills_excluded: int
    # When some incidents were declared by the bot from alerts: their figures ("from
    # alerts", acknowledgement counted from the alert's start) and the others' ("by people").
    by_origin: list[SeverityStats] = field(default_factory=list)

    @property
    def window(self) -> timedelta:
        return self.now - self.since


def median(values: list[timedelta]) -> timedelta | None:
    """The usual median: the middle value, or the mean of the two middle ones."""
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def p90(values: list[timedelta]) -> timedelta | None:
    """The 90th percentile by the nearest-rank method: the value at rank ⌈0.9·n⌉ (1-based)
    of the sorted values. Always one of the values; for fewer than 10 values, the largest."""
    if not values:
        return None
    ordered = sorted(values)
    rank = -(-9 * len(ordered) // 10)  # ceil(0.9 * n) in integers
    return ordered[rank - 1]


def update_punctuality(entries: Iterable[TimelineEntry]) -> tuple[int, int]:
    """(updates due, of which posted on time) for one incident's timeline.

    An update is on time when no `update_nudged` entry lies between the previous update (or
    the declaration) and it: the update came before the bot had to ask for it. A reminder
    that no update followed is a due update that never came: counted, and not on time.
    """
    due = on_time = 0
    nudged = False
    for entry in sorted(entries, key=lambda e: e.at):  # stable: equal times keep their order
        if entry.kind == EventKind.UPDATE_NUDGED:
            nudged = True
        elif entry.kind == EventKind.UPDATE_POSTED:
            due += 1
            on_time += not nudged
            nudged = False
    return due + nudged, on_time


def _share(hits: int, total: int) -> float | None:
    return hits / total if total else None


def _within(
    start: datetime, end: datetime | None, target: timedelta | None, now: datetime
) -> bool | None:
    """Whether `end - start` met `target`; None while still undecided (not ended, target not
    yet passed) or when there is no target. Not ended past the target is a miss."""
    if target is None:
        return None
    if end is not None:
        return end - start <= target
    return False if now - start > target else None


def alert_start(incident: Incident) -> datetime:
    """When the people's clock started: for an incident declared from an alert, when the
    alert started firing (if it says, and not after the declaration); else the declaration."""
    started = (incident.alert or {}).get("started_at")
    if isinstance(started, str) and started:
        try:
            moment = datetime.fromisoformat(started)
        except ValueError:
            return incident.declared_at
        return min(moment, incident.declared_at)
    return incident.declared_at


def _figures(
    name: str,
    records: list[tuple[Incident, list[TimelineEntry]]],
    targets: dict[str, Severity | None],
    now: datetime,
    *,
    from_alert_start: bool = False,
) -> SeverityStats:
    ttas: list[timedelta] = []
    ttrs: list[timedelta] = []
    acks: list[bool] = []
    fixes: list[bool] = []
    updates = on_time = 0
    for incident, entries in records:
        severity = targets.get(incident.severity)
        if incident.acknowledged_at is not None:
            start = alert_start(incident) if from_alert_start else incident.declared_at
            ttas.append(incident.acknowledged_at - start)
        if incident.resolved_at is not None:
            ttrs.append(incident.resolved_at - incident.declared_at)
        ack = _within(
            incident.declared_at,
            incident.acknowledged_at,
            severity.ack_timeout if severity else None,
            now,
        )
        fixed = _within(
            incident.declared_at,
            incident.resolved_at,
            severity.resolution_target if severity else None,
            now,
        )
        acks += [] if ack is None else [ack]
        fixes += [] if fixed is None else [fixed]
        posted, punctual = update_punctuality(entries)
        updates += posted
        on_time += punctual
    return SeverityStats(
        severity=name,
        count=len(records),
        resolved=len(ttrs),
        tta_median=median(ttas),
        tta_p90=p90(ttas),
        ttr_median=median(ttrs),
        ttr_p90=p90(ttrs),
        ack_within_target=_share(sum(acks), len(acks)),
        resolved_within_target=_share(sum(fixes), len(fixes)),
        update_punctuality=_share(on_time, updates),
        updates=updates,
        updates_on_time=on_time,
    )


def compute_stats(
    records: list[tuple[Incident, list[TimelineEntry]]],
    *,
    policy: Policy,
    since: datetime,
    now: datetime,
) -> Stats:
    """Statistics for the incidents declared in [since, now], drills excluded.

    Times to acknowledge / resolve count acknowledged / resolved incidents only. The target
    shares count every incident whose outcome is known: acknowledged (resolved) ones, and
    ones still waiting past their target (misses); those still within their target are left
    out. Medians are the usual median; p90 uses the nearest-rank method (see `p90`).
    Severities come in policy order, each listed even without incidents; incidents whose
    severity the policy no longer knows are listed after them, without targets.
    """
    in_window = [(i, e) for i, e in records if since <= i.declared_at <= now]
    real = [(i, e) for i, e in in_window if not i.drill]
    targets = {i.severity: policy.severity(i.severity) for i, _ in real}

    def group(incident: Incident) -> str:
        known = targets[incident.severity]
        return known.name if known is not None else incident.severity

    names = [s.name for s in policy.severities]
    unknown = sorted({group(i) for i, _ in real} - set(names))
    by_severity = [
        _figures(name, [(i, e) for i, e in real if group(i) == name], targets, now)
        for name in [*names, *unknown]
    ]
    alerted = [(i, e) for i, e in real if i.from_alert]
    by_origin = (
        [
            _figures(FROM_ALERTS, alerted, targets, now, from_alert_start=True),
            _figures(BY_PEOPLE, [(i, e) for i, e in real if not i.from_alert], targets, now),
        ]
        if alerted
        else []
    )
    return Stats(
        by_severity=by_severity,
        overall=_figures(OVERALL, real, targets, now),
        since=since,
        now=now,
        drills_excluded=len(in_window) - len(real),
        by_origin=by_origin,
    )


def parse_window(text: str) -> timedelta:
    """`/incident stats [window]`: `<n>d` or `<n>w` (`7d`, `30d`, `12w`); empty → 30 days."""
    word = text.strip().lower()
    if not word:
        return DEFAULT_WINDOW
    match = _WINDOW.match(word)
    # A number too long is refused before int() and timedelta() are asked to hold it.
    number = int(match.group(1)) if match and len(match.group(1).lstrip("0")) <= 6 else None
    if match is None or number == 0:
        raise InvalidCommand(
            f"I can't read the window {text.strip()!r}: write days or weeks, "
            "e.g. `/incident stats 30d` or `/incident stats 12w`."
        )
    too_long = "That window is too long; ask for at most 3650d (10 years)."
    if number is None:
        raise InvalidCommand(too_long)
    window = timedelta(days=number * (7 if match.group(2) == "w" else 1))
    if window > WINDOW_MAX:
        raise InvalidCommand(too_long)
    return window


def _utc(moment: datetime) -> datetime:
    """Aware times converted to UTC; naive ones are taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _duration(value: timedelta | None) -> str:
    return NONE if value is None else human_duration(value)


def _percent(value: float | None) -> str:
    return NONE if value is None else f"{round(value * 100)}%"


_COLUMNS = (
    "severity",
    "count",
    "resolved",
    "TTA med",
    "TTA p90",
    "TTR med",
    "TTR p90",
    "ack in target",
    "fixed in target",
    "updates on time",
)


def render_stats_text(stats: Stats) -> list[str]:
    """Plain, column-aligned lines for a code block: a title, a header, one line per
    severity, the overall line; `—` where there is nothing to measure."""
    rows = [
        [
            s.severity,
            str(s.count),
            str(s.resolved),
            _duration(s.tta_median),
            _duration(s.tta_p90),
            _duration(s.ttr_median),
            _duration(s.ttr_p90),
            _percent(s.ack_within_target),
            _percent(s.resolved_within_target),
            _percent(s.update_punctuality),
        ]
        for s in [*stats.by_severity, stats.overall, *stats.by_origin]
    ]
    table = [list(_COLUMNS), *rows]
    widths = [max(len(row[column]) for row in table) for column in range(len(_COLUMNS))]
    drills = stats.drills_excluded
    title = (
        f"Incidents declared {_utc(stats.since):%Y-%m-%d %H:%M} – "
        f"{_utc(stats.now):%Y-%m-%d %H:%M} UTC "
        f"(last {format_duration(stats.window)}); "
        + (f"{drills} drill{'s' if drills != 1 else ''} excluded" if drills else "no drills")
    )
    lines = [title]
    for row in table:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    if stats.by_origin:
        lines.append(
            f"{FROM_ALERTS}: declared by the bot from monitoring; their TTA counts from the "
            "alert's start"
        )
    return lines
