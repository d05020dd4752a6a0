"""How fast the bot answers Slack, against the floor of a bare Bolt app.

Every request is signed and goes over HTTP to the real endpoint. The floor is an AsyncApp
whose only listener calls ack(), served the same way (listeners before the response, as
the bot runs). The bot rows include the database transaction the command performs.

    python -m bench.ack_latency [--requests 300]

The client here shares the server's process and event loop, so its own tail is counted
as the server's; `python -m bench.load` (what `make bench` runs) measures from a load
generator in its own process, under concurrency, against the real `python -m bot`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.devtools.driver import SlackDriver
from bot.devtools.fakeslack import FakeSlack
from bot.runtime import Runtime
from bot.slack.server import build_web_app

SECRET = "bench-signing-secret"


async def _ok() -> str:
    return ""


class _NoStore:
    async def ping(self) -> bool:
        return True

    def transaction(self, *, read_only: bool = False) -> Any:
        raise NotImplementedError

    async def take_number(self, day: Any) -> int | None:
        raise NotImplementedError


async def floor_app(fake: FakeSlack) -> tuple[web.AppRunner, int]:
    async def authorize(**_: Any) -> AuthorizeResult:
        return AuthorizeResult(enterprise_id=None, team_id="T0FAKE", bot_token=fake.bot_token)

    app = AsyncApp(
        signing_secret=SECRET,
        authorize=authorize,
        process_before_response=True,
        client=AsyncWebClient(base_url=fake.api_url),
    )

    @app.command("/incident")
    async def bare(ack: AsyncAck) -> None:
        await ack()

    runner = web.AppRunner(
        build_web_app(bolt=app, store=_NoStore(), metrics=_ok, signing_secret=SECRET)
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]


async def measure(n: int, send: Callable[[int], Awaitable[Any]]) -> list[float]:
    for i in range(10):  # warm up
        await send(-1 - i)
    timings = []
    for i in range(n):
        begin = time.perf_counter()
        await send(i)
        timings.append((time.perf_counter() - begin) * 1000)
    return timings


def row(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)) - 1)]
    return f"| {name:<44} | {statistics.median(values):>7.2f} | {p99:>7.2f} | {max(values):>7.2f} |"


async def main_async(n: int) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        async with FakeSlack() as fake:
            fake.add_user("U0ALICE", "alice", "Alice")  # who sends every request
            general = fake.add_channel("general")
            fake.add_channel("incidents")
            runner, port = await floor_app(fake)
            async with SlackDriver(
                bot_url=f"http://127.0.0.1:{port}", signing_secret=SECRET, fake=fake
            ) as floor:
                rows.append(
                    row(
                        "floor: bare Bolt ack()",
                        await measure(
                            n,
                            lambda i: floor.command(
                                "help", channel=general, channel_name="general"
                            ),
                        ),
                    )
                )
            await runner.cleanup()

            settings = Settings(
                _env_file=None,
                slack_bot_token=fake.bot_token,
                slack_signing_secret=SECRET,
                slack_api_url=fake.api_url,
                database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}",
            )
            bot = await Runtime.create(settings)
            port = await bot.start(host="127.0.0.1", port=0)
            try:
                async with SlackDriver(
                    bot_url=f"http://127.0.0.1:{port}", signing_secret=SECRET, fake=fake
                ) as driver:
                    rows.append(
                        row(
                            "/incident help (no database)",
                            await measure(
                                n,
                                lambda i: driver.command(
                                    "help", channel=general, channel_name="general"
                                ),
                            ),
                        )
                    )
                    rows.append(
                        row(
                            "/incident sev3 … (declare: one transaction)",
                            await measure(
                                n,
                                lambda i: driver.command(
                                    f"sev3 bench {i}", channel=general, channel_name="general"
                                ),
                            ),
                        )
                    )
                    channel = await fake.wait_for(
                        lambda: next(
                            (c for c in fake.channels.values() if c.name.startswith("inc-")), None
                        )
                    )
                    rows.append(
                        row(
                            "/incident note … (in the incident channel)",
                            await measure(
                                n,
                                lambda i: driver.command(
                                    f"note n{i}", channel=channel.id, channel_name=channel.name
                                ),
                            ),
                        )
                    )
            finally:
                await bot.close()
    print(
        f"\nAcknowledgement latency, {n} sequential signed requests each (milliseconds; "
        "SQLite; Slack stand-in on loopback)"
    )
    print(f"| {'request':<44} | {'p50':>7} | {'p99':>7} | {'max':>7} |")
    print(f"|{'-' * 46}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
    for line in rows:
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main_async(args.requests))


if __name__ == "__main__":
    main()
