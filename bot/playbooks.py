"""Playbooks: one YAML file per situation from the runbooks, loaded, validated and matched.

A playbook says when it applies (`match`: keywords in the incident title, services,
severities) and what to do (`steps`, shown as a checklist; `diagnostics`, commands that are
shown and never run; `escalation`, contacts written as roles). Exactly one playbook is
`generic`: the procedure for anything no other playbook matches. `examples: true` says its
diagnostics are samples to replace, not commands for your systems (every shipped playbook
says so, until you adapt it).

Matching is plain word matching, so a person can predict it: the title and every keyword are
lowercased, stripped of punctuation and of filler words ("the", "is", "on" …), and simple
plurals are folded ("payments" → "payment", "401s" → "401"); a keyword matches when all its
words appear next to each other in the title.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bot.domain.policy import Policy

GENERIC_ID = "generic"
SUFFIXES = (".yaml", ".yml")

_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_SLUG_MAX = 48
_NON_WORD = re.compile(r"[^a-z0-9]+")
_APOSTROPHES = re.compile(r"['’`]")
_FILLER_WORDS = (
    "a an the is are was were be been being am on in at of for to from with and or by it its "
    "our we my this that these those there some very"
)
_FILLER = frozenset(_FILLER_WORDS.split())

# Title hits weigh most, then services, then severity fit (see `Match.score`).
_TITLE_WEIGHT = 100
_SERVICE_WEIGHT = 10
_SERVICE_CAP = 9


class PlaybookError(Exception):
    """A playbook file is unreadable or invalid; each line names the file and the field."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


def words(text: str) -> tuple[str, ...]:
    """The normalised words of `text`: lowercase, no punctuation or filler, plurals folded."""
    plain = _APOSTROPHES.sub("", text.lower())
    return tuple(_fold(word) for word in _NON_WORD.split(plain) if word and word not in _FILLER)


