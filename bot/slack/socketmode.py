"""Socket Mode: the bot's one WebSocket connection to Slack, kept up while the bot runs.

Slack is asked first, at start-up, whether it takes the app-level token: a refusal stops
start-up with one line (`configuration error: SLACK_APP_TOKEN: Slack says invalid_auth`); an
unreachable Slack does not, the connection is made in the background. It is made again
whenever it is lost, or when Slack asks for a new one. This module imports nothing of the
database, so that check can run before anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import aiohttp
from slack_bolt.adapter.socket_mode.async_internals import run_async_bolt_app
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings, SettingsError
from bot.service.deadline import answering

log = logging.getLogger(__name__)

# Socket Mode: the wait between failed connection attempts doubles from the first to the last.
SOCKET_RETRY_FIRST = 1.0
SOCKET_RETRY_MAX = 30.0
# How long one attempt (asking for a URL, opening the WebSocket) may take.
SOCKET_ATTEMPT_SECONDS = 10
# apps.connections.open errors that say Slack is in trouble, not that it refuses the token.
_SLACK_TROUBLE = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


class TokenRefused(Exception):
    """Slack refused the app-level token; the message is Slack's error code."""


def _describe(error: BaseException) -> str:
    """One line about a failed connection attempt. No URL (it carries a ticket), no token."""
    if isinstance(error, TokenRefused):
        return f"Slack refuses SLACK_APP_TOKEN: {error}"
    if isinstance(error, SlackApiError):
        code = error.response.get("error") or "no error code"
        return f"Slack answered HTTP {error.response.status_code}, {code}"
    if isinstance(error, aiohttp.ClientResponseError):
        return f"the WebSocket was refused with HTTP {error.status}"
    if isinstance(error, TimeoutError):
        return f"no answer within {SOCKET_ATTEMPT_SECONDS} s"
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


class _SocketClient(SocketModeClient):
    """slack_sdk's Socket Mode client without its own reconnecting, which retries forever
    with a traceback each time: `open(url)` makes one attempt and raises if it fails, and
    Slack's request for a new connection (a `disconnect` message) only sets `refresh`.
    `SocketMode` decides when to connect again."""

    def __init__(self, app_token: str, web_client: AsyncWebClient, ping_interval: float) -> None:
        super().__init__(
            app_token=app_token,
            web_client=web_client,
            auto_reconnect_enabled=False,
            ping_interval=ping_interval,
        )
        self.refresh = asyncio.Event()

    async def open(self, url: str) -> None:
        await self.drop()
        if self.aiohttp_client_session.closed:
            self.aiohttp_client_session = aiohttp.ClientSession()
        self.refresh.clear()
        self.wss_uri = url
        self.current_session = await asyncio.wait_for(
            self.aiohttp_client_session.ws_connect(
                url,
                autoping=False,
                heartbeat=self.ping_interval,
                proxy=self.proxy,
                ssl=self.web_client.ssl if self.web_client.ssl is not None else True,
            ),
            SOCKET_ATTEMPT_SECONDS,
        )
        self.stale = False
        self.last_ping_pong_time = None
        self.current_session_monitor = asyncio.ensure_future(self.monitor_current_session())
        self.message_receiver = asyncio.ensure_future(self.receive_messages())

    async def drop(self) -> None:
        """Stop reading and pinging the current connection, and close it."""
        for task in (self.current_session_monitor, self.message_receiver):
            if task is not None:
                task.cancel()
        self.current_session_monitor = self.message_receiver = None
        session, self.current_session = self.current_session, None
        if session is not None and not session.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.close(), 2)

    async def connect_to_new_endpoint(self, force: bool = False) -> None:
        self.refresh.set()

    async def close(self) -> None:
        self.closed = True
        await self.drop()
        if self.message_processor is not None:
            self.message_processor.cancel()
        await self.aiohttp_client_session.close()


