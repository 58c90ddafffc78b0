"""Issue API keys straight into a test database (shared by the security and API tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg

from domain.keys import ApiKey, NewApiKey, generate_key, parse_scopes
from infra.db.keys import PgApiKeyStore

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["issue_key"]


async def issue_key(
    database_url: str,
    *,
    tenant: str = "acme",
    scopes: str | Iterable[str] = "read,enrich",
    name: str = "test",
    expires_in: timedelta | None = None,
) -> tuple[str, ApiKey]:
    """Create a key through the real store; return ``(plaintext, stored key)``.

    Args:
        database_url: A migrated database.
        tenant: The key's tenant.
        scopes: Granted scopes.
        name: Label.
        expires_in: Lifetime from now (may be negative: an already expired key).
    """
    generated = generate_key()
    expires_at = datetime.now(UTC) + expires_in if expires_in is not None else None
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        stored = await PgApiKeyStore(pool).create(
            NewApiKey(
                name=name,
                tenant=tenant,
                prefix=generated.prefix,
                digest=generated.digest,
                scopes=parse_scopes(scopes),
                expires_at=expires_at,
            )
        )
    finally:
        await pool.close()
    return generated.plaintext, stored
