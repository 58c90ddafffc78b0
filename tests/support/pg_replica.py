"""A streaming read replica of the test PostgreSQL server, for the replica tests.

:func:`running_replica` starts one with ``scripts/pg-replica.sh`` (a base backup of the primary
in a temporary directory, a free port) and stops and deletes it on exit; the session fixture
``pg_replica`` (``tests/conftest.py``) wraps it, so a run that asks for no replica starts none.
The replica holds every database of the primary, those created after it started included
(they arrive by streaming).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.support.db import PG_ADMIN_URL
from tests.support.processes import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["PgReplica", "running_replica"]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pg-replica.sh"


class PgReplica:
    """A replica started by ``scripts/pg-replica.sh`` on ``port``, its data under ``root``."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port

    def url_for(self, primary_url: str) -> str:
        """``primary_url`` (a database of the test server) on the replica."""
        parts = urlsplit(primary_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def _script(self, command: str, *, timeout_s: float = 120.0) -> None:
        primary = urlsplit(PG_ADMIN_URL)
        env = {
            **os.environ,
            "PG_REPLICA_DIR": str(self.root),
            "PG_PRIMARY_HOST": primary.hostname or "127.0.0.1",
            "PG_PRIMARY_PORT": str(primary.port or 5432),
        }
        result = subprocess.run(
            ["bash", str(SCRIPT), command, str(self.port)],
            capture_output=True,
            timeout=timeout_s,
            env=env,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise RuntimeError(f"pg-replica.sh {command} failed:\n{output[-2000:]}")

    def start(self) -> None:
        """Start it (a base backup the first time; later it resumes streaming)."""
        self._script("start")

    def kill(self) -> None:
        """Stop it at once (``pg_ctl stop -m immediate``), keeping its data."""
        self._script("kill")

    def remove(self) -> None:
        """Stop it and delete its directory."""
        self._script("stop")

    def running(self) -> bool:
        """The postmaster is up."""
        return (self.root / "data" / "postmaster.pid").exists()

    async def _admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.url_for(PG_ADMIN_URL), timeout=5)

    async def pause_replay(self) -> None:
        """``pg_wal_replay_pause()``: WAL still arrives, nothing of it is applied."""
        conn = await self._admin()
        try:
            await conn.execute("SELECT pg_wal_replay_pause()")
        finally:
            await conn.close()

    async def resume_replay(self) -> None:
        """``pg_wal_replay_resume()``."""
        conn = await self._admin()
        try:
            await conn.execute("SELECT pg_wal_replay_resume()")
        finally:
            await conn.close()

    async def wait_caught_up(self, timeout_s: float = 30.0) -> None:
        """Until the replica replayed everything the primary had written when this was called."""
        primary = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
        try:
            target = await primary.fetchval("SELECT pg_current_wal_lsn()::text")
        finally:
            await primary.close()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                conn = await self._admin()
                try:
                    behind = await conn.fetchval(
                        "SELECT pg_wal_lsn_diff($1::text::pg_lsn, pg_last_wal_replay_lsn()) > 0",
                        target,
                    )
                finally:
                    await conn.close()
                if not behind:
                    return
            except (OSError, asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError):
                pass  # starting up
            if time.monotonic() > deadline:
                raise TimeoutError(f"replica still behind {target} after {timeout_s}s")
            await asyncio.sleep(0.05)


@contextmanager
def running_replica() -> Iterator[PgReplica]:
    """A started replica of the test server; stopped and its directory deleted on exit."""
    root = Path(tempfile.mkdtemp(prefix="c2s-pg-replica-"))
    replica = PgReplica(root, free_port())
    try:
        replica.start()
        yield replica
    finally:
        try:
            replica.remove()
        finally:
            shutil.rmtree(root, ignore_errors=True)
