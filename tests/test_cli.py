"""The command line: the offline commands read what the bot reads, and the policy file's
schema and reference are generated from the models (and committed up to date)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bot.__main__ import main
from bot.config import Settings
from bot.domain.policy import PolicyError, default_policy, parse_policy
from bot.policydocs import (
    DOCS_PATH,
    SCHEMA_PATH,
    describe_policy,
    policy_schema,
    reference_markdown,
    schema_text,
    span,
)
from bot.toolsettings import ToolSettings, load_tool_settings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "policy.example.yaml"
SETTINGS = ("POLICY_FILE", "PLAYBOOKS_DIR", "DATABASE_URL", "SLACK_BOT_TOKEN", "SLACK_API_URL")

# A policy unlike the built-in one, so the output shows which was read.
OWN_POLICY = """\
announce_channel: "#major-incidents"
severities:
  - name: CRIT
    aliases: [p0]
    ack_timeout: 2m
    update_interval: 20m
    resolution_target: 2h
    notify_on_declare: [S0LEADS]
    escalation:
      - {after: 0s, notify: [S0ONCALL], pagerduty: R0UTINGKEY}
      - {after: 10m, notify: [U0BOSS]}
    open_escalation:
      - {after: 3h, notify: [U0CTO]}
  - name: MINOR
    ack_timeout: 1h
    resolution_target: 3d
permissions:
  resolve: [commander, S0SRE]
"""

PLAYBOOK = """\
title: Everything else
generic: true
steps:
  - text: Assess the impact
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting of the machine running the tests leaks in."""
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def bot_dir(root: Path, env: str) -> Path:
    """A directory laid out as a bot's: .env, policy.yaml, playbooks/generic.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "policy.yaml").write_text(OWN_POLICY, encoding="utf-8")
    (root / "playbooks").mkdir()
    (root / "playbooks" / "generic.yaml").write_text(PLAYBOOK, encoding="utf-8")
    (root / ".env").write_text(env, encoding="utf-8")
    return root


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k.upper() not in SETTINGS}
    clean["PYTHONPATH"] = str(ROOT)  # the bot under test, from any directory
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bot", *args],
        env=clean | (env or {}),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ---- the CLI reads what the bot reads ------------------------------------------------------
def test_policy_check_from_a_directory_with_a_dotenv(tmp_path: Path) -> None:
    """The bot started in a directory reads its .env; so does `policy check` run there."""
    home = bot_dir(tmp_path / "bot", "POLICY_FILE=policy.yaml\nPLAYBOOKS_DIR=playbooks\n")
    result = run_cli("policy", "check", cwd=home)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"settings: {home / '.env'} and the environment"
    assert lines[1] == f"policy: {home / 'policy.yaml'} (POLICY_FILE): OK"
    assert "  announcement channel: #major-incidents" in lines
    assert "  CRIT (p0): ack 2m, updates 20m, resolve 2h" in lines
    assert f"playbooks: {home / 'playbooks'} (PLAYBOOKS_DIR): 1" in lines


def test_policy_check_with_absolute_paths_in_the_dotenv(tmp_path: Path) -> None:
    files = bot_dir(tmp_path / "files", "")
    home = tmp_path / "elsewhere"
    home.mkdir()
    (home / ".env").write_text(
        f"POLICY_FILE={files / 'policy.yaml'}\nPLAYBOOKS_DIR={files / 'playbooks'}\n"
    )
    result = run_cli("policy", "check", cwd=home)
    assert result.returncode == 0, result.stderr
    assert f"policy: {files / 'policy.yaml'} (POLICY_FILE): OK" in result.stdout
    assert "  CRIT (p0): ack 2m, updates 20m, resolve 2h" in result.stdout
    assert f"playbooks: {files / 'playbooks'} (PLAYBOOKS_DIR): 1" in result.stdout


