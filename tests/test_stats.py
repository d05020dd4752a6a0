"""Response statistics over incidents built with the aggregate's real commands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.clocks import Timer, TimerKind, fire
from bot.domain.errors import InvalidCommand
from bot.domain.incident import Incident
from bot.domain.policy import default_policy
from bot.domain.stats import (
    SeverityStats,
    Stats,
    compute_stats,
    median,
    p90,
    parse_window,
    render_stats_text,
    update_punctuality,
)
from bot.domain.timeline import TimelineEntry

POLICY = default_policy()
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SINCE = NOW - timedelta(days=30)
M = timedelta(minutes=1)

Record = tuple[Incident, list[TimelineEntry]]


class Story:
    """One incident, driven through real commands, its events kept as timeline entries."""

    def __init__(self, key: str, severity: str, declared: datetime, *, drill: bool = False):
        self.incident, self.events = Incident.declare(
            incident_id=f"INC-{key}",
            title=f"incident {key}",
            severity=POLICY.get(severity),
            by="U0ALICE",
            now=declared,
            drill=drill,
        )
        self.t0 = declared

    def at(self, minutes: float) -> datetime:
        return self.t0 + minutes * M

    def ack(self, minutes: float) -> Story:
        self.events += self.incident.acknowledge(by="U0BOB", now=self.at(minutes))
        return self

    def update(self, minutes: float) -> Story:
        self.events += self.incident.post_update(
            by="U0BOB", text="progress", now=self.at(minutes), policy=POLICY
        )
        return self

    def nudge(self, minutes: float) -> Story:
        timer = Timer(f"nudge:{minutes}", TimerKind.NUDGE, self.at(minutes), {})
        fired = fire(self.incident, timer, POLICY, self.at(minutes))
        assert fired, "the nudge must be due"
        self.events += fired
        return self

    def resolve(self, minutes: float) -> Story:
        self.events += self.incident.resolve(by="U0BOB", summary="fixed", now=self.at(minutes))
        return self

    def record(self) -> Record:
        entries = [
            TimelineEntry(self.incident.id, at=e.at, kind=str(e.kind), actor=e.actor, data=e.data)
            for e in self.events
        ]
        return self.incident, entries


def records() -> list[Record]:
    day = NOW - timedelta(days=3)
    sev3_to_sev2 = Story("F", "sev3", NOW - 10 * M)
    sev3_to_sev2.events += sev3_to_sev2.incident.change_severity(
        by="U0BOB", severity=POLICY.get("sev2"), now=NOW - 9 * M, policy=POLICY
    )
    return [
        # SEV1: acks 2m, 4m, 10m (target 5m); resolved in 40m, 90m, 50m (target 1h).
        Story("A", "sev1", day).ack(2).update(20).resolve(40).record(),
        Story("B", "sev1", day + timedelta(hours=5))
        .ack(4)
        .nudge(30)  # nothing since the declaration: the next update is late
        .update(35)
        .update(60)  # on time
        .resolve(90)
        .record(),
        Story("C", "p0", day + timedelta(days=1)).ack(10).resolve(50).record(),
        # SEV2: ack 20m (target 15m) resolved in 3h (target 4h); ack 5m and still open
        # after 5h (a miss); and F, declared as SEV3 ten minutes ago: undecided on both.
        Story("D", "sev2", day).ack(20).resolve(180).record(),
        Story("E", "high", NOW - timedelta(hours=5)).ack(5).record(),
        sev3_to_sev2.record(),
        # SEV4: two days without acknowledgement (target 4h: a miss), open (target 72h).
        Story("G", "sev4", NOW - timedelta(days=2)).record(),
        # Left out: a drill in the window, and an incident declared before it.
        Story("H", "sev1", day, drill=True).ack(1).resolve(5).record(),
        Story("I", "sev1", SINCE - M).ack(1).resolve(5).record(),
    ]


def by_name(stats: Stats) -> dict[str, SeverityStats]:
    return {s.severity: s for s in stats.by_severity}


def test_per_severity_figures() -> None:
    stats = compute_stats(records(), policy=POLICY, since=SINCE, now=NOW)
    assert [s.severity for s in stats.by_severity] == ["SEV1", "SEV2", "SEV3", "SEV4"]
    assert stats.drills_excluded == 1
    assert (stats.since, stats.now, stats.window) == (SINCE, NOW, timedelta(days=30))
    sev = by_name(stats)
    assert sev["SEV1"] == SeverityStats(
        severity="SEV1",
        count=3,
        resolved=3,
        tta_median=4 * M,
        tta_p90=10 * M,
        ttr_median=50 * M,
        ttr_p90=90 * M,
        ack_within_target=2 / 3,
        resolved_within_target=2 / 3,
        update_punctuality=2 / 3,
        updates=3,
        updates_on_time=2,
    )
    assert sev["SEV2"] == SeverityStats(
        severity="SEV2",
        count=3,
        resolved=1,
        tta_median=12.5 * M,
        tta_p90=20 * M,
        ttr_median=180 * M,
        ttr_p90=180 * M,
        ack_within_target=0.5,
        resolved_within_target=0.5,
        update_punctuality=None,
    )
    assert sev["SEV3"] == SeverityStats("SEV3", 0, 0, None, None, None, None, None, None, None)
    assert sev["SEV4"] == SeverityStats(
        "SEV4", 1, 0, None, None, None, None, 0.0, None, None, updates=0, updates_on_time=0
    )


def test_overall_figures() -> None:
    overall = compute_stats(records(), policy=POLICY, since=SINCE, now=NOW).overall
    assert overall.severity == "all"
    assert (overall.count, overall.resolved) == (7, 4)
    # acknowledged: 2, 4, 10, 20, 5 minutes → sorted 2, 4, 5, 10, 20
    assert (overall.tta_median, overall.tta_p90) == (5 * M, 20 * M)
    # resolved: 40m, 90m, 50m, 3h → median (50 + 90) / 2; nearest rank ⌈3.6⌉ = 4 → 3h
    assert (overall.ttr_median, overall.ttr_p90) == (70 * M, 180 * M)
    assert overall.ack_within_target == 3 / 6  # A, B, E in time; C, D, G late; F undecided
    assert overall.resolved_within_target == 3 / 5  # A, C, D; B and E missed
    assert overall.update_punctuality == 2 / 3


def test_the_window_is_inclusive_and_empty_windows_measure_nothing() -> None:
    exact = Story("X", "sev2", SINCE).ack(15).resolve(240).record()  # exactly on target
    stats = compute_stats([exact], policy=POLICY, since=SINCE, now=NOW)
    assert stats.overall.count == 1
    assert (stats.overall.ack_within_target, stats.overall.resolved_within_target) == (1.0, 1.0)
    later = compute_stats([exact], policy=POLICY, since=SINCE + M, now=NOW)
    assert later.overall == SeverityStats("all", 0, 0, None, None, None, None, None, None, None)
    assert later.drills_excluded == 0


def test_unknown_severities_are_listed_last_without_targets() -> None:
    story = Story("Z", "sev1", NOW - timedelta(hours=1)).ack(30).resolve(50)
    story.incident.severity = "SEV0"  # a severity the policy has since dropped
    stats = compute_stats([story.record()], policy=POLICY, since=SINCE, now=NOW)
    assert [s.severity for s in stats.by_severity][-1] == "SEV0"
    sev0 = stats.by_severity[-1]
    assert (sev0.count, sev0.tta_median, sev0.ack_within_target) == (1, 30 * M, None)


def test_percentiles() -> None:
    minutes = [n * M for n in range(1, 21)]
    assert p90(minutes[:10]) == 9 * M  # rank ⌈9.0⌉ = 9
    assert p90(minutes[:11]) == 10 * M  # rank ⌈9.9⌉ = 10
    assert p90(list(reversed(minutes))) == 18 * M  # rank 18 of 20
    assert p90([7 * M]) == 7 * M
    assert p90([]) is None
    assert median([3 * M, 1 * M, 2 * M]) == 2 * M
    assert median([4 * M, 1 * M, 2 * M, 3 * M]) == 2.5 * M
    assert median([]) is None


def test_update_punctuality_counts_updates_before_their_nudge() -> None:
    story = (
        Story("P", "sev1", NOW - timedelta(hours=4))
        .ack(1)
        .update(10)  # on time
        .nudge(40)
        .update(45)  # late
        .update(70)  # on time
        .nudge(100)
        .nudge(130)
        .update(131)  # late
    )
    _, entries = story.record()
    assert update_punctuality(entries) == (4, 2)
    assert update_punctuality(reversed(entries)) == (4, 2)
    assert update_punctuality([]) == (0, 0)


def test_a_reminder_no_update_followed_is_a_late_update() -> None:
    story = Story("P", "sev1", NOW - timedelta(hours=4)).ack(1).update(10).nudge(40).nudge(55)
    _, entries = story.record()
    assert update_punctuality(entries) == (2, 1), "the update the reminders asked for never came"


@pytest.mark.parametrize(
    ("text", "days"),
    [("", 30), ("  ", 30), ("7d", 7), ("30d", 30), ("90D", 90), ("12w", 84), (" 1 w ", 7)],
)
def test_parse_window(text: str, days: int) -> None:
    assert parse_window(text) == timedelta(days=days)


@pytest.mark.parametrize("text", ["30", "d", "0d", "1y", "3h", "-5d", "30 days", "99999d"])
def test_parse_window_refuses(text: str) -> None:
    with pytest.raises(InvalidCommand, match=r"stats|too long"):
        parse_window(text)


def test_render_stats_text() -> None:
    stats = compute_stats(records(), policy=POLICY, since=SINCE, now=NOW)
    lines = render_stats_text(stats)
    assert lines[0] == (
        "Incidents declared 2026-10-23 12:00 – 2026-11-22 12:00 UTC (last 30d); 1 drill excluded"
    )
    assert lines[1].split("  ")[0].strip() == "severity"
    body = [line.split() for line in lines[2:]]
    assert body == [
        ["SEV1", "3", "3", "4m", "10m", "50m", "1h", "30m", "67%", "67%", "67%"],
        ["SEV2", "3", "1", "12m", "30s", "20m", "3h", "3h", "50%", "50%", "—"],
        ["SEV3", "0", "0", "—", "—", "—", "—", "—", "—", "—"],
        ["SEV4", "1", "0", "—", "—", "—", "—", "0%", "—", "—"],
        ["all", "7", "4", "5m", "20m", "1h", "10m", "3h", "50%", "60%", "67%"],
    ]
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns
