"""Carries out the Slack jobs the service recorded, idempotently.

What Slack returns (channel id, message ts) is written back at once, so a job run again
after a crash or a retry picks up where it stopped instead of doing a step twice. Messages
carry the job id in their metadata: a retried post first looks for its own message in the
channel's recent history, so a post whose answer was lost is not posted again.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.clock import Clock, SystemClock
from bot.domain.naming import channel_name
from bot.domain.policy import Policy
from bot.integrations.email import Mailer
from bot.integrations.pagerduty import PagerDuty, pd_severity
from bot.playbooks import PlaybookSet, builtin_generic
from bot.service.incidents import ANNOUNCE, CHANNEL, IncidentService, snapshot
from bot.service.ports import IncidentRecord, Job, JobFailed, JobKind, JobRetry, NewJob, Store
from bot.slack import blocks, texts
from bot.slack.directory import SlackDirectory

log = logging.getLogger(__name__)

CAPTURED = "white_check_mark"  # the bot's mark on a message it put on the timeline

_TRANSIENT = {
    "ratelimited",
    "fatal_error",
    "internal_error",
    "service_unavailable",
    "request_timeout",
    "team_added_to_org",
}
_CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{6,}$")
METADATA_EVENT = "incident_bot_message"


def classify(exc: Exception) -> Exception:
    """Turn a Slack or network error into JobRetry (transient) or JobFailed (permanent)."""
    if isinstance(exc, SlackApiError):
        status = exc.response.status_code
        error = str(exc.response.get("error") or f"HTTP {status}")
        if status == 429:
            header = exc.response.headers.get("Retry-After") or exc.response.headers.get(
                "retry-after"
            )
            after = float(header[0] if isinstance(header, list) else header or 1)
            return JobRetry(f"rate limited ({error})", after=after, paced=True)
        if status >= 500 or error in _TRANSIENT:
            return JobRetry(error)
        return JobFailed(error)
    if isinstance(exc, aiohttp.ClientError | TimeoutError | asyncio.TimeoutError | OSError):
        return JobRetry(f"network: {type(exc).__name__}: {exc}")
    return exc


class SlackExecutor:
    def __init__(
        self,
        *,
        client: AsyncWebClient,
        store: Store,
        policy: Policy,
        pagerduty: PagerDuty | None = None,
        playbooks: PlaybookSet | None = None,
        directory: SlackDirectory | None = None,
        mailer: Mailer | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.mailer = mailer
        self.clock = clock or SystemClock()
        self.directory = directory or SlackDirectory(client)
        self.store = store
        self.policy = policy
        self.pagerduty = pagerduty or PagerDuty()
        self.playbooks = playbooks or PlaybookSet([builtin_generic()], policy=policy)
        self.service: IncidentService | None = None  # set once the service exists
        self._announce_id: str | None = None
        self._topics: dict[str, str] = {}
        self.bot_user: Callable[[], str | None] = lambda: None  # set once auth.test answers

    async def __call__(self, job: Job) -> dict[str, Any]:
        try:
            return await self._dispatch(job)
        except (JobRetry, JobFailed):
            raise
        except Exception as exc:
            raise classify(exc) from exc

    async def _dispatch(self, job: Job) -> dict[str, Any]:
        record = await self._record(job)
        match job.kind:
            case JobKind.CREATE_CHANNEL:
                return await self._create_channel(job, record)
            case JobKind.INVITE:
                return await self._invite(job, record)
            case JobKind.POST_ALERT:
                return await self._post_alert(job, record)
            case JobKind.ANNOUNCE:
                return await self._announce(job, record)
            case JobKind.SYNC:
                return await self._sync(record)
            case JobKind.POST:
                return await self._post(job, record)
            case JobKind.RESPOND:
                return await self._respond(job, record)
            case JobKind.PAGERDUTY:
                return await self._pagerduty(job, record)
            case JobKind.PAGE:
                return await self._reach(job, record)
            case JobKind.POST_PLAYBOOK | JobKind.SYNC_PLAYBOOK:
                return await self._playbook(job, record)
            case JobKind.CAPTURE:
                return await self._capture(job, record)
            case JobKind.POSTMORTEM:
                return await self._postmortem(job, record)
            case JobKind.EMAIL:
                return await self._email(job, record)
        raise JobFailed(f"unknown job kind {job.kind}")

    async def _record(self, job: Job, *, fresh: bool = False) -> IncidentRecord:
        """The job's incident: as the claim read it a moment ago, or (`fresh`) as it is now,
        for a job that waited on something and may find it changed."""
        if job.incident_id is None:
            raise JobFailed("job without an incident")
        if job.incident is not None and not fresh:
            return job.incident
        async with self.store.transaction(read_only=True) as tx:
            record = await tx.get(job.incident_id)
        if record is None:
            raise JobFailed(f"incident {job.incident_id} does not exist")
        return record

    def _alert(self, record: IncidentRecord, *, announce: bool = False) -> blocks.Message:
        state = snapshot(record.incident, self.policy)
        return blocks.alert(
            state,
            channel_id=record.slack.channel_id,
            paging=self.policy.get(record.incident.severity).declaration_targets,
            announce=announce,
        )

    # ---- steps -------------------------------------------------------------------------
    async def _create_channel(self, job: Job, record: IncidentRecord) -> dict[str, Any]:
        incident = record.incident
        if record.slack.channel_id:
            return {"channel": record.slack.channel_id, "name": record.slack.channel_name}
        for attempt in range(50):
            name = channel_name(incident.id, incident.title, attempt=attempt, drill=incident.drill)
            try:
                response = await self.client.conversations_create(name=name)
            except SlackApiError as exc:
                if exc.response.get("error") == "name_taken":
                    # Ours already, if an earlier run created it and the answer was lost.
                    adopted = await self._adoptable(name, record)
                    if adopted is not None:
                        log.warning("%s: adopted #%s, created by an earlier run", incident.id, name)
                        job.refs.update(channel_id=adopted, channel_name=name)
                        return {"channel": adopted, "name": name, "adopted": True}
                    continue
                failure = classify(exc)
                if isinstance(failure, JobFailed):
                    await self._tell_declarer_failed(job, record, str(failure))
                raise failure from exc
            channel = response["channel"]
            # Saved with the job's outcome; the incident's next Slack jobs are claimed in
            # that same transaction, after it. If this process dies first, the next run
            # finds the name taken and adopts the channel.
            job.refs.update(channel_id=channel["id"], channel_name=channel["name"])
            return {"channel": channel["id"], "name": channel["name"]}
        raise JobFailed("no free channel name after 50 suffixes")

    async def _adoptable(self, name: str, record: IncidentRecord) -> str | None:
        """The id of channel `name` if this bot created it for this incident: made by the
        bot, not before the declaration, and no other incident lives there."""
        bot = self.bot_user()
        if bot is None:
            return None
        since = record.incident.declared_at.timestamp() - 60
        cursor: str | None = None
        while True:
            page = await self.client.conversations_list(
                types="public_channel", exclude_archived=True, limit=1000, cursor=cursor
            )
            for channel in page.get("channels") or []:
                if channel.get("name") != name:
                    continue
                if channel.get("creator") != bot or float(channel.get("created") or 0) < since:
                    return None
                async with self.store.transaction(read_only=True) as tx:
                    taken = await tx.by_channel(str(channel["id"]))
                return None if taken is not None else str(channel["id"])
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return None

    async def _tell_declarer_failed(self, job: Job, record: IncidentRecord, error: str) -> None:
        log.error("%s: could not create the incident channel: %s", record.incident.id, error)
        url = job.payload.get("response_url")
        if url:
            text = texts.channel_failed(record.incident.id, error)
            await AsyncWebhookClient(url=str(url), timeout=10).send(
                text=text, response_type="ephemeral", replace_original=False
            )

    async def _channel(self, record: IncidentRecord) -> str:
        """The incident channel's id; a job that needs it waits while it is being created,
        and ends (instead of spinning) if Slack refused to create it for good."""
        if record.slack.channel_id:
            return record.slack.channel_id
        async with self.store.transaction(read_only=True) as tx:
            refused = await tx.channel_refused(record.incident.id)
        if refused:
            raise JobFailed(f"the incident channel could not be created ({refused})")
        raise JobRetry("the incident channel does not exist yet", after=1)

    async def _invite(self, job: Job, record: IncidentRecord) -> dict[str, Any]:
        """Bring the declarer, a new commander or role holder into the channel."""
        channel = await self._channel(record)
        bot = self.bot_user()
        users = [u for u in job.payload.get("users", []) if u and u != bot]
        if not users:
            return {}
        missed = await self._invite_all(channel, users)
        if missed:
            log.warning("%s: could not invite %s", record.incident.id, missed)
        return {"invited": [u for u in users if u not in {m["target"] for m in missed}]}

    async def _post_once(
        self,
        job: Job,
        *,
        channel: str,
        message: blocks.Message,
        step: str,
        thread_ts: str | None = None,
        broadcast: bool = False,
        ts_ref: str | None = None,
        refs: dict[str, str | None] | None = None,
    ) -> str:
        """Post unless an earlier run of this job already did (found by its metadata); in
        the thread of `thread_ts` when given, also shown in the channel with `broadcast`.

        `ts_ref` names the incident's Slack reference that keeps the message's ts (with
        `refs`, others to keep with it). Such a job posts this one message: the step and
        the references are saved with the job's outcome (`Job.refs`), in the transaction
        that records it. Any other step is saved at once, before the job goes on. Either
        way a run that dies before saving is followed by one that looks first."""
        keep = dict(refs or {})
        if ts_ref is not None:
            keep[ts_ref] = None
        done = job.result.get(step)
        if isinstance(done, str):  # posted by an earlier run, which saved the step
            if ts_ref is not None:
                job.refs.update(keep | {ts_ref: done})  # again: it costs nothing to repeat
            return done
        if job.attempts > 1:
            found = await self._find_posted(channel, job.id, step, thread_ts=thread_ts)
            if found:
                if ts_ref is not None:
                    job.refs.update(keep | {ts_ref: found})
                return found
        threading: dict[str, Any] = {}
        if thread_ts:
            threading = {"thread_ts": thread_ts, "reply_broadcast": broadcast}
        response = await self.client.chat_postMessage(
            channel=channel,
            text=message.text,
            blocks=message.blocks,
            unfurl_links=False,
            unfurl_media=False,
            metadata={
                "event_type": METADATA_EVENT,
                "event_payload": {"job": job.id, "step": step},
            },
            **threading,
        )
        ts = str(response["ts"])
        job.result[step] = ts
        if ts_ref is not None:
            job.refs.update(keep | {ts_ref: ts})
            return ts
        await self._save_result(job)
        return ts

    async def _find_posted(
        self, channel: str, job_id: int, step: str, *, thread_ts: str | None = None
    ) -> str | None:
        try:
            if thread_ts:
                history = await self.client.conversations_replies(
                    channel=channel, ts=thread_ts, limit=200, include_all_metadata=True
                )
            else:
                history = await self.client.conversations_history(
                    channel=channel, limit=100, include_all_metadata=True
                )
        except SlackApiError as exc:
            failure = classify(exc)
            if isinstance(failure, JobRetry):
                raise failure from exc  # cannot look now: never post blind
            return None
        for message in history.get("messages") or []:
            payload = (message.get("metadata") or {}).get("event_payload") or {}
            if payload.get("job") == job_id and payload.get("step") == step:
                return str(message["ts"])
        return None

    async def _post_alert(self, job: Job, record: IncidentRecord) -> dict[str, Any]:
        channel = await self._channel(record)
        if not record.slack.alert_ts:
            ts = await self._post_once(
                job, channel=channel, message=self._alert(record), step="alert", ts_ref="alert_ts"
            )
            record.slack.alert_ts = ts
        await self._set_topic(channel, record)
        return {"alert": record.slack.alert_ts}

    async def _set_topic(self, channel: str, record: IncidentRecord) -> None:
        topic = blocks.topic(snapshot(record.incident, self.policy))
        if self._topics.get(channel) == topic:
            return
        await self.client.conversations_setTopic(channel=channel, topic=topic)
        self._topics[channel] = topic

    async def announce_channel_id(self) -> str | None:
        """The announcement channel's id (looked up by name once), joined if need be."""
        wanted = self.policy.announce_channel
        if not wanted:
            return None
        if self._announce_id:
            return self._announce_id
        if _CHANNEL_ID.match(wanted):
            channel_id = wanted
        else:
            channel_id = None
            cursor: str | None = None
            while channel_id is None:
                page = await self.client.conversations_list(
                    types="public_channel,private_channel",
                    exclude_archived=True,
                    limit=1000,
                    cursor=cursor,
                )
                for channel in page.get("channels") or []:
                    if channel.get("name") == wanted:
                        channel_id = channel["id"]
                        if not channel.get("is_member"):
                            await self.client.conversations_join(channel=channel_id)
                        break
                cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
                if not cursor:
                    break
            if channel_id is None:
                raise JobFailed(f"announcement channel #{wanted} not found")
        self._announce_id = channel_id
        return channel_id

    async def _announce(self, job: Job, record: IncidentRecord) -> dict[str, Any]:
        if record.slack.announce_ts:
            return {"announce": record.slack.announce_ts}
        try:
            channel = await self.announce_channel_id()
        except JobFailed as failure:
            await self._notice(
                record, f"⚠️ Could not post the alert to the announcement channel: {failure}."
            )
            raise
        if channel is None:
            return {}
        try:
            ts = await self._post_once(
                job,
                channel=channel,
                message=self._alert(record, announce=True),
                step="announce",
                ts_ref="announce_ts",
                refs={"announce_channel_id": channel},
            )
        except SlackApiError as exc:
            refused = classify(exc)
            if isinstance(refused, JobFailed):
                await self._notice(record, texts.announce_failed(str(refused)))
            raise refused from exc
        return {"announce": ts}

    async def _notice(self, record: IncidentRecord, text: str) -> None:
        if record.slack.channel_id:
            try:
                await self.client.chat_postMessage(channel=record.slack.channel_id, text=text)
            except SlackApiError:
                log.warning("%s: could not post a notice", record.incident.id, exc_info=True)

    async def _sync(self, record: IncidentRecord) -> dict[str, Any]:
        message = self._alert(record)
        updated: dict[str, Any] = {}
        if record.slack.channel_id and record.slack.alert_ts:
            await self.client.chat_update(
                channel=record.slack.channel_id,
                ts=record.slack.alert_ts,
                text=message.text,
                blocks=message.blocks,
            )
            updated["alert"] = record.slack.alert_ts
            await self._set_topic(record.slack.channel_id, record)
        if record.slack.announce_channel_id and record.slack.announce_ts:
            copy = self._alert(record, announce=True)
            await self.client.chat_update(
                channel=record.slack.announce_channel_id,
                ts=record.slack.announce_ts,
                text=copy.text,
                blocks=copy.blocks,
            )
            updated["announce"] = record.slack.announce_ts
        return updated

    async def _post(self, job: Job, record: IncidentRecord) -> dict[str, Any]:
        message = blocks.event_message(
            str(job.payload["template"]), job.payload["incident"], job.payload.get("event", {})
        )
        posted: dict[str, Any] = {}
        for target in job.payload.get("to", [CHANNEL]):
            thread_ts: str | None = None
            if target == CHANNEL:
                channel: str | None = await self._channel(record)
            elif target == ANNOUNCE:
                # One announcement per incident: what follows goes in its thread.
                channel = record.slack.announce_channel_id
                thread_ts = record.slack.announce_ts
            else:
                channel = None
            if channel is None:
                continue
            posted[target] = await self._post_once(
                job,
                channel=channel,
                message=message,
                step=target,
                thread_ts=thread_ts,
                broadcast=bool(thread_ts) and self._broadcast(job),
            )
        return posted

    def _broadcast(self, job: Job) -> bool:
        """Replies in the announcement's thread that everyone in the channel should also see:
        the resolution, and a raise to one of the two highest severities."""
        template = str(job.payload.get("template"))
        if template == "resolved":
            return True
        if template != "severity_changed":
            return False
        event = job.payload.get("event") or {}
        try:
            before = self.policy.rank(str(event.get("previous")))
            after = self.policy.rank(str(event.get("severity")))
        except KeyError:  # a severity no longer in the policy: not worth a broadcast
            return False
        return after < before and after < 2

    async def _pagerduty(self, job: Job, record: IncidentRecord) -> dict[str, Any]:
        """Trigger, acknowledge or resolve a PagerDuty page; the channel hears about trouble
        with it."""
        action = str(job.payload.get("action", "trigger"))
        key = str(job.payload["routing_key"])
        try:
            result = await self.pagerduty.send(
                routing_key=key,
                action=action,
                dedup_key=record.incident.id,
                summary=str(job.payload.get("summary", "")),
                severity=pd_severity(self.policy.rank(record.incident.severity)),
            )
        except JobRetry as trouble:
            if job.attempts == 1:
                await self._notice(record, texts.pagerduty_trouble(str(trouble), retrying=True))
            raise
        except JobFailed as refusal:
            await self._notice(record, texts.pagerduty_trouble(str(refusal), retrying=False))
            raise
        if job.attempts > 1:
            await self._notice(record, texts.pagerduty_recovered(action))
        return result

    async def _email(self, job: Job, record: IncidentRecord) -> dict[str, Any]:
        """Email the severity's addresses. While the SMTP server is away the job waits in a
        lane of its own and the incident channel is told once; a refusal for good is said
        there too, and ends the job without sending again. What the channel is told is a
        message job recorded with the outcome it tells (posted once the channel exists,
        through Slack's rate limits), so that telling can never send the email again."""
        if job.result.get("sent"):
            return dict(job.result)
        refused = job.result.get("refused")
        if refused is not None:  # said already, in the transaction that recorded it
            raise JobFailed(str(refused))
        if self.mailer is None:
            raise JobFailed("SMTP_URL is not set: no email can be sent")
        try:
            result = await self.mailer.send(job.id, job.payload)
        except JobRetry as trouble:
            if not job.result.get("told"):
                job.result["told"] = True
                await self._tell(job, record, "email_trouble", error=str(trouble), retrying=True)
            raise
        except JobFailed as refusal:
            job.result["refused"] = str(refusal)
            await self._tell(job, record, "email_trouble", error=str(refusal), retrying=False)
            raise
        told = bool(job.result.get("told"))
        job.result.update(sent=True, **result)
        if told:
            await self._tell(job, record, "email_recovered", recipients=len(result.get("to") or []))
        return dict(job.result)

    async def _tell(self, job: Job, record: IncidentRecord, template: str, **event: Any) -> None:
        """Save the job's steps so far and, in the same transaction, record a message for
        the incident channel (`template`, rendered by `blocks.event_message`)."""
        incident = record.incident
        notice = NewJob(
            JobKind.POST,
            incident.id,
            {
                "template": template,
                "to": [CHANNEL],
                "event": event,
                "incident": {"id": incident.id, "drill": incident.drill},
            },
        )
        async with self.store.transaction() as tx:
            if not await tx.save_job_result(job.id, dict(job.result), worker=job.worker):
                raise JobRetry("another worker took this job over; it carries on")
            await tx.enqueue([notice], now=self.clock.now())

    # ---- reaching people ---------------------------------------------------------------
    async def _save_result(self, job: Job) -> None:
        async with self.store.transaction(autocommit=True) as tx:  # one statement
            if not await tx.save_job_result(job.id, dict(job.result), worker=job.worker):
                raise JobRetry("another worker took this job over; it carries on")

    async def _reach(self, job: Job, record: IncidentRecord) -> dict[str, Any]:
        """Page people: invite every user and user-group member to the incident channel,
        then send each a direct message. Each step's outcome is saved as it happens, so a
        retry neither invites nor messages anyone twice. Whoever cannot be reached is said
        in the channel; the others are paged regardless."""
        incident = record.incident
        why = str(job.payload.get("why"))
        if not incident.is_open or (incident.acknowledged and why in ("level", "ack_target")):
            # The page waited (Slack away) past the moment it mattered.
            return {"skipped": "resolved" if not incident.is_open else "acknowledged"}
        channel = await self._channel(record)
        result = job.result
        unreached: list[dict[str, str]] = list(result.get("unreached") or [])
        if "people" not in result:
            people: list[str] = []
            for target in job.payload.get("targets") or []:
                if target.startswith("S"):
                    try:
                        members = sorted(await self.directory.fetch_group(target))
                    except SlackApiError as exc:
                        failure = classify(exc)
                        if isinstance(failure, JobRetry):
                            raise failure from exc
                        unreached.append({"target": target, "step": "group", "error": str(failure)})
                        continue
                    people += members
                else:
                    people.append(target)
            bot = self.bot_user()
            result["people"] = [p for p in dict.fromkeys(people) if p != bot]
            result["unreached"] = unreached
            await self._save_result(job)
        people = [str(p) for p in result["people"]]
        if people and not result.get("invited"):
            unreached += await self._invite_all(channel, people)
            result["invited"] = True
            result["unreached"] = unreached
            await self._save_result(job)
        state = snapshot(incident, self.policy)
        message = blocks.page_message(state, dict(job.payload), channel_id=channel)
        for person in people:
            if f"dm:{person}" in result:
                continue
            try:
                opened = await self.client.conversations_open(users=person)
                dm = str((opened.get("channel") or {}).get("id"))
                await self._post_once(job, channel=dm, message=message, step=f"dm:{person}")
            except SlackApiError as exc:
                failure = classify(exc)
                if isinstance(failure, JobRetry):
                    raise failure from exc
                unreached.append(
                    {"target": person, "step": "direct message", "error": str(failure)}
                )
                result["unreached"] = unreached
                result[f"dm:{person}"] = "unreached"
                await self._save_result(job)
        if unreached and not result.get("notice"):
            await self._post_once(
                job,
                channel=channel,
                message=blocks.unreached_message(state, unreached),
                step="notice",
            )
            result["notice"] = True
        log.info(
            "%s: paged %d people (%s), %d not reached",
            incident.id,
            len(people),
            why,
            len(unreached),
        )
        return {
            "people": people,
            "unreached": unreached,
            "dm": {p: result.get(f"dm:{p}") for p in people},
        }

    async def _invite_all(self, channel: str, people: list[str]) -> list[dict[str, str]]:
        """Invite `people` (the valid ones even if some are not); returns who could not be."""
        try:
            response = await self.client.conversations_invite(
                channel=channel, users=",".join(people), force=True
            )
        except SlackApiError as exc:
            error = str(exc.response.get("error") or "")
            if error == "already_in_channel":
                return []
            failure = classify(exc)
            if isinstance(failure, JobRetry):
                raise failure from exc
            if len(people) == 1:
                return [{"target": people[0], "step": "invite", "error": error}]
            # Slack refused the whole list: one at a time, to invite all it accepts.
            missed: list[dict[str, str]] = []
            for person in people:
                missed += await self._invite_all(channel, [person])
            return missed
        return [
            {"target": str(item.get("user")), "step": "invite", "error": str(item.get("error"))}
            for item in response.get("errors") or []
            if item.get("error") != "already_in_channel"
        ]

    def _playbook_message(self, record: IncidentRecord, others: list[str]) -> blocks.Message | None:
        playbook = self.playbooks.get(record.incident.playbook or "")
        if playbook is None:
            return None
        return blocks.playbook_message(
            playbook,
            state=snapshot(record.incident, self.policy),
            ticks=record.incident.ticks,
            others=[p for p in (self.playbooks.get(i) for i in others) if p is not None],
        )

    async def _playbook(self, job: Job, record: IncidentRecord) -> dict[str, Any]:
        """Post the checklist (once), or re-render it after a tick."""
        channel = await self._channel(record)
        others = [str(i) for i in job.payload.get("others", [])]
        if job.kind == JobKind.POST_PLAYBOOK and not record.slack.playbook_ts:
            message = self._playbook_message(record, others)
            if message is None:
                return {}
            ts = await self._post_once(
                job, channel=channel, message=message, step="playbook", ts_ref="playbook_ts"
            )
            return {"playbook": ts}
        if record.slack.playbook_ts:
            message = self._playbook_message(record, [])
            if message is not None:
                await self.client.chat_update(
                    channel=channel,
                    ts=record.slack.playbook_ts,
                    text=message.text,
                    blocks=message.blocks,
                )
        return {"playbook": record.slack.playbook_ts}

    async def _capture(self, job: Job, record: IncidentRecord) -> dict[str, Any]:
        """Fetch a message someone pinned with 📌 and add it to the timeline, then mark it ✅
        so people see it is there; `undo`: the 📌 was taken off, so the ✅ goes too."""
        assert self.service is not None
        channel, ts = str(job.payload["channel"]), str(job.payload["ts"])
        if job.payload.get("undo"):
            await self._mark(channel, ts, on=False)
            return {"unmarked": True}
        history = await self.client.conversations_history(
            channel=channel, latest=ts, oldest=ts, inclusive=True, limit=1
        )
        found = next((m for m in history.get("messages") or [] if m.get("ts") == ts), None)
        if found is None:
            return {"captured": False, "reason": "message not found (deleted, or in a thread)"}
        link = await self.client.chat_getPermalink(channel=channel, message_ts=ts)
        added = await self.service.capture(
            channel_id=channel,
            ts=ts,
            author=found.get("user"),
            text=str(found.get("text") or ""),
            permalink=str(link.get("permalink") or ""),
            pinned_by=str(job.payload.get("by") or ""),
        )
        await self._mark(channel, ts, on=True)
        return {"captured": added}

    async def _mark(self, channel: str, ts: str, *, on: bool) -> None:
        """Add or take off the bot's ✅ on a message (already so: nothing to do)."""
        try:
            if on:
                await self.client.reactions_add(channel=channel, timestamp=ts, name=CAPTURED)
            else:
                await self.client.reactions_remove(channel=channel, timestamp=ts, name=CAPTURED)
        except SlackApiError as exc:
            if exc.response.get("error") not in {
                "already_reacted",
                "no_reaction",
                "message_not_found",
            }:
                raise

    async def _postmortem(self, job: Job, record: IncidentRecord) -> dict[str, Any]:
        """Build the post-mortem draft from the record and upload it into the channel."""
        assert self.service is not None
        if job.result.get("file"):
            return dict(job.result)
        channel = await self._channel(record)
        async with self.store.transaction(read_only=True) as tx:
            entries = await tx.timeline(record.incident.id)
        people = {record.incident.declared_by, *(e.actor for e in entries if e.actor)}
        people |= {p for p in (record.incident.commander, *record.incident.roles.values()) if p}
        people |= {a.owner for a in record.incident.actions if a.owner}
        names = {person: await self.directory.display_name(person) for person in people}
        filename, markdown = await self.service.postmortem(
            record.incident.id, name=lambda user: f"@{names.get(user, user)}"
        )
        comment = texts.postmortem_posted(
            record.incident.id,
            automatic=bool(job.payload.get("automatic")),
            drill=record.incident.drill,
        )
        content = markdown.encode()
        earlier = str(job.result.get("uploading") or "")
        if earlier and await self._shared_in(earlier, channel):
            # The last attempt's upload reached the channel; only its answer was lost.
            file_id = earlier
        else:
            file_id = await self._upload(
                job,
                channel=channel,
                content=content,
                filename=filename,
                title=f"Post-mortem draft: {record.incident.id}",
                comment=comment,
            )
        job.result.clear()
        job.result["file"] = file_id
        async with self.store.transaction() as tx:
            await tx.save_job_result(job.id, dict(job.result), worker=job.worker)
        return {"file": file_id, "bytes": len(content)}

    async def _upload(
        self, job: Job, *, channel: str, content: bytes, filename: str, title: str, comment: str
    ) -> str:
        """Slack's three-step upload, with the file id saved before the step whose answer
        may be lost (completing the upload shares the file into the channel)."""
        ticket = await self.client.files_getUploadURLExternal(
            filename=filename, length=len(content)
        )
        file_id = str(ticket["file_id"])
        job.result.clear()  # what is saved is what the job holds
        job.result["uploading"] = file_id
        async with self.store.transaction() as tx:
            await tx.save_job_result(job.id, dict(job.result), worker=job.worker)
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(str(ticket["upload_url"]), data=content) as response,
        ):
            if response.status != 200:
                raise JobRetry(f"file upload answered {response.status}")
        await self.client.files_completeUploadExternal(
            files=[{"id": file_id, "title": title}],
            channel_id=channel,
            initial_comment=comment,
        )
        return file_id

    async def _shared_in(self, file_id: str, channel: str) -> bool:
        """Whether the file exists and has been shared into `channel`."""
        try:
            info = await self.client.files_info(file=file_id)
        except SlackApiError as exc:
            if exc.response.get("error") == "file_not_found":
                return False
            raise
        file = info.get("file") or {}
        shares = file.get("shares") or {}
        places = {*(file.get("channels") or []), *(file.get("groups") or [])}
        for kind in ("public", "private"):
            places |= set(shares.get(kind) or {})
        return channel in places

    async def _respond(self, job: Job, record: IncidentRecord) -> dict[str, Any]:
        url = str(job.payload.get("url") or "")
        if not url:
            return {}
        if job.payload.get("template") == "channel_ready":
            text = texts.channel_ready(record.incident.id, await self._channel(record))
        else:
            text = str(job.payload.get("text", ""))
        # On the worker's kept-alive connections, like its Web API calls.
        webhook = AsyncWebhookClient(url=url, timeout=10, session=self.client.session)
        response = await webhook.send(text=text, response_type="ephemeral", replace_original=False)
        if response.status_code == 429 or response.status_code >= 500:
            raise JobRetry(f"response_url answered {response.status_code}")
        if response.status_code >= 400:
            # An expired response_url (30 minutes, 5 uses) is not worth retrying.
            return {"status": response.status_code}
        return {"status": response.status_code}
