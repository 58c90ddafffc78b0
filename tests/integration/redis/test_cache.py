"""Shared Redis state against a real Redis: integrity, dedup across callers, degraded mode."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING, cast

import pytest
import redis.asyncio as aioredis

from domain.models import CpfCandidate
from infra.cache import HmacEnvelope, KeySpace, RedisContactCpfCache, RedisDossierCache
from infra.locks import RedisLeadLocks, RedisRecentCpfs
from infra.redisclient import connect, prepare
from infra.sealing import AeadEnvelope
from tests.support.db import REDIS_BASE_URL
from tests.support.topology import REDIS_KINDS, redis_url_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.integration

CPF = "39053344705"
KEYS = [("k2", b"new-secret-0123456789"), ("k1", b"old-secret-0123456789")]
SEAL = AeadEnvelope(KEYS, purpose="lead_replay")


class Recorder:
    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def record(self, cache: str, result: str) -> None:
        self.counts[(cache, result)] += 1


@pytest.fixture(params=REDIS_KINDS)
async def client(request: pytest.FixtureRequest) -> AsyncIterator[aioredis.Redis]:
    """One Redis server, then the Redis Cluster (ADR 0014): the same semantics on both."""
    redis = connect(redis_url_of(request, request.param), timeout_s=1.0, max_connections=64)
    await prepare(redis)
    yield cast("aioredis.Redis", redis)
    await redis.aclose()


@pytest.fixture
def keyspace(redis_prefix: str, redis_cleanup: None) -> KeySpace:
    return KeySpace(redis_prefix + "cache:", b"test-salt")


async def test_dossier_round_trips_and_key_hides_the_cpf(
    client: aioredis.Redis, keyspace: KeySpace
) -> None:
    recorder = Recorder()
    cache = RedisDossierCache(client, keyspace, HmacEnvelope(KEYS), 60, recorder)
    await cache.put(f"cpf:{CPF}", b'{"status":200}')
    assert await cache.get(f"cpf:{CPF}") == b'{"status":200}'
    name = cache.key(f"cpf:{CPF}")
    assert CPF not in name
    assert 0 < await client.ttl(name) <= 60
    assert recorder.counts[("work_api", "hit")] == 1


async def test_tampered_entry_is_a_counted_miss(client: aioredis.Redis, keyspace: KeySpace) -> None:
    recorder = Recorder()
    cache = RedisDossierCache(client, keyspace, HmacEnvelope(KEYS), 60, recorder)
    await cache.put("cpf:1", b'{"renda":"1000,00"}')
    name = cache.key("cpf:1")
    sealed = await client.get(name)
    assert isinstance(sealed, bytes)
    await client.set(name, sealed.replace(b"1000", b"9999"))
    assert await cache.get("cpf:1") is None
    assert recorder.counts[("work_api", "integrity_failure")] == 1


async def test_entry_copied_under_another_key_does_not_verify(
    client: aioredis.Redis, keyspace: KeySpace
) -> None:
    cache = RedisDossierCache(client, keyspace, HmacEnvelope(KEYS), 60)
    await cache.put("cpf:a", b"A")
    sealed = await client.get(cache.key("cpf:a"))
    assert sealed is not None
    await client.set(cache.key("cpf:b"), sealed)
    assert await cache.get("cpf:b") is None


async def test_rotation_accepts_the_old_key_and_rejects_unknown_ones(
    client: aioredis.Redis, keyspace: KeySpace
) -> None:
    old = RedisDossierCache(client, keyspace, HmacEnvelope([KEYS[1]]), 60)
    await old.put("cpf:r", b"R")
    rotated = RedisDossierCache(client, keyspace, HmacEnvelope(KEYS), 60)
    assert await rotated.get("cpf:r") == b"R"
    stranger = RedisDossierCache(client, keyspace, HmacEnvelope([("k9", b"x" * 20)]), 60)
    assert await stranger.get("cpf:r") is None


async def test_contact_cache_keeps_not_found_shorter(
    client: aioredis.Redis, keyspace: KeySpace
) -> None:
    cache = RedisContactCpfCache(client, keyspace, ttl_s=86400, negative_ttl_s=600)
    found = [CpfCandidate(name="A", cpf=CPF)]
    await cache.put("phone", "11987654321", found)
    await cache.put("email", "nobody@example.com", [])
    assert await cache.get("phone", "11987654321") == found
    assert await cache.get("email", "nobody@example.com") == []
    assert await cache.get("email", "other@example.com") is None
    assert await client.ttl(keyspace.key("cc", "email:nobody@example.com")) <= 600
    assert await client.ttl(keyspace.key("cc", "phone:11987654321")) > 600


class CountingRedis(aioredis.Redis):
    """A real client that counts the commands it sends (by name)."""

    sent: Counter[str]

    async def execute_command(self, *args: object, **options: object) -> object:
        self.sent[str(args[0]).upper()] += 1
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


async def test_contact_reads_made_together_share_one_round_trip(keyspace: KeySpace) -> None:
    counting = cast(
        "CountingRedis", CountingRedis.from_pool(aioredis.ConnectionPool.from_url(REDIS_BASE_URL))
    )
    counting.sent = Counter()
    try:
        recorder = Recorder()
        cache = RedisContactCpfCache(counting, keyspace, 86400, 600, recorder)
        found = [CpfCandidate(name="A", cpf=CPF)]
        await cache.put("phone", "11987654321", found)
        await cache.put("email", "nobody@example.com", [])
        counting.sent.clear()

        answers = await asyncio.gather(
            cache.get("phone", "11987654321"),
            cache.get("email", "nobody@example.com"),
            cache.get("email", "other@example.com"),
            cache.get("phone", "11987654321"),
        )

        assert list(answers) == [found, [], None, found]
        assert counting.sent == Counter({"MGET": 1})
        assert recorder.counts[("contact_cpf", "hit")] == 3
        assert recorder.counts[("contact_cpf", "miss")] == 1
        # A read made later is a batch of its own.
        assert await cache.get("phone", "11987654321") == found
        assert counting.sent == Counter({"MGET": 2})
    finally:
        await counting.aclose()


async def test_contact_writes_made_together_share_one_round_trip(keyspace: KeySpace) -> None:
    counting = cast(
        "CountingRedis", CountingRedis.from_pool(aioredis.ConnectionPool.from_url(REDIS_BASE_URL))
    )
    counting.sent = Counter()
    try:
        cache = RedisContactCpfCache(counting, keyspace, 86400, 600)
        found = [CpfCandidate(name="A", cpf=CPF)]
        await asyncio.gather(
            cache.put("phone", "11987654321", found), cache.put("email", "nobody@example.com", [])
        )
        # One pipeline, no separate SETs; both values stored with their own TTLs.
        assert counting.sent == Counter()
        assert await cache.get("phone", "11987654321") == found
        assert await cache.get("email", "nobody@example.com") == []
        assert await counting.ttl(keyspace.key("cc", "email:nobody@example.com")) <= 600
        assert await counting.ttl(keyspace.key("cc", "phone:11987654321")) > 600
    finally:
        await counting.aclose()


async def test_a_caller_leaving_does_not_lose_the_others_contact_reads(
    client: aioredis.Redis, keyspace: KeySpace
) -> None:
    cache = RedisContactCpfCache(client, keyspace, 86400, 600)
    found = [CpfCandidate(name="A", cpf=CPF)]
    await cache.put("phone", "11987654321", found)
    leaving = asyncio.ensure_future(cache.get("phone", "11987654321"))
    staying = asyncio.ensure_future(cache.get("phone", "11987654321"))
    await asyncio.sleep(0)  # both joined the batch
    leaving.cancel()
    assert await staying == found
    assert leaving.cancelled()


async def test_exactly_one_of_many_concurrent_callers_takes_a_lead(
    client: aioredis.Redis, keyspace: KeySpace
) -> None:
    locks = [RedisLeadLocks(client, keyspace, SEAL, 300, 60) for _ in range(4)]  # four "workers"
    states = await asyncio.gather(*(locks[i % 4].acquire("lead-1") for i in range(40)))
    assert sum(s.acquired for s in states) == 1
    assert all(s.started_at is not None for s in states if not s.acquired)


async def test_finish_replays_and_abandon_frees(client: aioredis.Redis, keyspace: KeySpace) -> None:
    locks = RedisLeadLocks(client, keyspace, SEAL, 300, 60)
    assert (await locks.acquire("lead-2")).acquired
    await locks.finish("lead-2", b'{"success":true}')
    replay = await locks.acquire("lead-2")
    assert not replay.acquired
    assert replay.finished == b'{"success":true}'
    assert (await locks.acquire("lead-3")).acquired
    await locks.abandon("lead-3")
    assert (await locks.acquire("lead-3")).acquired


async def test_recent_cpfs_expire_with_their_window(
    client: aioredis.Redis, keyspace: KeySpace
) -> None:
    recent = RedisRecentCpfs(client, keyspace, ttl_s=1)
    await recent.mark([CPF])
    assert await recent.recent([CPF, "71460238001"]) == {CPF}
    await asyncio.sleep(1.2)
    assert await recent.recent([CPF]) == set()


async def test_redis_down_degrades_without_raising(keyspace: KeySpace) -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        recorder = Recorder()
        cache = RedisDossierCache(dead, keyspace, HmacEnvelope(KEYS), 60, recorder)
        await cache.put("cpf:x", b"X")
        assert await cache.get("cpf:x") is None
        assert recorder.counts[("work_api", "error")] == 2
        locks = RedisLeadLocks(dead, keyspace, SEAL, 300, 60)
        assert (await locks.acquire("lead-x")).acquired
        assert not (await locks.acquire("lead-x")).acquired  # still deduplicated per process
        await locks.finish("lead-x", b"{}")
        assert (await locks.acquire("lead-x")).finished == b"{}"
        recent = RedisRecentCpfs(dead, keyspace, ttl_s=60)
        await recent.mark([CPF])
        assert await recent.recent([CPF]) == {CPF}
        contacts = RedisContactCpfCache(dead, keyspace, 86400, 600, recorder)
        misses = await asyncio.gather(
            contacts.get("phone", "11987654321"), contacts.get("email", "a@example.com")
        )
        assert list(misses) == [None, None]
        await contacts.put("phone", "11987654321", [])
        assert recorder.counts[("contact_cpf", "error")] == 3
    finally:
        await dead.aclose()


async def test_get_fresh_serves_an_entry_no_older_than_asked(
    client: aioredis.Redis, keyspace: KeySpace
) -> None:
    cache = RedisDossierCache(client, keyspace, HmacEnvelope(KEYS), 3600)
    key = f"cpf:{CPF}:fresh"
    await cache.put(key, b'{"status":200}')
    assert await cache.get_fresh(key, 60) == b'{"status":200}'
    # 3,000 s of its 3,600 s life gone: the entry is 3,000 s old.
    await client.expire(cache.key(key), 600)
    assert await cache.get_fresh(key, 60) is None
    assert await cache.get_fresh(key, 3100) == b'{"status":200}'
    assert await cache.get(key) == b'{"status":200}'  # a plain read still serves it
    # More life than the cache's TTL (written under a longer one): its age is unknown, a miss.
    await client.expire(cache.key(key), 7200)
    assert await cache.get_fresh(key, 3600) is None
    assert await cache.get_fresh("cpf:nobody", 60) is None
