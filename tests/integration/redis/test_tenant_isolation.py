"""Tenant-scoped lead dedup, encrypted replays and cross-process fill locks on a real Redis."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

import pytest
from redis.crc import key_slot

from domain.singleflight import SingleFlight
from domain.tenancy import tenant_scope
from infra.cache import HmacEnvelope, KeySpace, RedisDossierCache
from infra.locks import RedisFillLocks, RedisLeadLocks, RedisRecentCpfs
from infra.redisclient import connect, prepare
from infra.sealing import AeadEnvelope
from tests.support.topology import REDIS_KINDS, redis_url_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import redis.asyncio as aioredis

pytestmark = pytest.mark.integration

CPF = "39053344705"
KEYS = [("k2", b"new-secret-0123456789"), ("k1", b"old-secret-0123456789")]
SEAL = AeadEnvelope(KEYS, purpose="lead_replay")
ANSWER = b'{"success":true,"cpfs_processed":["39053344705"],"contact":"helena@example.com"}'


@pytest.fixture(params=REDIS_KINDS)
async def client(request: pytest.FixtureRequest) -> AsyncIterator[aioredis.Redis]:
    """One Redis server, then the Redis Cluster (ADR 0014): the same semantics on both."""
    redis = connect(redis_url_of(request, request.param), timeout_s=1.0, max_connections=64)
    await prepare(redis)
    yield cast("aioredis.Redis", redis)
    await redis.aclose()


@pytest.fixture
def keyspace(redis_prefix: str, redis_cleanup: None) -> KeySpace:
    return KeySpace(redis_prefix + "tenancy:", b"test-salt")


async def test_lead_locks_and_replays_are_per_tenant(
    client: aioredis.Redis, keyspace: KeySpace
) -> None:
    locks = RedisLeadLocks(client, keyspace, SEAL, 300, 60)
    with tenant_scope("tenant-a"):
        assert (await locks.acquire("lead-t1")).acquired
    with tenant_scope("tenant-b"):
        assert (await locks.acquire("lead-t1")).acquired  # A's lock is not B's
    with tenant_scope("tenant-a"):
        await locks.finish("lead-t1", ANSWER)
    with tenant_scope("tenant-b"):
        mine = await locks.acquire("lead-t1")
        assert mine.finished is None  # still B's own lock, never A's answer
    with tenant_scope("tenant-a"):
        assert (await locks.acquire("lead-t1")).finished == ANSWER


async def test_a_lead_replay_is_encrypted_and_bound_to_its_key(
    client: aioredis.Redis, keyspace: KeySpace
) -> None:
    locks = RedisLeadLocks(client, keyspace, SEAL, 300, 60)
    with tenant_scope("tenant-a"):
        await locks.acquire("lead-t2")
        await locks.finish("lead-t2", ANSWER)
    _lock_a, done_a = locks.names("tenant-a", "lead-t2")
    raw = await client.get(done_a)
    assert raw is not None
    assert CPF.encode() not in raw
    assert b"helena" not in raw
    assert b"success" not in raw
    # Copied under tenant B's replay key, A's ciphertext does not open: B is not answered with it.
    _lock_b, done_b = locks.names("tenant-b", "lead-t2")
    await client.set(done_b, raw, ex=60)
    with tenant_scope("tenant-b"):
        state = await locks.acquire("lead-t2")
    assert state.acquired
    assert state.finished is None
    assert await client.get(done_b) is None  # the unreadable replay was dropped


async def test_keys_of_one_script_share_a_cluster_slot(
    client: aioredis.Redis, keyspace: KeySpace
) -> None:
    locks = RedisLeadLocks(client, keyspace, SEAL, 300, 60)
    lock, done = locks.names("tenant-a", "lead-t3")
    assert key_slot(lock.encode()) == key_slot(done.encode())
    assert "tenant-a" not in lock  # the tenant is inside the keyed digest
    recent = RedisRecentCpfs(client, keyspace, ttl_s=60)
    slots = {key_slot(recent.name_of("tenant-a", cpf).encode()) for cpf in (CPF, "71460238001")}
    assert len(slots) == 1  # one tenant's MGET stays in one slot


async def test_recent_cpfs_are_per_tenant(client: aioredis.Redis, keyspace: KeySpace) -> None:
    recent = RedisRecentCpfs(client, keyspace, ttl_s=60)
    with tenant_scope("tenant-a"):
        await recent.mark([CPF])
        assert await recent.recent([CPF]) == {CPF}
    with tenant_scope("tenant-b"):
        assert await recent.recent([CPF]) == set()


async def test_a_fill_lock_has_one_holder_and_frees_itself(
    client: aioredis.Redis, keyspace: KeySpace
) -> None:
    first = RedisFillLocks(client, keyspace, ttl_s=0.3)
    second = RedisFillLocks(client, keyspace, ttl_s=0.3)  # another process
    assert await first.acquire("cpf:fill-1")
    assert not await second.acquire("cpf:fill-1")
    await second.release("cpf:fill-1")  # not its lock: nothing happens
    assert not await second.acquire("cpf:fill-1")
    await first.release("cpf:fill-1")
    assert await second.acquire("cpf:fill-1")
    await asyncio.sleep(0.4)  # the holder "died": its lock expires
    assert await first.acquire("cpf:fill-1")


async def test_two_processes_share_one_upstream_call(
    client: aioredis.Redis, keyspace: KeySpace
) -> None:
    calls: list[str] = []

    async def fetch() -> bytes:
        calls.append("work_api")
        await asyncio.sleep(0.2)
        return b'{"status":200}'

    def process() -> tuple[RedisDossierCache, SingleFlight]:
        cache = RedisDossierCache(client, keyspace, HmacEnvelope(KEYS), 60)
        return cache, SingleFlight(cache, RedisFillLocks(client, keyspace, ttl_s=5), wait_s=5)

    (_, one), (_, two) = process(), process()
    results = await asyncio.gather(
        *(flight.load("cpf:shared-1", fetch) for flight in [one, two] * 15)
    )
    assert calls == ["work_api"]
    assert set(results) == {b'{"status":200}'}
