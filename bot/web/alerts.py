"""Alert intake over HTTP: `POST /alerts/alertmanager` and `POST /alerts/generic`.

Both exist only when `ALERTS_TOKEN` is set (otherwise they are not routed: 404), and both
need `Authorization: Bearer <ALERTS_TOKEN>`, compared in constant time, before the body is
read; anything else gets 401 and nothing is read, stored or logged of the request.

The answers, all JSON:

- 202 `{"status": "declared" | "joined" | "unchanged" | "ignored", "detail": …,
  "incident": "INC-…", "firing": n}`: recorded (or knowingly not); the Slack work follows
  through the job outbox, so the answer never waits for Slack.
- 400 `{"error": "…", "problems": [{"field": "alerts.0.status", "message": "…"}]}`: the body
  is not JSON, not an object, or not the shape of the endpoint; nothing is stored.
- 401 wrong or missing token; 413 a body over `MAX_BODY` bytes.
- 503 the database (or Slack, for the bot's own identity, once after start-up) did not
  answer: nothing was stored; Alertmanager retries, and a retry is de-duplicated.

Alertmanager's webhook (version 4; Grafana's webhook contact point sends the same shape, with
`orgId`, `title`, `state`, `message` and per-alert `dashboardURL`, `panelURL`, `silenceURL`,
`values`) is read leniently: fields the bot does not use are ignored. The generic body is
read strictly: a misspelt field is a 400 naming it. At most `ALERTS_MAX` alerts of a request
are read; the rest (and Alertmanager's own `truncatedAlerts`) are counted and said in the
incident. Labels, annotations and texts are bounded (see `bot.domain.alerts`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.domain import alerts as domain
from bot.domain.alerts import Alert, AlertGroup
from bot.service.alerts import AlertService, IdentityUnknown

log = logging.getLogger(__name__)

MAX_BODY = 10 * 1024 * 1024  # 10 MiB: a storm of 10,000 real-shaped alerts still fits
PROBLEMS_SHOWN = 10
IDENTITY_SECONDS = 3.0
THREAD_PARSE_BYTES = 256 * 1024  # bigger bodies are parsed off the event loop


class PayloadError(Exception):
    """The body is not what the endpoint reads; `problems` name the fields."""

    def __init__(self, message: str, problems: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


# ---- the shapes --------------------------------------------------------------------------
Status = Literal["firing", "resolved"]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AlertmanagerAlert(_Lenient):
    """One entry of `alerts` (Grafana adds the URLs and `values`). Field names are the
    payload's own, camelCase included, so that a 400 names the field as the sender wrote it."""

    status: Status
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str | None = None
    endsAt: str | None = None
    generatorURL: str | None = None
    fingerprint: str | None = None
    dashboardURL: str | None = None
    panelURL: str | None = None
    silenceURL: str | None = None


class AlertmanagerPayload(_Lenient):
    """Alertmanager's webhook payload (`version` "4"; Grafana sends "1")."""

    version: str | None = None
    groupKey: str | None = None
    truncatedAlerts: int = Field(default=0, ge=0)
    status: Status
    receiver: str | None = None
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str | None = None
    alerts: list[AlertmanagerAlert]
    orgId: int | None = None
    title: str | None = None
    state: str | None = None
    message: str | None = None


