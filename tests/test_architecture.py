"""The dependency arrows (README, "How it is built") point inward; this test keeps them so."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

BOT = Path(__file__).resolve().parents[1] / "bot"
THIRD_PARTY_OK = {"pydantic", "yaml"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules(package: str) -> list[Path]:
    return sorted((BOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", modules("domain"), ids=lambda p: p.name)
def test_domain_depends_on_nothing_of_ours(path: Path) -> None:
    for name in imports_of(path):
        top = name.split(".")[0]
        if top == "bot":
            assert name.startswith("bot.domain"), f"{path.name} imports {name}"
        else:
            assert top in sys.stdlib_module_names or top in THIRD_PARTY_OK, (
                f"{path.name} imports {name}: the domain is pure (no Slack, SQL or I/O library)"
            )
        assert top != "asyncio", f"{path.name}: the domain has no asyncio"


@pytest.mark.parametrize("path", modules("service"), ids=lambda p: p.name)
def test_service_knows_neither_slack_nor_sql(path: Path) -> None:
    for name in imports_of(path):
        assert not name.startswith(("bot.slack", "bot.store", "bot.worker", "bot.runtime")), (
            f"{path.name} imports {name}"
        )
        assert name.split(".")[0] not in {"slack_sdk", "slack_bolt", "sqlalchemy", "aiohttp"}, (
            f"{path.name} imports {name}"
        )


@pytest.mark.parametrize("path", [*modules("store"), BOT / "worker.py"], ids=lambda p: p.name)
def test_store_and_worker_know_no_slack(path: Path) -> None:
    for name in imports_of(path):
        assert not name.startswith("bot.slack"), f"{path.name} imports {name}"
        assert name.split(".")[0] not in {"slack_sdk", "slack_bolt"}, f"{path.name} imports {name}"


def test_one_clock() -> None:
    readers = [
        path.relative_to(BOT).as_posix()
        for path in BOT.rglob("*.py")
        if "datetime.now(" in path.read_text(encoding="utf-8")
        or "time.time()" in path.read_text(encoding="utf-8")
    ]
    assert sorted(readers) == ["clock.py", "devtools/driver.py", "devtools/fakeslack.py"]


def test_the_alert_intake_knows_no_slack_nor_the_store() -> None:
    for name in imports_of(BOT / "web" / "alerts.py"):
        assert not name.startswith(("bot.slack", "bot.store")), f"alerts.py imports {name}"
        assert name.split(".")[0] not in {"slack_sdk", "slack_bolt", "sqlalchemy"}, name


def test_the_public_web_reads_only_the_domain() -> None:
    """The status page is public: it imports neither Slack nor the store, so it can show
    only what the service hands it (the published updates). (The alert intake beside it
    declares incidents, so it calls the service: it is not public, it needs a token.)"""
    path = BOT / "web" / "status.py"
    for name in imports_of(path):
        assert not name.startswith(("bot.slack", "bot.store", "bot.service")), (
            f"{path.name} imports {name}"
        )
        assert name.split(".")[0] not in {"slack_sdk", "slack_bolt", "sqlalchemy"}, (
            f"{path.name} imports {name}"
        )
