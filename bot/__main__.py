"""Composition root and command line (`python -m bot --help` says it all).

python -m bot                          serve (HTTP, or Socket Mode when SLACK_APP_TOKEN is set)
python -m bot migrate                  apply database migrations and exit
python -m bot policy check [FILE]      validate the policy and playbooks; print the policy
python -m bot policy simulate SEV      who is paged when, if nobody answers
python -m bot policy schema | docs     the policy file's JSON Schema | Markdown reference
python -m bot alerts test FILE.json    what an alert payload would declare, without doing it
python -m bot postmortem INC-…         write an incident's post-mortem draft to a file
python -m bot demo                     a scripted incident against a local Slack stand-in

The offline commands read the settings the bot reads (bot/toolsettings.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bot import logs
from bot.config import Settings, SettingsError, load_settings
from bot.domain.policy import Policy, PolicyError, load_policy
from bot.toolsettings import ToolConfig, load_tool_settings

if TYPE_CHECKING:
    from bot.playbooks import PlaybookSet

log = logging.getLogger("bot.main")


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

    Every wrong setting stops start-up before anything is served, in one line naming it:
    the policy file, the playbooks folder, the database, the bot token, the app-level token,
    a SQLite database another process serves. None of these checks imports the migration
    code, so nothing else is logged before the line.
    """
    from bot import preflight
    from bot.slack.socketmode import socket_mode
    from bot.store.single import single_process

    policy = preflight.policy(settings)
    preflight.playbooks_dir(settings)
    await preflight.database(settings.database_url)
    socket = socket_mode(settings)
    if socket is not None:
        await socket.check()
    identity = await preflight.bot_token(settings)
    held.enter_context(single_process(settings.database_url))
    from bot.runtime import Runtime

    runtime = await Runtime.create(settings, socket=socket, policy=policy)
    if identity is not None:
        runtime.identity.adopt(identity)  # asked once, not again by start()
    held.push_async_callback(runtime.close)
    _keep_out_of_full_collections()  # the long pass, before anything is served
    await runtime.start()
    _keep_out_of_full_collections()  # what starting built (the pool's connections…)


def _keep_out_of_full_collections() -> None:
    """What start-up built (the modules, the policy and playbooks, SQLAlchemy's tables and
    compiled statements, Bolt's app) lives as long as the process. The garbage collector's
    full passes walked all of it, every one stopping the event loop for 45 to 70 ms in the
    middle of a burst (timed with `gc.callbacks` under `bench.load`); frozen, it is left
    out of them, and they walk only what was made since."""
    gc.collect()
    gc.freeze()
    log.debug(
        "start-up's %d objects kept out of the garbage collector's full passes",
        gc.get_freeze_count(),
    )


async def _migrate(settings: Settings) -> None:
    from bot.store.db import Database

    database = Database(settings.database_url)
    try:
        await database.migrate()
    finally:
        await database.dispose()
    print("database is at the newest schema")


async def _export_postmortem(
    incident_id: str, out: Path | None, env_file: Path | None = None
) -> int:
    """Needs only the database: DATABASE_URL and POLICY_FILE, read as the bot reads them.

    People are named as Slack knows them (`users.info`) when SLACK_BOT_TOKEN (and, for a
    stand-in, SLACK_API_URL) is set; otherwise by the names the record holds, else by id. A
    SQLite database that does not exist is an error: the export never creates one.
    """
    from bot.clock import SystemClock
    from bot.domain.errors import NotFound
    from bot.domain.postmortem import recorded_names
    from bot.service.incidents import IncidentService
    from bot.store.db import Database
    from bot.store.repository import SqlStore
    from bot.store.single import sqlite_file

    settings = _tool_settings(env_file)
    if settings is None:
        return 2
    try:
        url = settings.checked_database_url()
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    database_file = sqlite_file(url)
    if database_file is not None and not await asyncio.to_thread(os.path.isfile, database_file):
        print(f"no database at {database_file} (DATABASE_URL): nothing to export", file=sys.stderr)
        return 1
    token = settings.slack_bot_token
    wanted = incident_id.upper()
    database = Database(url)
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


def _tool_settings(env_file: Path | None) -> ToolConfig | None:
    """The settings the bot reads, or None after saying in one line what is wrong."""
    try:
        return load_tool_settings(env_file)
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return None


