"""Plays the part of Slack's servers towards the running bot.

``SlackDriver`` sends signed HTTP requests to ``POST {bot_url}/slack/events`` exactly as
Slack does: slash commands (form-encoded), interactivity payloads (``payload=<json>``)
and Events API callbacks (JSON). Payloads are built from the recorded examples in
``bot/devtools/payloads/`` so their field names and nesting stay those of real Slack traffic.
Response URLs and trigger ids come from the paired ``FakeSlack`` so follow-ups the bot
sends can be awaited and modals it opens are honoured.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from slack_sdk.signature import SignatureVerifier

from bot.devtools.fakeslack import FakeSlack

__all__ = [
    "ActionReply",
    "CommandReply",
    "Reply",
    "SlackDriver",
    "default_payloads_dir",
    "view_values_from",
]

JSON = dict[str, Any]


def default_payloads_dir() -> Path:
    """Where the payload templates live (shipped with the package, so the demo has them)."""
    return Path(__file__).resolve().parent / "payloads"


@dataclass
class Reply:
    """The bot's HTTP answer to one request, plus the response URL Slack gave it.

    ``body`` is the parsed JSON ack, else the raw text ("" for an empty ack). Slack shows
    a plain-text ack as the message text, so ``text`` is that, or a JSON ack's ``text``.
    """

    status: int
    body: JSON | str
    response_url: str
    trigger_id: str
    fake: FakeSlack = field(repr=False)

    @property
    def text(self) -> str | None:
        """The ack's message text: a JSON ack's ``text``, or a non-empty plain-text ack."""
        if isinstance(self.body, dict):
            text = self.body.get("text")
            return text if isinstance(text, str) else None
        return self.body or None

    async def followups(
        self,
        *,
        count: int = 1,
        timeout: float = 5.0,
    ) -> list[JSON]:
        """Wait until at least ``count`` messages were POSTed to ``response_url``.

        Returns every message received there so far, oldest first (length >= count);
        raises ``AssertionError`` on timeout.
        """
        received = self.fake.responses[self.response_url]
        await self.fake.wait_for(lambda: len(received) >= count, timeout=timeout)
        return list(received)


@dataclass
class CommandReply(Reply):
    """Reply to a slash command."""


@dataclass
class ActionReply(Reply):
    """Reply to a ``block_actions`` click."""


def _option_for(element: JSON, value: object) -> JSON:
    """The option object of ``element`` whose value is ``value`` (``ValueError`` if none)."""
    if isinstance(value, dict):
        return value
    options: list[JSON] = list(element.get("options") or [])
    for group in element.get("option_groups") or []:
        options.extend(group.get("options") or [])
    for option in options:
        if option.get("value") == value:
            return option
    if element.get("type") in ("external_select", "multi_external_select"):
        return {"text": {"type": "plain_text", "text": str(value), "emoji": True}, "value": value}
    known = [o.get("value") for o in options]
    raise ValueError(f"{value!r} is not an option of {element.get('action_id')!r}: {known}")


def _as_list(answer: object) -> list[object]:
    if answer is None:
        return []
    if isinstance(answer, list | tuple | set):
        return list(answer)
    return [answer]


def _element_state(element: JSON, answer: object) -> JSON:
    """One ``state.values[block_id][action_id]`` entry, as Slack shapes it per element type."""
    kind = element.get("type")
    state: JSON = {"type": kind}
    if kind in (
        "plain_text_input",
        "number_input",
        "email_text_input",
        "url_text_input",
    ):
        state["value"] = None if answer is None else str(answer)
    elif kind in ("static_select", "external_select", "radio_buttons"):
        state["selected_option"] = None if answer is None else _option_for(element, answer)
    elif kind in ("multi_static_select", "multi_external_select", "checkboxes"):
        state["selected_options"] = [_option_for(element, a) for a in _as_list(answer)]
    elif kind == "users_select":
        state["selected_user"] = answer
    elif kind == "multi_users_select":
        state["selected_users"] = _as_list(answer)
    elif kind == "conversations_select":
        state["selected_conversation"] = answer
    elif kind == "multi_conversations_select":
        state["selected_conversations"] = _as_list(answer)
    elif kind == "channels_select":
        state["selected_channel"] = answer
    elif kind == "multi_channels_select":
        state["selected_channels"] = _as_list(answer)
    elif kind == "datepicker":
        state["selected_date"] = answer
    elif kind == "timepicker":
        state["selected_time"] = answer
        state["timezone"] = "UTC"
    elif kind == "datetimepicker":
        state["selected_date_time"] = None if answer is None else int(str(answer))
    elif kind == "rich_text_input":
        if answer is None or isinstance(answer, dict):
            state["rich_text_value"] = answer
        else:
            state["rich_text_value"] = {
                "type": "rich_text",
                "elements": [
                    {
                        "type": "rich_text_section",
                        "elements": [{"type": "text", "text": str(answer)}],
                    }
                ],
            }
    else:
        raise ValueError(f"view_values_from: unsupported element type {kind!r}")
    return state


def view_values_from(view: JSON, answers: dict[str, object]) -> JSON:
    """Build ``view.state.values`` for a modal as Slack would on submit.

    ``view`` is the modal as opened (``fake.views[-1]``); ``answers`` maps an input
    block's ``block_id`` to the user's answer: a string for text inputs, an option *value*
    (or list of values) for selects/checkboxes/radios, user/channel ids for pickers. Input
    blocks without an answer are included empty, as Slack does. Raises ``ValueError`` for
    an answer naming an unknown block or option.
    """
    values: JSON = {}
    known: set[str] = set()
    for block in view.get("blocks", []):
        if block.get("type") != "input":
            continue
        block_id = block.get("block_id")
        element = block.get("element") or {}
        action_id = element.get("action_id")
        if not isinstance(block_id, str) or not isinstance(action_id, str):
            raise ValueError(f"input block without block_id/action_id: {block!r}")
        known.add(block_id)
        values[block_id] = {action_id: _element_state(element, answers.get(block_id))}
    unknown = set(answers) - known
    if unknown:
        raise ValueError(f"answers for unknown input blocks {sorted(unknown)}; known: {known}")
    return values


class SlackDriver:
    """Sends Slack-signed requests to the bot under test.

    Use as ``async with SlackDriver(bot_url=..., signing_secret=..., fake=fake) as slack:``;
    the driver owns an ``httpx.AsyncClient`` (10 s timeout) closed on exit.
    """

    view_values_from = staticmethod(view_values_from)

    def __init__(
        self,
        *,
        bot_url: str,
        signing_secret: str,
        fake: FakeSlack,
        team_id: str = "T0FAKE",
        team_domain: str = "fake",
        payloads_dir: Path | None = None,
    ) -> None:
        self.events_url = bot_url.rstrip("/") + "/slack/events"
        self.signing_secret = signing_secret
        self.fake = fake
        self.team_id = team_id
        self.team_domain = team_domain
        self._payloads = payloads_dir or default_payloads_dir()
        self._verifier = SignatureVerifier(signing_secret)
        self._http = httpx.AsyncClient(timeout=10.0)
        self._templates: dict[str, str] = {}

    async def __aenter__(self) -> SlackDriver:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()

    # ------------------------------------------------------------------ templates

    def _template_text(self, name: str) -> str:
        if name not in self._templates:
            path = self._payloads / name
            if not path.is_file():
                raise FileNotFoundError(f"Slack payload template missing: {path}")
            self._templates[name] = path.read_text(encoding="utf-8").strip()
        return self._templates[name]

    def _template(self, name: str) -> JSON:
        data = json.loads(self._template_text(name))
        if not isinstance(data, dict):
            raise ValueError(f"{name}: expected a JSON object")
        return data

    def _user(self, user: str) -> JSON:
        known = self.fake.users.get(user)
        name = known.name if known is not None else user.lower()
        return {"id": user, "username": name, "name": name, "team_id": self.team_id}

    def _channel_name(self, channel: str) -> str:
        try:
            return self.fake.channel(channel).name
        except KeyError:
            return channel.lower()

    # ------------------------------------------------------------------ signing / sending

    def sign(self, body: str, timestamp: int) -> str:
        """Slack's v0 signature of ``body`` at ``timestamp`` ("v0=<hex hmac-sha256>")."""
        signature = self._verifier.generate_signature(timestamp=str(timestamp), body=body)
        if signature is None:  # pragma: no cover - only when the secret is empty
            raise ValueError("cannot sign without a signing secret")
        return signature

    async def post_raw(
        self,
        body: str | bytes,
        *,
        content_type: str,
        timestamp: int | None = None,
        signature: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST ``body`` to the bot; signed correctly unless ``signature`` is given.

        ``timestamp`` defaults to now; pass an old one to send a stale (replayed) request.
        """
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        ts = int(time.time()) if timestamp is None else timestamp
        all_headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": signature if signature is not None else self.sign(text, ts),
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }
        all_headers.update(headers or {})
        return await self._http.post(self.events_url, content=text.encode(), headers=all_headers)

    async def _post_interaction(self, payload: JSON) -> httpx.Response:
        body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))})
        return await self.post_raw(body, content_type="application/x-www-form-urlencoded")

    @staticmethod
    def _parse_body(response: httpx.Response) -> JSON | str:
        text = response.text
        if not text:
            return ""
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return text
        return data if isinstance(data, dict) else text

    # ------------------------------------------------------------------ slash commands

    async def command(
        self,
        text: str,
        *,
        user: str = "U0ALICE",
        user_name: str = "alice",
        channel: str = "C0GENERAL",
        channel_name: str = "general",
        command: str = "/incident",
    ) -> CommandReply:
        """Send a slash command as typed by ``user`` in ``channel``; return the ack."""
        fields = dict(parse_qsl(self._template_text("slash_command.txt"), keep_blank_values=True))
        response_url = self.fake.new_response_url()
        trigger_id = self.fake.new_trigger_id()
        fields.update(
            {
                "team_id": self.team_id,
                "team_domain": self.team_domain,
                "channel_id": channel,
                "channel_name": channel_name,
                "user_id": user,
                "user_name": user_name,
                "command": command,
                "text": text,
                "api_app_id": self.fake.app_id,
                "response_url": response_url,
                "trigger_id": trigger_id,
            }
        )
        response = await self.post_raw(
            urlencode(fields), content_type="application/x-www-form-urlencoded"
        )
        return CommandReply(
            status=response.status_code,
            body=self._parse_body(response),
            response_url=response_url,
            trigger_id=trigger_id,
            fake=self.fake,
        )

    # ------------------------------------------------------------------ block actions

    async def click(
        self,
        action_id: str,
        value: str,
        *,
        user: str = "U0ALICE",
        channel: str,
        message_ts: str,
        block_id: str = "actions",
        message: JSON | None = None,
        extra: JSON | None = None,
    ) -> ActionReply:
        """Click the button ``action_id`` (``value``) on the message at ``message_ts``.

        Without ``message`` the fake's stored copy of that message is sent, as Slack does.
        """
        payload = self._template("block_actions.json")
        response_url = self.fake.new_response_url()
        trigger_id = self.fake.new_trigger_id()
        if message is None:
            stored = None
            with contextlib.suppress(KeyError):
                stored = self.fake.channel(channel).message(message_ts)
            if stored is not None:
                message = stored.to_api(self.team_id)
            else:
                message = {"type": "message", "ts": message_ts, "text": ""}
        action = dict(payload["actions"][0])
        action.update(
            {
                "action_id": action_id,
                "block_id": block_id,
                "value": value,
                "action_ts": f"{time.time():.6f}",
            }
        )
        button = _find_element(message, block_id, action_id)
        if button is not None and isinstance(button.get("text"), dict):
            action["text"] = button["text"]
        if button is not None and "style" in button:
            action["style"] = button["style"]
        if extra is not None:  # another element: e.g. checkboxes send selected_options
            action.pop("value", None)
            action.pop("text", None)
            action.update(extra)
        payload.update(
            {
                "user": self._user(user),
                "api_app_id": self.fake.app_id,
                "container": {
                    "type": "message",
                    "message_ts": message_ts,
                    "channel_id": channel,
                    "is_ephemeral": False,
                },
                "trigger_id": trigger_id,
                "team": {"id": self.team_id, "domain": self.team_domain},
                "channel": {"id": channel, "name": self._channel_name(channel)},
                "message": message,
                "state": {"values": {}},
                "response_url": response_url,
                "actions": [action],
            }
        )
        response = await self._post_interaction(payload)
        return ActionReply(
            status=response.status_code,
            body=self._parse_body(response),
            response_url=response_url,
            trigger_id=trigger_id,
            fake=self.fake,
        )

    # ------------------------------------------------------------------ view submission

    async def submit(
        self,
        callback_id: str,
        values: JSON,
        *,
        user: str = "U0ALICE",
        private_metadata: str = "",
        view_id: str | None = None,
    ) -> httpx.Response:
        """Submit a modal; ``values`` is ``view.state.values`` (see ``view_values_from``).

        The view sent is the fake's opened modal with that id (or, without ``view_id``, the
        latest one with ``callback_id``); the template's view when the fake has none.
        """
        payload = self._template("view_submission.json")
        view: JSON = payload["view"]
        opened = _find_view(self.fake.views, callback_id=callback_id, view_id=view_id)
        if opened is not None:
            view = copy.deepcopy(opened)
        else:
            view["id"] = view_id or f"V{uuid.uuid4().hex[:10].upper()}"
            view["root_view_id"] = view["id"]
        view.update(
            {
                "team_id": self.team_id,
                "callback_id": callback_id,
                "private_metadata": private_metadata or view.get("private_metadata", ""),
                "state": {"values": values},
                "app_id": self.fake.app_id,
                "app_installed_team_id": self.team_id,
                "bot_id": self.fake.bot_id,
            }
        )
        payload.update(
            {
                "team": {"id": self.team_id, "domain": self.team_domain},
                "user": self._user(user),
                "api_app_id": self.fake.app_id,
                "trigger_id": self.fake.new_trigger_id(),
                "view": view,
                "response_urls": [],
            }
        )
        return await self._post_interaction(payload)

    # ------------------------------------------------------------------ Events API

    async def event(
        self,
        event: JSON,
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
    ) -> httpx.Response:
        """Deliver ``event`` in an ``event_callback`` envelope (a retry if ``retry_num``)."""
        envelope = self._template("reaction_added.json")
        inner = dict(event)
        inner.setdefault("event_ts", f"{time.time():.6f}")
        now = int(time.time())
        envelope.update(
            {
                "team_id": self.team_id,
                "context_team_id": self.team_id,
                "api_app_id": self.fake.app_id,
                "event": inner,
                "type": "event_callback",
                "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
                "event_time": now,
                "authorizations": [
                    {
                        "enterprise_id": None,
                        "team_id": self.team_id,
                        "user_id": self.fake.bot_user_id,
                        "is_bot": True,
                        "is_enterprise_install": False,
                    }
                ],
            }
        )
        headers: dict[str, str] = {}
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        body = json.dumps(envelope, separators=(",", ":"))
        return await self.post_raw(body, content_type="application/json", headers=headers)

    async def reaction_added(
        self, reaction: str, *, user: str = "U0ALICE", channel: str, ts: str
    ) -> httpx.Response:
        """``user`` reacts with ``:reaction:`` to the message at (``channel``, ``ts``)."""
        event = self._template("reaction_added.json")["event"]
        stored = None
        with contextlib.suppress(KeyError):
            stored = self.fake.channel(channel).message(ts)
        event.update(
            {
                "user": user,
                "reaction": reaction,
                "item": {"type": "message", "channel": channel, "ts": ts},
                "item_user": stored.user if stored is not None else self.fake.bot_user_id,
                "event_ts": f"{time.time():.6f}",
            }
        )
        return await self.event(event)

    async def app_home_opened(self, *, user: str = "U0ALICE") -> httpx.Response:
        """``user`` opens the bot's Home tab (the published view included, if any)."""
        event = self._template("app_home_opened.json")["event"]
        event.update({"user": user, "event_ts": f"{time.time():.6f}"})
        published = self.fake.home_views.get(user)
        if published is not None:
            event["view"] = copy.deepcopy(published)
        return await self.event(event)


def _find_element(message: JSON, block_id: str, action_id: str) -> JSON | None:
    for block in message.get("blocks") or []:
        if block.get("block_id") != block_id:
            continue
        elements = block.get("elements") or ([block["accessory"]] if "accessory" in block else [])
        for element in elements:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return element
    return None


def _find_view(views: list[JSON], *, callback_id: str, view_id: str | None) -> JSON | None:
    for view in reversed(views):
        if view_id is not None:
            if view.get("id") == view_id:
                return view
        elif view.get("callback_id") == callback_id:
            return view
    return None