class SocketMode:
    """Socket Mode: one connection to Slack, kept up for as long as the bot runs.

    `check()`, first thing at start-up, asks Slack for a connection URL with the app-level
    token: a refused token is a configuration error, an unreachable Slack is not. `run()`
    connects, and connects again whenever the connection is lost or Slack asks for a new
    one; failed attempts are said in one warning line each and spaced 1 s, 2 s, 4 s … at
    most 30 s apart.
    """

    def __init__(self, app_token: str, api_url: str, *, ping_interval: float = 10) -> None:
        self.connected = False
        self.checked = False
        self._token = app_token
        # No retry handlers: `run` paces the retries.
        self._api = AsyncWebClient(
            base_url=api_url, timeout=SOCKET_ATTEMPT_SECONDS, retry_handlers=[]
        )
        self._ping_interval = ping_interval
        self._client: _SocketClient | None = None
        self._first_url: str | None = None
        self._bolt: AsyncApp | None = None

    @property
    def state(self) -> str:
        return "connected" if self.connected else "connecting"

    async def _url(self) -> str:
        """A new WebSocket URL from apps.connections.open; raises `TokenRefused` when Slack
        refuses the token, and whatever else went wrong otherwise."""
        try:
            response = await self._api.apps_connections_open(app_token=self._token)
        except SlackApiError as error:
            code = error.response.get("error")
            if error.response.status_code == 200 and code and code not in _SLACK_TROUBLE:
                raise TokenRefused(code) from None
            raise
        return str(response["url"])

    async def check(self) -> None:
        """Ask Slack whether it takes the token; raises `SettingsError` when it refuses it.
        The URL Slack gives is kept for `run`'s first connection."""
        self.checked = True
        try:
            self._first_url = await asyncio.wait_for(self._url(), SOCKET_ATTEMPT_SECONDS)
        except TokenRefused as refused:
            raise SettingsError(f"SLACK_APP_TOKEN: Slack says {refused}") from None
        except Exception as error:  # unreachable, 5xx, rate limited: `run` keeps trying
            log.warning("Socket Mode: Slack cannot be reached yet (%s)", _describe(error))

    async def run(self, bolt: AsyncApp) -> None:
        """Connect, and reconnect, until cancelled; Slack's envelopes go to `bolt`.

        Failed attempts back off from the first pause to the last, back to the first once
        connected. A lost connection is made again at once if it had lasted; if it had not
        (it keeps dropping), after a pause that backs off the same way until one lasts.
        """
        self._bolt = bolt
        url, self._first_url = self._first_url, None
        loop = asyncio.get_running_loop()
        delay = pause = SOCKET_RETRY_FIRST
        while True:
            if self._client is None:
                self._client = _SocketClient(self._token, self._api, self._ping_interval)
                self._client.socket_mode_request_listeners.append(self._dispatch)
            try:
                await self._client.open(url or await self._url())
            except Exception as error:  # every failure is retried; a refusal is said as such
                log.warning(
                    "Socket Mode: cannot connect to Slack (%s); next attempt in %.0f s",
                    _describe(error),
                    delay,
                )
                url = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, SOCKET_RETRY_MAX)
                continue
            url, delay = None, SOCKET_RETRY_FIRST
            self.connected = True
            since = loop.time()
            log.info("Socket Mode: connected to Slack")
            refreshed = await self._until_lost(self._client)
            self.connected = False
            await self._client.drop()
            if refreshed:
                log.info("Socket Mode: Slack asked for a new connection; reconnecting")
                continue
            if loop.time() - since >= SOCKET_RETRY_MAX:
                log.warning("Socket Mode: the connection to Slack was lost; reconnecting")
                pause = SOCKET_RETRY_FIRST
                continue
            log.warning(
                "Socket Mode: the connection to Slack was lost; reconnecting in %.0f s", pause
            )
            await asyncio.sleep(pause)
            pause = min(pause * 2, SOCKET_RETRY_MAX)

    @staticmethod
    async def _until_lost(client: _SocketClient) -> bool:
        """Wait until the connection is gone (False) or Slack asks for a new one (True)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(client.refresh.wait(), 1.0)
                return True
            if not await client.is_connected():
                return False

    async def _dispatch(
        self, client: AsyncBaseSocketModeClient, request: SocketModeRequest
    ) -> None:
        """Hand an envelope to Bolt and acknowledge it with Bolt's answer."""
        assert self._bolt is not None
        with answering():  # the worker gives way meanwhile, as for an HTTP request
            response = await run_async_bolt_app(self._bolt, request)
        if response.status != 200:
            log.info(
                "Socket Mode: Bolt answered %d; the envelope is not acknowledged", response.status
            )
            return
        payload: dict[str, object] | None = None
        if response.body:
            content_type = response.headers.get("content-type", [""])[0]
            payload = (
                json.loads(response.body)
                if content_type.startswith("application/json")
                else {"text": response.body}
            )
        await client.send_socket_mode_response(
            SocketModeResponse(envelope_id=request.envelope_id, payload=payload)
        )

    async def close(self) -> None:
        self.connected = False
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()


def socket_mode(settings: Settings) -> SocketMode | None:
    """The Socket Mode connection the settings ask for (SLACK_APP_TOKEN), if any."""
    if settings.slack_app_token is None:
        return None
    return SocketMode(settings.slack_app_token.get_secret_value(), settings.slack_api_url)