def policy_check(
    file: Path | None = None, playbooks_dir: Path | None = None, env_file: Path | None = None
) -> int:
    """Validate the policy and the playbooks the bot would use (FILE and `--playbooks`
    override POLICY_FILE and PLAYBOOKS_DIR), then print the policy as the bot will act."""
    from bot.policydocs import describe_policy

    settings = _tool_settings(env_file)
    if settings is None:
        return 2
    path = file or settings.policy_file
    folder = playbooks_dir or settings.playbooks_dir
    source = "--playbooks" if playbooks_dir else "PLAYBOOKS_DIR"
    loaded = _policy_and_playbooks(settings, path, playbooks_dir)
    if loaded is None:
        return 1
    policy, playbooks = loaded
    if path is None:
        origin = "built-in policy (POLICY_FILE is not set)"
    else:
        origin = os.path.abspath(path) + ("" if file else " (POLICY_FILE)")
    print(f"settings: {settings.source}")
    print(f"policy: {origin}: OK")
    print("\n".join(describe_policy(policy)))
    print(f"playbooks: {os.path.abspath(folder)} ({source}): {len(playbooks)}")
    if not folder.is_dir():
        print("  no such folder: only the built-in generic procedure")
    print(f"  generic (for anything no other playbook matches): {playbooks.generic.id}")
    for line in playbooks.missing_for(policy):
        print(f"  warning: {line}")
    examples = sum(1 for playbook in playbooks if playbook.examples)
    if examples:
        print(f"  {examples} with example diagnostics to adapt (examples: true)")
    return 0


def _policy_and_playbooks(
    settings: ToolConfig, path: Path | None, playbooks_dir: Path | None = None
) -> tuple[Policy, PlaybookSet] | None:
    """The policy and the playbooks as the bot loads them at start-up (a playbooks folder
    that was named must exist; only the default may not); None once the problem is said."""
    from bot.playbooks import PlaybookError, load_playbooks

    folder = playbooks_dir or settings.playbooks_dir
    source = "--playbooks" if playbooks_dir else "PLAYBOOKS_DIR"
    try:
        policy = load_policy(path)
        if (playbooks_dir or settings.playbooks_dir_set) and not folder.is_dir():
            state = "is not a directory" if folder.exists() else "does not exist"
            raise PlaybookError([f"{source}: {folder} {state}"])
        return policy, load_playbooks(folder, policy=policy)
    except (PolicyError, PlaybookError) as error:
        print(error, file=sys.stderr)
        return None


def policy_simulate(
    word: str,
    path: Path | None,
    raise_to: str | None = None,
    at: str | None = None,
    env_file: Path | None = None,
) -> int:
    from bot.domain.policy import parse_duration
    from bot.simulate import simulate

    origin = "" if path is None else str(path)
    if path is None:
        settings = _tool_settings(env_file)
        if settings is None:
            return 2
        path = settings.policy_file
        origin = f"{os.path.abspath(path)}, POLICY_FILE" if path else "built-in policy"
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
    print(f"If nobody answers a {policy.get(word).name} incident ({origin}):")
    print("\n".join(lines))
    return 0


def alerts_test(
    file: Path,
    kind: str | None = None,
    policy_file: Path | None = None,
    env_file: Path | None = None,
) -> int:
    """Read an alert payload as the endpoints do and print what it would declare under the
    policy the bot reads (or `policy_file`); nothing is sent or stored. `kind` is
    `alertmanager` or `generic` (default: a body with `alerts` is Alertmanager's)."""
    from bot.service.alerts import dry_run
    from bot.web.alerts import READERS, PayloadError, parse_json

    settings = _tool_settings(env_file)
    if settings is None:
        return 2
    path = policy_file or settings.policy_file
    loaded = _policy_and_playbooks(settings, path)
    if loaded is None:
        return 1
    policy, playbooks = loaded
    try:
        body = file.read_bytes()
    except OSError as error:
        print(f"{file}: cannot read: {error.strerror}", file=sys.stderr)
        return 1
    try:
        data = parse_json(body)
        kind = kind or ("alertmanager" if "alerts" in data else "generic")
        group = READERS[kind](data)
    except PayloadError as error:
        print(f"{file}: {error} (POST /alerts/{kind or 'alertmanager'} would answer 400)")
        for problem in error.problems:
            print(f"  {problem['field']}: {problem['message']}")
        return 1
    origin = os.path.abspath(path) if path else "built-in policy"
    print(f"{file} as POST /alerts/{kind}, under {origin}:")
    print("\n".join(dry_run(group, policy, playbooks)))
    print("nothing was sent or stored")
    return 0


