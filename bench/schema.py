"""A PostgreSQL database of a benchmark's own: a schema, migrated, dropped afterwards."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text

from bot.store.db import Database


@asynccontextmanager
async def postgres_schema(admin_url: str, name: str) -> AsyncIterator[Database | None]:
    """A migrated database in the schema `<name>_<pid>` on the server at `admin_url`,
    dropped at the end; None (and said so) when the server cannot make one."""
    schema = f"{name}_{os.getpid()}"
    admin = Database(admin_url)
    try:
        async with admin.transaction() as connection:
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as error:  # no server: the rows are left out, and said so
        print(f"PostgreSQL left out ({type(error).__name__}: {error})")
        await admin.dispose()
        yield None
        return
    database = Database(admin_url, connect_args={"server_settings": {"search_path": schema}})
    try:
        await database.migrate()
        yield database
    finally:
        await database.dispose()
        async with admin.transaction() as connection:
            await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()
