"""Fixtures of the fault campaign: a private PostgreSQL cluster that may be stopped and frozen."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.store.db import Database
from tests.faults.pgcluster import PrivateCluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    """A running private cluster; each test module gets its own, so a fault never leaks."""
    root = Path(tempfile.mkdtemp(prefix="incident-bot-pg-"))
    try:
        server = PrivateCluster(root)
    except FileNotFoundError as missing:
        root.rmdir()
        if os.environ.get("CI"):
            raise  # CI has the server binaries: the database faults must be tried there
        pytest.skip(f"needs the PostgreSQL server binaries: {missing}")
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
async def empty(cluster: PrivateCluster) -> str:
    """The private cluster's database, emptied of the previous test's tables."""
    database = Database(cluster.url)
    try:
        async with database.transaction() as connection:
            await connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await connection.execute(text("CREATE SCHEMA public"))
    finally:
        await database.dispose()
    return cluster.url