class GenericAlert(BaseModel):
    """`POST /alerts/generic`: one alert from anything else (Sentry, uptime checks, scripts).
    `key` is what makes two requests the same alert; `labels` are matched by the rules too."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=domain.KEY_MAX)
    status: Status
    title: str = ""
    severity: str = ""
    services: list[str] = Field(default_factory=list, max_length=50)
    description: str = ""
    url: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


# ---- reading a request -------------------------------------------------------------------
def _problems(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {
            "field": ".".join(str(part) for part in error["loc"]) or "(body)",
            "message": error["msg"],
        }
        for error in exc.errors(include_url=False, include_input=False)[:PROBLEMS_SHOWN]
    ]


def _invalid(exc: ValidationError) -> PayloadError:
    problems = _problems(exc)
    said = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:3])
    return PayloadError(f"invalid payload: {said}", problems)


def _text(value: str | None, limit: int) -> str:
    return domain.cut(value or "", limit)


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        detail = f": {exc}" if isinstance(exc, json.JSONDecodeError) else ""
        raise PayloadError(f"the body is not JSON{detail}") from None
    if not isinstance(data, dict):
        raise PayloadError("the body must be a JSON object")
    return data


def alertmanager_group(data: dict[str, Any]) -> AlertGroup:
    """Alertmanager's (or Grafana's) payload as the bot reads it; PayloadError when it is not
    one. Only the first `ALERTS_MAX` alerts are validated and read."""
    entries = data.get("alerts")
    extra = 0
    if isinstance(entries, list) and len(entries) > domain.ALERTS_MAX:
        extra = len(entries) - domain.ALERTS_MAX
        data = {**data, "alerts": entries[: domain.ALERTS_MAX]}
    try:
        payload = AlertmanagerPayload.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc) from None
    source = "grafana" if payload.orgId is not None else "alertmanager"
    alerts = []
    for entry in payload.alerts:
        labels = domain.bounded(
            {**payload.commonLabels, **entry.labels},
            count=domain.LABELS_MAX,
            value_max=domain.LABEL_VALUE_MAX,
        )
        annotations = domain.bounded(
            {**payload.commonAnnotations, **entry.annotations},
            count=domain.ANNOTATIONS_MAX,
            value_max=domain.ANNOTATION_MAX,
        )
        key = _text(entry.fingerprint, domain.KEY_MAX) or domain.fingerprint(labels)
        alerts.append(
            Alert(
                source=source,
                key=key,
                status=entry.status,
                labels=labels,
                annotations=annotations,
                starts_at=domain.parse_time(entry.startsAt),
                ends_at=domain.parse_time(entry.endsAt),
                url=_text(entry.generatorURL, domain.URL_MAX),
                dashboard=_text(entry.panelURL or entry.dashboardURL, domain.URL_MAX),
                silence=_text(entry.silenceURL, domain.URL_MAX),
            )
        )
    return AlertGroup(
        source=source,
        alerts=alerts,
        group_key=payload.groupKey or None,
        truncated=payload.truncatedAlerts + extra,
    )


def generic_group(data: dict[str, Any]) -> AlertGroup:
    """The generic body as the bot reads it (one alert, no group)."""
    try:
        payload = GenericAlert.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc) from None
    key = _text(payload.key, domain.KEY_MAX)
    if not key:
        raise PayloadError(
            "invalid payload: key: must have a visible character",
            [{"field": "key", "message": "must have a visible character"}],
        )
    services = [s for s in (_text(s, 100) for s in payload.services) if s]
    own = {
        "key": key,
        **({"title": payload.title} if payload.title.strip() else {}),
        **({"severity": payload.severity} if payload.severity.strip() else {}),
        **({"services": ",".join(services)} if services else {}),
    }
    # The body's own fields first, so that the label limit never drops them.
    labels = domain.bounded(
        {**own, **{k: v for k, v in payload.labels.items() if k not in own}},
        count=domain.LABELS_MAX,
        value_max=domain.LABEL_VALUE_MAX,
    )
    annotations = {}
    if payload.title.strip():
        annotations[domain.SUMMARY] = _text(payload.title, domain.ANNOTATION_MAX)
    if payload.description.strip():
        annotations[domain.DESCRIPTION] = _text(payload.description, domain.ANNOTATION_MAX)
    alert = Alert(
        source="generic",
        key=key,
        status=payload.status,
        labels=labels,
        annotations=annotations,
        url=_text(payload.url, domain.URL_MAX),
    )
    return AlertGroup(source="generic", alerts=[alert])


READERS: dict[str, Callable[[dict[str, Any]], AlertGroup]] = {
    "alertmanager": alertmanager_group,
    "generic": generic_group,
}


# ---- the routes --------------------------------------------------------------------------
def add_alert_routes(
    app: web.Application,
    *,
    token: str,
    alerts: AlertService,
    learn_identity: Callable[[], Awaitable[None]] | None = None,
    count: Callable[[str, str], None] | None = None,
) -> None:
    """Route `POST /alerts/alertmanager` and `POST /alerts/generic` on `app`, guarded by
    `token`. `learn_identity` asks Slack who the bot is, when it does not know yet;
    `count(endpoint, outcome)` is told how each request was answered (metrics)."""
    expected = token.encode("utf-8")
    tally = count or (lambda endpoint, outcome: None)

    def authorized(request: web.Request) -> bool:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", errors="surrogateescape"), expected
        )

    async def read_body(request: web.Request) -> bytes | None:
        """The body, or None when it is over MAX_BODY (read no further than that)."""
        if request.content_length is not None and request.content_length > MAX_BODY:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > MAX_BODY:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def handler(kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        read = READERS[kind]

        async def receive(request: web.Request) -> web.Response:
            if not authorized(request):
                tally(kind, "unauthorized")
                log.warning("alerts: a request to /alerts/%s was refused: wrong or no token", kind)
                return web.json_response(
                    {"error": "unauthorized: send Authorization: Bearer <ALERTS_TOKEN>"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="alerts"'},
                )
            body = await read_body(request)
            if body is None:
                tally(kind, "too_large")
                return web.json_response(
                    {"error": f"the body is larger than {MAX_BODY // (1024 * 1024)} MiB"},
                    status=413,
                )
            try:
                if len(body) > THREAD_PARSE_BYTES:
                    group = await asyncio.to_thread(lambda: read(parse_json(body)))
                else:
                    group = read(parse_json(body))
            except PayloadError as exc:
                tally(kind, "invalid")
                log.warning("alerts: /alerts/%s refused a body: %s", kind, exc)
                answer: dict[str, Any] = {"error": str(exc)}
                if exc.problems:
                    answer["problems"] = exc.problems
                return web.json_response(answer, status=400)
            response, outcome = await record(group)
            tally(kind, outcome)
            return response

        return receive

    async def record(group: AlertGroup) -> tuple[web.Response, str]:
        """The answer to a readable request, and its outcome for the metrics."""
        try:
            try:
                receipt = await alerts.receive(group)
            except IdentityUnknown:
                if learn_identity is None:
                    raise
                await asyncio.wait_for(learn_identity(), IDENTITY_SECONDS)
                receipt = await alerts.receive(group)
        except (IdentityUnknown, TimeoutError):
            log.warning("alerts: the bot does not know its Slack user yet; asked to retry")
            return _retry_later("the bot has not heard from Slack yet; retry shortly")
        except Exception:  # the database away or refusing: nothing stored, retry is safe
            log.exception("alerts: the alerts could not be recorded; asked to retry")
            return _retry_later("the alerts could not be recorded just now; retry")
        return web.json_response(receipt.as_json(), status=202), receipt.status

    app.router.add_post("/alerts/alertmanager", handler("alertmanager"))
    app.router.add_post("/alerts/generic", handler("generic"))


def _retry_later(error: str) -> tuple[web.Response, str]:
    """503 with Retry-After: nothing was stored, and sending the same alerts again is safe."""
    return web.json_response(
        {"error": error}, status=503, headers={"Retry-After": "10"}
    ), "unavailable"
