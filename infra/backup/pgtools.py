"""The PostgreSQL client tools (``pg_dump``, ``pg_restore``) and connection-URL handling.

The database password never appears on a command line (it goes through ``PGPASSWORD``) nor in
error messages.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from typing import TYPE_CHECKING, Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from infra.backup.model import BackupError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "client_env",
    "database_name",
    "find_binary",
    "ident",
    "literal",
    "run_tool",
    "with_database",
]

_MAX_ERROR_CHARS: Final = 2000


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` on the same server, with the same options."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(name, safe="")))


def database_name(url: str) -> str:
    name = unquote(urlsplit(url).path.lstrip("/"))
    if not name:
        raise BackupError("the database URL names no database")
    return name


def client_env(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and an environment carrying it (``PGPASSWORD``)."""
    parts = urlsplit(url)
    env = dict(os.environ)
    if parts.password is None:
        return url, env
    env["PGPASSWORD"] = unquote(parts.password)
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    netloc = f"{quote(unquote(user), safe='')}@{host}" if user else host
    return urlunsplit(parts._replace(netloc=netloc)), env


def _redact(text: str, url: str) -> str:
    password = urlsplit(url).password
    text = text.replace(unquote(password), "***") if password else text
    return text[-_MAX_ERROR_CHARS:]


def find_binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(
            f"{name} not found on PATH: install the PostgreSQL client tools (Debian: "
            "postgresql-client-15), at least the server's major version"
        )
    return found


async def run_tool(args: Sequence[str], *, env: Mapping[str, str], url: str, step: str) -> str:
    """Run a client tool; raise :class:`BackupError` with its (redacted) stderr on failure."""
    process = await asyncio.create_subprocess_exec(
        *args,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await process.communicate()
    except BaseException:
        # Cancelled (Ctrl-C, a timeout around us): do not leave a pg_dump/pg_restore running.
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    if process.returncode != 0:
        detail = _redact(stderr.decode("utf-8", "replace").strip(), url)
        raise BackupError(f"{step} failed (exit {process.returncode}): {detail}")
    return stdout.decode("utf-8", "replace")


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