def _fold(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def slug(text: str) -> str:
    """A step id derived from its text: lowercase words joined by `-`, at most 48 chars."""
    parts = [part for part in _NON_WORD.split(_APOSTROPHES.sub("", text.lower())) if part]
    kept: list[str] = []
    for part in parts:
        if kept and len("-".join([*kept, part])) > _SLUG_MAX:
            break
        kept.append(part[:_SLUG_MAX])
    return "-".join(kept) or "step"


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


def _has_words(value: str) -> str:
    if not words(value):
        raise ValueError(f"{value!r} has no words left once filler and punctuation are removed")
    return value


def _known_severity(value: str, info: ValidationInfo) -> str:
    policy = info.context.get("policy") if isinstance(info.context, dict) else None
    if not isinstance(policy, Policy):
        return value
    severity = policy.severity(value)
    if severity is None:
        raise ValueError(
            f"{value!r} is not a severity of the policy; use one of {policy.severity_words()}"
        )
    return severity.name


Keyword = Annotated[Text, AfterValidator(_has_words)]
SeverityWord = Annotated[Text, AfterValidator(_known_severity)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MatchRules(_Model):
    """When a playbook applies. Severities only reorder playbooks matched by title or service."""

    keywords: list[Keyword] = Field(default_factory=list)
    services: list[Keyword] = Field(default_factory=list)
    severities: list[SeverityWord] = Field(default_factory=list)


class Step(_Model):
    """One checklist item. `id` is stable as long as the text (or an explicit id) is."""

    id: Annotated[str, StringConstraints(pattern=_ID.pattern, max_length=64)]
    text: Text
    when: Text | None = None


class Diagnostic(_Model):
    """A command to show (never run): what it checks, the command, its language."""

    label: Text
    command: Text
    language: Text | None = None


class Playbook(_Model):
    """A situation's procedure. `id` is the file name without its suffix."""

    id: Annotated[str, StringConstraints(pattern=_ID.pattern, max_length=64)]
    title: Text
    description: str = ""
    match: MatchRules = Field(default_factory=MatchRules)
    steps: list[Step] = Field(min_length=1)
    diagnostics: list[Diagnostic] = Field(default_factory=list)
    escalation: list[Text] = Field(default_factory=list)
    generic: bool = False
    # The diagnostics are samples (from the runbooks the shipped playbooks were written
    # from), not commands for your systems: shown as "example commands — replace them".
    # A YAML boolean; false when left out, as in a playbook of your own.
    examples: StrictBool = False

    @field_validator("steps", mode="before")
    @classmethod
    def _step_ids(cls, value: Any) -> Any:
        """A step may be written as plain text; a step without an id gets one from its text."""
        if not isinstance(value, list):
            return value
        explicit = {s["id"] for s in value if isinstance(s, dict) and isinstance(s.get("id"), str)}
        taken: set[str] = set(explicit)
        steps: list[Any] = []
        for raw in value:
            step = {"text": raw} if isinstance(raw, str) else raw
            if isinstance(step, dict) and "id" not in step:
                # Without a usable text the step fails on `text`; the id would only add noise.
                text = step.get("text")
                base = slug(text) if isinstance(text, str) else "step"
                candidate, n = base, 1
                while candidate in taken:
                    n += 1
                    candidate = f"{base}-{n}"
                taken.add(candidate)
                step = {"id": candidate, **step}
            steps.append(step)
        return steps

    @field_validator("steps")
    @classmethod
    def _unique_step_ids(cls, steps: list[Step]) -> list[Step]:
        seen: set[str] = set()
        for step in steps:
            if step.id in seen:
                raise ValueError(f"step id {step.id!r} is used twice")
            seen.add(step.id)
        return steps

    @model_validator(mode="after")
    def _reachable(self) -> Playbook:
        if not self.generic and not (self.match.keywords or self.match.services):
            raise ValueError(
                "match needs at least one keyword or service (or mark the playbook generic: true)"
            )
        return self

    def step(self, step_id: str) -> Step | None:
        """The step with this id, or None."""
        return next((step for step in self.steps if step.id == step_id), None)


@dataclass(frozen=True)
class Match:
    """A playbook that fits an incident, and why: the keywords and services that matched."""

    playbook: Playbook
    keywords: tuple[str, ...]
    services: tuple[str, ...]
    severity_fit: bool
    title_words: int

    @property
    def score(self) -> int:
        """Title words covered weigh most, then matched services, then a severity fit."""
        return (
            self.title_words * _TITLE_WEIGHT
            + min(len(self.services), _SERVICE_CAP) * _SERVICE_WEIGHT
            + int(self.severity_fit)
        )

    @property
    def reasons(self) -> list[str]:
        """Why it matched, for people: `title: "payment down"`, `service: payments` …"""
        found = [f'title: "{keyword}"' for keyword in self.keywords]
        found += [f"service: {service}" for service in self.services]
        if self.severity_fit:
            found.append("severity fits")
        return found


@dataclass(frozen=True)
class _Index:
    playbook: Playbook
    keywords: tuple[tuple[str, tuple[str, ...]], ...]
    services: tuple[tuple[str, ...], ...]


def _positions(phrase: tuple[str, ...], tokens: tuple[str, ...]) -> set[int]:
    """The token positions covered by every occurrence of `phrase` in `tokens`."""
    covered: set[int] = set()
    size = len(phrase)
    for start in range(len(tokens) - size + 1):
        if tokens[start : start + size] == phrase:
            covered.update(range(start, start + size))
    return covered


class PlaybookSet:
    """The loaded playbooks: exactly one generic, ids unique, severities known to `policy`."""

    def __init__(self, playbooks: Sequence[Playbook], *, policy: Policy) -> None:
        problems: list[str] = []
        ids = [playbook.id for playbook in playbooks]
        problems += [f"{i}: id: used by more than one playbook" for i in sorted(_twice(ids))]
        generics = [playbook for playbook in playbooks if playbook.generic]
        if len(generics) != 1:
            problems.append(f"generic: exactly one playbook must be generic, found {len(generics)}")
        for playbook in playbooks:
            for word in playbook.match.severities:
                if policy.severity(word) is None:
                    problems.append(f"{playbook.id}: match.severities: unknown severity {word!r}")
        if problems:
            raise PlaybookError(problems)
        self._playbooks = tuple(playbooks)
        self._policy = policy
        self.generic: Playbook = generics[0]
        self._index = tuple(
            _Index(
                playbook=playbook,
                keywords=tuple((keyword, words(keyword)) for keyword in playbook.match.keywords),
                services=tuple(words(service) for service in playbook.match.services),
            )
            for playbook in playbooks
            if not playbook.generic
        )

    def __iter__(self) -> Iterator[Playbook]:
        return iter(self._playbooks)

    def __len__(self) -> int:
        return len(self._playbooks)

    @property
    def ids(self) -> list[str]:
        return [playbook.id for playbook in self._playbooks]

    def missing_for(self, policy: Policy) -> list[str]:
        """The policy's alert rules that name a playbook this set does not have (their
        incidents get the best match instead), one line each."""
        return [
            f"alerts.{number}.playbook: there is no playbook {rule.playbook!r}; its incidents "
            "get the best-matching playbook instead"
            for number, rule in enumerate(policy.alerts)
            if rule.playbook is not None and self.get(rule.playbook) is None
        ]

    def get(self, playbook_id: str) -> Playbook | None:
        """The playbook with this id (generic included), or None."""
        return next((p for p in self._playbooks if p.id == playbook_id), None)

    def match(self, *, title: str, services: Sequence[str], severity: str) -> list[Match]:
        """Non-generic playbooks whose keywords or services fit, best first (ties by id).

        A keyword counts when all its words appear together in the title; the score is the
        number of title words covered by matching keywords, then the number of the incident's
        services a playbook names, then whether the severity is among the playbook's. An
        unknown severity word never fits; it does not raise.
        """
        tokens = words(title)
        present = set(tokens)  # a keyword whose first word is absent cannot match
        service_tokens = [(service, words(service)) for service in services]
        wanted = self._policy.severity(severity)
        found: list[Match] = []
        for entry in self._index:
            covered: set[int] = set()
            hits: list[str] = []
            for keyword, phrase in entry.keywords:
                if not phrase or phrase[0] not in present:
                    continue
                positions = _positions(phrase, tokens)
                if positions:
                    covered |= positions
                    hits.append(keyword)
            matched_services = tuple(
                service
                for service, tokens_of_service in service_tokens
                if any(_positions(rule, tokens_of_service) for rule in entry.services)
            )
            if not covered and not matched_services:
                continue
            fits = wanted is not None and any(
                self._policy.severity(word) == wanted for word in entry.playbook.match.severities
            )
            found.append(
                Match(
                    playbook=entry.playbook,
                    keywords=tuple(hits),
                    services=matched_services,
                    severity_fit=fits,
                    title_words=len(covered),
                )
            )
        found.sort(key=lambda m: (-m.score, m.playbook.id))
        return found

    def choose(self, *, title: str, services: Sequence[str], severity: str) -> Playbook:
        """The best match, or the generic playbook when nothing matches."""
        return self.pick(title=title, services=services, severity=severity)[0]

    def pick(
        self, *, title: str, services: Sequence[str], severity: str, named: str | None = None
    ) -> tuple[Playbook, list[str]]:
        """The playbook an incident gets, and up to three others that also match (offered
        beside it): the one `named` (an alert rule's) when there is one by that id, else the
        best match, else the generic playbook."""
        matches = [
            m.playbook for m in self.match(title=title, services=services, severity=severity)
        ]
        chosen = self.get(named) if named else None
        if chosen is None:
            chosen = matches[0] if matches else self.generic
        return chosen, [p.id for p in matches if p.id != chosen.id][:3]


def _twice(values: Sequence[str]) -> set[str]:
    return {value for value, count in Counter(values).items() if count > 1}


def builtin_generic() -> Playbook:
    """The generic procedure of the runbooks, used when no playbooks directory exists."""
    return Playbook(
        id=GENERIC_ID,
        title="Generic incident procedure",
        description="Detect, assess, communicate, mitigate, investigate, resolve, document.",
        generic=True,
        steps=[
            Step(id="detect", text="Confirm the alert or report is real and note when it began"),
            Step(id="assess", text="Assess impact (users, features, data, money), set severity"),
            Step(id="communicate", text="Post the first update: impact, status, commander"),
            Step(
                id="mitigate",
                text="Stop the bleeding: revert a recent deploy, disable a feature flag, "
                "scale up, or enable maintenance mode",
            ),
            Step(id="investigate", text="Collect error logs, metrics, deploys, config changes"),
            Step(id="resolve", text="Fix (rollback, hotfix, config, scale) and verify recovery"),
            Step(id="document", text="Record the timeline; draft the post-incident report"),
        ],
        escalation=["On-call engineer", "Engineering lead", "CTO", "CEO (SEV1 only)"],
    )


# libyaml's parser when PyYAML was built with it (about ten times faster: the playbooks are
# read at every start), the pure-Python one otherwise; both safe.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """Safe YAML that refuses a key written twice in one mapping (the last would win silently)."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):
            continue  # construct_mapping reports it
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is written twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _describe(exc: ValidationError, source: str) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {where}: {message}")
    return lines


def _read(path: Path, policy: Policy) -> Playbook | list[str]:
    """The playbook in `path`, or the problems found in it (each naming file and field)."""
    source = str(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506
    except OSError as exc:
        return [f"{source}: cannot read: {exc.strerror}"]
    except UnicodeDecodeError:
        return [f"{source}: cannot read: not UTF-8 text"]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        return [f"{source}: not valid YAML: {where}{problem}"]
    if data is None:
        return [f"{source}: (top level): the file is empty"]
    if not isinstance(data, dict):
        return [f"{source}: (top level): expected a mapping of fields, not {type(data).__name__}"]
    stem = path.stem
    if not _ID.match(stem):
        return [f"{source}: id: the file name must be lowercase words joined by -, e.g. cache.yaml"]
    if "id" in data and data["id"] != stem:
        return [f"{source}: id: must be the file name without suffix ({stem!r}), or left out"]
    try:
        return Playbook.model_validate({**data, "id": stem}, context={"policy": policy})
    except ValidationError as exc:
        return _describe(exc, source)


def load_playbooks(directory: Path, *, policy: Policy) -> PlaybookSet:
    """Every `*.yaml`/`*.yml` in `directory` (not recursive, dot-files skipped), validated.

    Raises PlaybookError listing every problem (file and field on each line): invalid YAML or
    fields, severity words unknown to `policy`, an id used twice, not exactly one generic
    playbook. A missing or empty directory gives a set holding only `builtin_generic()`.
    """
    if not directory.exists():
        return PlaybookSet([builtin_generic()], policy=policy)
    if not directory.is_dir():
        raise PlaybookError([f"{directory}: not a directory"])
    paths = sorted(
        path
        for path in directory.iterdir()
        if path.suffix in SUFFIXES and not path.name.startswith(".") and path.is_file()
    )
    if not paths:
        return PlaybookSet([builtin_generic()], policy=policy)
    problems: list[str] = []
    loaded: list[tuple[Path, Playbook]] = []
    for path in paths:
        result = _read(path, policy)
        if isinstance(result, Playbook):
            loaded.append((path, result))
        else:
            problems += result
    owners: dict[str, Path] = {}
    for path, playbook in loaded:
        if playbook.id in owners:
            problems.append(f"{path}: id: {playbook.id!r} is already used by {owners[playbook.id]}")
        else:
            owners[playbook.id] = path
    generics = [path for path, playbook in loaded if playbook.generic]
    for path in generics[1:]:
        problems.append(f"{path}: generic: only one playbook may be generic; {generics[0]} is")
    if not generics and not problems:
        problems.append(
            f"{directory}: generic: no playbook is generic; "
            "mark one `generic: true` (e.g. generic.yaml)"
        )
    if problems:
        raise PlaybookError(problems)
    return PlaybookSet([playbook for _, playbook in loaded], policy=policy)
