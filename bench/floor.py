"""The floor: a bare Bolt app whose listeners only call ack(), served in its own process.

It is served the way the bot serves Slack: `bot.slack.server.build_web_app` checks the
signature and the replay window before anything reads the body, then Bolt dispatches with
`process_before_response=True` and its own verification off (as `bot/slack/app.py` sets
it). One listener acks `/incident`, one acks every button. Whatever the bot measures above
this is the bot's own work.

    python -m bench.floor --port 3001 [--signing-secret S]     (serves until SIGTERM)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
from typing import Any

from aiohttp import web
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.server import build_web_app

DEFAULT_SECRET = "bench-signing-secret"


class _NoStore:
    """/healthz asks the store whether the database answers: the floor has none."""

    async def ping(self) -> bool:
        return True

    def transaction(self, *, read_only: bool = False, autocommit: bool = False) -> Any:
        raise NotImplementedError

    def declaring(self, day: Any) -> Any:
        raise NotImplementedError


async def _no_metrics() -> str:
    return ""


def build(signing_secret: str, api_url: str = "http://127.0.0.1:9/api/") -> web.Application:
    """The floor's HTTP application (it never calls Slack: `api_url` is never used)."""

    async def authorize(**_: Any) -> AuthorizeResult:
        return AuthorizeResult(enterprise_id=None, team_id="T0FAKE", bot_token="xoxb-floor")

    app = AsyncApp(
        client=AsyncWebClient(base_url=api_url),
        signing_secret=signing_secret,
        authorize=authorize,
        process_before_response=True,
        raise_error_for_unhandled_request=False,
        request_verification_enabled=False,  # build_web_app verified it, as for the bot
    )

    @app.command("/incident")
    async def command(ack: AsyncAck) -> None:
        await ack()

    @app.action(re.compile(".*"))
    async def click(ack: AsyncAck) -> None:
        await ack()

    return build_web_app(
        bolt=app, store=_NoStore(), metrics=_no_metrics, signing_secret=signing_secret
    )


async def serve(port: int, signing_secret: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(build(signing_secret), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--signing-secret", default=DEFAULT_SECRET)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.signing_secret))


if __name__ == "__main__":
    main()
