"""PostgreSQL store of API keys (``core.api_keys``).

Only the SHA-256 digest of a key is stored and looked up (unique index on ``key_hash``); rows
leave this module as :class:`domain.keys.ApiKey`, which has no digest field, so nothing above
the adapter can print or log one. Outage-like failures surface as
``DependencyUnavailable("postgres", ...)`` so the auth middleware answers 503, never 500.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from domain.keys import ApiKey, digests_equal
from infra.db.pool import pooled_connection

if TYPE_CHECKING:
    import builtins
    from contextlib import AbstractAsyncContextManager
    from uuid import UUID

    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    from domain.keys import NewApiKey

__all__ = [
    "DEV_KEY_LOCK",
    "FIND_BY_HASH",
    "INSERT_KEY",
    "INSERT_KEY_IF_NONE_ACTIVE",
    "LIST_KEYS",
    "LOCK_DEV_KEY",
    "REVOKE_KEY",
    "TOUCH_KEY",
    "UPDATE_PAID_QUOTA",
    "PgApiKeyStore",
]

DEFAULT_ACQUIRE_TIMEOUT_S: Final = 2.0

# $1 name text, $2 tenant text, $3 key_prefix text, $4 key_hash bytea, $5 scopes text[],
# $6 expires_at timestamptz|null, $7 paid_quota_daily integer|null. Returns the new row (without
# key_hash).
INSERT_KEY: Final = """
INSERT INTO core.api_keys (name, tenant, key_prefix, key_hash, scopes, expires_at,
                           paid_quota_daily)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id, name, tenant, key_prefix, scopes, created_at, expires_at, revoked_at, last_used_at,
          paid_quota_daily
"""

# Serialises "create the development key if none exists" across the workers of one start-up
# (each Granian worker runs the lifespan): a transaction-level advisory lock on a fixed key.
DEV_KEY_LOCK: Final = 0x0C25_0006
LOCK_DEV_KEY: Final = "SELECT pg_advisory_xact_lock($1::bigint)"

# Same parameters as INSERT_KEY; inserts only when no usable (unrevoked, unexpired) key exists.
# Returns the new row, or no row. Run under LOCK_DEV_KEY in one transaction.
INSERT_KEY_IF_NONE_ACTIVE: Final = """
INSERT INTO core.api_keys (name, tenant, key_prefix, key_hash, scopes, expires_at,
                           paid_quota_daily)
SELECT $1, $2, $3, $4, $5, $6, $7
 WHERE NOT EXISTS (
       SELECT 1 FROM core.api_keys
        WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()))
RETURNING id, name, tenant, key_prefix, scopes, created_at, expires_at, revoked_at, last_used_at,
          paid_quota_daily
"""

# $1 include_revoked boolean. Oldest first; never selects key_hash.
LIST_KEYS: Final = """
SELECT id, name, tenant, key_prefix, scopes, created_at, expires_at, revoked_at, last_used_at,
       paid_quota_daily
  FROM core.api_keys
 WHERE $1 OR revoked_at IS NULL
 ORDER BY created_at, id
"""

# $1 key_hash bytea. The row with that digest (revoked and expired ones too: the caller decides),
# plus key_hash for a constant-time re-check.
FIND_BY_HASH: Final = """
SELECT id, name, tenant, key_prefix, scopes, created_at, expires_at, revoked_at, last_used_at,
       paid_quota_daily, key_hash
  FROM core.api_keys
 WHERE key_hash = $1
"""

# $1 id uuid. Idempotent: an already revoked key keeps its first revocation time.
# Returns the row, or no row for an unknown id.
REVOKE_KEY: Final = """
UPDATE core.api_keys
   SET revoked_at = coalesce(revoked_at, now())
 WHERE id = $1
RETURNING id, name, tenant, key_prefix, scopes, created_at, expires_at, revoked_at, last_used_at,
          paid_quota_daily
"""

# $1 id uuid. At most one write per key and minute, also across workers and instances (each
# keeps its own in-process throttle; this condition makes their races harmless).
TOUCH_KEY: Final = """
UPDATE core.api_keys
   SET last_used_at = now()
 WHERE id = $1
   AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
"""


# $1 id uuid, $2 paid_quota_daily integer|null (null: no quota). Returns the row, or no row.
UPDATE_PAID_QUOTA: Final = """
UPDATE core.api_keys
   SET paid_quota_daily = $2
 WHERE id = $1
