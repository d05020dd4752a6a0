"""SQLite serves one bot process: the serving process holds a lock file next to the database.

The lock is an exclusive `flock` on `<database>.lock`, which holds the holder's pid. The
operating system releases it when the process ends, however it ends (a crash or SIGKILL
included), so a restart never finds a stale lock; the file itself stays, empty, between runs.
In-memory SQLite and PostgreSQL need no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine.url import make_url

from bot.config import SettingsError


class DatabaseBusy(SettingsError):
    """The SQLite database cannot be served from here (another process serves it); the
    message is one line naming DATABASE_URL."""


def sqlite_file(url: str) -> str | None:
    """The file of a SQLite database URL as written in it; None for in-memory SQLite and for
    every other database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
        return None
    return database.removeprefix("file:") if parsed.query.get("uri") else database


@contextlib.contextmanager
def single_process(url: str) -> Iterator[Path | None]:
    """Hold the database's lock file for the block; yields its path (None: no lock needed).

    Raises `DatabaseBusy` at once, without waiting, when another process holds it.
    """
    database = sqlite_file(url)
    if database is None:
        yield None
        return
    path = Path(database + ".lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise DatabaseBusy(f"DATABASE_URL: cannot open {path}: {error.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
            who = f"another bot process (pid {holder})" if holder.isdigit() else "another process"
            raise DatabaseBusy(
                f"DATABASE_URL: {who} is using {database}; SQLite serves one process"
                " — use PostgreSQL for several replicas"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
