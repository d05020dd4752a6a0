"""A local stand-in for PagerDuty's Events API v2 (tests and the demo)."""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any

from aiohttp import web


class FakePagerDuty:
    """Accepts events at `POST /v2/enqueue` like PagerDuty (202), records them; `fail(n)`
    answers the next n requests with 503."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.failures = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v2/enqueue", self._enqueue)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v2/enqueue"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakePagerDuty:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def fail(self, times: int = 1) -> None:
        self.failures += times

    async def _enqueue(self, request: web.Request) -> web.Response:
        if self.failures:
            self.failures -= 1
            return web.json_response({"status": "unavailable"}, status=503)
        event = json.loads(await request.text())
        if not event.get("routing_key") or event.get("event_action") not in (
            "trigger",
            "acknowledge",
            "resolve",
        ):
            return web.json_response(
                {"status": "invalid event", "message": "Event object is invalid"}, status=400
            )
        self.events.append(event)
        return web.json_response(
            {
                "status": "success",
                "message": "Event processed",
                "dedup_key": event.get("dedup_key"),
            },
            status=202,
        )
