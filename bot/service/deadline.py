"""A Slack request's deadline: its work either ends in time or is rolled back and said so.

Slack waits three seconds for an answer. When the database is slow or frozen, a request
must still be answered, and the answer must be true: the work was rolled back (try again),
or, when the deadline passed while the commit was already on its way, it may have been done
(look before trying again). The work runs in its own task, so that the answer never waits
for the rollback of a connection to a database that does not respond; that clean-up ends
in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

from bot.domain.errors import DomainError

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a Slack request may spend on the database (and the directory) before it is
# answered with "try again": well inside Slack's 3 s, with room for Bolt and the network.
REQUEST_SECONDS = 2.0
# The longest background work (the worker's next step, a follow-up message) waits for the
# Slack requests being answered before it goes on anyway (`give_way`).
GIVE_WAY_SECONDS = 0.05
# Requests are over once none has been answered for this long: under a stream of them
# (the next one arrives a fraction of a millisecond after an answer) the gaps between
# two answers are not the background work's turn.
QUIET_SECONDS = 0.002


@dataclass
class _Attempt:
    committing: bool = False


_attempt: ContextVar[_Attempt | None] = ContextVar("deadline_attempt", default=None)
_abandoned: set[asyncio.Task[object]] = set()
_waiting = 0  # Slack requests being answered now (`answering`)
_quiet: list[asyncio.Future[None]] = []  # background work waiting for them (`give_way`)
_last_answer = [float("-inf")]  # when the last one was answered (time.monotonic)
_next_look: dict[asyncio.AbstractEventLoop, asyncio.TimerHandle] = {}  # `_release_when_quiet`


class TooSlow(DomainError):
    """The deadline passed; the message says whether the change may nevertheless be done."""

    def __init__(self, *, maybe_done: bool) -> None:
        self.maybe_done = maybe_done
        if maybe_done:
            message = (
                "The database was slow to confirm, so this may or may not have been done. "
                "Check with `/incident list` (or the incident channel) before trying again."
            )
        else:
            message = "The database did not answer in time, so nothing was changed. Try again."
        super().__init__(message)


def answering_lately(seconds: float) -> bool:
    """Whether a Slack request is being answered, or was within the last `seconds`."""
    return bool(_waiting) or time.monotonic() - _last_answer[0] < seconds


@contextmanager
def answering() -> Iterator[None]:
    """Around the answer to one Slack request, from its arrival until the answer is made."""
    global _waiting
    _waiting += 1
    try:
        yield
    finally:
        _waiting -= 1
        _last_answer[0] = time.monotonic()
        if not _waiting and _quiet:
            _release_when_quiet()


def _release_when_quiet() -> None:
    """Let the background work waiting go on once no request has been answered for
    `QUIET_SECONDS` (looking again then, if that is not yet the case)."""
    if _waiting:
        return  # the answer that ends these requests looks again
    idle = time.monotonic() - _last_answer[0]
    if idle >= QUIET_SECONDS:
        while _quiet:
            _wake(_quiet.pop())
        return
    loop = asyncio.get_running_loop()
    if loop not in _next_look:  # one look at a time
        _next_look.clear()  # a look left by a loop that has ended never comes
        _next_look[loop] = loop.call_later(QUIET_SECONDS - idle, _look_again, loop)


def _look_again(loop: asyncio.AbstractEventLoop) -> None:
    _next_look.pop(loop, None)
    _release_when_quiet()


async def give_way(seconds: float = GIVE_WAY_SECONDS) -> None:
    """Background work (the worker's next step) waits here while Slack requests are being
    answered, for at most `seconds`, so that a stream of requests never stops it.

    The process has one event loop, which runs its ready tasks in turn: with a dozen of
    the worker's jobs under way, a request would get one turn in a dozen between each of
    its steps. Requests that follow each other closely are one stream: the work goes on
    once none has been answered for `QUIET_SECONDS`, not in the instant between an answer
    and the next request, which would then wait for it. Returns at once, without
    yielding, when no request was answered in that time."""
    if not answering_lately(QUIET_SECONDS):
        return
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    _quiet.append(waiter)
    timer = loop.call_later(seconds, _wake, waiter)
    if not _waiting:
        _release_when_quiet()
    try:
        await waiter
    finally:
        timer.cancel()
        if waiter in _quiet:
            _quiet.remove(waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def others_answering() -> bool:
    """Whether Slack requests other than the caller's own are being answered now."""
    return _waiting > (1 if in_request() else 0)


def in_request() -> bool:
    """Whether the caller works for someone waiting on a Slack request (inside `within`)."""
    return _attempt.get() is not None


def commit_starting() -> None:
    """Called by the store just before it sends COMMIT: from here the outcome is unknown."""
    attempt = _attempt.get()
    if attempt is not None:
        attempt.committing = True


async def within(work: Callable[[], Awaitable[T]], seconds: float = REQUEST_SECONDS) -> T:
    """Run `work` for at most `seconds`; past that, cancel it and raise `TooSlow`."""
    attempt = _Attempt()

    async def run() -> T:
        _attempt.set(attempt)
        return await work()

    # One future woken by whichever comes first, the work's end or the deadline: what
    # `asyncio.wait` does, without its sets and per-call bookkeeping on every request.
    loop = asyncio.get_running_loop()
    task = loop.create_task(run())
    ended: asyncio.Future[None] = loop.create_future()
    timer = loop.call_later(seconds, _wake, ended)
    task.add_done_callback(lambda _: _wake(ended))
    try:
        await ended
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        timer.cancel()
    if task.done():
        return task.result()
    task.cancel()
    # Keep a reference until the cancelled work has rolled back, and swallow its outcome.
    _abandoned.add(task)
    task.add_done_callback(_forget)
    log.warning(
        "a request's work took longer than %.1f s and was cancelled (commit %s)",
        seconds,
        "in flight" if attempt.committing else "not started",
    )
    raise TooSlow(maybe_done=attempt.committing)


def _forget(task: asyncio.Task[object]) -> None:
    _abandoned.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.debug("cancelled request work ended with %r", task.exception())
