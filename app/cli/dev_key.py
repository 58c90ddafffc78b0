"""The development API key created by ``c2s-api serve`` in the embedded default."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, TextIO

import structlog

from domain.keys import new_api_key
from infra.db.keys import PgApiKeyStore

if TYPE_CHECKING:
    import asyncpg

__all__ = ["DEV_KEY_NAME", "DEV_KEY_TENANT", "ensure_dev_key"]

log = structlog.get_logger(__name__)

DEV_KEY_NAME: Final = "development"
DEV_KEY_TENANT: Final = "dev"


async def ensure_dev_key(
    pool: asyncpg.Pool, *, environment: str = "development", out: TextIO | None = None
) -> str | None:
    """Create a development key when no usable key exists, and print it once to stdout.

    For the embedded default (``ENVIRONMENT=development``) only: a new user running
    ``c2s-api serve`` gets a working key without reading the docs. Safe with several workers
    starting together (an advisory lock lets exactly one create it); later starts find the key
    and print nothing. The key is printed, never logged: logs are shipped and kept, stdout of a
    local development run is not.

    Args:
        pool: The process's pool (migrations applied).
        environment: ``settings.environment``; anything but ``development`` does nothing.
        out: Where to print (stdout by default).

    Returns:
        The plaintext key when one was created, else ``None``.

    Raises:
        DependencyUnavailable: PostgreSQL cannot serve now (the caller may log and go on).
    """
    if environment != "development":
        return None
    generated, record = new_api_key(
        name=DEV_KEY_NAME,
        tenant=DEV_KEY_TENANT,
        scopes=("read", "enrich", "admin"),
        now=datetime.now(UTC),
    )
    created = await PgApiKeyStore(pool).create_if_none_active(record)
    if created is None:
        return None
    stream = out if out is not None else sys.stdout
    print(
        "\nDevelopment API key (shown once; tenant 'dev', scopes read,enrich,admin):\n"
        f"  {generated.plaintext}\n"
        "Send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.\n"
        f"Revoke it with: c2s-api keys revoke {created.id}\n",
        file=stream,
        flush=True,
    )
    log.info("dev_api_key_created", key_id=str(created.id), key_prefix=created.key_prefix)
    return generated.plaintext
