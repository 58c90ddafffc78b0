"""The per-process key cache (``KeyVerifier``) on the real PostgreSQL store.

A cached answer is proven to cost no round trip by closing the pool underneath the verifier:
a cached key still verifies, an uncached one cannot.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import asyncpg
import pytest

from app.http.auth_verifier import MAX_CACHE_TTL_S, KeyVerifier
from domain.errors import DependencyUnavailable
from domain.keys import NewApiKey, digest_key, generate_key
from infra.db.keys import PgApiKeyStore
from tests.support.factories import issue_key

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

pytestmark = pytest.mark.integration


async def _eventually(check: Callable[[], Awaitable[bool]], within_s: float) -> float:
    """Poll ``check`` until it holds; return the seconds it took (fail after ``within_s``)."""
    start = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - start
        if time.monotonic() - start > within_s:
            pytest.fail(f"condition did not hold within {within_s} s")
        await asyncio.sleep(0.05)


async def test_ttl_is_clamped_to_five_seconds(pool: asyncpg.Pool) -> None:
    assert KeyVerifier(PgApiKeyStore(pool), ttl_s=60).ttl_s == MAX_CACHE_TTL_S


async def test_cached_key_verifies_without_a_round_trip(database_url: str) -> None:
    plaintext, stored = await issue_key(database_url, tenant="cache-a", scopes="read")
    other, _ = await issue_key(database_url, tenant="cache-a")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    verifier = KeyVerifier(PgApiKeyStore(pool, acquire_timeout=0.5), ttl_s=5)
    principal = await verifier.verify(digest_key(plaintext))
    assert principal is not None
    assert principal.key_id == stored.id
    assert principal.tenant == "cache-a"
    assert principal.scopes == ("read",)
    await pool.close()
    # The pool is gone: the cached key still verifies, an uncached key cannot be checked.
    again = await verifier.verify(digest_key(plaintext))
    assert again is principal
    with pytest.raises(DependencyUnavailable):
        await verifier.verify(digest_key(other))


async def test_revocation_takes_effect_within_the_ttl(
    pool: asyncpg.Pool, database_url: str
) -> None:
    plaintext, stored = await issue_key(database_url)
    store = PgApiKeyStore(pool)
    verifier = KeyVerifier(store, ttl_s=1.0)
    digest = digest_key(plaintext)
    assert await verifier.verify(digest) is not None
    await store.revoke(stored.id)
    # Cached: still accepted right after the revocation...
    assert await verifier.verify(digest) is not None

    async def rejected() -> bool:
        return await verifier.verify(digest) is None

    # ...and refused once the entry expires (the TTL, never more than 5 s).
    took = await _eventually(rejected, within_s=MAX_CACHE_TTL_S)
    assert took <= 1.0 + 0.5


async def test_unknown_keys_are_cached_as_negative(pool: asyncpg.Pool) -> None:
    store = PgApiKeyStore(pool)
    verifier = KeyVerifier(store, ttl_s=1.0)
    generated = generate_key()
    assert await verifier.verify(generated.digest) is None
    # The key appears in the database after the negative answer was cached...
    await store.create(
        NewApiKey(
            name="late",
            tenant="acme",
            prefix=generated.prefix,
            digest=generated.digest,
            scopes=("read",),
        )
    )
    assert await verifier.verify(generated.digest) is None

    async def accepted() -> bool:
        return await verifier.verify(generated.digest) is not None

    # ...and is accepted once the negative entry expires.
    await _eventually(accepted, within_s=MAX_CACHE_TTL_S)


async def test_key_expiring_while_cached_is_refused_at_its_expiry(
    pool: asyncpg.Pool, database_url: str
) -> None:
    plaintext, _stored = await issue_key(database_url, expires_in=timedelta(seconds=1.2))
    verifier = KeyVerifier(PgApiKeyStore(pool), ttl_s=5)
    digest = digest_key(plaintext)
    assert await verifier.verify(digest) is not None

    async def refused() -> bool:
        return await verifier.verify(digest) is None

    took = await _eventually(refused, within_s=3)
    assert took < 2.5  # at the expiry, not at the end of the 5 s TTL


async def test_expired_and_revoked_keys_are_refused(pool: asyncpg.Pool, database_url: str) -> None:
    expired, _ = await issue_key(database_url, expires_in=timedelta(seconds=-1))
    revoked, revoked_key = await issue_key(database_url)
    store = PgApiKeyStore(pool)
    await store.revoke(revoked_key.id)
    verifier = KeyVerifier(store, ttl_s=2)
    assert await verifier.verify(digest_key(expired)) is None
    assert await verifier.verify(digest_key(revoked)) is None


async def test_cache_is_bounded_and_a_flood_of_bad_keys_keeps_good_ones(
    database_url: str,
) -> None:
    plaintext, _ = await issue_key(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    verifier = KeyVerifier(PgApiKeyStore(pool, acquire_timeout=0.5), ttl_s=5, max_entries=8)
    assert await verifier.verify(digest_key(plaintext)) is not None
    for _ in range(50):
        assert await verifier.verify(generate_key().digest) is None
    assert verifier.cached_entries <= 16
    await pool.close()
    # The good key was not evicted by the negatives: still verified without the database.
    assert await verifier.verify(digest_key(plaintext)) is not None


class _CountingPool:
    """The real pool, counting connection checkouts (one per store round trip)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.acquired = 0

    def acquire(self, *, timeout: float | None = None) -> Any:  # Any: asyncpg's acquire context
        self.acquired += 1
        return self.pool.acquire(timeout=timeout)


