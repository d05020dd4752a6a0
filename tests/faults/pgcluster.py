"""A private PostgreSQL cluster for the fault campaign: `initdb` in a temporary directory,
on a free port, so it can be stopped, frozen and restarted without touching the machine's
own server."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path


def _bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    return candidates[0].parent if candidates else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateCluster:
    """One throw-away cluster. PostgreSQL refuses to run as root, so as root it runs as the
    `postgres` system user."""

    def __init__(self, root: Path) -> None:
        bindir = _bindir()
        if bindir is None:
            raise FileNotFoundError("initdb (PostgreSQL server binaries) is not installed")
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(root, user="postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(  # noqa: S603 - fixed tools from the PostgreSQL bindir
            [*self._as, str(self.bindir / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off"  # a crash of the server, not of the machine, keeps every commit
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w",
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """`immediate` is a crash: no checkpoint, connections cut."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def _pids(self) -> list[int]:
        pid_file = self.data / "postmaster.pid"
        postmaster = int(pid_file.read_text().splitlines()[0])
        children = subprocess.run(  # noqa: S603
            ["pgrep", "-P", str(postmaster)],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        return [postmaster, *(int(child) for child in children)]

    def freeze(self) -> None:
        """Every server process stopped (SIGSTOP): connections stay open and nothing answers,
        as with a hung host or a network that drops packets."""
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in reversed(self._pids()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.thaw()
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
