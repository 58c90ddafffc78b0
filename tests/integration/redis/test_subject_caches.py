"""A subject erasure in Redis (``infra/subject_caches.py``): the person's dossier leaves Redis and
every process's memory, every contact -> CPF answer naming them goes (also one of a contact they
never had stored), their recent marks and lead replays go; other people's entries stay."""

from __future__ import annotations

import uuid
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis

from domain.models import CpfCandidate
from domain.subjects import ErasedData, ErasureCounts
from domain.tenancy import tenant_scope
from infra.cache import HmacEnvelope, KeySpace, RedisContactCpfCache, RedisDossierCache
from infra.localcache import LocalDossierCache
from infra.locks import RedisLeadLocks, RedisRecentCpfs
from infra.sealing import AeadEnvelope
from infra.subject_caches import RedisSubjectCaches
from tests.support.db import REDIS_BASE_URL
from tests.support.polling import wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.integration

KEYS = [("k1", b"secret-0123456789abcdef")]
CPF = "39053344705"
OTHER_CPF = "52998224725"
EMAIL = "helena@example.com"
PHONE = "11987654321"


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(REDIS_BASE_URL)
    try:
        yield redis
    finally:
        await redis.aclose()


@pytest.fixture
def prefix(redis_prefix: str, redis_cleanup: None) -> str:
    return f"{redis_prefix}subjects-{uuid.uuid4().hex[:6]}:"


async def dossier_process(
    stack: AsyncExitStack, keys: KeySpace, channel: str
) -> tuple[RedisDossierCache, LocalDossierCache]:
    """One app process's dossier cache with its in-memory copy and invalidation listener."""
    redis = aioredis.Redis.from_url(REDIS_BASE_URL, socket_timeout=0.5)
    stack.push_async_callback(redis.aclose)
    local = LocalDossierCache(redis, channel, max_bytes=1 << 20, max_entries=100, stale_bound_s=1.0)
    await stack.enter_async_context(local.running())
    await wait_until(local.serving, 5, what="the invalidation channel")
    return RedisDossierCache(
        redis, keys, HmacEnvelope(KEYS), 60, channel=channel, local=local
    ), local


async def test_forget_removes_every_entry_about_the_person_and_only_theirs(
    client: aioredis.Redis, prefix: str
) -> None:
    keys = KeySpace(prefix, b"test-salt")
    channel = f"{prefix}wa:invalidated"
    async with AsyncExitStack() as stack:
        eraser, _ = await dossier_process(stack, keys, channel)
        other, other_local = await dossier_process(stack, keys, channel)
        await eraser.put(f"cpf:{CPF}", b'{"cpf":"%s"}' % CPF.encode())
        await eraser.put(f"cpf:{OTHER_CPF}", b'{"cpf":"%s"}' % OTHER_CPF.encode())
        assert await other.get(f"cpf:{CPF}") is not None  # kept in the other process's memory
        assert other_local.get(eraser.key(f"cpf:{CPF}")) is not None

        contacts = RedisContactCpfCache(client, keys, 60, 60)
        person = [CpfCandidate(name="HELENA", cpf=CPF)]
        await contacts.put("email", EMAIL, person)
        await contacts.put("phone", PHONE, person)
        # A lead's contact the person never had stored, resolved to them by Diretrix.
        await contacts.put("email", "lead-only@example.com", person)
        await contacts.put("email", "someone@example.com", [CpfCandidate(name="X", cpf=OTHER_CPF)])

        recent = RedisRecentCpfs(client, keys, 60)
        locks = RedisLeadLocks(client, keys, AeadEnvelope(KEYS, purpose="lead_replay"), 60, 60)
        for tenant in ("", "acme"):
            with tenant_scope(tenant or None):
                await recent.mark([CPF, OTHER_CPF])
                assert (await locks.acquire("lead-1")).acquired
                await locks.finish("lead-1", b'{"cpfs_processed":["%s"]}' % CPF.encode())

        caches = RedisSubjectCaches(
            client, keys, prefix, dossiers=eraser, lead_locks=locks, recent=recent
        )
        erased = ErasedData(
            counts=ErasureCounts(parties=1),
            emails=[EMAIL],
            phones=[PHONE],
            lead_ids=["lead-1"],
            tenants=["", "acme"],
        )
        removed = await caches.forget(CPF, erased)
        # dossier + 3 contact answers + 2 recent marks + 2 replays
        assert removed == 8

        assert await eraser.get(f"cpf:{CPF}") is None
        await wait_until(
            lambda: other_local.get(eraser.key(f"cpf:{CPF}")) is None,
            2,
            what="the other process to drop its copy",
        )
        assert await other.get(f"cpf:{CPF}") is None
        assert await other.get(f"cpf:{OTHER_CPF}") is not None
        assert await contacts.get("email", EMAIL) is None
        assert await contacts.get("phone", PHONE) is None
        assert await contacts.get("email", "lead-only@example.com") is None
        assert await contacts.get("email", "someone@example.com") is not None
        for tenant in ("", "acme"):
            with tenant_scope(tenant or None):
                assert await recent.recent([CPF, OTHER_CPF]) == {OTHER_CPF}
                assert (await locks.acquire("lead-1")).finished is None
        leftovers = [name async for name in client.scan_iter(match=f"{prefix}*")]
        values = [
            await client.get(name) for name in leftovers if await client.type(name) == b"string"
        ]
        assert not any(CPF.encode() in (value or b"") for value in values)