async def test_concurrent_misses_share_one_lookup(pool: asyncpg.Pool, database_url: str) -> None:
    plaintext, _ = await issue_key(database_url)
    counting = _CountingPool(pool)
    verifier = KeyVerifier(PgApiKeyStore(cast("asyncpg.Pool", counting)), ttl_s=2)
    digest = digest_key(plaintext)
    results = await asyncio.gather(*(verifier.verify(digest) for _ in range(30)))
    assert all(result is not None for result in results)
    assert len({id(result) for result in results}) == 1
    assert counting.acquired == 1
    # A burst of different unknown keys is not merged: each digest is looked up once.
    bogus = [generate_key().digest for _ in range(5)]
    await asyncio.gather(*(verifier.verify(d) for d in bogus for _ in range(4)))
    assert counting.acquired == 1 + 5


async def test_last_use_is_recorded_off_the_request_path(
    pool: asyncpg.Pool, database_url: str
) -> None:
    plaintext, stored = await issue_key(database_url)
    verifier = KeyVerifier(PgApiKeyStore(pool), ttl_s=2)
    principal = await verifier.verify(digest_key(plaintext))
    assert principal is not None
    verifier.record_use(principal)  # returns at once: the write runs in a background task
    await verifier.drain()
    used = await pool.fetchval("SELECT last_used_at FROM core.api_keys WHERE id = $1", stored.id)
    assert used is not None
    assert datetime.now(UTC) - used < timedelta(seconds=30)


async def test_failing_last_use_write_is_swallowed(database_url: str) -> None:
    plaintext, _ = await issue_key(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    verifier = KeyVerifier(PgApiKeyStore(pool, acquire_timeout=0.5), ttl_s=2)
    principal = await verifier.verify(digest_key(plaintext))
    assert principal is not None
    await pool.close()
    verifier.record_use(principal)
    await verifier.drain()  # no exception escapes


async def test_unexpected_store_failure_fails_closed_as_unavailable() -> None:
    # The admin database has no core.api_keys: a programming/deployment error, not an outage,
    # and still no request may pass nor crash with a 500.
    from tests.support.db import PG_ADMIN_URL

    pool = await asyncpg.create_pool(PG_ADMIN_URL, min_size=0, max_size=1)
    try:
        verifier = KeyVerifier(PgApiKeyStore(pool), ttl_s=2)
        with pytest.raises(DependencyUnavailable):
            await verifier.verify(generate_key().digest)
    finally:
        await pool.close()


class _ConcurrencyPool:
    """The real pool, recording the most connections checked out at once."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.current = 0
        self.peak = 0

    def acquire(self, *, timeout: float | None = None) -> Any:  # Any: asyncpg's acquire context
        outer = self
        inner = self.pool.acquire(timeout=timeout)

        class _Tracked:
            async def __aenter__(self) -> Any:  # Any: asyncpg connection proxy
                connection = await inner.__aenter__()
                outer.current += 1
                outer.peak = max(outer.peak, outer.current)
                return connection

            async def __aexit__(self, *exc: object) -> None:
                outer.current -= 1
                await inner.__aexit__(*exc)

        return _Tracked()


async def test_a_flood_of_random_keys_cannot_take_the_whole_pool(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
    try:
        tracked = _ConcurrencyPool(pool)
        verifier = KeyVerifier(
            PgApiKeyStore(cast("asyncpg.Pool", tracked)), ttl_s=2, max_concurrent_lookups=3
        )
        results = await asyncio.gather(*(verifier.verify(generate_key().digest) for _ in range(60)))
        assert results == [None] * 60
        assert tracked.peak <= 3
    finally:
        await pool.close()
