"""A local, strict stand-in for Slack's Web API, response URLs and Socket Mode.

``FakeSlack`` is a real HTTP server (aiohttp.web) bound to 127.0.0.1. Point the bot's
``AsyncWebClient(base_url=fake.api_url)`` at it and it answers like Slack does: the same
JSON shapes, the same error strings, the same limits (block counts, text lengths, channel
name rules, membership checks). Everything it is asked to do is kept as inspectable state
(``channels``, ``ephemerals``, ``views``, ``files``, ``calls`` ...) so tests can assert on
what the bot really sent over the wire.

Faults can be injected per method (``fail``, ``rate_limit``, ``error``, ``latency``) to
exercise the bot's retry and degradation paths.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, TypeVar, cast

from aiohttp import WSMsgType, web
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

__all__ = [
    "Call",
    "Channel",
    "Ephemeral",
    "FakeFile",
    "FakeSlack",
    "Message",
    "MessageVersion",
    "Notification",
    "User",
    "Usergroup",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
JSON = dict[str, Any]

#: Limits Slack enforces (documented on the respective method / Block Kit pages).
MAX_TEXT_CHARS = 40_000
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_VIEW_TITLE_CHARS = 24
MAX_TOPIC_CHARS = 250
MAX_CHANNEL_NAME_CHARS = 80
MAX_PRIVATE_METADATA_CHARS = 3000
RESPONSE_URL_MAX_USES = 5
MAX_INVITE_USERS = 1000

_CHANNEL_NAME_RE = re.compile(r"^[a-z0-9_\-]+$")
_JSON_FIELDS = ("blocks", "attachments", "metadata", "view", "files")
_APP_ID = "A0FAKEAPP"
#: Slack's mention syntax. Only the raw ``<…>`` forms notify: ``&lt;@U1&gt;`` is plain text.
_USER_MENTION_RE = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_GROUP_MENTION_RE = re.compile(r"<!subteam\^(S[A-Z0-9]+)(?:\|[^>]*)?>")
_BROADCAST_RE = re.compile(r"<!(?:channel|here|everyone)(?:\|[^>]*)?>")
_PERMALINK_HOST = "https://fake.slack.local"


# --------------------------------------------------------------------------- state types


@dataclass
class User:
    """A person (or bot) known to the fake.

    ``deleted`` is a deactivated account; ``is_restricted`` a guest (multi-channel guests
    have only it set, single-channel guests also ``is_ultra_restricted``). ``team_id`` is
    None for the workspace's own people and another team's id for someone from another
    organisation reached through Slack Connect.
    """

    id: str
    name: str
    real_name: str
    is_bot: bool = False
    deleted: bool = False
    tz: str = "UTC"
    is_restricted: bool = False
    is_ultra_restricted: bool = False
    team_id: str | None = None

    def is_external(self, team_id: str) -> bool:
        """Whether this user belongs to another organisation than workspace ``team_id``."""
        return self.team_id is not None and self.team_id != team_id

    def to_api(self, team_id: str) -> JSON:
        """The user object as ``users.info`` returns it (``team_id``: the workspace's)."""
        own_team = self.team_id or team_id
        return {
            "id": self.id,
            "team_id": own_team,
            "name": self.name,
            "deleted": self.deleted,
            "real_name": self.real_name,
            "tz": self.tz,
            "tz_label": "Coordinated Universal Time",
            "tz_offset": 0,
            "is_admin": False,
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": self.is_restricted,
            "is_ultra_restricted": self.is_ultra_restricted,
            "is_bot": self.is_bot,
            "is_app_user": False,
            "updated": 1_700_000_000,
            "profile": {
                "real_name": self.real_name,
                "display_name": self.name,
                "real_name_normalized": self.real_name,
                "display_name_normalized": self.name,
                "team": own_team,
            },
        }


@dataclass
class Usergroup:
    """A user group (``@handle``)."""

    id: str
    handle: str
    name: str
    users: list[str] = field(default_factory=list)


@dataclass
class MessageVersion:
    """A previous version of an edited message (what it looked like before ``at``)."""

    text: str
    blocks: list[JSON] | None
    metadata: JSON | None
    at: str  # the edit's timestamp, Slack style ("1763816400.000200")


@dataclass
class Message:
    """A message in a channel, in posting order."""

    ts: str
    user: str
    text: str
    blocks: list[JSON] | None = None
    thread_ts: str | None = None
    metadata: JSON | None = None
    files: list[JSON] = field(default_factory=list)
    edits: list[MessageVersion] = field(default_factory=list)
    bot_id: str | None = None
    reactions: dict[str, list[str]] = field(default_factory=dict)
    reply_count: int = 0
    unfurl_links: bool | None = None
    # A thread reply also shown in the channel (``reply_broadcast``): Slack gives it the
    # subtype ``thread_broadcast`` and lists it in ``conversations.history`` too.
    broadcast: bool = False

    @property
    def top_level(self) -> bool:
        """Shown in the channel itself (not only inside a thread)."""
        return self.thread_ts is None or self.thread_ts == self.ts or self.broadcast

    def to_api(self, team_id: str, *, include_metadata: bool = True) -> JSON:
        """The message object as ``conversations.history`` returns it."""
        out: JSON = {"type": "message", "user": self.user, "text": self.text, "ts": self.ts}
        out["team"] = team_id
        if self.broadcast:
            out["subtype"] = "thread_broadcast"
        if self.bot_id:
            out["bot_id"] = self.bot_id
            out["app_id"] = _APP_ID
        if self.blocks is not None:
            out["blocks"] = self.blocks
        if self.thread_ts is not None:
            out["thread_ts"] = self.thread_ts
        if self.reply_count:
            out["reply_count"] = self.reply_count
        if self.files:
            out["files"] = self.files
            out["upload"] = False
        if self.edits:
            out["edited"] = {"user": self.user, "ts": self.edits[-1].at}
        if self.reactions:
            out["reactions"] = [
                {"name": name, "users": list(users), "count": len(users)}
                for name, users in self.reactions.items()
            ]
        if include_metadata and self.metadata is not None:
            out["metadata"] = self.metadata
        return out


@dataclass
class Channel:
    """A conversation: public/private channel or a DM (``is_im``)."""

    id: str
    name: str
    topic: str = ""
    purpose: str = ""
    members: set[str] = field(default_factory=set)
    is_archived: bool = False
    is_private: bool = False
    is_im: bool = False
    created: int = 0
    creator: str = ""
    messages: list[Message] = field(default_factory=list)

    def message(self, ts: str) -> Message | None:
        """The message with timestamp ``ts``, if any."""
        for msg in self.messages:
            if msg.ts == ts:
                return msg
        return None

    def to_api(self, team_id: str, viewer: str) -> JSON:
        """The channel object as ``conversations.info`` returns it for ``viewer``."""
        if self.is_im:
            other = next((m for m in sorted(self.members) if m != viewer), viewer)
            return {
                "id": self.id,
                "created": self.created,
                "is_im": True,
                "is_org_shared": False,
                "user": other,
                "is_user_deleted": False,
                "priority": 0,
            }
        return {
            "id": self.id,
            "name": self.name,
            "is_channel": True,
            "is_group": False,
            "is_im": False,
            "is_mpim": False,
            "is_private": self.is_private,
            "created": self.created,
            "creator": self.creator,
            "is_archived": self.is_archived,
            "is_general": self.name == "general",
            "unlinked": 0,
            "name_normalized": self.name,
            "is_shared": False,
            "is_ext_shared": False,
            "is_org_shared": False,
            "pending_shared": [],
            "is_pending_ext_shared": False,
            "is_member": viewer in self.members,
            "context_team_id": team_id,
            "topic": {"value": self.topic, "creator": "", "last_set": 0},
            "purpose": {"value": self.purpose, "creator": "", "last_set": 0},
            "previous_names": [],
            "num_members": len(self.members),
        }


NotificationReason = Literal["mention", "group", "broadcast", "dm"]


@dataclass
class Notification:
    """Someone Slack would notify about a newly posted message, and why.

    ``reason``: ``dm`` (a direct message to them), ``mention`` (``<@THEM>``), ``group``
    (``<!subteam^S…>`` of a group they are in) or ``broadcast`` (``<!channel>``,
    ``<!here>``, ``<!everyone>``). One per person per message, the most specific reason.
    """

    user: str
    channel: str
    ts: str
    reason: NotificationReason


@dataclass
class Ephemeral:
    """A message posted with ``chat.postEphemeral`` (only ``user`` sees it)."""

    channel: str
    user: str
    text: str
    blocks: list[JSON] | None
    message_ts: str
    thread_ts: str | None = None


@dataclass
class FakeFile:
    """A file uploaded through the v2 flow (getUploadURLExternal → upload → complete)."""

    id: str
    filename: str
    length: int
    title: str = ""
    content: bytes | None = None
    completed: bool = False
    channels: list[str] = field(default_factory=list)
    alt_txt: str | None = None

    def to_api(self, *, user: str, base_url: str) -> JSON:
        """The file object as ``files.completeUploadExternal`` returns it."""
        return {
            "id": self.id,
            "created": 1_700_000_000,
            "timestamp": 1_700_000_000,
            "name": self.filename,
            "title": self.title or self.filename,
            "mimetype": "text/plain",
            "filetype": "text",
            "pretty_type": "Plain Text",
            "user": user,
            "size": len(self.content or b""),
            "mode": "hosted",
            "is_external": False,
            "is_public": True,
            "url_private": f"{base_url}/files/{self.id}/{self.filename}",
            "permalink": f"{_PERMALINK_HOST}/files/{user}/{self.id}/{self.filename}",
            "channels": list(self.channels),
        }


@dataclass
class Call:
    """One Web API call as the fake saw it, including injected failures."""

    method: str
    args: JSON
    ok: bool
    error: str | None
    at: float  # time.monotonic() when the request arrived
    status: int = 200


@dataclass
class _Fault:
    kind: Literal["fail", "rate_limit", "error", "lose_answer"]
    status: int = 200
    error: str = ""
    retry_after: int = 0


class ApiError(Exception):
    """Raised by a method handler: becomes ``{"ok": false, "error": error, **extra}``."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


# --------------------------------------------------------------------------- helpers


def _truthy(value: Any) -> bool:
    """Slack's reading of boolean parameters ("true", "1", true)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes"}
    return False


def _int_arg(args: JSON, name: str, default: int, *, error: str = "invalid_arguments") -> int:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ApiError(error) from None


def _str_arg(args: JSON, name: str) -> str:
    raw = args.get(name)
    if raw is None:
        return ""
    return raw if isinstance(raw, str) else str(raw)


def _encode_cursor(offset: int) -> str:
    return base64.b64encode(f"offset:{offset}".encode()).decode()


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.b64decode(cursor.encode(), validate=True).decode()
        prefix, _, number = text.partition(":")
        if prefix != "offset":
            raise ValueError(text)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError("invalid_cursor") from None


def _paginate(items: list[T], args: JSON, *, max_limit: int = 1000) -> tuple[list[T], str]:
    """Slice ``items`` by ``cursor``/``limit``; return (page, next_cursor or "")."""
    limit = _int_arg(args, "limit", 100, error="invalid_limit")
    if limit <= 0:
        limit = 100
    limit = min(limit, max_limit)
    cursor = _str_arg(args, "cursor")
    start = _decode_cursor(cursor) if cursor else 0
    page = items[start : start + limit]
    nxt = _encode_cursor(start + limit) if start + limit < len(items) else ""
    return page, nxt


def _validate_blocks(blocks: Any, *, max_blocks: int) -> list[JSON]:
    """Validate a Block Kit ``blocks`` array the way Slack does; raise ``invalid_blocks``."""
    if isinstance(blocks, str):
        try:
            blocks = json.loads(blocks)
        except json.JSONDecodeError:
            raise ApiError("invalid_blocks_format") from None
    if not isinstance(blocks, list):
        raise ApiError("invalid_blocks_format")
    if len(blocks) > max_blocks:
        raise ApiError(
            "invalid_blocks",
            response_metadata={"messages": [f"[ERROR] no more than {max_blocks} items allowed"]},
        )
    seen_ids: set[str] = set()
    for index, raw in enumerate(blocks):
        if not isinstance(raw, dict):
            raise ApiError("invalid_blocks", response_metadata={"messages": [f"block {index}"]})
        block_id = raw.get("block_id")
        if isinstance(block_id, str):
            if block_id in seen_ids:
                msg = f"[ERROR] duplicate block_id {block_id!r} [json-pointer:/blocks/{index}]"
                raise ApiError("invalid_blocks", response_metadata={"messages": [msg]})
            seen_ids.add(block_id)
        try:
            parsed = Block.parse(raw)
            if parsed is None:
                raise SlackObjectFormationError(f"unknown block type {raw.get('type')!r}")
            parsed.validate_json()
        except (SlackObjectFormationError, KeyError, TypeError, AttributeError) as exc:
            msg = f"[ERROR] {exc} [json-pointer:/blocks/{index}]"
            raise ApiError("invalid_blocks", response_metadata={"messages": [msg]}) from None
    return cast(list[JSON], blocks)


def _list_arg(args: JSON, name: str) -> list[str]:
    """A comma-separated list argument (or a JSON array), trimmed, without duplicates."""
    raw = args.get(name)
    items = raw if isinstance(raw, list) else _str_arg(args, name).split(",")
    return list(dict.fromkeys(s for s in (str(i).strip() for i in items) if s))


def _mrkdwn_texts(blocks: list[JSON] | None) -> list[str]:
    """The mrkdwn strings of section text/fields and context elements: where mentions work.

    ``plain_text`` objects are left out: Slack shows ``<@U…>`` in them literally.
    """
    texts: list[str] = []
    for block in blocks or []:
        objects: list[Any] = []
        if block.get("type") == "section":
            objects.append(block.get("text"))
            fields = block.get("fields")
            if isinstance(fields, list):
                objects.extend(fields)
        elif block.get("type") == "context":
            elements = block.get("elements")
            if isinstance(elements, list):
                objects.extend(elements)
        for obj in objects:
            if isinstance(obj, dict) and obj.get("type") == "mrkdwn":
                text = obj.get("text")
                if isinstance(text, str):
                    texts.append(text)
    return texts


def _plain_text_len(obj: Any) -> int | None:
    if isinstance(obj, dict) and obj.get("type") == "plain_text":
        text = obj.get("text")
        if isinstance(text, str):
            return len(text)
    return None


def _invalid_view(message: str) -> ApiError:
    return ApiError("invalid_arguments", response_metadata={"messages": [f"[ERROR] {message}"]})


# --------------------------------------------------------------------------- the server


class FakeSlack:
    """An in-process Slack: Web API, response URLs, file uploads and Socket Mode.

    Contract: every ``/api/<method>`` request is authenticated, validated and answered in
    Slack's JSON shape; failures use Slack's own error strings. All observable effects are
    stored on the instance for assertions. Single asyncio loop; not thread-safe.
    """

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-fake-token",
        app_token: str = "xapp-fake-token",
        team_id: str = "T0FAKE",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.team_domain = "fake"
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = _APP_ID

        self.users: dict[str, User] = {}
        self.usergroups: dict[str, Usergroup] = {}
        self.channels: dict[str, Channel] = {}
        self.ephemerals: list[Ephemeral] = []
        self.views: list[JSON] = []
        self.home_views: dict[str, JSON] = {}
        self.files: dict[str, FakeFile] = {}
        self.calls: list[Call] = []
        self.responses: dict[str, list[JSON]] = {}
        #: whom Slack would have notified about each new message, in posting order
        self.notifications: list[Notification] = []

        self._ids = itertools.count(1)
        self._last_ts_us = 0
        self._faults: dict[str, deque[_Fault]] = {}
        self._latency: dict[str, float] = {}
        self._held: asyncio.Event | None = None  # set while answers are held back
        self._upload_keys: dict[str, str] = {}  # upload key → file id
        self._triggers: dict[str, float] = {}  # trigger_id → issued at (monotonic)
        self._used_triggers: set[str] = set()
        self._socket_tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._socket_acks: dict[str, asyncio.Future[JSON]] = {}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._host = "127.0.0.1"
        #: how long a trigger_id issued by ``new_trigger_id`` stays usable (Slack: 3 s)
        self.trigger_ttl = 3.0

        self.users[bot_user_id] = User(bot_user_id, "incident-bot", "Incident Bot", is_bot=True)
        self._methods: dict[str, Callable[[JSON, str], Awaitable[JSON]]] = {
            "api.test": self._api_test,
            "auth.test": self._auth_test,
            "users.info": self._users_info,
            "users.list": self._users_list,
            "usergroups.list": self._usergroups_list,
            "usergroups.users.list": self._usergroups_users_list,
            "conversations.create": self._conversations_create,
            "conversations.info": self._conversations_info,
            "conversations.list": self._conversations_list,
            "conversations.join": self._conversations_join,
            "conversations.invite": self._conversations_invite,
            "conversations.setTopic": self._conversations_set_topic,
            "conversations.setPurpose": self._conversations_set_purpose,
            "conversations.members": self._conversations_members,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "conversations.archive": self._conversations_archive,
            "conversations.open": self._conversations_open,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "views.open": self._views_open,
            "views.push": self._views_push,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "files.getUploadURLExternal": self._files_get_upload_url_external,
            "files.completeUploadExternal": self._files_complete_upload_external,
            "files.info": self._files_info,
            "apps.connections.open": self._apps_connections_open,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Start serving; ``port=0`` picks a free port (see ``base_url``)."""
        if self._runner is not None:
            raise RuntimeError("FakeSlack already started")
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/response/{key}", self._handle_response_url)
        app.router.add_post("/upload/v1/{key}", self._handle_upload)
        app.router.add_get("/socket/{ticket}", self._handle_socket)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        address = runner.addresses[0]
        self._port = int(address[1])
        self._host = host
        self._runner = runner

    async def stop(self) -> None:
        """Close socket-mode connections and stop the server. Idempotent."""
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"server shutting down")
        self._sockets.clear()
        for fut in self._socket_acks.values():
            if not fut.done():
                fut.cancel()
        self._socket_acks.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (only valid after ``start``)."""
        if self._port is None:
            raise RuntimeError("FakeSlack not started")
        return f"http://{self._host}:{self._port}"

    @property
    def api_url(self) -> str:
        """The Web API base URL, with trailing slash: give it to ``AsyncWebClient``."""
        return f"{self.base_url}/api/"

    # ------------------------------------------------------------------ seeding / inspection

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}0{next(self._ids):08X}"

    def _new_ts(self) -> str:
        now_us = time.time_ns() // 1000
        self._last_ts_us = max(now_us, self._last_ts_us + 1)
        secs, micros = divmod(self._last_ts_us, 1_000_000)
        return f"{secs}.{micros:06d}"

    def add_user(
        self,
        user_id: str,
        name: str,
        real_name: str | None = None,
        *,
        restricted: bool = False,
        ultra_restricted: bool = False,
        team_id: str | None = None,
        deleted: bool = False,
    ) -> User:
        """Seed a person (``users.info`` will find it).

        ``restricted``: a multi-channel guest; ``ultra_restricted``: a single-channel guest
        (Slack marks those restricted as well); ``team_id``: someone from another
        organisation (Slack Connect); ``deleted``: a deactivated account.
        """
        user = User(
            user_id,
            name,
            real_name if real_name is not None else name,
            deleted=deleted,
            is_restricted=restricted or ultra_restricted,
            is_ultra_restricted=ultra_restricted,
            team_id=team_id,
        )
        self.users[user_id] = user
        return user

    def add_channel(
        self,
        name: str,
        *,
        members: Iterable[str] = (),
        bot_is_member: bool = True,
        is_private: bool = False,
        creator: str = "U0ADMIN",
    ) -> str:
        """Seed a channel and return its id ("C…"). Members must not need to exist.
        Seeded channels were made by a person (`creator`), not by the bot."""
        if any(c.name == name and not c.is_im for c in self.channels.values()):
            raise ValueError(f"channel #{name} already exists")
        channel = Channel(
            id=self._new_id("C"),
            name=name,
            members=set(members),
            is_private=is_private,
            created=int(time.time()),
            creator=creator,
        )
        if bot_is_member:
            channel.members.add(self.bot_user_id)
        self.channels[channel.id] = channel
        return channel.id

    def add_usergroup(self, usergroup_id: str, handle: str, *, users: Iterable[str] = ()) -> None:
        """Seed a user group (returned by ``usergroups.list``)."""
        self.usergroups[usergroup_id] = Usergroup(usergroup_id, handle, handle, list(users))

    def channel(self, name_or_id: str) -> Channel:
        """The channel with this id or name (``#`` optional); ``KeyError`` if none."""
        if name_or_id in self.channels:
            return self.channels[name_or_id]
        name = name_or_id.removeprefix("#")
        for channel in self.channels.values():
            if channel.name == name and not channel.is_im:
                return channel
        raise KeyError(name_or_id)

    def calls_to(self, method: str) -> list[Call]:
        """Recorded calls of ``method``, in order of completion."""
        return [c for c in self.calls if c.method == method]

    def notified(self, user_id: str) -> list[Notification]:
        """The notifications Slack would have sent ``user_id``, oldest first."""
        return [n for n in self.notifications if n.user == user_id]

    def dms(self, user_id: str) -> list[Message]:
        """The bot's messages in its direct conversation with ``user_id``, oldest first."""
        channel = self._existing_dm(user_id)
        if channel is None:
            return []
        return [m for m in channel.messages if m.user == self.bot_user_id]

    def new_response_url(self) -> str:
        """A fresh response URL; POSTs to it land in ``responses[url]``."""
        url = f"{self.base_url}/response/{uuid.uuid4().hex}"
        self.responses[url] = []
        return url

    def new_trigger_id(self) -> str:
        """A trigger_id the fake will honour once, for ``trigger_ttl`` seconds.

        Trigger ids the fake never issued are accepted by ``views.open`` as long as they are
        non-empty (so hand-written tests keep working); issued ones are checked for expiry
        (``expired_trigger_id``) and reuse (``trigger_exchanged``).
        """
        trigger = f"{next(self._ids)}.{self.team_id}.{uuid.uuid4().hex[:24]}"
        self._triggers[trigger] = time.monotonic()
        return trigger

    async def wait_for(
        self,
        predicate: Callable[[], T | bool | None],
        *,
        timeout: float = 5.0,
    ) -> T:
        """Poll ``predicate`` every 10 ms until it returns something truthy; return that.

        Raises ``AssertionError`` naming the predicate if ``timeout`` seconds pass first.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return cast(T, result)
            if time.monotonic() >= deadline:
                name = getattr(predicate, "__qualname__", repr(predicate))
                raise AssertionError(
                    f"FakeSlack.wait_for: condition {name} still not met after {timeout}s "
                    f"(last result {result!r}); last calls: "
                    f"{[(c.method, c.error) for c in self.calls[-5:]]}"
                )
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ fault injection

    def fail(self, method: str, *, status: int = 500, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer HTTP ``status`` (5xx)."""
        for _ in range(times):
            self._faults.setdefault(method, deque()).append(_Fault("fail", status=status))

    def rate_limit(self, method: str, *, retry_after: int = 1, times: int = 1) -> None:
        """The next ``times`` calls answer 429 ``ratelimited`` with ``Retry-After``."""
        for _ in range(times):
            fault = _Fault("rate_limit", status=429, error="ratelimited", retry_after=retry_after)
            self._faults.setdefault(method, deque()).append(fault)

    def error(self, method: str, error: str, *, times: int = 1) -> None:
        """The next ``times`` calls answer HTTP 200 ``{"ok": false, "error": error}``."""
        for _ in range(times):
            self._faults.setdefault(method, deque()).append(_Fault("error", error=error))

    def lose_answer(self, method: str, *, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` are carried out, then the connection is
        dropped before the answer: the caller cannot know that it worked (a timeout, a
        lost connection, a process killed between Slack's answer and its own commit)."""
        for _ in range(times):
            self._faults.setdefault(method, deque()).append(_Fault("lose_answer"))

    def hold(self) -> None:
        """Hold every Web API answer until `release()` (Slack away without failing: the
        bot's work piles up, as in an outage its clients wait out)."""
        if self._held is None:
            self._held = asyncio.Event()

    def release(self) -> None:
        """Answer what was held, and everything after it, at once."""
        held, self._held = self._held, None
        if held is not None:
            held.set()

    def latency(self, method: str, seconds: float) -> None:
        """Delay every answer to ``method`` by ``seconds`` (0 clears)."""
        if seconds <= 0:
            self._latency.pop(method, None)
        else:
            self._latency[method] = seconds

    # ------------------------------------------------------------------ Web API plumbing

    async def _read_args(self, request: web.Request) -> JSON:
        args: JSON = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            ctype = request.content_type
            if ctype == "application/json":
                raw = await request.text()
                if raw.strip():
                    try:
                        body = json.loads(raw)
                    except json.JSONDecodeError:
                        raise ApiError("invalid_json") from None
                    if not isinstance(body, dict):
                        raise ApiError("invalid_json")
                    args.update(body)
            elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                for name, item in form.items():
                    if isinstance(item, str):
                        args[name] = item
            else:
                # Slack parses unknown content types as form bodies; empty is fine.
                await request.read()
        for key in _JSON_FIELDS:
            value = args.get(key)
            if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
                # left as a string when malformed: the handler reports the format error
                with contextlib.suppress(json.JSONDecodeError):
                    args[key] = json.loads(value)
        return args

    def _token_of(self, request: web.Request, args: JSON) -> str | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return header.removeprefix("Bearer ").strip()
        token = args.get("token")
        return token if isinstance(token, str) and token else None

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        at = time.monotonic()
        try:
            args = await self._read_args(request)
        except ApiError as exc:
            args = {}
            return self._finish(method, args, at, {"ok": False, "error": exc.error})
        token = self._token_of(request, args)
        args.pop("token", None)

        if self._held is not None:
            await self._held.wait()
        delay = self._latency.get(method)
        if delay:
            await asyncio.sleep(delay)

        queue = self._faults.get(method)
        lose = bool(queue) and queue is not None and queue[0].kind == "lose_answer"
        if queue and not lose:
            fault = queue.popleft()
            if fault.kind == "fail":
                body: JSON = {"ok": False, "error": "internal_error"}
                return self._finish(method, args, at, body, status=fault.status)
            if fault.kind == "rate_limit":
                body = {"ok": False, "error": "ratelimited"}
                headers = {"Retry-After": str(fault.retry_after)}
                return self._finish(method, args, at, body, status=429, headers=headers)
            return self._finish(method, args, at, {"ok": False, "error": fault.error})

        handler = self._methods.get(method)
        if handler is None:
            return self._finish(method, args, at, {"ok": False, "error": "unknown_method"})
        if token is None:
            return self._finish(method, args, at, {"ok": False, "error": "not_authed"})
        if token not in (self.bot_token, self.app_token):
            return self._finish(method, args, at, {"ok": False, "error": "invalid_auth"})
        wants_app_token = method == "apps.connections.open"
        if (token == self.app_token) != wants_app_token:
            body = {"ok": False, "error": "not_allowed_token_type"}
            return self._finish(method, args, at, body)
        try:
            result = await handler(args, token)
        except ApiError as exc:
            return self._finish(method, args, at, {"ok": False, "error": exc.error, **exc.extra})
        except Exception:
            log.exception("FakeSlack: internal error in %s", method)
            body = {"ok": False, "error": "fatal_error"}
            return self._finish(method, args, at, body, status=500)
        response = self._finish(method, args, at, {"ok": True, **result})
        if lose and queue:
            queue.popleft()
            if request.transport is not None:
                request.transport.close()  # done, but the answer never arrives
        return response

    def _finish(
        self,
        method: str,
        args: JSON,
        at: float,
        body: JSON,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        ok = bool(body.get("ok"))
        error = None if ok else str(body.get("error"))
        self.calls.append(Call(method, args, ok, error, at, status))
        return web.json_response(body, status=status, headers=headers)

    # ------------------------------------------------------------------ lookups

    def _find_channel(self, args: JSON, key: str = "channel") -> Channel:
        ref = _str_arg(args, key)
        if not ref:
            raise ApiError("channel_not_found")
        if ref in self.channels:
            return self.channels[ref]
        if ref.startswith("#") or not re.fullmatch(r"[CDG][A-Z0-9]+", ref):
            try:
                return self.channel(ref)
            except KeyError:
                pass
        raise ApiError("channel_not_found")

    def _existing_dm(self, user_id: str) -> Channel | None:
        for channel in self.channels.values():
            if channel.is_im and channel.members == {user_id, self.bot_user_id}:
                return channel
        return None

    def _dm_with(self, user_id: str) -> Channel:
        existing = self._existing_dm(user_id)
        if existing is not None:
            return existing
        channel = Channel(
            id=self._new_id("D"),
            name=user_id,
            members={user_id, self.bot_user_id},
            is_im=True,
            is_private=True,
            created=int(time.time()),
        )
        self.channels[channel.id] = channel
        return channel

    def _postable_channel(self, args: JSON) -> Channel:
        ref = _str_arg(args, "channel")
        if ref in self.users and ref != self.bot_user_id:
            return self._dm_with(ref)
        channel = self._find_channel(args)
        if channel.is_archived:
            raise ApiError("is_archived")
        if self.bot_user_id not in channel.members:
            raise ApiError("not_in_channel")
        return channel

    def _message_content(
        self, args: JSON, *, required: bool = True
    ) -> tuple[str, list[JSON] | None]:
        text = args.get("text")
        blocks_raw = args.get("blocks")
        attachments = args.get("attachments")
        if text is not None and not isinstance(text, str):
            text = str(text)
        blocks: list[JSON] | None = None
        if blocks_raw is not None and blocks_raw != "":
            blocks = _validate_blocks(blocks_raw, max_blocks=MAX_MESSAGE_BLOCKS)
        if required and not text and not blocks and not attachments:
            raise ApiError("no_text")
        if text is not None and len(text) > MAX_TEXT_CHARS:
            raise ApiError("msg_too_long")
        return text or "", blocks

    def _notify(self, channel: Channel, msg: Message) -> None:
        """Record whom Slack notifies about ``msg``, just posted in ``channel``.

        Only members of the conversation at this moment can be notified: a mention of
        someone outside it reaches nobody. The bot, other bots and deactivated accounts
        are never notified. ``<!here>`` counts every member (the fake has no presence).
        """
        texts = [msg.text, *_mrkdwn_texts(msg.blocks)]
        mentioned = {m for t in texts for m in _USER_MENTION_RE.findall(t)}
        groups = {g for t in texts for g in _GROUP_MENTION_RE.findall(t)}
        broadcast = any(_BROADCAST_RE.search(t) for t in texts)
        in_groups = {u for g in groups if g in self.usergroups for u in self.usergroups[g].users}
        for member in sorted(channel.members):
            user = self.users.get(member)
            if member == self.bot_user_id or (user is not None and (user.is_bot or user.deleted)):
                continue
            reason: NotificationReason | None = None
            if channel.is_im:
                reason = "dm"
            elif member in mentioned:
                reason = "mention"
            elif member in in_groups:
                reason = "group"
            elif broadcast:
                reason = "broadcast"
            if reason is not None:
                self.notifications.append(Notification(member, channel.id, msg.ts, reason))

    @staticmethod
    def _metadata(args: JSON) -> JSON | None:
        meta = args.get("metadata")
        if meta is None or meta == "":
            return None
        if (
            not isinstance(meta, dict)
            or not isinstance(meta.get("event_type"), str)
            or not isinstance(meta.get("event_payload"), dict)
        ):
            raise ApiError("invalid_metadata_format")
        return {"event_type": meta["event_type"], "event_payload": meta["event_payload"]}

    # ------------------------------------------------------------------ methods: auth/users

    async def _api_test(self, args: JSON, token: str) -> JSON:
        return {"args": {k: v for k, v in args.items() if isinstance(v, str)}}

    async def _auth_test(self, args: JSON, token: str) -> JSON:
        return {
            "url": f"{_PERMALINK_HOST}/",
            "team": "Fake Workspace",
            "user": self.users[self.bot_user_id].name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    async def _users_info(self, args: JSON, token: str) -> JSON:
        user = self.users.get(_str_arg(args, "user"))
        if user is None:
            raise ApiError("user_not_found")
        return {"user": user.to_api(self.team_id)}

    async def _users_list(self, args: JSON, token: str) -> JSON:
        members = [u.to_api(self.team_id) for u in self.users.values()]
        page, nxt = _paginate(members, args)
        return {"members": page, "response_metadata": {"next_cursor": nxt}}

    async def _usergroups_list(self, args: JSON, token: str) -> JSON:
        include_users = _truthy(args.get("include_users"))
        groups = []
        for group in self.usergroups.values():
            item: JSON = {
                "id": group.id,
                "team_id": self.team_id,
                "is_usergroup": True,
                "name": group.name,
                "description": "",
                "handle": group.handle,
                "is_external": False,
                "date_delete": 0,
                "user_count": len(group.users),
            }
            if include_users:
                item["users"] = list(group.users)
            groups.append(item)
        return {"usergroups": groups}

    async def _usergroups_users_list(self, args: JSON, token: str) -> JSON:
        group = self.usergroups.get(_str_arg(args, "usergroup"))
        if group is None:
            raise ApiError("no_such_subteam")
        include_disabled = _truthy(args.get("include_disabled"))
        users = [
            u
            for u in group.users
            if include_disabled or u not in self.users or not self.users[u].deleted
        ]
        return {"users": users}

    # ------------------------------------------------------------------ methods: conversations

    def _api_channel(self, channel: Channel) -> JSON:
        return channel.to_api(self.team_id, self.bot_user_id)

    async def _conversations_create(self, args: JSON, token: str) -> JSON:
        name = _str_arg(args, "name")
        if not name:
            raise ApiError("invalid_name_required")
        if len(name) > MAX_CHANNEL_NAME_CHARS:
            raise ApiError("invalid_name_maxlength")
        if not _CHANNEL_NAME_RE.fullmatch(name):
            raise ApiError("invalid_name_specials")
        if any(c.name == name and not c.is_im for c in self.channels.values()):
            raise ApiError("name_taken")
        channel_id = self.add_channel(
            name, is_private=_truthy(args.get("is_private")), creator=self.bot_user_id
        )
        return {"channel": self._api_channel(self.channels[channel_id])}

    async def _conversations_info(self, args: JSON, token: str) -> JSON:
        channel = self._find_channel(args)
        if channel.is_private and self.bot_user_id not in channel.members:
            raise ApiError("channel_not_found")
        return {"channel": self._api_channel(channel)}

    async def _conversations_list(self, args: JSON, token: str) -> JSON:
        types = {t.strip() for t in (_str_arg(args, "types") or "public_channel").split(",")}
        allowed = {"public_channel", "private_channel", "mpim", "im"}
        if not types <= allowed:
            raise ApiError("invalid_types")
        exclude_archived = _truthy(args.get("exclude_archived"))
        items = []
        for channel in self.channels.values():
            if channel.is_im:
                kind = "im"
            elif channel.is_private:
                kind = "private_channel"
            else:
                kind = "public_channel"
            if kind not in types:
                continue
            if kind != "public_channel" and self.bot_user_id not in channel.members:
                continue  # private conversations are only visible to members
            if exclude_archived and channel.is_archived:
                continue
            items.append(self._api_channel(channel))
        page, nxt = _paginate(items, args)
        return {"channels": page, "response_metadata": {"next_cursor": nxt}}

    async def _conversations_join(self, args: JSON, token: str) -> JSON:
        channel = self._find_channel(args)
        if channel.is_private or channel.is_im:
            if self.bot_user_id not in channel.members:
                raise ApiError("channel_not_found")
            raise ApiError("method_not_supported_for_channel_type")
        if channel.is_archived:
            raise ApiError("is_archived")
        result: JSON = {}
        if self.bot_user_id in channel.members:
            result["warning"] = "already_in_channel"
            result["response_metadata"] = {"warnings": ["already_in_channel"]}
        channel.members.add(self.bot_user_id)
        return {"channel": self._api_channel(channel), **result}

    def _invite_error(self, channel: Channel, user_id: str) -> str | None:
        """Slack's reason ``user_id`` cannot be invited to ``channel``, or None."""
        if user_id == self.bot_user_id:
            return "cant_invite_self"
        user = self.users.get(user_id)
        if user is None:
            return "user_not_found"
        if user.deleted:
            return "cant_invite"  # Slack documents no deactivated-user error for invites
        if user.is_external(self.team_id):
            return "cant_invite"  # the fake's channels are never shared with other orgs
        if user.is_restricted or user.is_ultra_restricted:
            return "user_is_restricted"
        if user_id in channel.members:
            return "already_in_channel"
        return None

    async def _conversations_invite(self, args: JSON, token: str) -> JSON:
        """Invite people; one bad id fails the whole call unless ``force`` is set.

        Like Slack, every user that was not invited is reported in ``errors``
        (``{"user", "ok": false, "error"}``), on failures and on partial successes alike;
        people already in the channel are only reported there, they fail nothing unless
        nobody new was invited.
        """
        channel = self._find_channel(args)
        if channel.is_private and self.bot_user_id not in channel.members:
            raise ApiError("channel_not_found")
        if channel.is_im:
            raise ApiError("method_not_supported_for_channel_type")
        users = _list_arg(args, "users")
        if not users:
            raise ApiError("no_user")
        if len(users) > MAX_INVITE_USERS:
            raise ApiError("too_many_users")
        if channel.is_archived:
            raise ApiError("is_archived")
        if self.bot_user_id not in channel.members:
            raise ApiError("not_in_channel")
        new: list[str] = []
        errors: list[JSON] = []
        for user_id in users:
            error = self._invite_error(channel, user_id)
            if error is None:
                new.append(user_id)
            else:
                errors.append({"user": user_id, "ok": False, "error": error})
        refused = [e for e in errors if e["error"] != "already_in_channel"]
        if not new or (refused and not _truthy(args.get("force"))):
            raise ApiError((refused or errors)[0]["error"], errors=errors)
        channel.members.update(new)
        result: JSON = {"channel": self._api_channel(channel)}
        if errors:
            result["errors"] = errors
        return result

    async def _conversations_set_topic(self, args: JSON, token: str) -> JSON:
        channel = self._find_channel(args)
        if self.bot_user_id not in channel.members:
            raise ApiError("not_in_channel")
        if channel.is_archived:
            raise ApiError("is_archived")
        topic = _str_arg(args, "topic")
        if len(topic) > MAX_TOPIC_CHARS:
            raise ApiError("too_long")
        channel.topic = topic
        return {"channel": self._api_channel(channel)}

    async def _conversations_set_purpose(self, args: JSON, token: str) -> JSON:
        channel = self._find_channel(args)
        if self.bot_user_id not in channel.members:
            raise ApiError("not_in_channel")
        purpose = _str_arg(args, "purpose")
        if len(purpose) > MAX_TOPIC_CHARS:
            raise ApiError("too_long")
        channel.purpose = purpose
        return {"channel": self._api_channel(channel)}

    async def _conversations_members(self, args: JSON, token: str) -> JSON:
        channel = self._find_channel(args)
        if channel.is_private and self.bot_user_id not in channel.members:
            raise ApiError("channel_not_found")
        page, nxt = _paginate(sorted(channel.members), args)
        return {"members": page, "response_metadata": {"next_cursor": nxt}}

    def _readable_channel(self, args: JSON) -> Channel:
        channel = self._find_channel(args)
        if self.bot_user_id not in channel.members:
            if channel.is_private:
                raise ApiError("channel_not_found")
            raise ApiError("not_in_channel")
        return channel

    async def _conversations_history(self, args: JSON, token: str) -> JSON:
        channel = self._readable_channel(args)
        with_meta = _truthy(args.get("include_all_metadata"))
        oldest = float(_str_arg(args, "oldest") or 0)
        latest = float(_str_arg(args, "latest") or "inf")
        inclusive = _truthy(args.get("inclusive"))
        selected = []
        for msg in reversed(channel.messages):
            if not msg.top_level:
                continue  # thread replies live in conversations.replies
            ts = float(msg.ts)
            below = ts <= latest if inclusive else ts < latest
            above = ts >= oldest if inclusive else ts > oldest
            if below and above:
                selected.append(msg.to_api(self.team_id, include_metadata=with_meta))
        page, nxt = _paginate(selected, args, max_limit=999)
        return {
            "messages": page,
            "has_more": bool(nxt),
            "pin_count": 0,
            "response_metadata": {"next_cursor": nxt},
        }

    async def _conversations_replies(self, args: JSON, token: str) -> JSON:
        channel = self._readable_channel(args)
        ts = _str_arg(args, "ts")
        parent = channel.message(ts)
        if parent is None:
            raise ApiError("thread_not_found")
        with_meta = _truthy(args.get("include_all_metadata"))
        thread = [
            m.to_api(self.team_id, include_metadata=with_meta)
            for m in channel.messages
            if m.ts == ts or m.thread_ts == ts
        ]
        page, nxt = _paginate(thread, args)
        return {"messages": page, "has_more": bool(nxt), "response_metadata": {"next_cursor": nxt}}

    async def _conversations_archive(self, args: JSON, token: str) -> JSON:
        channel = self._find_channel(args)
        if channel.is_archived:
            raise ApiError("already_archived")
        if self.bot_user_id not in channel.members:
            raise ApiError("not_in_channel")
        channel.is_archived = True
        return {}

    async def _conversations_open(self, args: JSON, token: str) -> JSON:
        """Open (or find) the bot's DM with one person; multi-person DMs are not modelled."""
        users = _list_arg(args, "users")
        if not users and _str_arg(args, "channel"):
            channel = self._find_channel(args)
            if self.bot_user_id not in channel.members:
                raise ApiError("channel_not_found")
            if not channel.is_im:
                raise ApiError("method_not_supported_for_channel_type")
            existing: Channel | None = channel
        else:
            if not users:
                raise ApiError("users_list_not_supplied")
            if len(users) > 1:
                raise ApiError("too_many_users")
            user = self.users.get(users[0])
            if user is None:
                raise ApiError("user_not_found")
            if user.is_bot:
                raise ApiError("cannot_dm_bot")  # a bot token cannot DM a bot, itself included
            if user.deleted:
                raise ApiError("user_disabled")
            existing = self._existing_dm(user.id)
            channel = existing or self._dm_with(user.id)
        result: JSON = {"channel": {"id": channel.id}}
        if _truthy(args.get("return_im")):
            result["channel"] = self._api_channel(channel)
        if existing is not None:
            result["no_op"] = True
            result["already_open"] = True
        return result

    # ------------------------------------------------------------------ methods: chat

    async def _chat_post_message(self, args: JSON, token: str) -> JSON:
        channel = self._postable_channel(args)
        text, blocks = self._message_content(args)
        metadata = self._metadata(args)
        thread_ts = _str_arg(args, "thread_ts") or None
        if thread_ts is not None:
            parent = channel.message(thread_ts)
            if parent is not None:
                parent.reply_count += 1
                if parent.thread_ts is None:
                    parent.thread_ts = parent.ts
        unfurl = args.get("unfurl_links")
        msg = Message(
            ts=self._new_ts(),
            user=self.bot_user_id,
            text=text,
            blocks=blocks,
            thread_ts=thread_ts,
            metadata=metadata,
            bot_id=self.bot_id,
            unfurl_links=None if unfurl is None else _truthy(unfurl),
            broadcast=thread_ts is not None and _truthy(args.get("reply_broadcast")),
        )
        channel.messages.append(msg)
        self._notify(channel, msg)
        return {
            "channel": channel.id,
            "ts": msg.ts,
            "message": msg.to_api(self.team_id),
        }

    async def _chat_update(self, args: JSON, token: str) -> JSON:
        channel = self._find_channel(args)
        ts = _str_arg(args, "ts")
        msg = channel.message(ts)
        if msg is None:
            raise ApiError("message_not_found")
        if msg.user != self.bot_user_id:
            raise ApiError("cant_update_message")
        if channel.is_archived:
            raise ApiError("is_archived")
        text, blocks = self._message_content(args)
        metadata = self._metadata(args)
        edit_ts = self._new_ts()
        msg.edits.append(MessageVersion(msg.text, msg.blocks, msg.metadata, at=edit_ts))
        if "text" in args:
            msg.text = text
        if "blocks" in args:
            msg.blocks = blocks
        if metadata is not None:
            msg.metadata = metadata
        return {
            "channel": channel.id,
            "ts": msg.ts,
            "text": msg.text,
            "message": msg.to_api(self.team_id),
        }

    async def _chat_post_ephemeral(self, args: JSON, token: str) -> JSON:
        channel = self._find_channel(args)
        user = _str_arg(args, "user")
        if user not in self.users:
            raise ApiError("user_not_found")
        if channel.is_archived:
            raise ApiError("is_archived")
        if user not in channel.members:
            raise ApiError("user_not_in_channel")
        text, blocks = self._message_content(args)
        ts = self._new_ts()
        thread_ts = _str_arg(args, "thread_ts") or None
        self.ephemerals.append(Ephemeral(channel.id, user, text, blocks, ts, thread_ts))
        return {"message_ts": ts}

    async def _chat_get_permalink(self, args: JSON, token: str) -> JSON:
        channel = self._find_channel(args)
        ts = _str_arg(args, "message_ts")
        if channel.message(ts) is None:
            raise ApiError("message_not_found")
        link = f"{_PERMALINK_HOST}/archives/{channel.id}/p{ts.replace('.', '')}"
        return {"channel": channel.id, "permalink": link}

    # ------------------------------------------------------------------ methods: views

    def _check_trigger(self, args: JSON) -> None:
        trigger = _str_arg(args, "trigger_id")
        if not trigger:
            raise ApiError("invalid_trigger_id")
        issued = self._triggers.get(trigger)
        if issued is None:
            return
        if trigger in self._used_triggers:
            raise ApiError("trigger_exchanged")
        if time.monotonic() - issued > self.trigger_ttl:
            raise ApiError("expired_trigger_id")
        self._used_triggers.add(trigger)

    def _parse_view(self, args: JSON, *, kind: str) -> JSON:
        view = args.get("view")
        if not isinstance(view, dict):
            raise _invalid_view("view must be a JSON object [json-pointer:/view]")
        if view.get("type") != kind:
            raise _invalid_view(f"must be '{kind}' [json-pointer:/view/type]")
        blocks = view.get("blocks")
        if not isinstance(blocks, list):
            raise _invalid_view("missing required field: blocks [json-pointer:/view]")
        if kind == "modal":
            title_len = _plain_text_len(view.get("title"))
            if title_len is None:
                raise _invalid_view("title must be plain_text [json-pointer:/view/title]")
            if title_len > MAX_VIEW_TITLE_CHARS:
                raise _invalid_view(
                    f"must be less than {MAX_VIEW_TITLE_CHARS + 1} characters "
                    "[json-pointer:/view/title/text]"
                )
            for key in ("submit", "close"):
                if key in view and view[key] is not None:
                    length = _plain_text_len(view[key])
                    if length is None or length > MAX_VIEW_TITLE_CHARS:
                        raise _invalid_view(f"invalid {key} [json-pointer:/view/{key}]")
            has_inputs = any(isinstance(b, dict) and b.get("type") == "input" for b in blocks)
            if has_inputs and not view.get("submit"):
                raise _invalid_view(
                    "must provide a submit text when the modal contains input blocks"
                )
        metadata = view.get("private_metadata", "")
        if not isinstance(metadata, str) or len(metadata) > MAX_PRIVATE_METADATA_CHARS:
            raise _invalid_view("invalid private_metadata [json-pointer:/view/private_metadata]")
        _validate_blocks(blocks, max_blocks=MAX_VIEW_BLOCKS)
        return view

    def _view_object(self, view: JSON, *, view_id: str, root_id: str | None = None) -> JSON:
        return {
            "id": view_id,
            "team_id": self.team_id,
            "type": view["type"],
            "blocks": view["blocks"],
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}",
            "title": view.get("title"),
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "close": view.get("close"),
            "submit": view.get("submit"),
            "previous_view_id": None,
            "root_view_id": root_id or view_id,
            "app_id": self.app_id,
            "external_id": view.get("external_id", ""),
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }

    async def _views_open(self, args: JSON, token: str) -> JSON:
        view = self._parse_view(args, kind="modal")
        self._check_trigger(args)
        obj = self._view_object(view, view_id=self._new_id("V"))
        self.views.append(obj)
        return {"view": obj}

    async def _views_push(self, args: JSON, token: str) -> JSON:
        view = self._parse_view(args, kind="modal")
        self._check_trigger(args)
        obj = self._view_object(view, view_id=self._new_id("V"))
        self.views.append(obj)
        return {"view": obj}

    async def _views_update(self, args: JSON, token: str) -> JSON:
        view_id = _str_arg(args, "view_id")
        external_id = _str_arg(args, "external_id")
        if not view_id and not external_id:
            raise ApiError("invalid_arguments")
        index, existing = next(
            (
                (i, v)
                for i, v in enumerate(self.views)
                if (view_id and v["id"] == view_id)
                or (external_id and v.get("external_id") == external_id)
            ),
            (-1, {}),
        )
        if index < 0:
            raise ApiError("not_found")
        given_hash = _str_arg(args, "hash")
        if given_hash and given_hash != existing["hash"]:
            raise ApiError("hash_conflict")
        view = self._parse_view(args, kind=existing["type"])
        obj = self._view_object(view, view_id=existing["id"], root_id=existing["root_view_id"])
        self.views[index] = obj
        return {"view": obj}

    async def _views_publish(self, args: JSON, token: str) -> JSON:
        user_id = _str_arg(args, "user_id")
        if not user_id:
            raise ApiError("invalid_arguments")
        view = self._parse_view(args, kind="home")
        previous = self.home_views.get(user_id)
        obj = self._view_object(view, view_id=previous["id"] if previous else self._new_id("V"))
        self.home_views[user_id] = obj
        return {"view": obj}

    # ------------------------------------------------------------------ methods: reactions

    async def _reactions_add(self, args: JSON, token: str) -> JSON:
        channel = self._find_channel(args)
        name = _str_arg(args, "name").strip(":")
        if not name:
            raise ApiError("invalid_name")
        msg = channel.message(_str_arg(args, "timestamp"))
        if msg is None:
            raise ApiError("message_not_found")
        users = msg.reactions.setdefault(name, [])
        if self.bot_user_id in users:
            raise ApiError("already_reacted")
        users.append(self.bot_user_id)
        return {}

    async def _reactions_remove(self, args: JSON, token: str) -> JSON:
        channel = self._find_channel(args)
        name = _str_arg(args, "name").strip(":")
        msg = channel.message(_str_arg(args, "timestamp"))
        if msg is None:
            raise ApiError("message_not_found")
        users = msg.reactions.get(name) or []
        if self.bot_user_id not in users:
            raise ApiError("no_reaction")
        users.remove(self.bot_user_id)
        if not users:
            del msg.reactions[name]
        return {}

    # ------------------------------------------------------------------ methods: files

    async def _files_get_upload_url_external(self, args: JSON, token: str) -> JSON:
        filename = _str_arg(args, "filename")
        if not filename:
            raise ApiError("invalid_arguments")
        length = _int_arg(args, "length", -1)
        if length <= 0:
            raise ApiError("invalid_length")
        file = FakeFile(
            id=self._new_id("F"),
            filename=filename,
            length=length,
            alt_txt=args.get("alt_txt"),
        )
        self.files[file.id] = file
        key = uuid.uuid4().hex
        self._upload_keys[key] = file.id
        return {"upload_url": f"{self.base_url}/upload/v1/{key}", "file_id": file.id}

    async def _files_complete_upload_external(self, args: JSON, token: str) -> JSON:
        specs = args.get("files")
        if not isinstance(specs, list) or not specs:
            raise ApiError("invalid_arguments")
        files: list[FakeFile] = []
        for spec in specs:
            file = self.files.get(spec.get("id", "")) if isinstance(spec, dict) else None
            if file is None or file.content is None:
                raise ApiError("file_not_found")
            if file.completed:
                raise ApiError("file_already_completed")
            files.append(file)
            title = spec.get("title")
            file.title = title if isinstance(title, str) and title else file.filename
        channel_refs = [c for c in _str_arg(args, "channels").split(",") if c]
        if _str_arg(args, "channel_id"):
            channel_refs.insert(0, _str_arg(args, "channel_id"))
        channels = [self._postable_channel({"channel": ref}) for ref in channel_refs]
        initial_comment = _str_arg(args, "initial_comment")
        thread_ts = _str_arg(args, "thread_ts") or None
        for file in files:
            file.completed = True
            file.channels = [c.id for c in channels]
        objects = [f.to_api(user=self.bot_user_id, base_url=self.base_url) for f in files]
        for channel in channels:
            msg = Message(
                ts=self._new_ts(),
                user=self.bot_user_id,
                text=initial_comment,
                thread_ts=thread_ts,
                files=objects,
                bot_id=self.bot_id,
            )
            channel.messages.append(msg)
            self._notify(channel, msg)
        return {"files": objects}

    async def _files_info(self, args: JSON, token: str) -> JSON:
        """A file's object; until its upload is completed it is shared nowhere."""
        file = self.files.get(_str_arg(args, "file"))
        if file is None:
            raise ApiError("file_not_found")
        found = file.to_api(user=self.bot_user_id, base_url=self.base_url)
        public = [
            c for c in file.channels if c in self.channels and not self.channels[c].is_private
        ]
        private = [c for c in file.channels if c not in public]
        found["channels"], found["groups"] = public, private
        found["shares"] = {
            kind: {c: [{"ts": "0"}] for c in ids}
            for kind, ids in (("public", public), ("private", private))
            if ids
        }
        return {"file": found}

    async def _handle_upload(self, request: web.Request) -> web.Response:
        file_id = self._upload_keys.pop(request.match_info["key"], None)
        if file_id is None:
            return web.Response(status=404, text="invalid upload url")
        file = self.files[file_id]
        content: bytes
        if request.content_type == "multipart/form-data":
            form = await request.post()
            part = form.get("file") or form.get("filename")
            if isinstance(part, web.FileField):
                content = part.file.read()
            elif isinstance(part, str):
                content = part.encode()
            else:
                return web.Response(status=400, text="missing file part")
        else:
            content = await request.read()
        file.content = content
        return web.Response(text=f"OK - {len(content)}", content_type="text/plain")

    # ------------------------------------------------------------------ response URLs

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        """POSTs to response URLs; faults injected for the method name "response_url" apply."""
        queue = self._faults.get("response_url")
        if queue:
            fault = queue.popleft()
            if fault.kind == "rate_limit":
                return web.json_response(
                    {"ok": False, "error": "ratelimited"},
                    status=429,
                    headers={"Retry-After": str(fault.retry_after)},
                )
            if fault.kind == "fail":
                return web.json_response(
                    {"ok": False, "error": "internal_error"}, status=fault.status
                )
        url = f"{self.base_url}/response/{request.match_info['key']}"
        received = self.responses.get(url)
        if received is None:
            return web.json_response({"ok": False, "error": "expired_url"}, status=404)
        if len(received) >= RESPONSE_URL_MAX_USES:
            return web.json_response({"ok": False, "error": "used_url"}, status=404)
        try:
            body = json.loads(await request.text())
        except json.JSONDecodeError:
            return web.json_response({"ok": False, "error": "invalid_payload"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"ok": False, "error": "invalid_payload"}, status=400)
        if not body.get("delete_original"):
            try:
                self._message_content(body)
            except ApiError as exc:
                return web.json_response({"ok": False, "error": exc.error, **exc.extra})
        received.append(body)
        return web.json_response({"ok": True})

    # ------------------------------------------------------------------ Socket Mode

    async def _apps_connections_open(self, args: JSON, token: str) -> JSON:
        ticket = uuid.uuid4().hex
        self._socket_tickets.add(ticket)
        url = f"ws://{self._host}:{self._port}/socket/{ticket}?app_id={self.app_id}"
        return {"url": url}

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.match_info["ticket"]
        if ticket not in self._socket_tickets:
            return web.Response(status=401, text="invalid ticket")
        self._socket_tickets.discard(ticket)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self._sockets),
                "debug_info": {
                    "host": "fakeslack",
                    "build_number": 1,
                    "approximate_connection_time": 3600,
                },
                "connection_info": {"app_id": self.app_id},
            }
        )
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except json.JSONDecodeError:
                    log.warning("FakeSlack: non-JSON socket message %r", msg.data)
                    continue
                envelope_id = data.get("envelope_id") if isinstance(data, dict) else None
                future = self._socket_acks.get(envelope_id or "")
                if future is not None and not future.done():
                    future.set_result(data)
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
        return ws

    async def wait_for_socket(self, timeout: float = 5.0) -> None:
        """Wait until a Socket Mode client is connected (``AssertionError`` on timeout)."""
        await self.wait_for(lambda: bool(self._sockets), timeout=timeout)

    async def socket_send(
        self,
        payload_type: str,
        payload: JSON,
        *,
        timeout: float = 5.0,
    ) -> JSON:
        """Send a Socket Mode envelope to the newest client; return its acknowledgement.

        ``payload_type`` is ``slash_commands``, ``interactive`` or ``events_api``. The
        returned dict is the client's ack message (``envelope_id`` and maybe ``payload``).
        """
        if payload_type not in ("slash_commands", "interactive", "events_api"):
            raise ValueError(f"unknown socket mode envelope type {payload_type!r}")
        await self.wait_for_socket(timeout)
        ws = self._sockets[-1]
        envelope_id = str(uuid.uuid4())
        envelope: JSON = {
            "envelope_id": envelope_id,
            "type": payload_type,
            "payload": payload,
            "accepts_response_payload": payload_type != "events_api",
        }
        if payload_type == "events_api":
            envelope["retry_attempt"] = 0
            envelope["retry_reason"] = ""
        future: asyncio.Future[JSON] = asyncio.get_running_loop().create_future()
        self._socket_acks[envelope_id] = future
        try:
            await ws.send_json(envelope)
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise AssertionError(
                f"FakeSlack.socket_send: no ack for {payload_type} envelope within {timeout}s"
            ) from None
        finally:
            self._socket_acks.pop(envelope_id, None)
