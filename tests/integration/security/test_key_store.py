"""The PostgreSQL key store (infra/db/keys.py) against a real, migrated database."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from domain.errors import DependencyUnavailable
from domain.keys import NewApiKey, digest_key, generate_key, new_api_key
from infra.db.keys import PgApiKeyStore

if TYPE_CHECKING:
    import asyncpg

pytestmark = pytest.mark.integration


def _record(tenant: str = "acme", *, expires_days: int | None = None) -> tuple[str, NewApiKey]:
    generated, record = new_api_key(
        name="store test",
        tenant=tenant,
        scopes="read,enrich",
        now=datetime.now(UTC),
        expires_days=expires_days,
    )
    return generated.plaintext, record


async def test_created_key_is_found_by_the_digest_of_its_plaintext(pool: asyncpg.Pool) -> None:
    store = PgApiKeyStore(pool)
    plaintext, record = _record(expires_days=30)
    created = await store.create(record)
    found = await store.find_by_hash(digest_key(plaintext))
    assert found == created
    assert found.tenant == "acme"
    assert found.scopes == ("read", "enrich")
    assert found.expires_at is not None
    assert found.revoked_at is None


async def test_only_the_digest_is_stored_never_the_plaintext(
    pool: asyncpg.Pool,
) -> None:
    store = PgApiKeyStore(pool)
    plaintext, record = _record()
    created = await store.create(record)
    row = await pool.fetchrow("SELECT * FROM core.api_keys WHERE id = $1", created.id)
    assert row is not None
    assert bytes(row["key_hash"]) == digest_key(plaintext)
    secret = plaintext.split("_", 2)[2]
    for value in dict(row).values():
        assert secret not in str(value)
        assert plaintext not in str(value)


async def test_unknown_digest_is_not_found(pool: asyncpg.Pool) -> None:
    assert await PgApiKeyStore(pool).find_by_hash(generate_key().digest) is None


async def test_list_shows_keys_without_their_digests(pool: asyncpg.Pool) -> None:
    store = PgApiKeyStore(pool)
    _plaintext, record = _record(tenant="list-tenant")
    created = await store.create(record)
    listed = await store.list()
    assert created in listed
    assert not any(hasattr(key, "key_hash") or hasattr(key, "digest") for key in listed)


async def test_revoke_is_idempotent_and_hides_the_key_from_active_listing(
    pool: asyncpg.Pool,
) -> None:
    store = PgApiKeyStore(pool)
    plaintext, record = _record()
    created = await store.create(record)
    first = await store.revoke(created.id)
    assert first is not None
    assert first.revoked_at is not None
    again = await store.revoke(created.id)
    assert again is not None
    assert again.revoked_at == first.revoked_at
    assert created.id not in {key.id for key in await store.list(include_revoked=False)}
    assert created.id in {key.id for key in await store.list(include_revoked=True)}
    # Still found by digest: the verifier decides, so it can cache "revoked" as a negative.
    found = await store.find_by_hash(digest_key(plaintext))
    assert found is not None
    assert found.revoked_at is not None


async def test_revoking_an_unknown_id_returns_none(pool: asyncpg.Pool) -> None:
    assert await PgApiKeyStore(pool).revoke(uuid.uuid4()) is None


async def test_touch_records_use_at_most_once_a_minute(pool: asyncpg.Pool) -> None:
    store = PgApiKeyStore(pool)
    _plaintext, record = _record()
    created = await store.create(record)
    await store.touch(created.id)
    first = await pool.fetchval("SELECT last_used_at FROM core.api_keys WHERE id = $1", created.id)
    assert first is not None
    await store.touch(created.id)
    second = await pool.fetchval("SELECT last_used_at FROM core.api_keys WHERE id = $1", created.id)
    assert second == first
    await pool.execute(
        "UPDATE core.api_keys SET last_used_at = now() - interval '2 minutes' WHERE id = $1",
        created.id,
    )
    await store.touch(created.id)
    third = await pool.fetchval("SELECT last_used_at FROM core.api_keys WHERE id = $1", created.id)
    assert third > first - timedelta(seconds=1)


async def test_create_if_none_active_creates_nothing_when_a_usable_key_exists(
    pool: asyncpg.Pool,
) -> None:
    store = PgApiKeyStore(pool)
    await store.create(_record()[1])
    assert await store.create_if_none_active(_record()[1]) is None


async def test_outage_is_dependency_unavailable(dead_pool: asyncpg.Pool) -> None:
    store = PgApiKeyStore(dead_pool, acquire_timeout=0.5)
    for call in (
        store.find_by_hash(generate_key().digest),
        store.list(),
        store.revoke(uuid.uuid4()),
        store.touch(uuid.uuid4()),
    ):
        with pytest.raises(DependencyUnavailable) as caught:
            await asyncio.wait_for(call, 5)
        assert caught.value.dependency == "postgres"
