"""FakeSlack driven through the real slack_sdk clients, over HTTP, like the bot uses it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.devtools.fakeslack import FakeSlack, Message, Notification


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        server.add_user("U0ALICE", "alice", "Alice Liddell")
        server.add_user("U0BOB", "bob")
        yield server


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


async def api_error(call: Any) -> SlackApiError:
    """Await ``call`` and return the SlackApiError it must raise."""
    with pytest.raises(SlackApiError) as info:
        await call
    return info.value


# --------------------------------------------------------------------------- auth & plumbing


async def test_urls_and_auth_test(fake: FakeSlack, client: AsyncWebClient) -> None:
    assert fake.api_url == fake.base_url + "/api/"
    assert fake.base_url.startswith("http://127.0.0.1:")
    resp = await client.auth_test()
    assert resp["user_id"] == "U0BOT"
    assert resp["bot_id"] == "B0BOT"
    assert resp["team_id"] == "T0FAKE"


async def test_bad_tokens_and_unknown_method(fake: FakeSlack) -> None:
    wrong = AsyncWebClient(token="xoxb-wrong", base_url=fake.api_url)
    assert (await api_error(wrong.auth_test())).response["error"] == "invalid_auth"
    anonymous = AsyncWebClient(base_url=fake.api_url)
    assert (await api_error(anonymous.auth_test())).response["error"] == "not_authed"
    right = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    err = await api_error(right.api_call("chat.teleport"))
    assert err.response["error"] == "unknown_method"
    err = await api_error(right.apps_connections_open(app_token=fake.bot_token))
    assert err.response["error"] == "not_allowed_token_type"
    assert [c.error for c in fake.calls] == [
        "invalid_auth",
        "not_authed",
        "unknown_method",
        "not_allowed_token_type",
    ]


async def test_form_body_with_blocks_as_json_string(fake: FakeSlack) -> None:
    channel = fake.add_channel("general")
    form = {"channel": channel, "blocks": json.dumps([section("hi *there*")])}
    headers = {"Authorization": f"Bearer {fake.bot_token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(fake.api_url + "chat.postMessage", data=form, headers=headers) as resp,
    ):
        body = await resp.json()
    assert body["ok"] is True, body
    assert fake.channel("general").messages[0].blocks == [section("hi *there*")]
    assert fake.calls_to("chat.postMessage")[0].args["blocks"] == [section("hi *there*")]


# --------------------------------------------------------------------------- conversations


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", "invalid_name_required"),
        ("x" * 81, "invalid_name_maxlength"),
        ("Incident-1", "invalid_name_specials"),
        ("inc 1", "invalid_name_specials"),
        ("inc#1", "invalid_name_specials"),
    ],
)
async def test_channel_name_rules(client: AsyncWebClient, name: str, error: str) -> None:
    assert (await api_error(client.conversations_create(name=name))).response["error"] == error


async def test_create_channel_shape_and_name_taken(fake: FakeSlack, client: AsyncWebClient) -> None:
    resp = await client.conversations_create(name="inc-42_db-" + "x" * 70, is_private=True)
    channel = resp["channel"]
    assert channel["id"].startswith("C")
    assert channel["name"] == "inc-42_db-" + "x" * 70
    assert channel["is_channel"] is True
    assert channel["is_private"] is True
    assert channel["is_member"] is True
    assert channel["topic"]["value"] == ""
    assert fake.channel(channel["id"]).members == {"U0BOT"}
    err = await api_error(client.conversations_create(name="inc-42_db-" + "x" * 70))
    assert err.response["error"] == "name_taken"


async def test_membership_rules(fake: FakeSlack, client: AsyncWebClient) -> None:
    cid = fake.add_channel("ops", members=["U0ALICE"], bot_is_member=False)
    err = await api_error(client.chat_postMessage(channel=cid, text="hi"))
    assert err.response["error"] == "not_in_channel"
    err = await api_error(client.conversations_setTopic(channel=cid, topic="t"))
    assert err.response["error"] == "not_in_channel"
    err = await api_error(client.conversations_invite(channel=cid, users="U0BOB"))
    assert err.response["error"] == "not_in_channel"
    err = await api_error(client.chat_postMessage(channel="C0NOPE", text="hi"))
    assert err.response["error"] == "channel_not_found"
    err = await api_error(client.conversations_info(channel="C0NOPE"))
    assert err.response["error"] == "channel_not_found"

    joined = await client.conversations_join(channel=cid)
    assert joined["channel"]["is_member"] is True
    await client.chat_postMessage(channel=cid, text="hi")
    assert [m.text for m in fake.channel("ops").messages] == ["hi"]


async def test_invite_rules(fake: FakeSlack, client: AsyncWebClient) -> None:
    cid = fake.add_channel("inc-1", members=["U0ALICE"])
    err = await api_error(client.conversations_invite(channel=cid, users="U0NOBODY"))
    assert err.response["error"] == "user_not_found"
    err = await api_error(client.conversations_invite(channel=cid, users="U0BOT"))
    assert err.response["error"] == "cant_invite_self"
    err = await api_error(client.conversations_invite(channel=cid, users=["U0ALICE"]))
    assert err.response["error"] == "already_in_channel"
    await client.conversations_invite(channel=cid, users=["U0ALICE", "U0BOB"])
    assert fake.channel(cid).members == {"U0BOT", "U0ALICE", "U0BOB"}
    members = await client.conversations_members(channel=cid)
    assert sorted(members["members"]) == ["U0ALICE", "U0BOB", "U0BOT"]


async def test_set_topic(fake: FakeSlack, client: AsyncWebClient) -> None:
    cid = fake.add_channel("inc-2")
    err = await api_error(client.conversations_setTopic(channel=cid, topic="x" * 251))
    assert err.response["error"] == "too_long"
    resp = await client.conversations_setTopic(channel=cid, topic="SEV1 · checkout")
    assert resp["channel"]["topic"]["value"] == "SEV1 · checkout"
    assert fake.channel("inc-2").topic == "SEV1 · checkout"
    info = await client.conversations_info(channel=cid)
    assert info["channel"]["topic"]["value"] == "SEV1 · checkout"


async def test_conversations_list_pagination_and_filters(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    for i in range(5):
        fake.add_channel(f"c{i}", bot_is_member=i % 2 == 0)
    fake.add_channel("secret", is_private=True)
    fake.add_channel("hidden", is_private=True, bot_is_member=False)
    fake.channel("c4").is_archived = True

    names: list[str] = []
    cursor = ""
    pages = 0
    while True:
        resp = await client.conversations_list(limit=2, cursor=cursor or None)
        pages += 1
        names += [c["name"] for c in resp["channels"]]
        cursor = resp["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert pages == 3
    assert names == ["c0", "c1", "c2", "c3", "c4"]

    resp = await client.conversations_list(
        types="public_channel,private_channel", exclude_archived=True
    )
    assert [c["name"] for c in resp["channels"]] == ["c0", "c1", "c2", "c3", "secret"]
    err = await api_error(client.conversations_list(cursor="not-a-cursor"))
    assert err.response["error"] == "invalid_cursor"


# --------------------------------------------------------------------------- messages


async def test_invalid_blocks(fake: FakeSlack, client: AsyncWebClient) -> None:
    cid = fake.add_channel("general")
    err = await api_error(
        client.chat_postMessage(channel=cid, text="t", blocks=[section("x" * 3001)])
    )
    assert err.response["error"] == "invalid_blocks"
    too_many = [section(f"b{i}") for i in range(51)]
    err = await api_error(client.chat_postMessage(channel=cid, text="t", blocks=too_many))
    assert err.response["error"] == "invalid_blocks"
    unknown = [{"type": "no_such_block"}]
    err = await api_error(client.chat_postMessage(channel=cid, text="t", blocks=unknown))
    assert err.response["error"] == "invalid_blocks"
    assert fake.channel(cid).messages == []
    # the limits themselves are allowed
    await client.chat_postMessage(channel=cid, text="t", blocks=too_many[:50])
    await client.chat_postMessage(channel=cid, text="t", blocks=[section("x" * 3000)])
    assert len(fake.channel(cid).messages) == 2


async def test_text_rules(fake: FakeSlack, client: AsyncWebClient) -> None:
    cid = fake.add_channel("general")
    # (the SDK's typed wrapper warns without text, so call the method directly)
    err = await api_error(client.api_call("chat.postMessage", json={"channel": cid}))
    assert err.response["error"] == "no_text"
    err = await api_error(client.chat_postMessage(channel=cid, text="x" * 40_001))
    assert err.response["error"] == "msg_too_long"
    fake.channel(cid).is_archived = True
    err = await api_error(client.chat_postMessage(channel=cid, text="hi"))
    assert err.response["error"] == "is_archived"


async def test_post_update_history(fake: FakeSlack, client: AsyncWebClient) -> None:
    cid = fake.add_channel("inc-3")
    meta = {"event_type": "incident_declared", "event_payload": {"id": "INC-3"}}
    first = await client.chat_postMessage(
        channel=cid, text="declared", blocks=[section("*declared*")], metadata=meta
    )
    second = await client.chat_postMessage(channel=cid, text="reply", thread_ts=first["ts"])
    third = await client.chat_postMessage(channel=cid, text="status")
    assert first["ts"] < second["ts"] < third["ts"]
    assert first["channel"] == cid
    assert first["message"]["bot_id"] == "B0BOT"

    updated = await client.chat_update(channel=cid, ts=first["ts"], text="resolved")
    assert updated["ts"] == first["ts"]
    stored = fake.channel(cid).messages[0]
    assert stored.text == "resolved"
    assert stored.blocks == [section("*declared*")]
    assert [v.text for v in stored.edits] == ["declared"]
    assert stored.thread_ts == first["ts"]
    assert fake.channel(cid).messages[1].thread_ts == first["ts"]

    history = await client.conversations_history(channel=cid, include_all_metadata=True)
    msgs = history["messages"]
    assert [m["text"] for m in msgs] == ["status", "resolved"]  # newest first, no replies
    assert msgs[1]["metadata"] == meta
    assert msgs[1]["reply_count"] == 1
    assert "edited" in msgs[1]
    limited = await client.conversations_history(channel=cid, limit=1)
    assert [m["text"] for m in limited["messages"]] == ["status"]
    assert limited["has_more"] is True
    assert "metadata" not in (await client.conversations_history(channel=cid))["messages"][1]
    replies = await client.conversations_replies(channel=cid, ts=first["ts"])
    assert [m["text"] for m in replies["messages"]] == ["resolved", "reply"]


async def test_update_errors(fake: FakeSlack, client: AsyncWebClient) -> None:
    cid = fake.add_channel("inc-4", members=["U0ALICE"])
    fake.channel(cid).messages.append(Message(ts="1700000000.000100", user="U0ALICE", text="hi"))
    err = await api_error(client.chat_update(channel=cid, ts="1700000000.000100", text="x"))
    assert err.response["error"] == "cant_update_message"
    err = await api_error(client.chat_update(channel=cid, ts="1.2", text="x"))
    assert err.response["error"] == "message_not_found"
    posted = await client.chat_postMessage(channel=cid, text="ok")
    err = await api_error(
        client.chat_update(channel=cid, ts=posted["ts"], text="t", blocks=[section("y" * 3001)])
    )
    assert err.response["error"] == "invalid_blocks"
    assert fake.channel(cid).messages[-1].edits == []


async def test_ephemeral_permalink_reactions(fake: FakeSlack, client: AsyncWebClient) -> None:
    cid = fake.add_channel("inc-5", members=["U0ALICE"])
    err = await api_error(client.chat_postEphemeral(channel=cid, user="U0BOB", text="psst"))
    assert err.response["error"] == "user_not_in_channel"
    await client.chat_postEphemeral(channel=cid, user="U0ALICE", text="psst")
    assert [(e.channel, e.user, e.text) for e in fake.ephemerals] == [(cid, "U0ALICE", "psst")]

    posted = await client.chat_postMessage(channel=cid, text="hi")
    link = await client.chat_getPermalink(channel=cid, message_ts=posted["ts"])
    ts_digits = posted["ts"].replace(".", "")
    assert link["permalink"] == f"https://fake.slack.local/archives/{cid}/p{ts_digits}"
    await client.reactions_add(channel=cid, timestamp=posted["ts"], name="eyes")
    assert fake.channel(cid).messages[0].reactions == {"eyes": ["U0BOT"]}
    err = await api_error(client.reactions_add(channel=cid, timestamp=posted["ts"], name="eyes"))
    assert err.response["error"] == "already_reacted"


async def test_users_and_usergroups(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_usergroup("S0ONCALL", "oncall", users=["U0ALICE"])
    info = await client.users_info(user="U0ALICE")
    assert info["user"]["real_name"] == "Alice Liddell"
    assert info["user"]["name"] == "alice"
    err = await api_error(client.users_info(user="U0NOBODY"))
    assert err.response["error"] == "user_not_found"
    groups = await client.usergroups_list(include_users=True)
    assert [(g["id"], g["handle"], g["users"]) for g in groups["usergroups"]] == [
        ("S0ONCALL", "oncall", ["U0ALICE"])
    ]


async def test_user_objects_show_guests_deactivated_and_other_orgs(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    fake.add_user("U0GUEST", "guest", restricted=True)
    fake.add_user("U0SCG", "scg", "Single Channel", ultra_restricted=True)
    fake.add_user("W0EXT", "ext", team_id="T0OTHER")
    fake.add_user("U0GONE", "gone", deleted=True)

    def flags(user: dict[str, Any]) -> tuple[Any, ...]:
        keys = ("team_id", "is_restricted", "is_ultra_restricted", "deleted")
        return tuple(user[k] for k in keys)

    async def info(user_id: str) -> dict[str, Any]:
        user: dict[str, Any] = (await client.users_info(user=user_id))["user"]
        return user

    assert flags(await info("U0ALICE")) == ("T0FAKE", False, False, False)
    assert flags(await info("U0GUEST")) == ("T0FAKE", True, False, False)
    assert flags(await info("U0SCG")) == ("T0FAKE", True, True, False)
    assert flags(await info("U0GONE")) == ("T0FAKE", False, False, True)
    external = await info("W0EXT")  # Slack answers for Slack Connect users too
    assert flags(external) == ("T0OTHER", False, False, False)
    assert external["profile"]["team"] == "T0OTHER"
    members = (await client.users_list())["members"]
    assert {m["id"]: m["team_id"] for m in members}["W0EXT"] == "T0OTHER"


async def test_usergroup_members(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_user("U0GONE", "gone", deleted=True)
    fake.add_usergroup("S0ONCALL", "oncall", users=["U0ALICE", "U0GONE", "U0BOB"])
    resp = await client.usergroups_users_list(usergroup="S0ONCALL")
    assert resp["users"] == ["U0ALICE", "U0BOB"]
    resp = await client.usergroups_users_list(usergroup="S0ONCALL", include_disabled=True)
    assert resp["users"] == ["U0ALICE", "U0GONE", "U0BOB"]
    err = await api_error(client.usergroups_users_list(usergroup="S0NOPE"))
    assert err.response["error"] == "no_such_subteam"


# --------------------------------------------------------------------------- invitations


@pytest.mark.parametrize(
    ("user_id", "error"),
    [
        ("U0NOBODY", "user_not_found"),
        ("U0BOT", "cant_invite_self"),
        ("U0GONE", "cant_invite"),
        ("U0GUEST", "user_is_restricted"),
        ("U0SCG", "user_is_restricted"),
        ("W0EXT", "cant_invite"),
    ],
)
async def test_invite_refuses_who_slack_refuses(
    fake: FakeSlack, client: AsyncWebClient, user_id: str, error: str
) -> None:
    fake.add_user("U0GONE", "gone", deleted=True)
    fake.add_user("U0GUEST", "guest", restricted=True)
    fake.add_user("U0SCG", "scg", ultra_restricted=True)
    fake.add_user("W0EXT", "ext", team_id="T0OTHER")
    cid = fake.add_channel("inc-7")
    err = await api_error(client.conversations_invite(channel=cid, users=user_id))
    assert err.response["error"] == error
    assert err.response["errors"] == [{"user": user_id, "ok": False, "error": error}]
    # forcing does not help when nobody is valid
    err = await api_error(client.conversations_invite(channel=cid, users=user_id, force=True))
    assert err.response["error"] == error
    assert fake.channel(cid).members == {"U0BOT"}


async def test_invite_channel_errors(fake: FakeSlack, client: AsyncWebClient) -> None:
    cid = fake.add_channel("inc-8")
    err = await api_error(client.conversations_invite(channel=cid, users=""))
    assert err.response["error"] == "no_user"
    too_many = [f"U{i}" for i in range(1001)]
    err = await api_error(client.conversations_invite(channel=cid, users=too_many))
    assert err.response["error"] == "too_many_users"
    secret = fake.add_channel("secret", is_private=True, bot_is_member=False)
    err = await api_error(client.conversations_invite(channel=secret, users="U0ALICE"))
    assert err.response["error"] == "channel_not_found"
    dm = (await client.conversations_open(users="U0ALICE"))["channel"]["id"]
    err = await api_error(client.conversations_invite(channel=dm, users="U0BOB"))
    assert err.response["error"] == "method_not_supported_for_channel_type"
    fake.channel(cid).is_archived = True
    err = await api_error(client.conversations_invite(channel=cid, users="U0ALICE"))
    assert err.response["error"] == "is_archived"
    assert fake.channel(cid).members == {"U0BOT"}


async def test_invite_without_force_is_all_or_nothing(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    fake.add_user("U0GUEST", "guest", restricted=True)
    cid = fake.add_channel("inc-9")
    err = await api_error(
        client.conversations_invite(channel=cid, users="U0ALICE,U0NOBODY,U0BOB,U0GUEST")
    )
    assert err.response["error"] == "user_not_found"
    assert err.response["errors"] == [
        {"user": "U0NOBODY", "ok": False, "error": "user_not_found"},
        {"user": "U0GUEST", "ok": False, "error": "user_is_restricted"},
    ]
    assert fake.channel(cid).members == {"U0BOT"}


async def test_invite_with_force_invites_the_valid_ones(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    fake.add_user("U0GONE", "gone", deleted=True)
    cid = fake.add_channel("inc-10")
    resp = await client.conversations_invite(
        channel=cid, users=["U0GONE", "U0ALICE", "U0BOT", "U0BOB"], force=True
    )
    assert resp["ok"] is True
    assert resp["channel"]["id"] == cid
    assert resp["errors"] == [
        {"user": "U0GONE", "ok": False, "error": "cant_invite"},
        {"user": "U0BOT", "ok": False, "error": "cant_invite_self"},
    ]
    assert fake.channel(cid).members == {"U0BOT", "U0ALICE", "U0BOB"}


async def test_invite_skips_people_already_in_the_channel(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    fake.add_user("U0CAROL", "carol")
    cid = fake.add_channel("inc-11", members=["U0ALICE"])
    resp = await client.conversations_invite(channel=cid, users="U0ALICE,U0BOB")
    assert resp["ok"] is True
    assert resp["errors"] == [{"user": "U0ALICE", "ok": False, "error": "already_in_channel"}]
    assert fake.channel(cid).members == {"U0BOT", "U0ALICE", "U0BOB"}
    # an invalid user still fails the call, and is the error reported
    err = await api_error(client.conversations_invite(channel=cid, users="U0ALICE,U0NOBODY"))
    assert err.response["error"] == "user_not_found"
    err = await api_error(client.conversations_invite(channel=cid, users="U0BOB,U0ALICE"))
    assert err.response["error"] == "already_in_channel"
    assert [e["user"] for e in err.response["errors"]] == ["U0BOB", "U0ALICE"]
    await client.conversations_invite(channel=cid, users="U0CAROL,U0CAROL")  # duplicates
    assert fake.channel(cid).members == {"U0BOT", "U0ALICE", "U0BOB", "U0CAROL"}


# --------------------------------------------------------------------------- notifications


async def post(client: AsyncWebClient, channel: str, text: str, **kwargs: Any) -> str:
    ts: str = (await client.chat_postMessage(channel=channel, text=text, **kwargs))["ts"]
    return ts


async def test_mentions_notify_members_only(fake: FakeSlack, client: AsyncWebClient) -> None:
    cid = fake.add_channel("inc-12", members=["U0ALICE"])
    ts = await post(client, cid, "<@U0ALICE|alice> and <@U0BOB> please look")
    assert fake.notified("U0ALICE") == [Notification("U0ALICE", cid, ts, "mention")]
    assert fake.notified("U0BOB") == []  # not in the channel: Slack does not notify
    # membership counts at the moment of posting
    await client.conversations_invite(channel=cid, users="U0BOB")
    later = await post(client, cid, "<@U0BOB> now you are here")
    assert fake.notified("U0BOB") == [Notification("U0BOB", cid, later, "mention")]
    assert len(fake.notified("U0ALICE")) == 1


async def test_group_mentions_notify_group_members_in_the_channel(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    fake.add_user("U0CAROL", "carol")
    fake.add_usergroup("S0ONCALL", "oncall", users=["U0ALICE", "U0BOB", "U0CAROL"])
    cid = fake.add_channel("inc-13", members=["U0ALICE", "U0CAROL"])
    ts = await post(client, cid, "paging <!subteam^S0ONCALL|@oncall>")
    assert fake.notifications == [
        Notification("U0ALICE", cid, ts, "group"),
        Notification("U0CAROL", cid, ts, "group"),
    ]
    await post(client, cid, "paging <!subteam^S0NOPE>")
    assert len(fake.notifications) == 2


@pytest.mark.parametrize("broadcast", ["<!channel>", "<!here>", "<!everyone>", "<!here|here>"])
async def test_broadcasts_notify_every_member_but_the_bot(
    fake: FakeSlack, client: AsyncWebClient, broadcast: str
) -> None:
    cid = fake.add_channel("inc-14", members=["U0ALICE", "U0BOB"])
    ts = await post(client, cid, f"{broadcast} SEV1 declared")
    assert fake.notifications == [
        Notification("U0ALICE", cid, ts, "broadcast"),
        Notification("U0BOB", cid, ts, "broadcast"),
    ]
    assert fake.notified("U0BOT") == []


async def test_one_notification_per_person_most_specific_reason(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    fake.add_usergroup("S0ONCALL", "oncall", users=["U0ALICE", "U0BOB"])
    cid = fake.add_channel("inc-15", members=["U0ALICE", "U0BOB"])
    ts = await post(client, cid, "<!channel> <!subteam^S0ONCALL> <@U0ALICE> <@U0ALICE>")
    assert fake.notifications == [
        Notification("U0ALICE", cid, ts, "mention"),
        Notification("U0BOB", cid, ts, "group"),
    ]


async def test_escaped_mentions_notify_nobody(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_usergroup("S0ONCALL", "oncall", users=["U0ALICE"])
    cid = fake.add_channel("inc-16", members=["U0ALICE", "U0BOB"])
    text = "&lt;@U0ALICE&gt; &lt;!channel&gt; &lt;!here&gt; &lt;!subteam^S0ONCALL&gt; @U0BOB"
    await post(client, cid, text, blocks=[section(text)])
    assert fake.notifications == []


async def test_mentions_inside_blocks_notify(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_user("U0CAROL", "carol")
    fake.add_user("U0DAVE", "dave")
    cid = fake.add_channel("inc-17", members=["U0ALICE", "U0BOB", "U0CAROL", "U0DAVE"])
    blocks: list[dict[str, Any]] = [
        section("Commander: <@U0ALICE>"),
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": "*Comms*\n<@U0BOB>"},
                {"type": "plain_text", "text": "<@U0DAVE>"},  # plain_text: shown literally
            ],
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "cc <@U0CAROL|carol>"}]},
        {"type": "header", "text": {"type": "plain_text", "text": "<@U0DAVE>"}},
    ]
    ts = await post(client, cid, "Incident declared", blocks=blocks)
    assert fake.notifications == [
        Notification("U0ALICE", cid, ts, "mention"),
        Notification("U0BOB", cid, ts, "mention"),
        Notification("U0CAROL", cid, ts, "mention"),
    ]


async def test_thread_replies_notify_edits_do_not(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_user("U0GONE", "gone", deleted=True)
    cid = fake.add_channel("inc-18", members=["U0ALICE", "U0BOB", "U0GONE"])
    parent = await post(client, cid, "status")
    await client.chat_update(channel=cid, ts=parent, text="status <@U0ALICE> <!channel>")
    assert fake.notifications == []
    reply = await post(client, cid, "<@U0BOB> <@U0GONE> <@U0BOT> over to you", thread_ts=parent)
    assert fake.notifications == [Notification("U0BOB", cid, reply, "mention")]


async def test_file_comments_notify_like_messages(fake: FakeSlack, client: AsyncWebClient) -> None:
    cid = fake.add_channel("inc-19", members=["U0ALICE"])
    await client.files_upload_v2(
        channel=cid, content="x", filename="t.txt", initial_comment="<@U0ALICE> timeline"
    )
    ts = fake.channel(cid).messages[-1].ts
    assert fake.notifications == [Notification("U0ALICE", cid, ts, "mention")]


# --------------------------------------------------------------------------- direct messages


async def test_open_dm_and_post_to_it(fake: FakeSlack, client: AsyncWebClient) -> None:
    opened = await client.conversations_open(users="U0ALICE")
    dm = opened["channel"]["id"]
    assert dm.startswith("D")
    again = await client.conversations_open(users=["U0ALICE"])
    assert again["channel"]["id"] == dm
    assert again["already_open"] is True
    full = await client.conversations_open(users="U0ALICE", return_im=True)
    assert (full["channel"]["is_im"], full["channel"]["user"]) == (True, "U0ALICE")
    assert (await client.conversations_open(channel=dm))["channel"]["id"] == dm

    ts = await post(client, dm, "you are the incident commander for INC-20; <@U0BOB> helps")
    assert [m.text for m in fake.channel(dm).messages] == [
        "you are the incident commander for INC-20; <@U0BOB> helps"
    ]
    assert [m.ts for m in fake.dms("U0ALICE")] == [ts]
    assert fake.notifications == [Notification("U0ALICE", dm, ts, "dm")]  # bob is not in it
    assert fake.dms("U0BOB") == []
    history = await client.conversations_history(channel=dm)
    assert [m["ts"] for m in history["messages"]] == [ts]


@pytest.mark.parametrize(
    ("users", "error"),
    [
        ("U0NOBODY", "user_not_found"),
        ("U0GONE", "user_disabled"),
        ("U0BOT", "cannot_dm_bot"),
        ("", "users_list_not_supplied"),
    ],
)
async def test_open_dm_errors(
    fake: FakeSlack, client: AsyncWebClient, users: str, error: str
) -> None:
    fake.add_user("U0GONE", "gone", deleted=True)
    err = await api_error(client.conversations_open(users=users))
    assert err.response["error"] == error
    assert [c for c in fake.channels.values() if c.is_im] == []


# --------------------------------------------------------------------------- views


def modal(title: str = "Declare", *, blocks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": "declare",
        "title": {"type": "plain_text", "text": title},
        "submit": {"type": "plain_text", "text": "Go"},
        "blocks": blocks if blocks is not None else [section("hello")],
    }


async def test_views(fake: FakeSlack, client: AsyncWebClient) -> None:
    err = await api_error(client.views_open(trigger_id="", view=modal()))
    assert err.response["error"] == "invalid_trigger_id"
    err = await api_error(client.views_open(trigger_id="t1", view=modal("x" * 25)))
    assert err.response["error"] == "invalid_arguments"
    many = [section(str(i)) for i in range(101)]
    err = await api_error(client.views_open(trigger_id="t1", view=modal(blocks=many)))
    assert err.response["error"] == "invalid_blocks"
    assert fake.views == []

    opened = await client.views_open(trigger_id="t1", view=modal("x" * 24))
    view_id = opened["view"]["id"]
    assert view_id.startswith("V")
    assert [v["callback_id"] for v in fake.views] == ["declare"]
    await client.views_update(view_id=view_id, view=modal("Updated"))
    assert fake.views[0]["title"]["text"] == "Updated"
    err = await api_error(client.views_update(view_id="V0NOPE", view=modal()))
    assert err.response["error"] == "not_found"

    home = {"type": "home", "blocks": [section("your incidents")]}
    await client.views_publish(user_id="U0ALICE", view=home)
    assert fake.home_views["U0ALICE"]["blocks"] == [section("your incidents")]


async def test_issued_trigger_ids_expire_and_are_single_use(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    trigger = fake.new_trigger_id()
    await client.views_open(trigger_id=trigger, view=modal())
    err = await api_error(client.views_open(trigger_id=trigger, view=modal()))
    assert err.response["error"] == "trigger_exchanged"
    fake.trigger_ttl = 0.05
    late = fake.new_trigger_id()
    await asyncio.sleep(0.1)
    err = await api_error(client.views_open(trigger_id=late, view=modal()))
    assert err.response["error"] == "expired_trigger_id"


# --------------------------------------------------------------------------- fault injection


async def test_rate_limit_visible_to_client(fake: FakeSlack, client: AsyncWebClient) -> None:
    cid = fake.add_channel("general")
    fake.rate_limit("chat.postMessage", retry_after=7)
    err = await api_error(client.chat_postMessage(channel=cid, text="hi"))
    assert err.response.status_code == 429
    assert err.response.headers["Retry-After"] == "7"
    assert err.response["error"] == "ratelimited"
    await client.chat_postMessage(channel=cid, text="hi")  # consumed: next one passes
    calls = fake.calls_to("chat.postMessage")
    assert [(c.ok, c.error, c.status) for c in calls] == [
        (False, "ratelimited", 429),
        (True, None, 200),
    ]
    assert calls[0].args["text"] == "hi"
    assert len(fake.channel(cid).messages) == 1


async def test_injected_500_and_error(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.fail("auth.test", status=503, times=2)
    fake.error("users.info", "fatal_error")
    for _ in range(2):
        assert (await api_error(client.auth_test())).response.status_code == 503
    assert (await client.auth_test())["ok"] is True
    err = await api_error(client.users_info(user="U0ALICE"))
    assert (err.response.status_code, err.response["error"]) == (200, "fatal_error")
    assert (await client.users_info(user="U0ALICE"))["user"]["id"] == "U0ALICE"
    assert [c.status for c in fake.calls_to("auth.test")] == [503, 503, 200]


async def test_latency(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.latency("auth.test", 0.3)
    started = time.monotonic()
    await client.auth_test()
    assert time.monotonic() - started >= 0.3
    fake.latency("auth.test", 0)
    started = time.monotonic()
    await client.auth_test()
    assert time.monotonic() - started < 0.25


async def test_hold_keeps_every_answer_until_released(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    fake.hold()
    calls = [asyncio.create_task(client.auth_test()) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert not any(call.done() for call in calls)
    fake.release()
    assert all(r["ok"] for r in await asyncio.wait_for(asyncio.gather(*calls), 2))
    assert (await asyncio.wait_for(client.auth_test(), 2))["ok"] is True  # released for good


async def test_wait_for(fake: FakeSlack) -> None:
    box: list[int] = []
    asyncio.get_running_loop().call_later(0.05, box.append, 42)
    assert await fake.wait_for(lambda: box[0] if box else None, timeout=1) == 42
    with pytest.raises(AssertionError, match=r"still not met after 0\.05s"):
        await fake.wait_for(lambda: False, timeout=0.05)


# --------------------------------------------------------------------------- response URLs


async def test_response_urls(fake: FakeSlack) -> None:
    url = fake.new_response_url()
    assert url.startswith(fake.base_url + "/response/")
    webhook = AsyncWebhookClient(url)
    resp = await webhook.send(text="ack", response_type="ephemeral", replace_original=False)
    assert resp.status_code == 200
    resp = await webhook.send(blocks=[section("x" * 3001)])
    assert json.loads(resp.body)["error"] == "invalid_blocks"
    assert fake.responses[url] == [
        {"text": "ack", "response_type": "ephemeral", "replace_original": False}
    ]
    unknown = AsyncWebhookClient(fake.base_url + "/response/nope")
    assert (await unknown.send(text="x")).status_code == 404


# --------------------------------------------------------------------------- files


async def test_files_upload_v2_end_to_end(fake: FakeSlack, client: AsyncWebClient) -> None:
    cid = fake.add_channel("inc-6")
    resp = await client.files_upload_v2(
        channel=cid,
        content="timeline\n10:00 declared\n",
        filename="timeline.txt",
        title="Timeline",
        initial_comment="Here is the timeline",
    )
    file_id = resp["file"]["id"]
    assert fake.files[file_id].content == b"timeline\n10:00 declared\n"
    assert fake.files[file_id].title == "Timeline"
    msg = fake.channel(cid).messages[-1]
    assert msg.text == "Here is the timeline"
    assert [f["id"] for f in msg.files] == [file_id]
    assert [c.method for c in fake.calls] == [
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
    ]
    assert fake.calls[0].args["length"] == str(len(b"timeline\n10:00 declared\n"))

    other = fake.add_channel("elsewhere", bot_is_member=False)
    with pytest.raises(SlackApiError) as info:
        await client.files_upload_v2(channel=other, content="x", filename="x.txt")
    assert info.value.response["error"] == "not_in_channel"


# --------------------------------------------------------------------------- socket mode


async def test_socket_mode_roundtrip(fake: FakeSlack) -> None:
    app_client = AsyncWebClient(token=fake.app_token, base_url=fake.api_url)
    url = (await app_client.apps_connections_open(app_token=fake.app_token))["url"]
    assert url.startswith(f"ws://127.0.0.1:{fake.base_url.rsplit(':', 1)[1]}/socket/")

    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        hello = await ws.receive_json(timeout=2)
        assert hello["type"] == "hello"
        await fake.wait_for_socket(timeout=1)

        payload = {"command": "/incident", "text": "declare db down", "user_id": "U0ALICE"}
        sending = asyncio.create_task(fake.socket_send("slash_commands", payload))
        envelope = await ws.receive_json(timeout=2)
        assert envelope["type"] == "slash_commands"
        assert envelope["payload"] == payload
        assert envelope["accepts_response_payload"] is True
        ack = {"envelope_id": envelope["envelope_id"], "payload": {"text": "on it"}}
        await ws.send_json(ack)
        assert await sending == ack

        events = asyncio.create_task(fake.socket_send("events_api", {"event": {}}, timeout=0.2))
        unanswered = await ws.receive_json(timeout=2)
        assert unanswered["accepts_response_payload"] is False
        with pytest.raises(AssertionError, match="no ack"):
            await events

    # a ticket is single use
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(url)


async def test_socket_mode_with_slack_sdk_client(fake: FakeSlack) -> None:
    web_client = AsyncWebClient(base_url=fake.api_url)
    sm = SocketModeClient(app_token=fake.app_token, web_client=web_client)
    received: list[SocketModeRequest] = []

    async def listener(client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        received.append(req)
        ack = SocketModeResponse(envelope_id=req.envelope_id, payload={"text": "ok"})
        await client.send_socket_mode_response(ack)

    sm.socket_mode_request_listeners.append(listener)
    try:
        await sm.connect()  # type: ignore[no-untyped-call]
        await fake.wait_for_socket()
        ack = await fake.socket_send("slash_commands", {"command": "/incident", "text": "x"})
        assert ack["payload"] == {"text": "ok"}
        assert [r.type for r in received] == ["slash_commands"]
        assert received[0].payload["text"] == "x"
    finally:
        await sm.close()  # type: ignore[no-untyped-call]
    assert [c.method for c in fake.calls] == ["apps.connections.open"]
