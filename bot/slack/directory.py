"""What the workspace says about people: user-group members and who is a full member.

Both are looked up in Slack (`usergroups.users.list`, `users.info`) and cached for a few
minutes, so a burst of pages or clicks costs one call per group or person. Lookups made
while a person waits (a click, a command) are bounded in time; the worker's lookups wait
for Slack like any other job step.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.service.ports import LookupFailed

log = logging.getLogger(__name__)

CACHE_SECONDS = 300.0
UNKNOWN_SECONDS = 30.0  # after a failed look-up, don't ask again (and wait again) at once
WAIT_SECONDS = 1.0  # a person is waiting: Slack's 3 s covers this and the rest


class Standing(enum.StrEnum):
    """Who someone is in the workspace, as far as acting on incidents goes."""

    MEMBER = "member"  # a full member: may act
    GUEST = "guest"  # a multi- or single-channel guest
    EXTERNAL = "external"  # someone of another organisation (Slack Connect)
    UNKNOWN = "unknown"  # Slack did not answer in time: not held against them


class SlackDirectory:
    def __init__(
        self,
        client: AsyncWebClient,
        *,
        team_id: Callable[[], str | None] = lambda: None,
        cache_seconds: float = CACHE_SECONDS,
        wait_seconds: float = WAIT_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self._team_id = team_id
        self.cache_seconds = cache_seconds
        self.wait_seconds = wait_seconds
        self._monotonic = monotonic
        self._groups: dict[str, tuple[float, set[str]]] = {}
        self._users: dict[str, tuple[float, dict[str, Any]]] = {}
        self._unknown: dict[str, float] = {}  # user → when the look-up last failed

    def _fresh(self, stamp: float) -> bool:
        return self._monotonic() - stamp < self.cache_seconds

    async def fetch_group(self, group: str) -> set[str]:
        """The members of a user group (cached); Slack's errors are raised as they come."""
        cached = self._groups.get(group)
        if cached is not None and self._fresh(cached[0]):
            return set(cached[1])
        response = await self.client.usergroups_users_list(usergroup=group)
        members = {str(u) for u in response.get("users") or []}
        self._groups[group] = (self._monotonic(), members)
        return set(members)

    async def group_members(self, group: str) -> set[str]:
        """The `Directory` port: members of `group`, or LookupFailed within `wait_seconds`."""
        try:
            return await asyncio.wait_for(self.fetch_group(group), timeout=self.wait_seconds)
        except Exception as exc:  # Slack away, slow or refusing
            log.warning("could not look up user group %s: %s", group, type(exc).__name__)
            raise LookupFailed(group) from exc

    def _cached_user(self, user: str) -> dict[str, Any] | None:
        cached = self._users.get(user)
        return cached[1] if cached is not None and self._fresh(cached[0]) else None

    async def user_info(self, user: str) -> dict[str, Any]:
        """The user object `users.info` returns (cached); Slack's errors are raised."""
        cached = self._cached_user(user)
        if cached is not None:
            return cached
        response = await self.client.users_info(user=user)
        info = dict(response.get("user") or {})
        self._users[user] = (self._monotonic(), info)
        return info

    async def display_name(self, user: str) -> str:
        """How people know `user` (display name, real name, handle), or the id itself."""
        try:
            info = await self.user_info(user)
        except SlackApiError:
            return user
        profile = info.get("profile") or {}
        return str(
            profile.get("display_name") or profile.get("real_name") or info.get("name") or user
        )

    async def standing(self, user: str) -> Standing:
        """Whether `user` is a full member of this workspace (cached). UNKNOWN when Slack
        cannot say within `wait_seconds`: the caller lets them act."""
        info = self._cached_user(user)  # the usual case: answered without a task or a timer
        if info is None:
            failed = self._unknown.get(user)
            if failed is not None and self._monotonic() - failed < UNKNOWN_SECONDS:
                return Standing.UNKNOWN  # a burst during an outage waits once, not each time
            try:
                info = await asyncio.wait_for(self.user_info(user), timeout=self.wait_seconds)
            except Exception as exc:  # Slack away, slow or refusing: not the user's fault
                log.warning("users.info for %s failed: %s", user, type(exc).__name__)
                self._unknown[user] = self._monotonic()
                return Standing.UNKNOWN
            self._unknown.pop(user, None)
        team = self._team_id()
        if info.get("is_stranger") or (team and info.get("team_id") not in (None, team)):
            return Standing.EXTERNAL
        if info.get("is_restricted") or info.get("is_ultra_restricted"):
            return Standing.GUEST
        return Standing.MEMBER