_DESCRIPTION = """\
A Slack bot that runs your incident procedure. `/incident sev1 payment down` declares an
incident: the bot opens its channel, posts the alert there and in the announcement channel,
and pages the escalation chain. It keeps every clock of the policy (acknowledgement,
updates, time open, follow-ups after resolution, compliance deadlines), records the
timeline, and drafts the post-mortem. With ALERTS_TOKEN set, alerts from Alertmanager,
Grafana or any webhook declare incidents too.

Settings are read from the environment and the .env file of the current directory (the
environment wins): SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET (required to serve),
SLACK_APP_TOKEN, DATABASE_URL, PORT, POLICY_FILE, PLAYBOOKS_DIR, LOG_LEVEL, ALERTS_TOKEN
(see README.md). The offline commands (policy check, policy simulate, alerts test,
postmortem) read the same ones, so they check and use what the bot will; a relative path
in a .env is relative to the directory that holds it."""

_EPILOG = """\
examples:
  python -m bot                                  serve
  python -m bot policy check                     the policy and playbooks the bot will use
  python -m bot policy check --env-file /srv/incident-bot/.env
  python -m bot policy simulate sev3 --raise-to sev1 --at 20m
  python -m bot policy schema > docs/policy.schema.json
  python -m bot alerts test tests/fixtures/alerts/alertmanager_firing.json
  python -m bot postmortem INC-20261122-001 --out review.md

The policy file is described in docs/policy.md."""

_ENV_FILE_HELP = (
    "read the settings from this .env instead of ./.env, as a bot started in its directory "
    "would (relative paths in it are relative to that directory)"
)