def test_env_file_reads_as_the_bot_started_there_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = bot_dir(tmp_path / "bot", "POLICY_FILE=policy.yaml\nPLAYBOOKS_DIR=playbooks\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["policy", "check", "--env-file", str(home / ".env")]) == 0
    shown = capsys.readouterr().out
    assert f"policy: {home / 'policy.yaml'} (POLICY_FILE): OK" in shown
    assert f"playbooks: {home / 'playbooks'} (PLAYBOOKS_DIR): 1" in shown
    # A relative --env-file works the same.
    monkeypatch.chdir(tmp_path)
    assert main(["policy", "check", "--env-file", "bot/.env"]) == 0
    assert f"policy: {home / 'policy.yaml'} (POLICY_FILE): OK" in capsys.readouterr().out


def test_without_a_dotenv_nor_a_setting_the_built_in_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["policy", "check"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == "settings: the environment (no .env)"
    assert shown[1] == "policy: built-in policy (POLICY_FILE is not set): OK"
    assert "  SEV1 (p0, critical): ack 5m, updates 30m, resolve 1h" in shown
    assert f"playbooks: {tmp_path / 'playbooks'} (PLAYBOOKS_DIR): 1" in shown
    assert "  no such folder: only the built-in generic procedure" in shown


def test_the_environment_wins_over_the_dotenv_and_arguments_over_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = bot_dir(tmp_path, "POLICY_FILE=nowhere.yaml\n")
    monkeypatch.chdir(home)
    assert main(["policy", "check"]) == 1
    assert "nowhere.yaml: cannot read" in capsys.readouterr().err
    monkeypatch.setenv("POLICY_FILE", "policy.yaml")
    assert main(["policy", "check"]) == 0
    assert "  CRIT (p0): ack 2m" in capsys.readouterr().out
    assert main(["policy", "check", str(EXAMPLE)]) == 0
    shown = capsys.readouterr().out
    assert f"policy: {EXAMPLE}: OK" in shown
    assert "  SEV1 (p0, critical): ack 5m, updates 30m, resolve 1h" in shown


def test_a_playbooks_folder_that_was_named_must_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As at start-up: only the default folder may be missing (built-in generic only)."""
    monkeypatch.chdir(bot_dir(tmp_path, "PLAYBOOKS_DIR=playbookz\n"))
    assert main(["policy", "check"]) == 1
    assert capsys.readouterr().err.strip() == "PLAYBOOKS_DIR: playbookz does not exist"
    assert main(["policy", "check", "--playbooks", "missing"]) == 1
    assert capsys.readouterr().err.strip() == "--playbooks: missing does not exist"


def test_a_missing_env_file_is_a_settings_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for command in (["policy", "check"], ["policy", "simulate", "sev1"], ["postmortem", "INC-1"]):
        assert main([*command, "--env-file", "nope/.env"]) == 2
        said = capsys.readouterr().err.strip()
        assert said == "configuration error: --env-file nope/.env: no such file"


def test_policy_simulate_reads_policy_file_from_the_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = bot_dir(tmp_path, "POLICY_FILE=policy.yaml\n")
    monkeypatch.chdir(home)
    assert main(["policy", "simulate", "p0"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(
        f"If nobody answers a CRIT incident ({home / 'policy.yaml'}, POLICY_FILE):"
    )
    assert "PagerDuty trigger (routing key R0UTINGKEY)" in shown
    assert main(["policy", "simulate", "sev1", "--policy", str(EXAMPLE)]) == 0
    assert f"SEV1 incident ({EXAMPLE})" in capsys.readouterr().out


def test_postmortem_reads_database_url_from_the_dotenv_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = bot_dir(tmp_path / "bot", "DATABASE_URL=sqlite+aiosqlite:///data/incidents.db\n")
    (home / "data").mkdir()
    monkeypatch.chdir(home)
    assert main(["postmortem", "INC-20261122-001"]) == 1
    said = "no database at data/incidents.db (DATABASE_URL): nothing to export"
    assert capsys.readouterr().err.strip() == said
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["postmortem", "INC-20261122-001", "--env-file", str(home / ".env")]) == 1
    missing = home / "data" / "incidents.db"
    assert capsys.readouterr().err.strip() == (
        f"no database at {missing} (DATABASE_URL): nothing to export"
    )
    assert not missing.exists()
    assert list(elsewhere.iterdir()) == []


def test_postmortem_names_a_malformed_database_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(bot_dir(tmp_path, "DATABASE_URL=mysql://db/incidents\n"))
    assert main(["postmortem", "INC-20261122-001"]) == 2
    assert capsys.readouterr().err.strip() == (
        "configuration error: DATABASE_URL must start with sqlite+aiosqlite:// "
        "or postgresql+asyncpg://"
    )


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("sqlite+aiosqlite:///incidents.db", "sqlite+aiosqlite:///{base}/incidents.db"),
        ("sqlite+aiosqlite:////srv/bot.db", "sqlite+aiosqlite:////srv/bot.db"),
        ("sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
        ("postgresql+asyncpg://u:p@db/x", "postgresql+asyncpg://u:p@db/x"),
        ("postgres://u:p@db/x", "postgres://u:p@db/x"),
    ],
)
def test_relative_sqlite_files_are_relative_to_the_env_file(
    tmp_path: Path, written: str, expected: str
) -> None:
    (tmp_path / "bot.env").write_text(f"DATABASE_URL={written}\n")
    settings = load_tool_settings(tmp_path / "bot.env")
    assert settings.database_url == expected.format(base=tmp_path)


def test_tool_settings_have_the_bots_names_and_defaults() -> None:
    for name, field in ToolSettings.model_fields.items():
        assert name in Settings.model_fields, name
        bot_field = Settings.model_fields[name]
        if not bot_field.is_required():
            assert field.get_default(call_default_factory=True) == bot_field.get_default(
                call_default_factory=True
            ), name


# ---- --help --------------------------------------------------------------------------------
def help_of(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        main([*args, "--help"])
    assert stop.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_help_describes_the_bot_its_commands_and_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    top = help_of([], capsys)
    assert "A Slack bot that runs your incident procedure" in top
    for command in ("serve", "migrate", "policy", "postmortem", "demo"):
        assert command in top
    for setting in ("SLACK_BOT_TOKEN", "DATABASE_URL", "POLICY_FILE", "PLAYBOOKS_DIR"):
        assert setting in top
    policy = help_of(["policy"], capsys)
    for command in ("check", "simulate", "schema", "docs"):
        assert command in policy
    check = help_of(["policy", "check"], capsys)
    assert "FILE" in check
    assert "--playbooks DIR" in check
    assert "--env-file FILE" in check
    assert "default: POLICY_FILE, else the built-in policy" in check
    simulate = help_of(["policy", "simulate"], capsys)
    for option in ("--policy FILE", "--raise-to SEVERITY", "--at DURATION", "--env-file FILE"):
        assert option in simulate
    postmortem = help_of(["postmortem"], capsys)
    assert "never creates a database" in postmortem
    assert "--out FILE" in postmortem
    assert "--database-url URL" in help_of(["demo"], capsys)


# ---- policy check prints the policy as the bot will act ------------------------------------
def test_describe_policy_shows_every_part() -> None:
    lines = describe_policy(parse_policy(yaml.safe_load(OWN_POLICY)))
    assert lines == [
        "  announcement channel: #major-incidents",
        "  statuses: investigating → identified → mitigating → monitoring → resolved",
        "  roles: commander, tech_lead, comms_lead, scribe",
        "  severities, most severe first:",
        "  CRIT (p0): ack 2m, updates 20m, resolve 2h",
        "    paged at declaration: S0LEADS, S0ONCALL",
        "    escalation while nobody has acknowledged, from declaration:",
        "      level 1 at 0s: S0ONCALL + PagerDuty (routing key R0UTINGKEY)",
        "      level 2 at 10m: U0BOSS",
        "    time open, while unresolved, from declaration:",
        "      at 3h: U0CTO",
        "  MINOR (no aliases): ack 1h, no update nudges, resolve 72h",
        "    paged at declaration: nobody",
        "    escalation while nobody has acknowledged, from declaration:",
        "      none",
        "    time open, while unresolved, from declaration:",
        "      none",
        "  follow-ups after resolution: report 24h, post-mortem 48h, action review 7d, "
        "customer communication 24h (published incidents)",
        "  compliance clocks: none",
        "  permissions: resolve: commander, S0SRE; lower_severity: anyone; "
        "close_compliance: anyone; publish: anyone",
        "    (while nobody holds command, anyone may)",
        "  alert rules: none (an alert declares only with its own severity or priority label)",
        "  status page: no components (add `status_page` to show some)",
    ]


def test_describe_policy_shows_compliance_clocks() -> None:
    lines = describe_policy(default_policy())
    assert (
        "    security: deadline 72h, reminders 48h, 24h, 2h before: "
        "Personal-data breach: notify the regulator"
    ) in lines


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (90, "90s"),
        (900, "15m"),
        (3600, "1h"),
        (86400, "24h"),
        (3 * 86400, "72h"),
        (7 * 86400, "7d"),
        (90 * 60, "90m"),
    ],
)
def test_span(seconds: int, shown: str) -> None:
    from datetime import timedelta

    assert span(timedelta(seconds=seconds)) == shown


# ---- the schema and the reference ----------------------------------------------------------
def test_committed_schema_is_the_generated_one() -> None:
    committed = (ROOT / SCHEMA_PATH).read_text(encoding="utf-8")
    assert committed == schema_text(), (
        "docs/policy.schema.json is out of date: "
        "python -m bot policy schema > docs/policy.schema.json"
    )


def test_committed_reference_is_the_generated_one() -> None:
    committed = (ROOT / DOCS_PATH).read_text(encoding="utf-8")
    assert committed == reference_markdown(), (
        "docs/policy.md is out of date: python -m bot policy docs > docs/policy.md"
    )


def test_schema_and_docs_commands_print_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "schema"]) == 0
    assert json.loads(capsys.readouterr().out) == policy_schema()
    assert main(["policy", "docs"]) == 0
    assert capsys.readouterr().out == reference_markdown()


def test_the_example_names_the_committed_schema() -> None:
    first = EXAMPLE.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    target = first.split("$schema=", 1)[1]
    assert not Path(target).is_absolute()
    assert (EXAMPLE.parent / target).resolve() == (ROOT / SCHEMA_PATH).resolve()


def test_the_reference_documents_every_field() -> None:
    docs = reference_markdown()
    schema = policy_schema()
    models = [schema, *schema["$defs"].values()]
    for model in models:
        for name, prop in model["properties"].items():
            assert prop.get("description"), f"{model['title']}.{name} has no description"
            assert f"| `{name}` |" in docs
    assert "python -m bot policy docs > docs/policy.md" in docs.split("\n## ")[0]


def validator() -> jsonschema.Draft202012Validator:
    schema = policy_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def example() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_schema_accepts_the_example_and_the_built_in_policy() -> None:
    check = validator()
    assert [error.message for error in check.iter_errors(example())] == []
    built_in = default_policy().model_dump(mode="json")
    assert [error.message for error in check.iter_errors(built_in)] == []
    assert parse_policy(built_in) == default_policy()


def changed(path: str, value: Any) -> dict[str, Any]:
    """The example with one field set (path `severities.0.name`; value DELETE removes it)."""
    data = copy.deepcopy(example())
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return data


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("severities.0.ack_timeout", "soon"),
        ("severities.0.ack_timeout", "5 minutes"),
        ("severities.0.ack_timeout", True),
        ("severities.0.resolution_target", DELETE),
        ("severities.0.name", "SEV 1"),
        ("severities.0.notify_on_declare", ["bob"]),
        ("severities.0.escalation.0.notify", ["#oncall"]),
        ("severities.0.escalation.0.after", None),
        ("severities.0.acktimeout", "5m"),
        ("severities", []),
        ("severities", DELETE),
        ("compliance.0.remind_before", ["tomorrow"]),
        ("followups.report", "1 day"),
        ("announce_channel", 5),
        ("permissions", {"close": ["commander"]}),
        ("alerting", {"enabled": True}),
    ],
)
def test_schema_rejects_what_the_bot_rejects(path: str, value: Any) -> None:
    broken = changed(path, value)
    assert list(validator().iter_errors(broken)), "the schema accepts it"
    with pytest.raises(PolicyError):
        parse_policy(broken)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("severities.0.ack_timeout", 300),
        ("severities.0.ack_timeout", "5M"),
        ("severities.0.ack_timeout", " 5m "),
        ("severities.0.update_interval", None),
        ("announce_channel", None),
        ("announce_channel", "#incidents"),
        ("severities.0.escalation.0.pagerduty", "R0UTINGKEY"),
        ("permissions", {"resolve": ["commander", "S0SRE"], "publish": None}),
    ],
)
def test_schema_accepts_what_the_bot_accepts(path: str, value: Any) -> None:
    fine = changed(path, value)
    assert [error.message for error in validator().iter_errors(fine)] == []
    parse_policy(fine)
