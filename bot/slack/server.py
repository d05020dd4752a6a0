"""HTTP mode: one aiohttp server for Slack (`POST /slack/events`), health and metrics.

Slack's requests are verified (signature, 5-minute replay window) before anything reads
their body: an unsigned request gets 401 and is not logged; a signed one whose body cannot
be parsed gets 400. How long each verified request took to answer is measured, by kind.

`/metrics` is open unless a token is set: then it needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import parse_qsl

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

from bot.service.deadline import answering
from bot.service.ports import Store

log = logging.getLogger(__name__)

HEALTH_SECONDS = 1.0
# What `generate_latest` writes: the Prometheus text format 0.0.4.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Liveness(Protocol):
    running: bool

    def alive(self) -> bool: ...


class Connection(Protocol):
    """The Socket Mode connection, as /healthz reports it."""

    @property
    def connected(self) -> bool: ...

    @property
    def state(self) -> str: ...


def build_web_app(
    *,
    bolt: AsyncApp,
    store: Store,
    metrics: Callable[[], Awaitable[str]],
    signing_secret: str,
    worker: Liveness | None = None,
    backlog: Callable[[], Awaitable[tuple[int, float]]] | None = None,
    socket: Connection | None = None,
    request_seconds: Callable[[str, float], None] | None = None,
    metrics_token: str | None = None,
) -> web.Application:
    """`backlog` gives the unfinished Slack jobs (count, oldest wait in seconds); `socket` is
    the Socket Mode connection when the bot uses one; `request_seconds(kind, seconds)` is
    told how long each verified Slack request took; `metrics_token`, when set, guards
    `/metrics`."""
    verifier = SignatureVerifier(signing_secret)
    expected = metrics_token.encode("utf-8") if metrics_token else None

    async def slack_events(request: web.Request) -> web.Response:
        # The worker gives way while this is answered (`deadline.give_way`).
        with answering():
            return await answer_slack(request)

    async def answer_slack(request: web.Request) -> web.Response:
        started = time.perf_counter()
        body = (await request.read()).decode("utf-8", errors="replace")
        headers = {k.lower(): v for k, v in request.headers.items()}
        timestamp = headers.get("x-slack-request-timestamp", "")
        signature = headers.get("x-slack-signature", "")
        # slack_sdk's verifier also refuses a timestamp outside the 5-minute window.
        if not timestamp.isdigit() or not verifier.is_valid(
            body=body, timestamp=timestamp, signature=signature
        ):
            return web.json_response({"error": "invalid request"}, status=401)
        try:
            bolt_request = AsyncBoltRequest(
                body=body,
                query=request.query_string,
                headers={k: [v] for k, v in request.headers.items()},
            )
            if misread_as_interaction(body, bolt_request.body):
                form = dict(parse_qsl(body, keep_blank_values=True))
                bolt_request.body = form
                bolt_request.context = build_async_context(AsyncBoltContext({}), form)
        except Exception:  # a signed but malformed body: Slack never sends one
            log.warning("a signed request with a body that cannot be parsed was refused")
            return web.json_response({"error": "malformed body"}, status=400)
        # Timed from arrival to answer: verification, dispatch and the listeners, which run
        # before the answer. Only verified, parsed requests are counted.
        kind = request_kind(bolt_request.body)
        try:
            response = await bolt.async_dispatch(bolt_request)
            return await to_aiohttp_response(response)
        finally:
            if request_seconds is not None:
                request_seconds(kind, time.perf_counter() - started)

    async def queue() -> tuple[int, float] | None:
        if backlog is None:
            return None
        try:
            return await backlog()
        except Exception:  # reported as unknown: the ping says whether the database answers
            log.warning("the job backlog could not be read", exc_info=True)
            return None

    async def examine() -> tuple[bool, tuple[int, float] | None]:
        reachable, jobs = await asyncio.gather(store.ping(), queue())
        return reachable, jobs

    # The database check under way, shared by the requests that arrive meanwhile. It is
    # never cancelled: a query cancelled while SQLite's lock holds it can leave its
    # connection unable to close. So at most one check waits on a database that does not answer.
    probe: asyncio.Task[tuple[bool, tuple[int, float] | None]] | None = None

    async def healthz(_: web.Request) -> web.Response:
        """200 when the database answers (within a second), the worker loop is alive and,
        in Socket Mode, Slack's connection is up. The job backlog is reported, not judged."""
        nonlocal probe
        if probe is None or probe.done():
            probe = asyncio.ensure_future(examine())
        done, _pending = await asyncio.wait((probe,), timeout=HEALTH_SECONDS)
        reachable, jobs = probe.result() if done else (False, None)
        body: dict[str, object] = {"database": "reachable" if reachable else "unreachable"}
        ok = reachable
        if worker is not None and worker.running:
            alive = worker.alive()
            body["worker"] = "alive" if alive else "stalled"
            ok = ok and alive
        if socket is not None:
            body["socket"] = socket.state
            ok = ok and socket.connected
        if jobs is not None:
            body["jobs_pending"], oldest = jobs
            body["oldest_pending_job_seconds"] = round(oldest)
        body["ok"] = ok
        return web.json_response(body, status=200 if ok else 503)

    def authorized(request: web.Request) -> bool:
        if expected is None:
            return True
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # Compared in constant time; the header is never logged.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", errors="surrogateescape"), expected
        )

    async def prometheus(request: web.Request) -> web.Response:
        if not authorized(request):
            return web.json_response(
                {"error": "unauthorized"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        return web.Response(
            body=(await metrics()).encode("utf-8"),
            headers={
                "Content-Type": METRICS_CONTENT_TYPE,
                "X-Content-Type-Options": "nosniff",
            },
        )

    app = web.Application(client_max_size=2 * 1024 * 1024)
    app.router.add_post("/slack/events", slack_events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)
    return app


def misread_as_interaction(body: str, parsed: dict[str, Any]) -> bool:
    """Whether Bolt read a plain form (a slash command) as an empty interaction. Its parser
    takes any form in which the word "payload" appears for one, so `/incident sev2 payload
    API slow` would be dispatched as nothing and answered 404. Only then is the form read
    again, so no other request is parsed twice."""
    return not parsed and "payload" in body and not body.startswith("{")


def request_kind(body: dict[str, Any]) -> str:
    """What Slack sent, from the parsed body: `command`, `action` (a button or menu),
    `view` (a form submitted or closed), `event`, or `other`."""
    if "command" in body:
        return "command"
    kind = body.get("type")
    if kind == "block_actions":
        return "action"
    if kind in ("view_submission", "view_closed"):
        return "view"
    if kind == "event_callback":
        return "event"
    return "other"
