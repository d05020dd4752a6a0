"""The Bolt app: listeners that acknowledge, parse, call the service and render.

Listeners run before the HTTP response (`process_before_response=True`), so they do only
fast work: parse, one short database transaction, the reply. Anything that talks to Slack
(opening a modal, an ephemeral follow-up) runs in a background task after the
acknowledgement; everything durable goes through the service's job outbox.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.domain import statuspage
from bot.domain.errors import AlreadyDone, DomainError
from bot.service.deadline import give_way, within
from bot.service.incidents import IncidentService, Outcome, Where, snapshot
from bot.slack import blocks, commands, lists, texts
from bot.slack.blocks import Action, Modal
from bot.slack.directory import SlackDirectory, Standing

log = logging.getLogger(__name__)

PIN = "pushpin"
REPLY_ATTEMPTS = 3
INTERNAL_ERROR = (
    "Something went wrong on the bot's side and it was logged. Nothing was lost that the "
    "bot had confirmed; try the command again."
)


@dataclass
class Identity:
    """Who the bot is in the workspace; learned from auth.test when Slack answers."""

    token: str
    team_id: str | None = None
    bot_user_id: str | None = None
    bot_id: str | None = None

    async def learn(self, client: AsyncWebClient) -> None:
        if self.team_id is not None:
            return  # already known (start-up's token check asked Slack)
        try:
            response = await client.auth_test()
        except Exception as exc:  # Slack unreachable at start-up: requests still work
            log.warning("auth.test failed (%s); the bot's identity is learned later", exc)
            return
        self.adopt(dict(response.data) if isinstance(response.data, dict) else {})

    def adopt(self, answer: dict[str, Any]) -> None:
        """Take the bot's identity from an auth.test answer."""
        self.team_id = answer.get("team_id")
        self.bot_user_id = answer.get("user_id")
        self.bot_id = answer.get("bot_id")
        log.info("Slack: signed in as %s in workspace %s", answer.get("user"), self.team_id)


class _NoTokenNotice(logging.Filter):
    """Bolt warns that SLACK_BOT_TOKEN (read from the environment by itself) is unused when
    a client is given: that is on purpose (tokens come from `authorize`), so not said."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "will be unused" not in record.getMessage()


def _bolt_logger() -> logging.Logger:
    logger = logging.getLogger("slack_bolt.AsyncApp")
    if not any(isinstance(f, _NoTokenNotice) for f in logger.filters):
        logger.addFilter(_NoTokenNotice())
    return logger


class Background:
    """Tasks that run after the acknowledgement; failures are logged, never lost silently.

    They start once the Slack requests being answered are (`deadline.give_way`, 50 ms at
    most): in a burst, answering goes first. `session`: kept-alive
    connections for their response_url posts."""

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self.session = session

    def spawn(self, work: Coroutine[Any, Any, Any], *, what: str) -> None:
        async def run() -> None:
            try:
                await give_way()
                await work
            except Exception:
                log.exception("background work failed: %s", what)

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    async def wait(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        await asyncio.wait_for(self.wait(), timeout=10)


async def send_reply(
    respond: AsyncRespond, *, session: aiohttp.ClientSession | None = None, **message: Any
) -> None:
    """A follow-up to the user through the request's response_url, waiting out 429s
    (Retry-After, by slack_sdk's handler) and 5xx (here: the webhook client consults its
    retry handlers only for 429s and connection errors); on `session`'s connections."""
    if not respond.response_url:
        return
    webhook = AsyncWebhookClient(
        url=respond.response_url,
        timeout=10,
        session=session,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
        ],
    )
    for attempt in range(REPLY_ATTEMPTS):
        response = await webhook.send_dict(message)
        if response.status_code < 500:
            break
        await asyncio.sleep(2**attempt)
    if response.status_code >= 400:
        log.warning("response_url answered %s: %s", response.status_code, response.body[:200])


