"""What answering one Slack request costs the bot's process, beside the floor's cost.

`bench.load` times answers over HTTP with every process on the same two cores, so a
difference of a tenth of a millisecond in the bot's own work is lost in the noise. Here
the bot (`Runtime`, on SQLite, against the Slack stand-in) and the floor (`bench.floor`)
are each handed the same signed requests in the process, straight to their
`POST /slack/events` handler (no socket, no HTTP parsing: that part is the same for both),
and the process's CPU time per request is read: one at a time, then 20 at once. The
worker does not run, so a request's Slack work is not counted. Requests: `/incident help`,
`/incident note …` in an incident's channel, and a declaration.

    python -m bench.answer [--requests 2000]

To compare with an earlier commit, run this file against that commit's `bot` package
(`PYTHONPATH`, as `bench.declare`'s docstring says).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from unittest import mock

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request

from bench import floor as floor_app
from bench.load import ALICE, SECRET, Capture, Request, machine
from bot.config import Settings
from bot.devtools.fakeslack import FakeSlack
from bot.runtime import Runtime

IN_FLIGHT = (1, 20)
KINDS = ("help", "note", "declare")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _handler(app: web.Application) -> Handler:
    for route in app.router.routes():
        resource = route.resource
        if (
            route.method == "POST"
            and resource is not None
            and resource.canonical == "/slack/events"
        ):
            return route.handler
    raise LookupError("no POST /slack/events")


def _signed(request: Request, capture: Capture) -> tuple[bytes, dict[str, str]]:
    """A captured request's body and headers, signed now as Slack signs."""
    timestamp = int(time.time())
    headers = {
        "Content-Type": request.content_type,
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": capture.sign(request.body, timestamp),
    }
    return request.body.encode(), headers


def _request(body: bytes, headers: dict[str, str]) -> web.Request:
    stream = StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop())
    stream.feed_data(body)
    stream.feed_eof()
    return make_mocked_request("POST", "/slack/events", headers=headers, payload=stream)


async def _cpu_per_request(
    handler: Handler, requests: list[tuple[bytes, dict[str, str]]], in_flight: int, expect: str
) -> float:
    """CPU milliseconds per request, `in_flight` at once; every answer must hold `expect`."""
    pending = iter([_request(body, headers) for body, headers in requests])
    answers: list[str] = []

    async def lane() -> None:
        for request in pending:
            response = await handler(request)
            assert isinstance(response, web.Response)
            answers.append(response.text or "")

    gc.collect()  # the requests just built (mock-heavy) are not collected on the clock
    started = time.process_time()
    await asyncio.gather(*(lane() for _ in range(in_flight)))
    used = time.process_time() - started
    wrong = [a for a in answers if expect not in a]
    if wrong:
        raise RuntimeError(f"{len(wrong)} answers without {expect!r}, e.g. {wrong[0][:200]}")
    return used * 1000 / len(requests)


async def measure(
    count: int, kinds: tuple[str, ...] = KINDS, in_flights: tuple[int, ...] = IN_FLIGHT
) -> list[tuple[str, int, float, float]]:
    """(request, in flight, bot CPU ms, floor CPU ms) for each request and concurrency."""
    floor = _handler(floor_app.build(SECRET))
    rows: list[tuple[str, int, float, float]] = []
    logging.getLogger().setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench-answer-") as tmp:
        async with FakeSlack() as fake:
            capture = Capture(fake)  # builds each command as Slack would, from a template
            fake.add_user(ALICE, "alice", "Alice Ops")
            general = fake.add_channel("general", members=[ALICE])
            fake.add_channel("incidents", members=[ALICE])

            async def signed(words: str, channel: str) -> tuple[bytes, dict[str, str]]:
                request = await capture.slash(words, channel=channel, expect="")
                return _signed(request, capture)

            settings = Settings(
                _env_file=None,
                slack_bot_token=fake.bot_token,
                slack_signing_secret=SECRET,
                slack_api_url=fake.api_url,
                database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'incidents.db'}",
            )
            runtime = await Runtime.create(settings)
            try:
                await runtime.start(host="127.0.0.1", port=0, worker=False)
                bot = _handler(runtime.http_app)
                # Incidents with channels, for the notes (and a warm-up of every path).
                for n in range(20):
                    body, headers = await signed(f"sev3 warm-up {n}", general)
                    await bot(_request(body, headers))
                await runtime.settle()
                channels = [c.id for c in fake.channels.values() if c.name.startswith("inc-")]
                requests: dict[str, tuple[Callable[[int], tuple[str, str]], str]] = {
                    "help": (lambda n: ("help", general), "Incident bot"),
                    "note": (
                        lambda n: (f"note bench note {n}", channels[n % len(channels)]),
                        "Note added",
                    ),
                    "declare": (lambda n: (f"sev3 bench {n}", general), "declared ("),
                }
                for kind in kinds:
                    words, expect = requests[kind]
                    for in_flight in in_flights:
                        made = [await signed(*words(n)) for n in range(count)]
                        cost = await _cpu_per_request(bot, made, in_flight, expect)
                        acks = [await signed(*words(n)) for n in range(count)]
                        floor_cost = await _cpu_per_request(floor, acks, in_flight, "")
                        rows.append((kind, in_flight, cost, floor_cost))
            finally:
                await runtime.close()
    return rows


def render(rows: list[tuple[str, int, float, float]]) -> str:
    out = [
        "",
        "Answering one Slack request in the process, straight to the handler (no socket); "
        "the bot on SQLite, its worker not running; CPU milliseconds per request.",
        f"Machine: {machine(None)}.",
        "",
        "| request | in flight | bot | floor | bot − floor |",
        "|---|--:|--:|--:|--:|",
    ]
    for kind, in_flight, cost, floor_cost in rows:
        out.append(
            f"| {kind} | {in_flight} | {cost:.3f} | {floor_cost:.3f} | {cost - floor_cost:.3f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated")
    parser.add_argument("--in-flight", default="1,20", help="comma-separated")
    options = parser.parse_args(argv)
    kinds = tuple(options.kinds.split(","))
    in_flights = tuple(int(n) for n in options.in_flight.split(","))
    print(render(asyncio.run(measure(options.requests, kinds, in_flights))))


if __name__ == "__main__":
    main()
