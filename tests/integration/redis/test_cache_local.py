"""The in-memory dossier cache of several processes against a real Redis: a body rewritten in
one process is never served stale by another for longer than the stated bound, also when the
invalidation channel breaks."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis

from infra.cache import HmacEnvelope, KeySpace, RedisDossierCache
from infra.localcache import LocalDossierCache
from tests.support.db import REDIS_BASE_URL
from tests.support.polling import wait_until
from tests.support.tcp_proxy import TcpProxy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.integration

KEYS = [("k1", b"secret-0123456789abcdef")]
BOUND_S = 1.0
KEY = "cpf:39053344705"


class Recorder:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def record(self, cache: str, result: str) -> None:
        self.counts[result] += 1


class Process:
    """What one app process holds: its own Redis client, local cache and listener."""

    def __init__(
        self,
        cache: RedisDossierCache,
        local: LocalDossierCache,
        client: aioredis.Redis,
        recorder: Recorder,
    ) -> None:
        self.cache = cache
        self.local = local
        self.client = client
        self.recorder = recorder


@pytest.fixture
def keyspace(redis_prefix: str, redis_cleanup: None) -> KeySpace:
    return KeySpace(f"{redis_prefix}local-{uuid.uuid4().hex[:6]}:", b"test-salt")


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def start(
    stack: AsyncExitStack, keyspace: KeySpace, url: str = REDIS_BASE_URL, **limits: int
) -> Process:
    name = f"dcache-{uuid.uuid4().hex[:8]}"
    client = aioredis.Redis.from_url(
        url, client_name=name, socket_timeout=0.25, socket_connect_timeout=0.25
    )
    stack.push_async_callback(client.aclose)
    channel = keyspace.key("wa", "") + ":invalidated"
    local = LocalDossierCache(
        client,
        channel,
        max_bytes=limits.get("max_bytes", 1 << 20),
        max_entries=limits.get("max_entries", 1000),
        stale_bound_s=BOUND_S,
    )
    await stack.enter_async_context(local.running())
    recorder = Recorder()
    cache = RedisDossierCache(
        client, keyspace, HmacEnvelope(KEYS), 60, recorder, channel=channel, local=local
    )
    process = Process(cache, local, client, recorder)
    await wait_until(local.serving, 5, what="the invalidation channel to confirm")
    return process


async def test_a_hit_is_answered_from_memory_without_redis(
    stack: AsyncExitStack, keyspace: KeySpace
) -> None:
    a = await start(stack, keyspace)
    b = await start(stack, keyspace)
    await a.cache.put(KEY, b'{"v":1}')
    assert await b.cache.get(KEY) == b'{"v":1}'  # from Redis, kept
    assert b.recorder.counts["hit"] == 1
    await b.client.connection_pool.disconnect()  # no command connection left
    assert await b.cache.get(KEY) == b'{"v":1}'
    assert b.recorder.counts["hit_local"] == 1
    assert await a.cache.get(KEY) == b'{"v":1}'  # the writer kept what it wrote
    assert a.recorder.counts["hit_local"] == 1


async def test_a_rewrite_reaches_every_process_within_the_bound(
    stack: AsyncExitStack, keyspace: KeySpace
) -> None:
    processes = [await start(stack, keyspace) for _ in range(3)]
    writer, readers = processes[0], processes[1:]
    await writer.cache.put(KEY, b'{"v":1}')
    for reader in readers:
        assert await reader.cache.get(KEY) == b'{"v":1}'
        assert await reader.cache.get(KEY) == b'{"v":1}'
        assert reader.recorder.counts["hit_local"] == 1
    for version in range(2, 7):
        body = b'{"v":%d}' % version
        rewritten = time.monotonic()
        await writer.cache.put(KEY, body)
        for reader in readers:
            seen = await wait_until(
                functools.partial(_serves, reader, body), 5, what="the rewrite", interval_s=0.005
            )
            assert seen
            assert time.monotonic() - rewritten <= BOUND_S


async def _serves(process: Process, body: bytes) -> bool:
    return await process.cache.get(KEY) == body


async def test_killed_channel_connection_never_serves_stale_past_the_bound(
    stack: AsyncExitStack, keyspace: KeySpace
) -> None:
    a = await start(stack, keyspace)
    b = await start(stack, keyspace)
    admin = aioredis.Redis.from_url(REDIS_BASE_URL)
    stack.push_async_callback(admin.aclose)
    for round_ in range(3):
        old, new = b'{"round":%d,"v":1}' % round_, b'{"round":%d,"v":2}' % round_
        await a.cache.put(KEY, old)
        assert await b.cache.get(KEY) == old
        await wait_until(b.local.serving, 5, what="b's channel to be live again")
        assert await b.cache.get(KEY) == old
        # Cut b's subscriber connection, then rewrite while it may not be listening.
        killed = await _kill_pubsub(admin, b)
        assert killed == 1
        rewritten = time.monotonic()
        await a.cache.put(KEY, new)
        while (answer := await b.cache.get(KEY)) != new:
            assert answer == old
            assert time.monotonic() - rewritten <= BOUND_S, "stale past the bound"
            await asyncio.sleep(0.01)


async def _kill_pubsub(admin: aioredis.Redis, process: Process) -> int:
    name = process.client.connection_pool.connection_kwargs["client_name"]
    clients = await admin.client_list(_type="pubsub")
    ids = [c["id"] for c in clients if c.get("name") == name]
    for ident in ids:
        await admin.client_kill_filter(_id=ident)
    return len(ids)


async def test_redis_unreachable_stops_memory_answers_within_the_bound(
    stack: AsyncExitStack, keyspace: KeySpace
) -> None:
    proxy = TcpProxy(6379)
    await proxy.start()
    stack.push_async_callback(proxy.stop)
    a = await start(stack, keyspace)
    b = await start(stack, keyspace, url=f"redis://127.0.0.1:{proxy.port}/0")
    await a.cache.put(KEY, b'{"v":1}')
    assert await b.cache.get(KEY) == b'{"v":1}'
    assert await b.cache.get(KEY) == b'{"v":1}'
    assert b.recorder.counts["hit_local"] == 1
    await proxy.stop()  # b loses Redis, its channel included
    rewritten = time.monotonic()
    await a.cache.put(KEY, b'{"v":2}')
    while await b.cache.get(KEY) == b'{"v":1}':
        assert time.monotonic() - rewritten <= BOUND_S, "stale past the bound"
        await asyncio.sleep(0.02)
    assert not b.local.serving()
    assert await b.cache.get(KEY) is None  # Redis errors are misses, never stale bodies
    assert b.recorder.counts["error"] >= 1
    await proxy.start()  # back: resubscribed, emptied, then served from memory again
    await wait_until(b.local.serving, 10, what="b to resubscribe")
    await wait_until(lambda: _serves(b, b'{"v":2}'), 10, what="b to read Redis again")
    local_hits = b.recorder.counts["hit_local"]
    assert await b.cache.get(KEY) == b'{"v":2}'
    assert b.recorder.counts["hit_local"] == local_hits + 1


async def test_entries_expire_with_their_redis_ttl(
    stack: AsyncExitStack, keyspace: KeySpace
) -> None:
    a = await start(stack, keyspace)
    b = await start(stack, keyspace)
    await a.cache.put(KEY, b'{"v":1}')
    await b.client.pexpire(b.cache.key(KEY), 300)
    assert await b.cache.get(KEY) == b'{"v":1}'
    await wait_until(lambda: _gone(b), 5, what="the entry to expire")
    assert b.recorder.counts["miss"] == 1


async def _gone(process: Process) -> bool:
    return await process.cache.get(KEY) is None


async def test_bodies_larger_than_the_byte_bound_evict_the_oldest(
    stack: AsyncExitStack, keyspace: KeySpace
) -> None:
    a = await start(stack, keyspace, max_bytes=3 * 6000)
    for i in range(5):
        await a.cache.put(f"cpf:{i}", b"x" * 5000)
    assert len(a.local) == 3
    assert a.local.nbytes <= 3 * 6000
    assert await a.cache.get("cpf:0") == b"x" * 5000  # evicted from memory, still in Redis
    assert a.recorder.counts["hit"] == 1


async def test_get_fresh_from_memory_respects_the_entry_age(
    stack: AsyncExitStack, keyspace: KeySpace
) -> None:
    a = await start(stack, keyspace)
    await a.cache.put(KEY, b'{"v":1}')
    assert await a.cache.get_fresh(KEY, 5) == b'{"v":1}'
    assert a.recorder.counts["hit_local"] == 1  # young, and held in memory
    await asyncio.sleep(1.1)
    assert await a.cache.get_fresh(KEY, 1) is None  # memory and Redis agree: over 1 s old
    assert await a.cache.get(KEY) == b'{"v":1}'
