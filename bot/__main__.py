"""Composition root and command line.

python -m bot                      serve (HTTP, or Socket Mode when SLACK_APP_TOKEN is set)
python -m bot migrate              apply database migrations and exit
python -m bot policy check FILE    validate a policy file
python -m bot demo                 a scripted incident against a local Slack stand-in
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from bot import logs
from bot.config import Settings, SettingsError, load_settings
from bot.domain.policy import PolicyError, format_duration, load_policy


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


async def _serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, which also end a start-up still under way (migrating,
    asking Slack)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as held:
        starting = asyncio.create_task(_start(settings, held))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return
        starting.result()  # a configuration error ends here
        await stopping


async def _start(settings: Settings, held: contextlib.AsyncExitStack) -> None:
    """Start serving; what must be released at the end is pushed on `held`.

    A refused app-level token, then a SQLite database another process serves, stop start-up
    before anything else, in one line each (neither check imports the database code).
    """
    from bot.slack.socketmode import socket_mode
    from bot.store.single import single_process

    socket = socket_mode(settings)
    if socket is not None:
        await socket.check()
    held.enter_context(single_process(settings.database_url))
    from bot.runtime import Runtime

    runtime = await Runtime.create(settings, socket=socket)
    held.push_async_callback(runtime.close)
    await runtime.start()


async def _migrate(settings: Settings) -> None:
    from bot.store.db import Database

    database = Database(settings.database_url)
    try:
        await database.migrate()
    finally:
        await database.dispose()
    print("database is at the newest schema")


async def _export_postmortem(incident_id: str, out: Path | None) -> int:
    """Needs only the database (DATABASE_URL, POLICY_FILE from the environment or .env).

    People are named as Slack knows them (`users.info`) when SLACK_BOT_TOKEN (and, for a
    stand-in, SLACK_API_URL) is set; otherwise by the names the record holds, else by id. A
    SQLite database that does not exist is an error: the export never creates one.
    """
    from pydantic import SecretStr, ValidationError

    from bot.clock import SystemClock
    from bot.config import DEFAULT_SLACK_API_URL, StorageSettings
    from bot.domain.errors import NotFound
    from bot.domain.postmortem import recorded_names
    from bot.service.incidents import IncidentService
    from bot.store.db import Database
    from bot.store.repository import SqlStore
    from bot.store.single import sqlite_file

    class ExportSettings(StorageSettings):
        slack_bot_token: SecretStr | None = None
        slack_api_url: str = DEFAULT_SLACK_API_URL

    try:
        settings = ExportSettings()
    except ValidationError as error:
        problem = error.errors(include_input=False, include_url=False)[0]
        where = str(problem["loc"][0]).upper() if problem["loc"] else "settings"
        message = str(problem["msg"]).removeprefix("Value error, ")
        print(f"configuration error: {where} {message}", file=sys.stderr)
        return 2
    database_file = sqlite_file(settings.database_url)
    if database_file is not None and not await asyncio.to_thread(os.path.isfile, database_file):
        print(f"no database at {database_file} (DATABASE_URL): nothing to export", file=sys.stderr)
        return 1
    token = settings.slack_bot_token.get_secret_value().strip() if settings.slack_bot_token else ""
    wanted = incident_id.upper()
    database = Database(settings.database_url)
    try:
        await database.migrate()
        service = IncidentService(
            store=SqlStore(database), policy=load_policy(settings.policy_file), clock=SystemClock()
        )
        people: set[str] = set()

        def collect(user: str) -> str:
            people.add(user)
            return user

        await service.postmortem(wanted, name=collect)  # who the draft names
        names = recorded_names(await service.timeline(wanted))
        if token and people:
            names.update(await _slack_names(sorted(people), token, settings.slack_api_url))
        filename, markdown = await service.postmortem(
            wanted, name=lambda user: f"@{names.get(user, user)}"
        )
    except (NotFound, PolicyError) as error:
        print(error, file=sys.stderr)
        return 1
    finally:
        await database.dispose()
    target = out or Path(filename)
    target.write_text(markdown, encoding="utf-8")
    print(f"wrote {target} ({len(markdown.splitlines())} lines)")
    return 0


async def _slack_names(users: list[str], token: str, api_url: str) -> dict[str, str]:
    """How Slack names each user (display name, else real name, else handle); a user whose
    look-up fails is left out, silently (the draft then shows the id)."""
    from slack_sdk.web.async_client import AsyncWebClient

    client = AsyncWebClient(
        token=token, base_url=api_url if api_url.endswith("/") else api_url + "/", timeout=10
    )

    async def look_up(user: str) -> str:
        try:
            response = await client.users_info(user=user)
        except Exception:  # Slack away, refusing, or no such user: the draft shows the id
            return ""
        info = response.get("user") or {}
        profile = info.get("profile") or {}
        found = (
            profile.get("display_name")
            or profile.get("real_name")
            or info.get("real_name")
            or info.get("name")
        )
        return str(found or "").strip()

    found = await asyncio.gather(*(look_up(user) for user in users))
    return {user: name for user, name in zip(users, found, strict=True) if name}


def policy_check(path: Path, playbooks_dir: Path | None = None) -> int:
    from bot.playbooks import PlaybookError, load_playbooks

    folder = playbooks_dir or Path(os.environ.get("PLAYBOOKS_DIR", "playbooks"))
    try:
        policy = load_policy(path)
        playbooks = load_playbooks(folder, policy=policy)
    except (PolicyError, PlaybookError) as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{path}: OK")
    announce = f"#{policy.announce_channel}" if policy.announce_channel else "none"
    print(f"  announcement channel: {announce}")
    for severity in policy.severities:
        update = format_duration(severity.update_interval) if severity.update_interval else "none"
        chain = ", ".join(
            f"{format_duration(level.after)}→{' '.join(level.notify) or 'nobody'}"
            for level in severity.escalation
        )
        print(
            f"  {severity.name} ({', '.join(severity.aliases) or 'no aliases'}): "
            f"ack {format_duration(severity.ack_timeout)}, updates {update}, "
            f"resolve {format_duration(severity.resolution_target)}; escalation: {chain or 'none'}"
        )
    print(f"  playbooks ({folder}): {len(playbooks)}, generic: {playbooks.generic.id}")
    return 0


def policy_simulate(
    word: str, path: Path | None, raise_to: str | None = None, at: str | None = None
) -> int:
    from bot.domain.policy import parse_duration
    from bot.simulate import simulate

    if path is None and os.environ.get("POLICY_FILE"):
        path = Path(os.environ["POLICY_FILE"])
    try:
        policy = load_policy(path)
        lines = simulate(
            policy,
            word,
            raise_to=raise_to,
            raise_at=parse_duration(at) if at else None,
        )
    except (PolicyError, ValueError) as error:
        print(error, file=sys.stderr)
        return 1
    print(f"If nobody answers a {policy.get(word).name} incident ({path or 'built-in policy'}):")
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the bot (default)")
    sub.add_parser("migrate", help="apply database migrations")
    policy = sub.add_parser("policy", help="policy tools")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_sub.add_parser("check", help="validate a policy file (and the playbooks)")
    check.add_argument("file", type=Path)
    check.add_argument(
        "--playbooks", type=Path, default=None, help="playbooks folder (default: PLAYBOOKS_DIR)"
    )
    simulate = policy_sub.add_parser(
        "simulate", help="who is notified when, minute by minute, if nobody answers"
    )
    simulate.add_argument("severity")
    simulate.add_argument("--policy", type=Path, default=None, help="default: POLICY_FILE")
    simulate.add_argument(
        "--raise-to", default=None, help="raise the severity on the way, e.g. sev1"
    )
    simulate.add_argument(
        "--at", default="0s", help="when the raise happens, after declaration (e.g. 20m)"
    )
    export = sub.add_parser("postmortem", help="write an incident's post-mortem draft to a file")
    export.add_argument("incident", help="INC-YYYYMMDD-NNN")
    export.add_argument("--out", type=Path, default=None, help="default: INC-…-postmortem.md")
    demo = sub.add_parser("demo", help="a scripted incident against a local Slack stand-in")
    demo.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)

    if args.command == "policy" and args.policy_command == "simulate":
        return policy_simulate(args.severity, args.policy, args.raise_to, args.at)
    if args.command == "policy":
        return policy_check(args.file, args.playbooks)
    if args.command == "postmortem":
        return asyncio.run(_export_postmortem(args.incident, args.out))
    if args.command == "demo":
        from bot.demo import run_demo

        return asyncio.run(run_demo(database_url=args.database_url))
    settings = _settings()
    secrets = [
        settings.slack_bot_token.get_secret_value(),
        settings.slack_signing_secret.get_secret_value(),
    ]
    if settings.slack_app_token is not None:
        secrets.append(settings.slack_app_token.get_secret_value())
    logs.setup(settings.log_level, secrets=secrets)
    if args.command == "migrate":
        asyncio.run(_migrate(settings))
        return 0
    from bot.playbooks import PlaybookError

    try:
        asyncio.run(_serve(settings))
    except (PolicyError, PlaybookError, SettingsError) as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
