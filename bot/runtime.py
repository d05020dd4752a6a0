"""Assembles the bot from settings: database, service, worker, Slack app, HTTP server.

`__main__` uses it to serve; the tests and the demo use it to run the real bot in-process
against the fake Slack server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from sqlalchemy.engine.url import make_url

from bot.clock import Clock, SystemClock
from bot.config import Settings
from bot.domain.policy import Policy, load_policy
from bot.integrations.email import Mailer
from bot.integrations.pagerduty import PagerDuty
from bot.metrics import Metrics
from bot.playbooks import load_playbooks
from bot.service.alerts import AlertService
from bot.service.deadline import give_way
from bot.service.incidents import IncidentService
from bot.slack.app import Background, Identity, build_app
from bot.slack.directory import SlackDirectory
from bot.slack.executor import SlackExecutor
from bot.slack.server import build_web_app
from bot.slack.socketmode import SocketMode, socket_mode
from bot.store.db import Database
from bot.store.repository import SqlStore
from bot.web.alerts import add_alert_routes
from bot.web.status import add_status_routes
from bot.worker import Worker

log = logging.getLogger(__name__)


class GivingWayClient(AsyncWebClient):
    """The worker's Web API client: before each call, the Slack requests being answered
    go first (`deadline.give_way`, 50 ms at most)."""

    async def api_call(self, api_method: str, **kwargs: Any) -> AsyncSlackResponse:
        await give_way()
        return await super().api_call(api_method, **kwargs)


def web_client(
    settings: Settings,
    *,
    retry_inline: bool,
    with_token: bool = True,
    metrics: Metrics | None = None,
    session: aiohttp.ClientSession | None = None,
    give_way: bool = False,
) -> AsyncWebClient:
    """A Web API client on SLACK_API_URL. Inline calls wait out one 429, two 5xx and two
    dropped connections; the worker's client does not, because the worker reschedules the
    job durably and settles an unknown outcome by looking.
    Bolt's client has no token of its own: Bolt sets it per request from `authorize`.
    With `metrics`, every call is counted by method and outcome (Bolt's per-listener
    clients too: they copy this client's handlers). With `session`, calls share its
    connections (kept alive) instead of opening and closing one each. With `give_way`,
    each call first lets the Slack requests under way be answered (the worker's client)."""
    handlers: list[AsyncRetryHandler] = []
    if metrics is not None:  # first: slack_sdk stops at the first handler that retries
        handlers.append(metrics.slack_meter(settings.slack_api_url))
    if retry_inline:
        handlers += [
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=1),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ]
    # The worker's client re-sends nothing by itself: a dropped connection may have lost
    # only the answer, and re-sending a post would post twice. The worker retries the job,
    # which first looks for what the lost call did.
    return (GivingWayClient if give_way else AsyncWebClient)(
        token=settings.slack_bot_token.get_secret_value() if with_token else None,
        base_url=settings.slack_api_url,
        timeout=15,
        retry_handlers=handlers,
        session=session,
    )


@dataclass
class Runtime:
    settings: Settings
    policy: Policy
    clock: Clock
    database: Database
    store: SqlStore
    service: IncidentService
    worker: Worker
    executor: SlackExecutor
    identity: Identity
    background: Background
    http_app: web.Application
    bolt: AsyncApp
    inline_client: AsyncWebClient
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    socket: SocketMode | None = None
    _closed: bool = False
    slack_connections: aiohttp.ClientSession | None = None

    @classmethod
    async def create(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        policy: Policy | None = None,
        worker_name: str | None = None,
        poll_seconds: float = 1.0,
        database: Database | None = None,
        socket: SocketMode | None = None,
    ) -> Runtime:
        """Everything but serving. `socket`: the Socket Mode connection, when `__main__` has
        already asked Slack about its token; by default one is made from the settings when
        SLACK_APP_TOKEN is set."""
        policy = policy or load_policy(settings.policy_file)
        log.info(
            "policy: %s, severities %s",
            settings.policy_file or "built-in",
            ", ".join(s.name for s in policy.severities),
        )
        playbooks = load_playbooks(settings.playbooks_dir, policy=policy)
        log.info("playbooks: %d from %s", len(playbooks), settings.playbooks_dir)
        for line in playbooks.missing_for(policy):
            log.warning("policy: %s", line)
        clock = clock or SystemClock()
        database = database or Database(settings.database_url)
        await database.migrate()
        log.info(
            "database: %s, schema up to date",
            make_url(database.url).render_as_string(hide_password=True),
        )
        store = SqlStore(database)
        metrics = Metrics(store=store, policy=policy, clock=clock)
        inline = web_client(settings, retry_inline=True, metrics=metrics)
        # The worker's calls share kept-alive connections: a new connection for each call
        # (slack_sdk's default) cost more CPU than the rest of a job's Slack call.
        slack_connections = aiohttp.ClientSession()
        identity = Identity(token=settings.slack_bot_token.get_secret_value())
        directory = SlackDirectory(inline, team_id=lambda: identity.team_id)
        mailer = (
            Mailer(
                url=settings.smtp_url.get_secret_value(),
                sender=settings.email_from or "",
                public_url=settings.public_url,
            )
            if settings.smtp_url is not None
            else None
        )
        if mailer is None and any(s.email for s in policy.severities):
            log.warning("the policy names email addresses but SMTP_URL is not set: no email")
        executor = SlackExecutor(
            client=web_client(
                settings,
                retry_inline=False,
                metrics=metrics,
                session=slack_connections,
                give_way=True,
            ),
            store=store,
            policy=policy,
            pagerduty=PagerDuty(events_url=settings.pagerduty_events_url),
            playbooks=playbooks,
            directory=directory,
            mailer=mailer,
            clock=clock,
        )
        executor.bot_user = lambda: identity.bot_user_id
        worker = Worker(
            store=store, run_job=executor, clock=clock, name=worker_name, poll_seconds=poll_seconds
        )

        async def reconnect() -> None:
            await database.ensure_liveness(worker.name)

        if not database.is_sqlite:
            worker.reconnect = reconnect
        service = IncidentService(
            store=store,
            policy=policy,
            clock=clock,
            wake=worker.wake,
            playbooks=playbooks,
            directory=directory,
            email=mailer is not None,
        )
        worker.timers = service
        executor.service = service
        background = Background(session=slack_connections)
        bolt = build_app(
            service=service,
            client=web_client(settings, retry_inline=True, with_token=False, metrics=metrics),
            signing_secret=settings.slack_signing_secret.get_secret_value(),
            identity=identity,
            background=background,
            directory=directory,
        )

        async def backlog() -> tuple[int, float]:
            async with store.transaction(read_only=True) as tx:
                return await tx.job_backlog(now=clock.now())

        socket = socket or socket_mode(settings)
        app = build_web_app(
            bolt=bolt,
            store=store,
            metrics=metrics.render,
            signing_secret=settings.slack_signing_secret.get_secret_value(),
            worker=worker,
            backlog=backlog,
            socket=socket,
            request_seconds=metrics.observe_request,
            metrics_token=settings.metrics_token.get_secret_value()
            if settings.metrics_token
            else None,
        )
        if settings.alerts_token is not None:
            alerts = AlertService(service, bot_user=lambda: identity.bot_user_id)

            async def learn_identity() -> None:
                await identity.learn(inline)

            add_alert_routes(
                app,
                token=settings.alerts_token.get_secret_value(),
                alerts=alerts,
                learn_identity=learn_identity,
                count=metrics.alert_request,
            )
            log.info("alerts: POST /alerts/alertmanager and /alerts/generic (ALERTS_TOKEN set)")
        add_status_routes(app, view=service.status_view, public_url=settings.public_url)
        return cls(
            settings=settings,
            policy=policy,
            clock=clock,
            database=database,
            store=store,
            service=service,
            worker=worker,
            executor=executor,
            identity=identity,
            background=background,
            http_app=app,
            bolt=bolt,
            inline_client=inline,
            socket=socket,
            slack_connections=slack_connections,
        )

    async def start(
        self,
        *,
        host: str = "0.0.0.0",  # noqa: S104 - a server listens on all interfaces
        port: int | None = None,
        worker: bool = True,
    ) -> int:
        """Serve HTTP (and Socket Mode when configured); returns the bound port.

        In Socket Mode Slack is asked first whether it takes the app-level token: a refusal
        raises `SettingsError`; the connection itself is made, and remade, in the background.
        """
        if self.socket is not None and not self.socket.checked:
            await self.socket.check()
        self._tasks.append(asyncio.create_task(self.identity.learn(self.inline_client)))
        await self.database.open_pool()
        self._runner = web.AppRunner(self.http_app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, self.settings.port if port is None else port)
        await site.start()
        bound = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        if self.socket is not None:
            self._tasks.append(asyncio.create_task(self.socket.run(self.bolt)))
        if worker:
            await self.recover()
            self._tasks.append(asyncio.create_task(self.worker.run_forever()))
        log.info(
            "incident bot ready: %s on port %d, database %s",
            "Socket Mode" if self.settings.socket_mode else "HTTP",
            bound,
            self.database.dialect,
        )
        return bound

    async def recover(self) -> None:
        """Before working: announce this worker alive (PostgreSQL), or take back what a
        previous run left half-done (SQLite, which only ever has one process)."""
        if self.database.is_sqlite:
            async with self.store.transaction() as tx:
                taken = await tx.recover_single_process()
            if taken:
                log.warning("took back %d job(s)/timer(s) left by a previous run", taken)
        else:
            await self.database.hold_liveness(self.worker.name)

    async def settle(self, *, max_rounds: int = 200) -> None:
        """Run until quiet: background replies, then every due Slack job (tests, demo)."""
        for _ in range(max_rounds):
            await self.background.wait()
            await self.worker.drain()
            if (
                not await self.worker.run_once()
                and not self.background.busy
                and not self.worker.busy
            ):
                return
        raise RuntimeError("the bot did not settle")

    async def close(self) -> None:
        """Stop serving and working; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self.worker.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.worker.abandon()
        if self.socket is not None:
            await self.socket.close()
        with contextlib.suppress(Exception):
            await self.background.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.slack_connections is not None:
            await self.slack_connections.close()
        await self.database.dispose()
