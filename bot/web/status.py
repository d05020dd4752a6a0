"""The public status page: `GET /status` (HTML), `/status/api/v2/summary.json` and
`/status/api/v2/status.json` (the JSON shape Statuspage-hosted pages serve, so aggregators
and monitors that read such pages read this one), `/status/history.atom` (a feed).

Every response is built from one small read (the public incidents still open or of the last
14 days, with their published updates) and from nothing else: internal titles, channels and
people are not in what is read, so they cannot be shown. Responses carry a short
`Cache-Control`, an `ETag` and `Last-Modified`, and answer a matching `If-None-Match` with
304. No login, no JavaScript, no cookies.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape

from bot.domain import statuspage
from bot.domain.statuspage import StatusView

log = logging.getLogger(__name__)

MAX_AGE = 30  # seconds a browser, a proxy or an aggregator may keep a response
TEMPLATES = Path(__file__).parent / "templates"
_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html", "atom", "xml"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _utc(moment: datetime | None) -> str:
    return moment.strftime("%b %d, %H:%M UTC") if moment else ""


def _rfc3339(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else ""


_env.filters["utc"] = _utc
_env.filters["rfc3339"] = _rfc3339
_env.globals["labels"] = statuspage.STATE_LABELS


def render_html(view: StatusView, *, url: str) -> str:
    return _env.get_template("status.html").render(view=view, url=url)


def render_atom(view: StatusView, *, url: str) -> str:
    return _env.get_template("history.atom").render(view=view, url=url)


def add_status_routes(
    app: web.Application, *, view: Callable[[], Awaitable[StatusView]], public_url: str | None
) -> None:
    """Serve the status page from `view()` (the service's small read)."""

    def page_url(request: web.Request) -> str:
        if public_url:
            return public_url.rstrip("/") + "/status"
        return str(request.url.with_path("/status").with_query(None))

    def respond(
        request: web.Request, current: StatusView, body: str, content_type: str
    ) -> web.Response:
        data = body.encode("utf-8")
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        headers = {
            "Cache-Control": f"public, max-age={MAX_AGE}",
            "ETag": etag,
            "Last-Modified": format_datetime(current.updated_at, usegmt=True),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            "Referrer-Policy": "no-referrer",
            "Access-Control-Allow-Origin": "*",
        }
        wanted = {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")}
        if etag in wanted or "*" in wanted:
            return web.Response(status=304, headers=headers)
        headers["Content-Type"] = content_type
        return web.Response(body=data, headers=headers)

    async def html(request: web.Request) -> web.Response:
        current = await view()
        body = render_html(current, url=page_url(request))
        return respond(request, current, body, "text/html; charset=utf-8")

    def json_route(
        build: Callable[[StatusView, str], dict[str, Any]],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            current = await view()
            # Non-ASCII as \\u escapes and <, >, & too: the JSON is safe inside any page.
            text = json.dumps(build(current, page_url(request)), ensure_ascii=True)
            text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            return respond(request, current, text, "application/json")

        return handler

    async def atom(request: web.Request) -> web.Response:
        current = await view()
        body = render_atom(current, url=page_url(request))
        return respond(request, current, body, "application/atom+xml; charset=utf-8")

    app.router.add_get("/status", html)
    app.router.add_get("/status/", html)
    app.router.add_get("/status/api/v2/summary.json", json_route(statuspage.summary_json))
    app.router.add_get("/status/api/v2/status.json", json_route(statuspage.status_json))
    app.router.add_get("/status/history.atom", atom)