def _parser() -> argparse.ArgumentParser:
    text = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m bot", description=_DESCRIPTION, epilog=_EPILOG, formatter_class=text
    )
    settings = argparse.ArgumentParser(add_help=False)
    settings.add_argument(
        "--env-file", type=Path, default=None, metavar="FILE", help=_ENV_FILE_HELP
    )
    policy_option = argparse.ArgumentParser(add_help=False)
    policy_option.add_argument(
        "--policy",
        type=Path,
        default=None,
        metavar="FILE",
        help="the policy file (default: POLICY_FILE, else the built-in policy)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.add_parser(
        "serve",
        help="run the bot (the default)",
        description="Run the bot: apply the database migrations, then serve POST /slack/events, "
        "GET /healthz and GET /metrics on PORT, or connect over Socket Mode when "
        "SLACK_APP_TOKEN is set. Stops on SIGTERM or SIGINT. A missing or malformed setting "
        "stops start-up with one line naming it (exit code 2).",
    )
    sub.add_parser(
        "migrate",
        help="apply the database migrations and exit",
        description="Bring the database at DATABASE_URL to the newest schema, and exit.",
    )
    policy = sub.add_parser(
        "policy",
        help="check, simulate and document the policy",
        description="Tools for the policy file (POLICY_FILE): see docs/policy.md.",
    )
    policy_sub = policy.add_subparsers(
        dest="policy_command", required=True, metavar="SUBCOMMAND", title="subcommands"
    )
    check = policy_sub.add_parser(
        "check",
        parents=[settings],
        help="validate the policy and the playbooks, and print the policy as the bot will act",
        description="Validate the policy (FILE, else POLICY_FILE, else the built-in policy) "
        "and the playbooks (--playbooks, else PLAYBOOKS_DIR), reading the settings the bot "
        "reads. Then print the policy as the bot will act on it: each severity with its "
        "aliases, targets, update interval, who is paged at declaration, the escalation "
        "chain and the time-open chain; the follow-ups, compliance clocks, permissions and "
        "announcement channel; and how many playbooks there are. Exit code 1 names every "
        "problem with its file and field; 2 is a settings problem.",
    )
    check.add_argument(
        "file",
        type=Path,
        nargs="?",
        default=None,
        metavar="FILE",
        help="the policy file to check (default: POLICY_FILE, else the built-in policy)",
    )
    check.add_argument(
        "--playbooks",
        type=Path,
        default=None,
        metavar="DIR",
        help="the playbooks folder (default: PLAYBOOKS_DIR, else ./playbooks)",
    )
    simulate = policy_sub.add_parser(
        "simulate",
        parents=[settings, policy_option],
        help="who is notified when, minute by minute, if nobody answers",
        description="Run the bot's own clock and paging code on an incident nobody "
        "acknowledges, updates or resolves, and print every firing as an offset from the "
        "declaration: who is paged, nudged or told, and what PagerDuty is told.",
    )
    simulate.add_argument("severity", help="a severity or one of its aliases, e.g. sev1 or p0")
    simulate.add_argument(
        "--raise-to", default=None, metavar="SEVERITY", help="raise the severity on the way"
    )
    simulate.add_argument(
        "--at",
        default="0s",
        metavar="DURATION",
        help="when the raise happens, after declaration, e.g. 20m (default: 0s)",
    )
    policy_sub.add_parser(
        "schema",
        help="print the policy file's JSON Schema",
        description="Print the JSON Schema of the policy file, generated from the models the "
        "bot validates it with (committed as docs/policy.schema.json; policy.example.yaml "
        "names it for editors).",
    )
    policy_sub.add_parser(
        "docs",
        help="print the policy file's reference (Markdown)",
        description="Print the reference of every policy field (type, default, description), "
        "generated from the same models: python -m bot policy docs > docs/policy.md",
    )
    alerts = sub.add_parser(
        "alerts",
        help="try an alert payload against the policy",
        description="Tools for the alert endpoints (POST /alerts/alertmanager, "
        "POST /alerts/generic; see README.md).",
    )
    alerts_sub = alerts.add_subparsers(
        dest="alerts_command", required=True, metavar="SUBCOMMAND", title="subcommands"
    )
    alerts_try = alerts_sub.add_parser(
        "test",
        parents=[settings, policy_option],
        help="print what an alert payload would declare, without doing it",
        description="Read a JSON payload as the alert endpoints read it (a 400 is shown as "
        "such) and print, for each alert, the rule that matches and the severity it gives, "
        "or why it is ignored; then the incident it would declare, its playbook and whom it "
        "would page. Reads the policy and playbooks the bot reads; sends and stores nothing.",
    )
    alerts_try.add_argument("file", type=Path, metavar="FILE.json", help="the payload")
    alerts_try.add_argument(
        "--generic",
        action="store_const",
        const="generic",
        dest="kind",
        default=None,
        help="read it as POST /alerts/generic (default: Alertmanager's when it has `alerts`)",
    )
    export = sub.add_parser(
        "postmortem",
        parents=[settings],
        help="write an incident's post-mortem draft to a file",
        description="Build an incident's post-mortem draft from the record and write it to a "
        "file. Needs only the database (DATABASE_URL, and POLICY_FILE), read as the bot reads "
        "them; never creates a database. People are named as Slack knows them when "
        "SLACK_BOT_TOKEN is set, else by the names the record holds.",
    )
    export.add_argument("incident", help="the incident id, INC-YYYYMMDD-NNN")
    export.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="where to write it (default: INC-…-postmortem.md in the current directory)",
    )
    demo = sub.add_parser(
        "demo",
        help="a scripted incident against a local Slack stand-in",
        description="Start the bot and a local Slack stand-in, play an incident from "
        "declaration to resolution, and print what each channel shows. Needs no Slack and "
        "no settings.",
    )
    demo.add_argument(
        "--database-url",
        default=None,
        metavar="URL",
        help="the database to use (default: a temporary SQLite file)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    if args.command == "policy":
        if args.policy_command == "simulate":
            return policy_simulate(
                args.severity, args.policy, args.raise_to, args.at, args.env_file
            )
        if args.policy_command in ("schema", "docs"):
            from bot.policydocs import reference_markdown, schema_text

            sys.stdout.write(
                schema_text() if args.policy_command == "schema" else reference_markdown()
            )
            return 0
        return policy_check(args.file, args.playbooks, args.env_file)
    if args.command == "alerts":
        return alerts_test(args.file, args.kind, args.policy, args.env_file)
    if args.command == "postmortem":
        return asyncio.run(_export_postmortem(args.incident, args.out, args.env_file))
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
    if settings.metrics_token is not None:
        secrets.append(settings.metrics_token.get_secret_value())
    if settings.alerts_token is not None:
        secrets.append(settings.alerts_token.get_secret_value())
    logs.setup(settings.log_level, secrets=secrets, fmt=settings.log_format)
    if args.command == "migrate":
        asyncio.run(_migrate(settings))
        return 0
    from bot.playbooks import PlaybookError

    try:
        asyncio.run(_serve(settings))
    except (PolicyError, PlaybookError, SettingsError) as error:
        said = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        if isinstance(error, PlaybookError):
            said = f"PLAYBOOKS_DIR: {said}"
        print(f"configuration error: {said}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
