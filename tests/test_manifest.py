"""The Slack app manifest asks for exactly the scopes the bot's calls need, no more."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# Bot-token scopes each Web API method needs (Slack's method reference), by the channel
# types the bot uses: public incident channels, a public or private announcement channel,
# direct messages.
METHOD_SCOPES: dict[str, set[str]] = {
    "auth_test": set(),
    "chat_getPermalink": set(),
    "chat_postMessage": {"chat:write"},
    "chat_update": {"chat:write"},
    "conversations_create": {"channels:manage"},
    "conversations_history": {"channels:history", "groups:history", "im:history"},
    "conversations_replies": {"channels:history", "groups:history"},
    "conversations_invite": {"channels:manage"},
    "conversations_join": {"channels:join"},
    "conversations_list": {"channels:read", "groups:read"},
    "conversations_open": {"im:write"},
    "conversations_setTopic": {"channels:manage"},
    "usergroups_users_list": {"usergroups:read"},
    "users_info": {"users:read"},
    "views_open": set(),
    "views_publish": set(),
    "files_getUploadURLExternal": {"files:write"},
    "files_completeUploadExternal": {"files:write"},
    "files_info": {"files:read"},
    "reactions_add": {"reactions:write"},
    "reactions_remove": {"reactions:write"},
}
# Not calls but features: the slash command, and 📌 reaction events.
FEATURE_SCOPES = {"commands", "reactions:read"}
CALL = re.compile(
    r"\b(?:client|web)\.((?:auth|chat|conversations|usergroups|users|views|files|reactions)_\w+)\("
)


def called_methods() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "bot").rglob("*.py"):
        if "devtools" in path.parts:
            continue
        found |= set(CALL.findall(path.read_text()))
    return found


def test_every_called_method_is_known() -> None:
    unknown = called_methods() - set(METHOD_SCOPES)
    assert not unknown, f"add the scopes of {unknown} to METHOD_SCOPES (and the manifest)"


def test_manifest_scopes_match_the_calls() -> None:
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    asked = set(manifest["oauth_config"]["scopes"]["bot"])
    needed = FEATURE_SCOPES.union(*(METHOD_SCOPES[m] for m in called_methods()))
    assert asked == needed, f"missing: {needed - asked}; unused: {asked - needed}"
