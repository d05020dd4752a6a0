"""The policy's `alerts` rules and reading alerts, without a running bot: which rule decides,
what `policy check` and `alerts test` say, the README's snippets against the fixtures the
HTTP tests send, and the statistics that tell alert-declared incidents apart."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.__main__ import main
from bot.domain.alerts import Alert, bounded, decide, parse_time
from bot.domain.incident import Incident
from bot.domain.policy import PolicyError, default_policy, load_policy, parse_policy
from bot.domain.stats import compute_stats, render_stats_text
from bot.web.alerts import PayloadError, alertmanager_group, generic_group, parse_json

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "alerts"
README = (ROOT / "README.md").read_text(encoding="utf-8")

RULES = """\
severities:
  - {name: SEV1, aliases: [p0, critical], ack_timeout: 5m, resolution_target: 1h}
  - {name: SEV2, aliases: [p1, high], ack_timeout: 15m, resolution_target: 4h}
  - {name: SEV3, aliases: [p2], ack_timeout: 1h, resolution_target: 24h}
alerts:
  - match: {alertname: PaymentSuccessRateLow}
    severity: SEV1
    title: "Payment success rate below 95%"
    services: [payments]
    playbook: payment-processing-down
  - match: {alertname: "~High.*Rate", env: production}
    severity: p1
  - match: {alertname: "~High.*Rate"}
    severity: SEV3
  - match: {team: "~.+"}
