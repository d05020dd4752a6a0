"""The worker: carries out the Slack jobs recorded by the service, durably.

It claims due jobs (one per incident at a time, in recorded order), runs them, and records
the outcome. A job whose run fails transiently is retried with backoff (Slack's
`Retry-After` wins); a permanent failure is recorded and logged with the incident id. A job
left running by a dead process is claimed again when its lease expires. With several
processes on one PostgreSQL database, each job is claimed by exactly one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot.clock import Clock
from bot.service.ports import Job, JobFailed, JobRetry, Store

log = logging.getLogger(__name__)

JobRunner = Callable[[Job], Awaitable[dict[str, Any]]]


class Timers(Protocol):
    """The clock side of the service: fire what is due, say when the next one is."""

    async def fire_due_timers(self, *, worker: str) -> int: ...
    async def next_timer_due(self) -> datetime | None: ...


MAX_ATTEMPTS = 15
MAX_BACKOFF = 300.0
MIN_SLEEP = 0.02


def backoff(attempts: int) -> float:
    """1 s, 2 s, 4 s, … capped at five minutes."""
    return float(min(MAX_BACKOFF, 2 ** max(0, attempts - 1)))


class Worker:
    def __init__(
        self,
        *,
        store: Store,
        run_job: JobRunner,
        clock: Clock,
        name: str | None = None,
        concurrency: int = 8,
        lease_seconds: int = 120,
        poll_seconds: float = 1.0,
    ) -> None:
        self.store = store
        self.run_job = run_job
        self.clock = clock
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self._wakeup = asyncio.Event()
        self._stopping = False
        self.timers: Timers | None = None

    def wake(self) -> None:
        """Something new was recorded: look now instead of at the next poll."""
        self._wakeup.set()

    async def run_once(self) -> int:
        """Fire the due timers, then claim and run one batch of due jobs; returns how many."""
        fired = await self.timers.fire_due_timers(worker=self.name) if self.timers else 0
        async with self.store.transaction() as tx:
            jobs = await tx.claim_jobs(
                now=self.clock.now(),
                worker=self.name,
                limit=self.concurrency,
                lease_seconds=self.lease_seconds,
            )
        if jobs:
            outcomes = await asyncio.gather(*(self._run(job) for job in jobs))
            await self._record(outcomes)
        return fired + len(jobs)

    async def _run(self, job: Job) -> tuple[Job, str, Any]:
        """Run one job; returns (job, "done" | "retry" | "failed", result or error)."""
        try:
            result = await self.run_job(job)
        except JobRetry as retry:
            return job, "retry", (str(retry), retry.after)
        except JobFailed as failure:
            log.error(
                "slack job %s (%s) for %s failed: %s", job.id, job.kind, job.incident_id, failure
            )
            return job, "failed", str(failure)
        except Exception as exc:  # an unexpected bug: logged loudly, retried, never lost
            log.exception("slack job %s (%s) for %s crashed", job.id, job.kind, job.incident_id)
            return job, "retry", (f"{type(exc).__name__}: {exc}", None)
        return job, "done", result

    async def _record(self, outcomes: list[tuple[Job, str, Any]]) -> None:
        """Write a batch's outcomes in one transaction."""
        now = self.clock.now()
        async with self.store.transaction() as tx:
            for job, outcome, value in outcomes:
                if outcome == "done":
                    await tx.finish_job(job.id, now=now, result=value)
                elif outcome == "failed":
                    await tx.fail_job(job.id, now=now, error=value)
                else:
                    error, after = value
                    if job.attempts >= MAX_ATTEMPTS:
                        log.error(
                            "slack job %s (%s) for %s gave up after %d attempts: %s",
                            job.id,
                            job.kind,
                            job.incident_id,
                            job.attempts,
                            error,
                        )
                        await tx.fail_job(job.id, now=now, error=error)
                        continue
                    delay = after if after is not None else backoff(job.attempts)
                    log.warning(
                        "slack job %s (%s) for %s: %s; retrying in %.1fs",
                        job.id,
                        job.kind,
                        job.incident_id,
                        error,
                        delay,
                    )
                    await tx.retry_job(
                        job.id, run_after=now + timedelta(seconds=delay), error=error, result=None
                    )

    async def _sleep(self) -> None:
        """Sleep until the next job or timer is due, a wake-up, or the poll interval (other
        processes may have planned something) — whichever comes first."""
        async with self.store.transaction() as tx:
            dues = [await tx.next_job_due()]
        if self.timers is not None:
            dues.append(await self.timers.next_timer_due())
        delay = self.poll_seconds
        for due in dues:
            if due is not None:
                delay = min(delay, (due - self.clock.now()).total_seconds())
        # Something due but not claimable by us (another process holds it): don't spin.
        delay = max(delay, MIN_SLEEP)
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=delay)

    async def run_forever(self) -> None:
        log.info("worker %s started", self.name)
        while not self._stopping:
            try:
                ran = await self.run_once()
            except Exception:  # the database is away: keep trying, loudly
                log.exception("worker could not claim jobs; trying again")
                ran = 0
                await asyncio.sleep(self.poll_seconds)
            if not ran:
                await self._sleep()

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