def _number(text: str) -> int:
    """A small number from a button's value or a block id (anything else: 0, refused later).
    Slack sends back what the bot rendered, but a forged request may send anything."""
    return int(text) if text.isascii() and text.isdecimal() and len(text) <= 9 else 0


def _form_once(view: dict[str, Any]) -> str | None:
    """The key that makes a form submitted twice (the same view) change things once."""
    return f"view:{view['id']}" if view.get("id") else None


def _value(values: dict[str, Any], block: str) -> str:
    element = (values.get(block) or {}).get("value") or {}
    if element.get("selected_option"):
        return str(element["selected_option"].get("value") or "")
    return str(element.get("value") or "")


async def submitted(
    ack: AsyncAck, work: Callable[[], Awaitable[object]], *, field: Callable[[Exception], str]
) -> None:
    """Carry out a submitted form's work within the request's deadline, then close the form;
    a refusal is shown in the form under the input `field(error)` names (the form stays
    open). A repeated submission of the same form (`AlreadyDone`) just closes it."""
    try:
        await within(work)
    except AlreadyDone:
        pass
    except DomainError as error:
        await ack(response_action="errors", errors={field(error): str(error)})
        return
    await ack()


def build_app(
    *,
    service: IncidentService,
    client: AsyncWebClient,  # without a token: Bolt hands each listener one with it
    signing_secret: str,
    identity: Identity,
    background: Background,
    directory: SlackDirectory | None = None,
) -> AsyncApp:
    async def authorize(**_: Any) -> AuthorizeResult:
        return AuthorizeResult(
            enterprise_id=None,
            team_id=identity.team_id,
            bot_token=identity.token,
            bot_user_id=identity.bot_user_id,
            bot_id=identity.bot_id,
        )

    app = AsyncApp(
        client=client,
        logger=_bolt_logger(),
        signing_secret=signing_secret,
        authorize=authorize,
        process_before_response=True,
        raise_error_for_unhandled_request=False,
        # The HTTP server verifies every request before its body is read (server.py);
        # Socket Mode needs no signature. Verifying again here would be the same work twice.
        request_verification_enabled=False,
    )
    policy = service.policy
    members = directory or SlackDirectory(client, team_id=lambda: identity.team_id)

    # ---- who may act: full members of the workspace ---------------------------------------
    def wants_to_act(body: dict[str, Any]) -> bool:
        if body.get("command"):
            return commands.split(str(body.get("text") or ""))[0] != "help"
        if body.get("type") == "block_actions":
            actions = body.get("actions") or [{}]
            return bool(actions[0].get("action_id") != Action.OPEN_CHANNEL)
        return body.get("type") == "view_submission"

    def refuse(
        body: dict[str, Any], respond: AsyncRespond | None, standing: Standing, user: str
    ) -> BoltResponse:
        """The answer to a guest or an outsider who tried to act."""
        who = "guests" if standing == Standing.GUEST else "people from other organisations"
        refusal = (
            f"Sorry: {who} can't act on incidents in this workspace. Ask a member of the "
            "workspace (the incident commander, or whoever declared it) to do it."
        )
        log.info("refused %s (%s) from %s", body.get("type") or "command", standing, user)
        answer: dict[str, Any] | None = None
        if body.get("type") == "view_submission":
            values = ((body.get("view") or {}).get("state") or {}).get("values") or {}
            first_block = next(iter(values), None)
            if first_block is not None:
                answer = {"response_action": "errors", "errors": {first_block: refusal}}
        elif body.get("command"):
            answer = {"response_type": "ephemeral", "text": refusal}
        elif respond is not None:
            follow_up(respond, refusal, what="refusal")
        if answer is None:
            return BoltResponse(status=200, body="")
        return BoltResponse(
            status=200,
            body=json.dumps(answer),
            headers={"content-type": "application/json;charset=utf-8"},
        )

    class FullMembersOnly(AsyncMiddleware):
        """Guests and people from other organisations are told they can't; nothing changes.
        When Slack cannot say who someone is, that is not held against them.

        A middleware class: Bolt hands it the request as it is, where a middleware function
        would first have every argument a listener may ask for built (a dozen objects, for
        every request)."""

        async def async_process(
            self,
            *,
            req: AsyncBoltRequest,
            resp: BoltResponse,
            next: Callable[[], Awaitable[BoltResponse]],  # Bolt's name for it
        ) -> BoltResponse | None:
            user = req.context.user_id
            if not user or not wants_to_act(req.body):
                await next()
                return None
            standing = await members.standing(str(user))
            if standing not in (Standing.GUEST, Standing.EXTERNAL):
                await next()
                return None
            return refuse(req.body, req.context.respond, standing, str(user))

    app.use(FullMembersOnly())

    def follow_up(respond: AsyncRespond, text: str, *, what: str) -> None:
        background.spawn(
            send_reply(
                respond,
                session=background.session,
                text=text,
                response_type="ephemeral",
                replace_original=False,
            ),
            what=what,
        )

    def open_view(
        web: AsyncWebClient, trigger_id: str, view: dict[str, Any], respond: AsyncRespond
    ) -> None:
        async def run() -> None:
            try:
                await web.views_open(trigger_id=trigger_id, view=view)
            except SlackApiError as exc:
                log.warning("views.open failed: %s", exc.response.get("error"))
                await send_reply(
                    respond,
                    text=f"Could not open the form ({exc.response.get('error')}). "
                    "Write the command with its text instead, e.g. "
                    "`/incident update <text>`.",
                    response_type="ephemeral",
                    replace_original=False,
                )

        background.spawn(run(), what="views.open")

    # ---- /incident ---------------------------------------------------------------------
    @app.command("/incident")
    async def on_command(
        ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        ctx = commands.Context(
            service=service,
            user=body["user_id"],
            channel=body["channel_id"],
            response_url=body.get("response_url"),
            trigger_id=body.get("trigger_id"),
        )
        try:
            reply = await within(lambda: commands.handle(body.get("text") or "", ctx))
        except DomainError as error:
            await ack(response_type="ephemeral", text=texts.escape_error(str(error)))
            return
        except Exception:
            log.exception("/incident %r failed", (body.get("text") or "")[:40])
            await ack(response_type="ephemeral", text=INTERNAL_ERROR)
            return
        if reply.view is not None and ctx.trigger_id:
            await ack()
            open_view(client, ctx.trigger_id, reply.view, respond)
            return
        await ack(**reply.body())
        if reply.later is not None:
            slow = reply.later

            async def finish() -> None:
                try:
                    result = await slow()
                except DomainError as error:
                    result = commands.Reply(texts.escape_error(str(error)))
                await send_reply(
                    respond, session=background.session, **result.body(), replace_original=True
                )

            background.spawn(finish(), what="/incident follow-up")

    # ---- buttons -----------------------------------------------------------------------
    async def run_button(
        respond: AsyncRespond, what: str, call: Callable[[], Awaitable[Outcome]]
    ) -> None:
        try:
            outcome = await within(call)
        except DomainError as error:
            follow_up(respond, texts.escape_error(str(error)), what=what)
            return
        except Exception:
            log.exception("button %s failed", what)
            follow_up(respond, INTERNAL_ERROR, what=what)
            return
        follow_up(respond, commands.confirm(outcome), what=what)

    def clicked(body: dict[str, Any]) -> tuple[str, str]:
        return body["user"]["id"], str(body["actions"][0].get("value") or "")

    ButtonCall = Callable[[Where, str, str], Awaitable[Outcome]]

    def button(action_id: str | re.Pattern[str], what: str, call: ButtonCall) -> None:
        """A button whose value is `<incident id>` or `<incident id>|<argument>`: one service
        call for the clicking user; the outcome (or the refusal) is said to them alone."""

        async def on_click(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
            await ack()
            user, value = clicked(body)
            incident_id, _, argument = value.partition("|")
            await run_button(
                respond, what, lambda: call(Where(incident_id=incident_id), user, argument)
            )

        app.action(action_id)(on_click)

    button(Action.ACK, "ack", lambda where, user, _: service.acknowledge(where, by=user))
    button(
        Action.COMMAND, "take command", lambda where, user, _: service.take_command(where, by=user)
    )
    button(
        Action.ESCALATE,
        "escalate",
        lambda where, user, seen: service.escalate(where, by=user, seen=seen or None),
    )

    def snooze(where: Where, user: str, argument: str) -> Awaitable[Outcome]:
        duration, _, due = argument.partition("|")
        try:
            seen_due = datetime.fromisoformat(due) if due else None
        except ValueError:
            seen_due = None
        return service.snooze(where, by=user, duration=duration, seen_due=seen_due)

    button(re.compile(f"^{Action.NUDGE_SNOOZE}_"), "snooze", snooze)

    @app.action(Action.OPEN_CHANNEL)
    async def on_open_channel(ack: AsyncAck) -> None:
        await ack()  # a link: Slack opens the channel, there is nothing to do here

    button(
        Action.DUTY_DONE,
        "done",
        lambda where, user, duty: service.complete(where, by=user, duty=duty),
    )
    button(
        Action.ACTION_DONE,
        "action done",
        lambda where, user, number: service.complete_action(where, by=user, number=_number(number)),
    )

    async def open_form(
        web: AsyncWebClient,
        body: dict[str, Any],
        respond: AsyncRespond,
        render: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> None:
        _, incident_id = clicked(body)
        try:
            record = await within(lambda: service.find(Where(incident_id=incident_id)))
        except DomainError as error:
            follow_up(respond, texts.escape_error(str(error)), what="open form")
            return
        if not record.incident.is_open:
            follow_up(respond, f"{record.incident.id} is already resolved.", what="open form")
            return
        open_view(web, body["trigger_id"], render(snapshot(record.incident, policy)), respond)

    @app.action(Action.UPDATE)
    @app.action(Action.NUDGE_UPDATE)
    async def on_update_button(
        ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        await ack()
        await open_form(client, body, respond, lambda state: blocks.update_modal(state, policy))

    @app.action(Action.RESOLVE)
    async def on_resolve_button(
        ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        await ack()
        await open_form(client, body, respond, blocks.resolve_modal)

    @app.action(re.compile(f"^{Action.PLAYBOOK_STEP}_"))
    async def on_tick(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        action = body["actions"][0]
        group = _number(str(action.get("block_id", "steps:0")).partition(":")[2])
        selected = [str(o.get("value")) for o in action.get("selected_options") or []]
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
            "channel_id"
        )
        await run_button(
            respond,
            "tick",
            lambda: service.set_ticks(
                Where(channel_id=str(channel)),
                by=body["user"]["id"],
                group=group,
                selected=selected,
            ),
        )

    # ---- modals ------------------------------------------------------------------------
    @app.view(Modal.DECLARE)
    async def on_declare(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        values = view["state"]["values"]
        try:
            origin = json.loads(view.get("private_metadata") or "{}")
        except ValueError:
            origin = {}
        services = [s for s in _value(values, "services").split(",") if s.strip()]
        await submitted(
            ack,
            lambda: service.declare(
                once=_form_once(view),
                severity=_value(values, "severity"),
                title=commands.typed(_value(values, "title")),
                by=body["user"]["id"],
                origin_channel_id=origin.get("channel"),
                response_url=origin.get("response_url"),
                services=[commands.typed(s) for s in services],
                impact=commands.typed(_value(values, "impact")),
            ),
            field=lambda error: "severity" if "severity" in str(error) else "title",
        )

    @app.view(Modal.UPDATE)
    async def on_update(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        values = view["state"]["values"]
        await submitted(
            ack,
            lambda: service.post_update(
                Where(incident_id=view.get("private_metadata") or ""),
                by=body["user"]["id"],
                text=commands.typed(_value(values, "text")),
                status=_value(values, "status") or None,
                next_steps=commands.typed(_value(values, "next_steps")),
                impact=commands.typed(_value(values, "impact")),
                form=True,
                once=_form_once(view),
            ),
            field=lambda _: "text",
        )

    @app.view(Modal.RESOLVE)
    async def on_resolve(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        values = view["state"]["values"]
        await submitted(
            ack,
            lambda: service.resolve(
                Where(incident_id=view.get("private_metadata") or ""),
                by=body["user"]["id"],
                summary=commands.typed(_value(values, "summary")),
                root_cause=commands.typed(_value(values, "root_cause")),
                public_text=commands.typed(_value(values, "public")),
                once=_form_once(view),
            ),
            field=lambda _: "summary",
        )

    @app.view(Modal.PUBLISH)
    async def on_publish(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        values = view["state"]["values"]
        names = statuspage.component_names(policy)
        components: dict[str, str] = {}
        for block in values:
            kind, _, index = str(block).partition(":")
            if kind != "component":
                continue
            number = _number(index) if index else -1
            # A block the form did not render (a forged index) names no component.
            name = names[number] if index.isdecimal() and number < len(names) else index
            components[name] = _value(values, block) or statuspage.OPERATIONAL
        await submitted(
            ack,
            lambda: service.publish(
                Where(incident_id=view.get("private_metadata") or ""),
                by=body["user"]["id"],
                text=commands.typed(_value(values, "text")),
                title=commands.typed(_value(values, "title")),
                components=components,
                once=_form_once(view),
            ),
            field=lambda _: "text",
        )

    # ---- events ------------------------------------------------------------------------
    @app.event("app_home_opened")
    async def on_home(ack: AsyncAck, event: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        if event.get("tab", "home") != "home":
            return
        user = str(event.get("user"))

        async def publish() -> None:
            rows = await commands.overview(service)
            now = service.clock.now()
            rows.sort(key=lambda r: (policy.rank(r["severity"]), r["declared_at"]))
            await client.views_publish(user_id=user, view=lists.home_view(rows, now=now))

        background.spawn(publish(), what="views.publish (App Home)")

    @app.event("reaction_added")
    async def on_reaction(ack: AsyncAck, event: dict[str, Any]) -> None:
        await ack()
        item = event.get("item") or {}
        if event.get("reaction") == PIN and item.get("type") == "message":
            await service.request_capture(
                channel_id=str(item.get("channel")),
                ts=str(item.get("ts")),
                by=str(event.get("user")),
            )

    @app.event("reaction_removed")
    async def on_unreaction(ack: AsyncAck, event: dict[str, Any]) -> None:
        await ack()
        item = event.get("item") or {}
        if event.get("reaction") == PIN and item.get("type") == "message":
            await service.uncapture(
                channel_id=str(item.get("channel")), ts=str(item.get("ts")), unmark=True
            )

    @app.event({"type": "message", "subtype": "message_changed"})
    async def on_edit(ack: AsyncAck, event: dict[str, Any]) -> None:
        await ack()
        message = event.get("message") or {}
        await service.recapture(
            channel_id=str(event.get("channel")),
            ts=str(message.get("ts")),
            text=str(message.get("text") or ""),
        )

    @app.event({"type": "message", "subtype": "message_deleted"})
    async def on_delete(ack: AsyncAck, event: dict[str, Any]) -> None:
        await ack()
        await service.uncapture(
            channel_id=str(event.get("channel")), ts=str(event.get("deleted_ts"))
        )

    @app.event("message")
    async def on_message(ack: AsyncAck) -> None:
        await ack()  # ordinary channel messages: only 📌 brings them into the timeline

    @app.event(re.compile(".*"))
    async def on_other_event(ack: AsyncAck) -> None:
        await ack()  # any other subscribed event: answered, so Slack does not retry it

    return app