"""


def policy() -> Any:
    return parse_policy(yaml.safe_load(RULES))


def alert(**labels: str) -> Alert:
    return Alert(source="alertmanager", key="f1", status="firing", labels=labels)


def fixture(name: str) -> dict[str, Any]:
    data = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


# ---- the rules -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("labels", "severity", "rule"),
    [
        ({"alertname": "PaymentSuccessRateLow", "severity": "p2"}, "SEV1", 0),
        ({"alertname": "HighErrorRate", "env": "production"}, "SEV2", 1),  # first match wins
        ({"alertname": "HighErrorRate", "env": "staging"}, "SEV3", 2),
        ({"alertname": "HighLatencyRate", "env": "production"}, "SEV2", 1),
        ({"alertname": "HighErrorRateX", "env": "production"}, None, None),
        ({"alertname": "xHighErrorRate"}, None, None),  # the regex matches the whole value
        ({"alertname": "Disk", "team": "storage", "severity": "critical"}, "SEV1", 3),
        ({"alertname": "Disk", "team": "storage", "priority": "P1"}, "SEV2", 3),
        ({"alertname": "Disk", "team": "storage", "severity": "warning"}, None, 3),
        ({"alertname": "Disk", "severity": "high"}, "SEV2", None),  # no rule: its own label
        ({"alertname": "Disk"}, None, None),
    ],
)
def test_the_first_matching_rule_decides(
    labels: dict[str, str], severity: str | None, rule: int | None
) -> None:
    decision = decide(alert(**labels), policy())
    assert decision.severity == severity
    assert decision.rule == rule


def test_a_rule_gives_title_services_and_playbook() -> None:
    decision = decide(alert(alertname="PaymentSuccessRateLow"), policy())
    assert decision.title == "Payment success rate below 95%"
    assert decision.services == ["payments"]
    assert decision.playbook == "payment-processing-down"
    summary = Alert(
        source="alertmanager",
        key="f2",
        status="firing",
        labels={"alertname": "Disk", "severity": "p0", "service": "db"},
        annotations={"summary": "Disk 95% full"},
    )
    own = decide(summary, policy())
    assert (own.title, own.services) == ("Disk 95% full", ["db"])


def test_an_ignored_alert_says_why() -> None:
    decision = decide(alert(alertname="Disk", team="storage", severity="warning"), policy())
    assert decision.reason == (
        "rule 4 of the policy's alerts names no severity and the alert has the severity "
        "label 'warning', which names no severity of the policy"
    )


@pytest.mark.parametrize(
    ("rules", "said"),
    [
        ([{"match": {"alertname": "~(unclosed"}}], "alerts.0.match (line "),
        ([{"match": {"alertname": "~(unclosed"}}], "is not a valid regular expression"),
        ([{"match": {"bad-label": "x"}}], "'bad-label' is not a label name"),
        ([{"match": {}, "severity": "sev9"}], "alerts.0.severity: 'sev9' is not a severity"),
        ([{"match": {}, "unknown": 1}], "alerts.0.unknown"),
    ],
)
def test_policy_check_names_a_bad_rule(
    rules: list[dict[str, Any]],
    said: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_env: None,
) -> None:
    data = yaml.safe_load(RULES)
    data["alerts"] = rules
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["policy", "check", str(path)]) == 1
    assert said in capsys.readouterr().err
    with pytest.raises(PolicyError, match=re.escape(said)):
        load_policy(path)


def test_a_regex_error_gives_the_line_of_its_rule(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(RULES + '  - match: {alertname: "~[z-a]"}\n', encoding="utf-8")
    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    line = RULES.count("\n") + 1
    assert f"alerts.4.match (line {line}): " in str(raised.value)


def test_a_rule_naming_an_unknown_playbook_is_warned_of(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_env: None,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(RULES.replace("payment-processing-down", "no-such-playbook"), "utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["policy", "check", str(path), "--playbooks", str(ROOT / "playbooks")]) == 0
    assert (
        "  warning: alerts.0.playbook: there is no playbook 'no-such-playbook'; its incidents "
        "get the best-matching playbook instead"
    ) in capsys.readouterr().out.splitlines()


def test_policy_check_lists_the_rules(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_env: None,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(RULES, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["policy", "check", str(path), "--playbooks", str(ROOT / "playbooks")]) == 0
    shown = capsys.readouterr().out.splitlines()
    start = shown.index("  alert rules, the first that matches decides:")
    assert shown[start + 1 : start + 5] == [
        "    1. alertname=PaymentSuccessRateLow → SEV1 (title 'Payment success rate below 95%'; "
        "services payments; playbook payment-processing-down)",
        "    2. alertname~High.*Rate, env=production → SEV2",
        "    3. alertname~High.*Rate → SEV3",
        "    4. team~.+ → the alert's own severity or priority label",
    ]


# ---- the setting ----------------------------------------------------------------------------
def test_alerts_token_is_one_word_and_empty_is_unset(no_env: None) -> None:
    from bot.config import SettingsError, load_settings

    common = {"_env_file": None, "slack_bot_token": "xoxb-1", "slack_signing_secret": "s"}
    assert load_settings(**common).alerts_token is None
    assert load_settings(**common, alerts_token="").alerts_token is None
    token = load_settings(**common, alerts_token="tok-123").alerts_token
    assert token is not None
    assert token.get_secret_value() == "tok-123"
    assert "tok-123" not in repr(token)
    with pytest.raises(SettingsError, match=r"^ALERTS_TOKEN must be one word"):
        load_settings(**common, alerts_token="two words")


# ---- reading payloads ------------------------------------------------------------------------
def test_alertmanager_times_are_read_as_sent() -> None:
    assert parse_time("2026-11-22T11:50:03.157076012Z") == datetime(
        2026, 11, 22, 11, 50, 3, 157076, tzinfo=UTC
    )
    assert parse_time("2026-11-22T11:55:00+01:00") == datetime(2026, 11, 22, 10, 55, tzinfo=UTC)
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time("yesterday") is None


def test_fixtures_read_as_their_senders_mean_them() -> None:
    group = alertmanager_group(fixture("alertmanager_firing.json"))
    assert (group.source, len(group.firing), group.truncated) == ("alertmanager", 1, 0)
    (first,) = group.alerts
    assert first.key == "5f0a1d0c3b2e4a17"
    assert first.dashboard_link == "https://grafana.example.com/d/payments/payments-overview"
    assert first.ends_at is None
    grafana = alertmanager_group(fixture("grafana_firing.json"))
    assert grafana.source == "grafana"
    assert grafana.alerts[0].dashboard.endswith("viewPanel=4")
    generic = generic_group(fixture("generic_firing.json"))
    assert generic.alerts[0].labels["services"] == "checkout"
    assert generic.group_key is None


def test_labels_and_annotations_are_bounded() -> None:
    kept = bounded({f"l{n}": "v" * 900 for n in range(100)}, count=64, value_max=500)
    assert len(kept) == 64
    assert all(len(v) == 500 and v.endswith("…") for v in kept.values())
    assert bounded({"n": 5, "x": "a\x00b"}, count=5, value_max=10) == {"n": "5", "x": "ab"}
    many = {**{f"l{n}": "v" for n in range(100)}, "alertname": "Late", "severity": "p0"}
    kept = bounded(many, count=64, value_max=500)
    assert (kept["alertname"], kept["severity"]) == ("Late", "p0")


def test_a_bad_body_names_the_field() -> None:
    with pytest.raises(PayloadError) as raised:
        alertmanager_group(parse_json(b'{"status": "firing", "alerts": [{"status": "x"}]}'))
    assert [p["field"] for p in raised.value.problems] == ["alerts.0.status"]


# ---- the command line ------------------------------------------------------------------------
def test_alerts_test_prints_what_a_payload_would_do(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_env: None,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(RULES, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    payload = str(FIXTURES / "alertmanager_firing.json")
    assert main(["alerts", "test", payload, "--policy", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "1 alert(s) read from Alertmanager: 1 firing, 0 resolved" in shown
    assert "PaymentSuccessRateLow (5f0a1d0c3b2e4a17): firing: SEV1, from rule 1" in shown
    assert "would declare SEV1: 'Payment success rate below 95%'" in shown
    assert "nothing was sent or stored" in shown
    assert not list(tmp_path.glob("*.db")), "no database is created"
    # Generic, with no rule and its own severity; then a body the endpoint would refuse.
    assert main(["alerts", "test", str(FIXTURES / "generic_firing.json")]) == 0
    assert "SEV2, from its severity label 'p1' (no rule matched)" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text('{"key": "k", "status": "pending"}', encoding="utf-8")
    assert main(["alerts", "test", str(bad), "--generic"]) == 1
    said = capsys.readouterr().out
    assert "would answer 400" in said
    assert "  status: Input should be 'firing' or 'resolved'" in said


def test_alerts_test_loads_the_playbooks_as_the_bot_does(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_env: None,
) -> None:
    """A rule naming no playbook there is: the dry run shows the one the bot would post (the
    best match). A PLAYBOOKS_DIR that was named but is not there: refused, as at start-up."""
    path = tmp_path / "policy.yaml"
    path.write_text(RULES.replace("payment-processing-down", "no-such-playbook"), "utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLAYBOOKS_DIR", str(ROOT / "playbooks"))
    payload = str(FIXTURES / "alertmanager_firing.json")
    assert main(["alerts", "test", payload, "--policy", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "playbook: no-such-playbook" not in shown
    assert "playbook: payment-processing-down" in shown
    monkeypatch.setenv("PLAYBOOKS_DIR", str(tmp_path / "nowhere"))
    assert main(["alerts", "test", payload, "--policy", str(path)]) == 1
    assert "PLAYBOOKS_DIR" in capsys.readouterr().err


# ---- the README ------------------------------------------------------------------------------
def _readme_section(title: str) -> str:
    start = README.index(f"\n{title}\n")
    end = README.index("\n#", start + len(title) + 2)
    return README[start:end]


def test_the_readme_alertmanager_receiver_sends_what_the_fixtures_are() -> None:
    section = _readme_section("### Alertmanager")
    config = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    (receiver,) = [r for r in config["receivers"] if r.get("webhook_configs")]
    (hook,) = receiver["webhook_configs"]
    assert hook["url"].endswith("/alerts/alertmanager")
    assert hook["send_resolved"] is True
    assert hook["http_config"]["authorization"]["type"] == "Bearer"
    assert hook["http_config"]["authorization"]["credentials"]
    for name in ("alertmanager_firing.json", "alertmanager_resolved.json"):
        assert fixture(name)["receiver"] == receiver["name"]
    grafana = _readme_section("### Grafana")
    assert f"| Name | `{fixture('grafana_firing.json')['receiver']}` |" in grafana
    assert "/alerts/alertmanager`" in grafana
    assert "| Authorization Header - Scheme | `Bearer` |" in grafana


def test_the_readme_generic_example_is_the_fixture() -> None:
    section = _readme_section("## Alerts open incidents")
    shown = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    assert shown == fixture("generic_firing.json")
    curl = section.split("```sh\n", 1)[1].split("```", 1)[0]
    body = json.loads(curl.split("-d '", 1)[1].split("'", 1)[0])
    assert body == fixture("generic_resolved.json")
    assert "/alerts/generic" in curl
    assert 'Authorization: Bearer $ALERTS_TOKEN"' in curl


def test_the_example_policy_rules_are_valid_and_decide_the_fixture() -> None:
    example = load_policy(ROOT / "policy.example.yaml")
    group = alertmanager_group(fixture("alertmanager_firing.json"))
    decision = decide(group.alerts[0], example)
    assert (decision.severity, decision.rule) == ("SEV1", 0)


# ---- statistics ------------------------------------------------------------------------------
def test_stats_tell_alert_declared_incidents_from_human_ones() -> None:
    policy = default_policy()
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    declared = now - timedelta(hours=3)
    alerted, _ = Incident.declare(
        incident_id="INC-20261122-001",
        title="payments",
        severity=policy.get("sev1"),
        by="U0BOT",
        now=declared,
        alert={
            "source": "alertmanager",
            "started_at": (declared - timedelta(minutes=4)).isoformat(),
        },
    )
    alerted.acknowledge(by="U0BOB", now=declared + timedelta(minutes=2))
    human, _ = Incident.declare(
        incident_id="INC-20261122-002",
        title="search",
        severity=policy.get("sev1"),
        by="U0ALICE",
        now=declared,
    )
    human.acknowledge(by="U0BOB", now=declared + timedelta(minutes=1))
    stats = compute_stats(
        [(alerted, []), (human, [])], policy=policy, since=now - timedelta(days=30), now=now
    )
    from_alerts, by_people = stats.by_origin
    assert (from_alerts.severity, from_alerts.count) == ("from alerts", 1)
    assert from_alerts.tta_median == timedelta(minutes=6)  # from the alert's start
    assert (by_people.severity, by_people.count) == ("by people", 1)
    assert by_people.tta_median == timedelta(minutes=1)
    lines = render_stats_text(stats)
    assert any(line.startswith("from alerts ") and " 6m " in line for line in lines)
    assert lines[-1].startswith("from alerts: declared by the bot from monitoring")
    only_people = compute_stats(
        [(human, [])], policy=policy, since=now - timedelta(days=30), now=now
    )
    assert only_people.by_origin == []


# ---- anything a sender may put in --------------------------------------------------------------
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
_alert = st.fixed_dictionaries(
    {"status": st.sampled_from(["firing", "resolved", "pending"]) | _json},
    optional={
        "labels": st.dictionaries(st.text(max_size=30), st.text(max_size=30) | _json),
        "annotations": st.dictionaries(st.text(max_size=30), st.text(max_size=60)),
        "startsAt": st.text(max_size=40) | _json,
        "fingerprint": st.text(max_size=40) | _json,
        "generatorURL": st.text(max_size=40),
    },
)
_body = st.fixed_dictionaries(
    {"status": st.sampled_from(["firing", "resolved"]) | _json},
    optional={
        "alerts": st.lists(_alert, max_size=4) | _json,
        "groupKey": st.text(max_size=40) | _json,
        "truncatedAlerts": st.integers(-5, 5) | _json,
        "commonLabels": st.dictionaries(st.text(max_size=10), st.text(max_size=10)),
        "orgId": st.integers() | _json,
        "key": st.text(max_size=250) | _json,
        "title": st.text(max_size=40) | _json,
        "severity": st.text(max_size=10) | _json,
        "services": st.lists(st.text(max_size=10), max_size=3) | _json,
    },
)


@settings(max_examples=300, deadline=None)
@given(body=_body)
def test_any_body_is_read_or_refused_with_a_named_field(body: dict[str, Any]) -> None:
    """Whatever the JSON, reading it gives bounded alerts or a PayloadError naming fields;
    and what is read can be decided against the policy."""
    for reader in (alertmanager_group, generic_group):
        problems: list[dict[str, str]] = []
        try:
            group = reader(body)
        except PayloadError as exc:
            problems = exc.problems or [{"field": ""}]
        if problems:
            assert all(p["field"] for p in problems)
            continue
        for item in group.alerts:
            assert item.key
            assert len(item.labels) <= 64
            decide(item, policy())


def test_a_broken_severity_is_the_only_error_said(tmp_path: Path) -> None:
    """A severity that fails to load is said as such; the rules naming it are not also
    said to name no severity (with an empty list of the ones there are)."""
    data = yaml.safe_load(RULES)
    data["severities"][0]["ack_timeout"] = "soon"
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    assert "ack_timeout" in str(raised.value)
    assert "is not a severity of this policy" not in str(raised.value)
