"""The worker: carries out the Slack jobs recorded by the service, durably.

It claims due jobs (one per incident at a time, in recorded order), runs them, and records
the outcome. A job whose run fails transiently is retried with backoff (Slack's
`Retry-After` wins); a permanent failure is recorded and logged with the incident id. A job
left running by a dead process is claimed again when its lease expires. With several
processes on one PostgreSQL database, each job is claimed by exactly one of them. Jobs for
other servers (PagerDuty, SMTP) run beside the loop, so a server that takes its whole
timeout to fail delays no Slack message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot import logs
from bot.clock import Clock
from bot.service.deadline import answering_lately, give_way
from bot.service.ports import Job, JobFailed, JobKind, JobRetry, Store

log = logging.getLogger(__name__)

JobRunner = Callable[[Job], Awaitable[dict[str, Any]]]
# Jobs for servers other than Slack, run beside the loop: each has a lane of its own, so
# one waiting on its server holds up nothing else.
DETACHED = frozenset({JobKind.PAGERDUTY, JobKind.EMAIL})


class Timers(Protocol):
    """The clock side of the service: fire what is due, say when the next one is."""

    async def fire_due_timers(self, *, worker: str, limit: int = 50) -> int: ...
    async def next_timer_due(self) -> datetime | None: ...


MAX_BACKOFF = 300.0
MIN_SLEEP = 0.02
MAX_OUTAGE_PAUSE = 5.0
LONG_WAIT = timedelta(minutes=5)  # work pending longer than this is reported
# How often the liveness lock's connection is checked even when nothing failed: a database
# restart between two rounds kills it without the loop noticing.
LIVENESS_CHECK_SECONDS = 5.0
# Keys that make a repeated form submission act once are kept this long (Slack repeats
# within minutes; a modal does not stay open for days), then dropped once an hour.
ONCE_KEEP = timedelta(days=7)
HOUSEKEEPING_SECONDS = 3600.0
# How long a round keeps claiming jobs as slots free up before due timers are looked at.
REFILL_SECONDS = 0.25
# A request answered this recently means more may follow (`Worker._slots`).
BUSY_SECONDS = 0.05
# Due timers are claimed this many at a time, batch after batch for up to this long.
TIMER_BATCH = 50
TIMER_ROUND_SECONDS = 0.5


def backoff(attempts: int) -> float:
    """1 s, 2 s, 4 s, … capped at five minutes. Transient failures retry forever."""
    return float(min(MAX_BACKOFF, 2 ** max(0, min(attempts, 20) - 1)))


class Worker:
    def __init__(
        self,
        *,
        store: Store,
        run_job: JobRunner,
        clock: Clock,
        name: str | None = None,
        concurrency: int = 16,
        lease_seconds: int = 120,
        poll_seconds: float = 1.0,
        reconnect: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.run_job = run_job
        self.clock = clock
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.reconnect = reconnect
        self._wakeup = asyncio.Event()
        # How many times `wake` was called: a claim that took all there was is repeated in
        # full only after something new was recorded (`run_once`).
        self._recorded = 0
        self._stopping = False
        self.timers: Timers | None = None
        # Liveness: when the loop last came round (monotonic seconds), read by /healthz.
        self.heartbeat: float | None = None
        self.running = False
        # Incidents whose long wait was logged (forgotten once their work goes through).
        self._reported: set[str] = set()
        # Jobs run beside the loop (see `_detach`), by job id.
        self._detached: dict[int, asyncio.Task[None]] = {}

    def wake(self) -> None:
        """Something new was recorded: look now instead of at the next poll."""
        self._recorded += 1
        self._wakeup.set()

    async def housekeep(self) -> int:
        """Drop what is kept only for a while (the once-keys of old form submissions)."""
        async with self.store.transaction() as tx:
            dropped = await tx.forget_once_keys(before=self.clock.now() - ONCE_KEEP)
        if dropped:
            log.info("dropped %d once-keys older than %s", dropped, ONCE_KEEP)
        return dropped

    async def run_once(self) -> int:
        """Fire the due timers, then claim and run due jobs; returns how many.

        Jobs run side by side, up to `concurrency`. Each one's outcome is recorded as soon
        as it ends, in the same transaction that claims the next due jobs (the next job of
        that incident among them), so a slot never waits for a slower neighbour and an
        incident's jobs follow each other without a round of their own. Once a claim has
        taken all there was, and until something new is recorded, those claims ask only
        for the next job behind each one that ended: a claim that asks for more than it can
        find reads its whole window (`claim_jobs`). New claims stop after
        `REFILL_SECONDS`, so that due timers are looked at again in time (and what became
        due meanwhile is claimed). Jobs for other servers (PagerDuty, SMTP) are run beside
        the loop (`_detach`).
        """
        fired = await self._fire_timers()
        await self.give_way()
        asked, recorded = self._slots(), self._recorded
        # Each of the claim's statements is atomic; together they need not be.
        async with self.store.transaction(autocommit=True) as tx:
            jobs = await tx.claim_jobs(
                now=self.clock.now(),
                worker=self.name,
                limit=asked,
                lease_seconds=self.lease_seconds,
                running=list(self._detached),
            )
        if not jobs:
            return fired
        all_taken = len(jobs) < asked
        started = time.monotonic()
        running: dict[asyncio.Task[tuple[Job, str, Any]], Job] = {}

        def start(claimed: list[Job]) -> None:
            for job in claimed:  # never one under way here: claims leave those out
                if job.kind in DETACHED:
                    self._detach(job)
                else:
                    running[asyncio.create_task(self._run(job))] = job

        start(jobs)
        ran = len(jobs)
        renewal = asyncio.create_task(self._keep_claims(lambda: [j.id for j in running.values()]))
        try:
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                outcomes = []
                for task in done:
                    running.pop(task)
                    outcomes.append(task.result())
                refill = not self._stopping and time.monotonic() - started < REFILL_SECONDS
                room, successors_only = 0, False
                if refill:
                    await self.give_way()
                    room = self._slots() - len(running)
                    # A claim took all there was and nothing was recorded since: only the
                    # next job behind each one that ended can have become claimable.
                    successors_only = all_taken and self._recorded == recorded
                    if successors_only:
                        room = min(room, sum(o != "retry" for _, o, _ in outcomes))
                    recorded = self._recorded
                more = await self._record(
                    outcomes,
                    claim=room,
                    running=[job.id for job in running.values()] + list(self._detached),
                )
                if room and not successors_only:
                    all_taken = len(more) < room
                start(more)
                ran += len(more)
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await renewal
            for task in running:  # only when recording failed (the database went away)
                task.cancel()
        return fired + ran

    async def _fire_timers(self) -> int:
        """Fire the due timers first, batch after batch while a batch comes back full (for up
        to `TIMER_ROUND_SECONDS`): a clock that is due matters more than Slack work waiting."""
        if self.timers is None:
            return 0
        fired = 0
        started = time.monotonic()
        while True:
            await self.give_way()
            batch = await self.timers.fire_due_timers(worker=self.name, limit=TIMER_BATCH)
            fired += batch
            if batch < TIMER_BATCH or time.monotonic() - started > TIMER_ROUND_SECONDS:
                return fired

    def _slots(self) -> int:
        """How many jobs may run at once: all of `concurrency`, but a quarter while Slack
        requests keep coming (one answered in the last `BUSY_SECONDS`). Every job's next
        step runs between a request's steps on the one event loop, so fewer at once keep
        the answers quick; the worker drains at full speed again once they stop."""
        if answering_lately(BUSY_SECONDS):
            return max(1, self.concurrency // 4)
        return self.concurrency

    async def give_way(self) -> None:
        """Before each step (a batch of timers, a claim, a job; each Web API call gives way
        too), let the Slack requests being answered now go first (the process has one
        event loop: every step taken meanwhile would slow their answers down), for at
        most `deadline.GIVE_WAY_SECONDS`, so that a stream of requests never stops the work."""
        await give_way()

    def _detach(self, job: Job) -> None:
        """Run a job that talks to something other than Slack (PagerDuty, an SMTP server)
        beside the loop: a server that takes its whole timeout to fail holds up no Slack
        message. The job records its own outcome; if this process dies first, its claim
        lapses and it is run again, like any job."""

        async def run() -> None:
            renewal = asyncio.create_task(self._keep_claims(lambda: [job.id]))
            try:
                outcome = await self._run(job)
            finally:
                renewal.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await renewal
            try:
                await self._record([outcome])
            except Exception:  # the database is away: the claim lapses, the job runs again
                log.warning("could not record the outcome of job %s", job.id, exc_info=True)
            self.wake()  # the next job of its lane may run now

        task = asyncio.create_task(run())
        self._detached[job.id] = task
        task.add_done_callback(lambda _: self._detached.pop(job.id, None))

    @property
    def busy(self) -> bool:
        """Whether jobs run beside the loop (PagerDuty, email) are still under way."""
        return bool(self._detached)

    async def drain(self) -> None:
        """Wait until the jobs run beside the loop are done (tests, the demo)."""
        while self._detached:
            await asyncio.gather(*list(self._detached.values()), return_exceptions=True)

    async def abandon(self, *, grace: float = 2.0) -> None:
        """Stop the jobs run beside the loop (shutting down): those not done within `grace`
        seconds are cancelled; their claims lapse and they run again later, as after a
        crash."""
        tasks = list(self._detached.values())
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _keep_claims(self, job_ids: Callable[[], list[int]]) -> None:
        """While jobs run, renew their claims so no other replica takes a slow job over."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                async with self.store.transaction() as tx:
                    await tx.renew_jobs(
                        job_ids(),
                        worker=self.name,
                        now=self.clock.now(),
                        lease_seconds=self.lease_seconds,
                    )
            except Exception:  # the database is away: the next round tries again
                log.warning("could not renew the claims of jobs %s", job_ids(), exc_info=True)

    async def _run(self, job: Job) -> tuple[Job, str, Any]:
        """Run one job; returns (job, "done" | "retry" | "failed", result or error)."""
        if job.incident_id:
            logs.concerning(job.incident_id)  # this job runs in its own task
        try:
            await self.give_way()  # a request that came meanwhile is answered first
            result = await self.run_job(job)
        except JobRetry as retry:
            return job, "retry", (str(retry), retry.after, retry.paced)
        except JobFailed as failure:
            log.error(
                "slack job %s (%s) for %s failed: %s", job.id, job.kind, job.incident_id, failure
            )
            return job, "failed", str(failure)
        except Exception as exc:  # an unexpected bug: logged loudly, retried, never lost
            log.exception("slack job %s (%s) for %s crashed", job.id, job.kind, job.incident_id)
            return job, "retry", (f"{type(exc).__name__}: {exc}", None, False)
        return job, "done", result

    async def _record(
        self,
        outcomes: list[tuple[Job, str, Any]],
        *,
        claim: int = 0,
        running: list[int] | None = None,
    ) -> list[Job]:
        """Write outcomes in one transaction, and claim up to `claim` due jobs in it (never
        one of `running`, still under way here); a job whose claim another worker took
        over (its lease ran out) is recorded by that worker, not here."""
        now = self.clock.now()
        async with self.store.transaction() as tx:
            finished = await tx.finish_jobs(
                [(job.id, value) for job, outcome, value in outcomes if outcome == "done"],
                worker=self.name,
                now=now,
            )
            for job, outcome, value in outcomes:
                if outcome == "done":
                    held = job.id in finished
                    self._reported.discard(job.incident_id or f"job {job.id}")
                elif outcome == "failed":
                    held = await tx.fail_job(job.id, worker=self.name, now=now, error=value)
                else:
                    error, after, paced = value
                    delay = after if after is not None else backoff(job.attempts)
                    log.warning(
                        "slack job %s (%s) for %s: %s; retrying in %.1fs",
                        job.id,
                        job.kind,
                        job.incident_id,
                        error,
                        delay,
                        extra={"incident": job.incident_id},
                    )
                    self._report_long_wait(job, now, error)
                    held = await tx.retry_job(
                        job.id,
                        worker=self.name,
                        run_after=now + timedelta(seconds=delay),
                        error=error,
                        spend_attempt=not paced,
                        # The steps done so far, when a step was left to be saved here.
                        result=job.result if job.refs else None,
                    )
                if not held:
                    log.warning("slack job %s was taken over by another worker", job.id)
                elif job.refs and job.incident_id:
                    # What it made in Slack, whatever its outcome: before the claim below,
                    # so the incident's next job finds it.
                    await tx.set_slack_refs(job.incident_id, **job.refs)
            if claim <= 0:
                return []
            return await tx.claim_jobs(
                now=now,
                worker=self.name,
                limit=claim,
                lease_seconds=self.lease_seconds,
                running=running or [],
            )

    def _report_long_wait(self, job: Job, now: datetime, error: str) -> None:
        """One log line per incident (not per retry) once its work has waited too long."""
        if job.created_at is None or now - job.created_at < LONG_WAIT:
            return
        key = job.incident_id or f"job {job.id}"
        if key in self._reported:
            return
        self._reported.add(key)
        waited = int((now - job.created_at).total_seconds())
        log.error(
            "%s: Slack work has waited %ds and is still being retried (%s); nothing is "
            "dropped, it goes out when Slack answers",
            key,
            waited,
            error,
        )

    async def _sleep(self) -> None:
        """Sleep until the next job or timer is due, a wake-up, or the poll interval (other
        processes may have planned something) — whichever comes first."""
        self._wakeup.clear()  # before looking: work committed meanwhile wakes us at once
        async with self.store.transaction(read_only=True) as tx:
            dues = [await tx.next_job_due()]
        if self.timers is not None:
            dues.append(await self.timers.next_timer_due())
        delay = self.poll_seconds
        for due in dues:
            if due is not None:
                delay = min(delay, (due - self.clock.now()).total_seconds())
        # Something due but not claimable by us (another process holds it): don't spin.
        delay = max(delay, MIN_SLEEP)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=delay)

    async def run_forever(self) -> None:
        """Work until stopped. Nothing ends the loop but `stop()`: a database outage or a bug
        is logged, waited out with a growing pause, and work resumes when it is over."""
        log.info("worker %s started", self.name)
        self.running = True
        failures = 0
        checked = time.monotonic()
        tidied = 0.0
        while not self._stopping:
            self.heartbeat = time.monotonic()
            try:
                due = self.heartbeat - checked >= LIVENESS_CHECK_SECONDS
                if self.reconnect is not None and (failures or due):
                    await self.reconnect()
                    checked = time.monotonic()
                if self.heartbeat - tidied >= HOUSEKEEPING_SECONDS:
                    await self.housekeep()
                    tidied = time.monotonic()
                ran = await self.run_once()
                if not ran:
                    await self._sleep()
                if failures:
                    log.warning("worker %s: the database answers again", self.name)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                if failures == 1:
                    log.exception("worker %s: the database is away; trying again", self.name)
                pause = min(MAX_OUTAGE_PAUSE, self.poll_seconds * failures)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=pause)
                self._wakeup.clear()
        self.running = False

    def alive(self) -> bool:
        """Whether the loop runs and came round recently (a batch may take up to a lease)."""
        within = self.lease_seconds + 2 * self.poll_seconds + MAX_OUTAGE_PAUSE
        return (
            self.running
            and self.heartbeat is not None
            and time.monotonic() - self.heartbeat < within
        )

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
