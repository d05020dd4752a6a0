"""Playbooks: the shipped folder loads, titles find the right playbook, broken files are named."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bot.domain.policy import default_policy
from bot.playbooks import (
    GENERIC_ID,
    Playbook,
    PlaybookError,
    PlaybookSet,
    builtin_generic,
    load_playbooks,
    slug,
    words,
)

SHIPPED = Path(__file__).resolve().parent.parent / "playbooks"
POLICY = default_policy()

EXPECTED_IDS = {
    "generic",
    "payment-processing-down",
    "payment-delays",
    "messaging-down",
    "profile-service-down",
    "database-connection-issues",
    "database-performance",
    "high-error-rate",
    "performance-degradation",
    "authentication-failure",
    "authentication-compromise",
    "cache-issues",
    "data-breach",
    "data-loss-corruption",
    "ddos-attack",
    "complete-system-failure",
    "gdpr-compliance-failure",
    "listing-service-issues",
    "search-recommendation-issues",
    "order-service-issues",
}

MINIMAL = """\
title: Cache issues
match:
  keywords: [cache]
steps:
  - Check Redis
"""
GENERIC = """\
title: Generic
generic: true
steps:
  - Detect
"""


@pytest.fixture(scope="module")
def shipped() -> PlaybookSet:
    return load_playbooks(SHIPPED, policy=POLICY)


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(directory: Path) -> str:
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(directory, policy=POLICY)
    return str(caught.value)


# --- the shipped folder ------------------------------------------------------------------


def test_shipped_playbooks_load_with_the_default_policy(shipped: PlaybookSet) -> None:
    assert set(shipped.ids) == EXPECTED_IDS
    assert shipped.generic.id == GENERIC_ID
    assert [p.id for p in shipped if p.generic] == [GENERIC_ID]


def test_shipped_playbooks_have_steps_diagnostics_and_escalation(shipped: PlaybookSet) -> None:
    for playbook in shipped:
        assert playbook.steps, playbook.id
        assert playbook.escalation, playbook.id
        assert playbook.diagnostics, playbook.id
        assert len({s.id for s in playbook.steps}) == len(playbook.steps), playbook.id
        if not playbook.generic:
            assert playbook.match.keywords, playbook.id
        # severity words are stored under the policy's names
        for word in playbook.match.severities:
            assert word in {"SEV1", "SEV2", "SEV3", "SEV4"}, (playbook.id, word)


def test_shipped_playbooks_name_nobody(shipped: PlaybookSet) -> None:
    """Escalation contacts are roles: no Slack ids, no @mentions."""
    for playbook in shipped:
        for contact in playbook.escalation:
            assert "@" not in contact, (playbook.id, contact)
            assert not any(w.isupper() and w[:1] in "UWS" and len(w) > 8 for w in contact.split())


def test_the_payment_playbook_keeps_the_seed_time_windows(shipped: PlaybookSet) -> None:
    payment = shipped.get("payment-processing-down")
    assert payment is not None
    assert payment.steps[0].when == "0-5 minutes"
    assert payment.steps[0].id == "activate-the-payment-circuit-breakers"
    assert "circuit breakers" in payment.steps[0].text
    assert payment.match.severities == ["SEV1"]
    languages = {d.language for d in payment.diagnostics}
    assert languages == {"bash"}


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("payment down", "payment-processing-down"),
        ("Payments failing", "payment-processing-down"),
        ("stripe webhook errors", "payment-processing-down"),
        ("payments slow", "payment-delays"),
        ("db connection pool exhausted", "database-connection-issues"),
        ("slow database queries", "database-performance"),
        ("login broken / 401s", "authentication-failure"),
        ("auth compromised", "authentication-compromise"),
        ("redis cache stale", "cache-issues"),
        ("possible data breach", "data-breach"),
        ("ddos on api", "ddos-attack"),
        ("everything is down", "complete-system-failure"),
        ("messaging outage", "messaging-down"),
        ("error rate spiking", "high-error-rate"),
        ("memory leak in worker", "performance-degradation"),
        ("GDPR consent records missing", "gdpr-compliance-failure"),
        ("listing creation failing", "listing-service-issues"),
        ("search returns no results", "search-recommendation-issues"),
        ("order stuck in saga", "order-service-issues"),
        ("data corruption after migration", "data-loss-corruption"),
        ("profile page not loading", "profile-service-down"),
    ],
)
def test_titles_find_the_expected_playbook_first(
    shipped: PlaybookSet, title: str, expected: str
) -> None:
    matches = shipped.match(title=title, services=[], severity="sev2")
    assert matches, title
    assert matches[0].playbook.id == expected, [m.playbook.id for m in matches]
    assert matches[0].keywords  # it says which keywords matched


def test_an_unrelated_title_matches_nothing_and_falls_back_to_generic(
    shipped: PlaybookSet,
) -> None:
    title = "typo on the pricing page"
    assert shipped.match(title=title, services=[], severity="sev4") == []
    assert shipped.choose(title=title, services=[], severity="sev4").id == GENERIC_ID


def test_the_generic_playbook_is_never_a_match(shipped: PlaybookSet) -> None:
    matches = shipped.match(title="generic incident procedure", services=[], severity="sev1")
    assert GENERIC_ID not in [m.playbook.id for m in matches]


def test_services_match_and_severity_reorders(shipped: PlaybookSet) -> None:
    services = ["payment-service"]
    sev1 = shipped.match(title="something odd", services=services, severity="p0")
    sev2 = shipped.match(title="something odd", services=services, severity="high")
    assert [m.playbook.id for m in sev1][:2] == ["payment-processing-down", "payment-delays"]
    assert [m.playbook.id for m in sev2][:2] == ["payment-delays", "payment-processing-down"]
    assert sev2[0].services == ("payment-service",)
    assert sev2[0].reasons == ["service: payment-service", "severity fits"]


def test_title_outweighs_services_and_severity(shipped: PlaybookSet) -> None:
    matches = shipped.match(title="redis cache stale", services=["payments"], severity="sev1")
    assert matches[0].playbook.id == "cache-issues"
    assert matches[0].score > matches[1].score


def test_an_unknown_severity_word_never_fits_and_does_not_raise(shipped: PlaybookSet) -> None:
    matches = shipped.match(title="payment down", services=[], severity="whatever")
    assert matches[0].playbook.id == "payment-processing-down"
    assert not matches[0].severity_fit


def test_keywords_match_whole_words_only(shipped: PlaybookSet) -> None:
    # "dbx" and "ordered" contain "db" and "order" but are other words
    assert shipped.match(title="dbx ordered", services=[], severity="sev3") == []


# --- normalisation and ids ------------------------------------------------------------------


def test_words_lowercase_strip_punctuation_filler_and_fold_plurals() -> None:
    assert words("Payments failing!") == ("payment", "failing")
    assert words("login broken / 401s") == ("login", "broken", "401")
    assert words("Everything is DOWN") == ("everything", "down")
    assert words("can't reach the queries") == ("cant", "reach", "query")
    assert words("redis status") == ("redis", "status")


def test_slug_is_short_and_stable() -> None:
    assert slug("Activate payment circuit breakers") == "activate-payment-circuit-breakers"
    long = slug("Restore services in priority order, validating each one before the next one")
    assert len(long) <= 48
    assert long == "restore-services-in-priority-order-validating"
    assert slug("!!!") == "step"


def test_derived_step_ids_are_unique_and_explicit_ids_kept(tmp_path: Path) -> None:
    write(tmp_path, "generic.yaml", GENERIC)
    write(
        tmp_path,
        "cache.yaml",
        """\
        title: Cache issues
        match: {keywords: [cache]}
        steps:
          - Check Redis
          - text: Check Redis
            when: 0-5 minutes
          - {id: flush, text: Flush the cache}
        """,
    )
    cache = load_playbooks(tmp_path, policy=POLICY).get("cache")
    assert cache is not None
    assert [s.id for s in cache.steps] == ["check-redis", "check-redis-2", "flush"]
    assert cache.steps[1].when == "0-5 minutes"
    step = cache.step("flush")
    assert step is not None
    assert step.text == "Flush the cache"
    assert cache.step("missing") is None


# --- missing, empty, broken -----------------------------------------------------------------


def test_an_empty_directory_gives_the_builtin_generic(tmp_path: Path) -> None:
    loaded = load_playbooks(tmp_path, policy=POLICY)
    assert loaded.ids == [GENERIC_ID]
    assert loaded.generic == builtin_generic()
    assert [s.id for s in loaded.generic.steps][:3] == ["detect", "assess", "communicate"]
    assert loaded.match(title="payment down", services=[], severity="sev1") == []


def test_a_missing_directory_gives_the_builtin_generic(tmp_path: Path) -> None:
    loaded = load_playbooks(tmp_path / "nope", policy=POLICY)
    assert loaded.ids == [GENERIC_ID]
    assert loaded.get(GENERIC_ID) is loaded.generic
    assert loaded.get("payment-processing-down") is None


def test_bad_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "generic.yaml", GENERIC)
    path = write(tmp_path, "cache.yaml", "title: [unclosed\nsteps: x\n")
    message = load_error(tmp_path)
    assert message.startswith(f"{path}: not valid YAML: line 2, column ")


def test_a_missing_field_names_the_file_and_the_field(tmp_path: Path) -> None:
    write(tmp_path, "generic.yaml", GENERIC)
    path = write(
        tmp_path,
        "cache.yaml",
        """\
        title: Cache issues
        match: {keywords: [cache]}
        steps:
          - Check Redis
          - Clear the keys
          - when: 0-5 minutes
        """,
    )
    assert load_error(tmp_path) == f"{path}: steps.2.text: Field required"


def test_an_unknown_severity_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "generic.yaml", GENERIC)
    text = MINIMAL.replace("[cache]\n", "[cache]\n  severities: [sev1, sev9]\n")
    path = write(tmp_path, "cache.yaml", text)
    message = load_error(tmp_path)
    assert message.startswith(f"{path}: match.severities.1: 'sev9' is not a severity")
    assert "sev1 (p0/critical)" in message


def test_severity_aliases_are_stored_under_the_policy_name(tmp_path: Path) -> None:
    write(tmp_path, "generic.yaml", GENERIC)
    write(tmp_path, "cache.yaml", MINIMAL.replace("[cache]\n", "[cache]\n  severities: [p1]\n"))
    cache = load_playbooks(tmp_path, policy=POLICY).get("cache")
    assert cache is not None
    assert cache.match.severities == ["SEV2"]


def test_duplicate_ids_are_an_error(tmp_path: Path) -> None:
    write(tmp_path, "generic.yaml", GENERIC)
    first = write(tmp_path, "cache.yaml", MINIMAL)
    second = write(tmp_path, "cache.yml", MINIMAL)
    assert load_error(tmp_path) == f"{second}: id: 'cache' is already used by {first}"


def test_an_id_that_differs_from_the_file_name_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "generic.yaml", GENERIC)
    path = write(tmp_path, "cache.yaml", "id: redis\n" + MINIMAL)
    assert load_error(tmp_path) == (
        f"{path}: id: must be the file name without suffix ('cache'), or left out"
    )


def test_a_file_name_that_is_not_a_slug_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "generic.yaml", GENERIC)
    path = write(tmp_path, "Cache Issues.yaml", MINIMAL)
    assert load_error(tmp_path) == (
        f"{path}: id: the file name must be lowercase words joined by -, e.g. cache.yaml"
    )


def test_two_generic_playbooks_are_an_error(tmp_path: Path) -> None:
    first = write(tmp_path, "generic.yaml", GENERIC)
    second = write(tmp_path, "other.yaml", GENERIC)
    assert load_error(tmp_path) == (
        f"{second}: generic: only one playbook may be generic; {first} is"
    )


def test_no_generic_playbook_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "cache.yaml", MINIMAL)
    assert load_error(tmp_path).startswith(f"{tmp_path}: generic: no playbook is generic")


def test_unknown_fields_and_unreachable_playbooks_are_errors(tmp_path: Path) -> None:
    write(tmp_path, "generic.yaml", GENERIC)
    typo = write(tmp_path, "a.yaml", MINIMAL.replace("steps:", "step: []\nsteps:"))
    unreachable = write(tmp_path, "b.yaml", "title: B\nsteps: [Do it]\n")
    lines = load_error(tmp_path).splitlines()
    assert lines == [
        f"{typo}: step: Extra inputs are not permitted",
        f"{unreachable}: (top level): match needs at least one keyword or service "
        "(or mark the playbook generic: true)",
    ]


def test_a_key_written_twice_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "generic.yaml", GENERIC)
    path = write(tmp_path, "cache.yaml", MINIMAL + "title: Again\n")
    message = load_error(tmp_path)
    assert message.startswith(f"{path}: not valid YAML: line 6, column 1: key 'title' is written")


def test_an_empty_file_and_a_list_are_errors(tmp_path: Path) -> None:
    write(tmp_path, "generic.yaml", GENERIC)
    empty = write(tmp_path, "a.yaml", "")
    listed = write(tmp_path, "b.yml", "- one\n")
    assert load_error(tmp_path).splitlines() == [
        f"{empty}: (top level): the file is empty",
        f"{listed}: (top level): expected a mapping of fields, not list",
    ]


def test_a_playbook_set_checks_its_invariants() -> None:
    payment = Playbook.model_validate(
        {"id": "pay", "title": "Pay", "match": {"keywords": ["payment"]}, "steps": ["Check"]}
    )
    with pytest.raises(PlaybookError, match="exactly one playbook must be generic, found 0"):
        PlaybookSet([payment], policy=POLICY)
    with pytest.raises(PlaybookError, match="pay: id: used by more than one playbook"):
        PlaybookSet([payment, payment, builtin_generic()], policy=POLICY)


# --- examples: true ------------------------------------------------------------------------


def test_shipped_playbooks_say_their_diagnostics_are_examples(shipped: PlaybookSet) -> None:
    for playbook in shipped:
        assert playbook.examples is True, playbook.id
    for path in sorted(SHIPPED.glob("*.yaml")):
        head = path.read_text(encoding="utf-8").splitlines()[0]
        assert head.startswith("# EXAMPLE PLAYBOOK: adapt it"), path.name
        assert "PLAYBOOKS_DIR" in path.read_text(encoding="utf-8"), path.name


def test_a_playbook_of_your_own_is_not_an_example(tmp_path: Path) -> None:
    write(tmp_path, "generic.yaml", GENERIC)
    write(tmp_path, "cache.yaml", MINIMAL)
    write(tmp_path, "db.yaml", MINIMAL.replace("cache", "database") + "examples: false\n")
    loaded = load_playbooks(tmp_path, policy=POLICY)
    assert [p.examples for p in loaded] == [False, False, False]
    assert builtin_generic().examples is False


@pytest.mark.parametrize("value", ["maybe", "'true'", "1", "[]"])
def test_examples_must_be_a_yaml_boolean(tmp_path: Path, value: str) -> None:
    write(tmp_path, "generic.yaml", GENERIC)
    path = write(tmp_path, "cache.yaml", MINIMAL + f"examples: {value}\n")
    assert load_error(tmp_path) == f"{path}: examples: Input should be a valid boolean"