RETURNING id, name, tenant, key_prefix, scopes, created_at, expires_at, revoked_at, last_used_at,
          paid_quota_daily
"""


def _to_key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        tenant=row["tenant"],
        key_prefix=row["key_prefix"],
        scopes=tuple(row["scopes"] or ()),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        paid_quota_daily=row["paid_quota_daily"],
    )


def _insert_args(new: NewApiKey) -> tuple[object, ...]:
    return (
        new.name,
        new.tenant,
        new.prefix,
        new.digest,
        list(new.scopes),
        new.expires_at,
        new.paid_quota_daily,
    )


class PgApiKeyStore:
    """API keys in PostgreSQL, on an asyncpg pool.

    Args:
        pool: The process's pool.
        acquire_timeout: Seconds to wait for a pooled connection (including connecting).
    """

    def __init__(
        self, pool: asyncpg.Pool, *, acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT_S
    ) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout

    @property
    def pool(self) -> asyncpg.Pool:
        """The pool the store runs on (for stores of the same key's data, e.g. its callback
        secrets)."""
        return self._pool

    def _connection(self) -> AbstractAsyncContextManager[PoolConnectionProxy]:
        """A pooled connection; outages become ``DependencyUnavailable``."""
        return pooled_connection(self._pool, self._acquire_timeout)

    async def create(self, new: NewApiKey) -> ApiKey:
        """Store a new key.

        Args:
            new: The validated record (digest and prefix, never the plaintext).

        Returns:
            The stored key.

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        async with self._connection() as conn:
            row = await conn.fetchrow(INSERT_KEY, *_insert_args(new))
        if row is None:  # pragma: no cover - INSERT ... RETURNING always returns the row
            raise RuntimeError("key insert returned no row")
        return _to_key(row)

    async def create_if_none_active(self, new: NewApiKey) -> ApiKey | None:
        """Store ``new`` only when no usable key exists (the development key at start-up).

        Concurrent callers (the workers of one start-up) are serialised by an advisory lock,
        so exactly one of them creates the key.

        Returns:
            The stored key, or ``None`` when a usable key already existed.

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        async with self._connection() as conn, conn.transaction():
            await conn.execute(LOCK_DEV_KEY, DEV_KEY_LOCK)
            row = await conn.fetchrow(INSERT_KEY_IF_NONE_ACTIVE, *_insert_args(new))
        return None if row is None else _to_key(row)

    async def list(self, *, include_revoked: bool = True) -> builtins.list[ApiKey]:
        """Every key, oldest first (never their digests).

        Args:
            include_revoked: Also list revoked keys.

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        async with self._connection() as conn:
            rows = await conn.fetch(LIST_KEYS, include_revoked)
        return [_to_key(row) for row in rows]

    async def revoke(self, key_id: UUID) -> ApiKey | None:
        """Revoke a key (idempotent).

        Args:
            key_id: The key's id.

        Returns:
            The revoked key, or ``None`` when no key has that id.

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        async with self._connection() as conn:
            row = await conn.fetchrow(REVOKE_KEY, key_id)
        return None if row is None else _to_key(row)

    async def set_paid_quota(self, key_id: UUID, quota: int | None) -> ApiKey | None:
        """Set (or with ``None`` remove) the key's daily paid-call quota.

        Effective on every process within ``API_KEY_CACHE_TTL_S`` (the verifier's cache).

        Returns:
            The updated key, or ``None`` when no key has that id.

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        async with self._connection() as conn:
            row = await conn.fetchrow(UPDATE_PAID_QUOTA, key_id, quota)
        return None if row is None else _to_key(row)

    async def find_by_hash(self, digest: bytes) -> ApiKey | None:
        """The key whose digest is ``digest``, whatever its state (revoked, expired).

        The index lookup compares digests in the database; the returned digest is compared
        again here in constant time so that this layer never depends on how the database
        compares bytes.

        Args:
            digest: SHA-256 of the presented key.

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        async with self._connection() as conn:
            row = await conn.fetchrow(FIND_BY_HASH, digest)
        if row is None or not digests_equal(bytes(row["key_hash"]), digest):
            return None
        return _to_key(row)

    async def touch(self, key_id: UUID) -> None:
        """Record a use of the key (at most one write per key and minute).

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        async with self._connection() as conn:
            await conn.execute(TOUCH_KEY, key_id)
