"""The in-memory dossier cache on a Redis Cluster (ADR 0010, ADR 0014): invalidations travel on a
sharded channel (SPUBLISH on the master of the channel's slot, where every listener subscribes),
so a rewrite still reaches every process within the bound, and a failover of that master stops
memory from answering until the listener has subscribed on the promoted replica."""

from __future__ import annotations

import functools
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import pytest

from infra.cache import HmacEnvelope, KeySpace, RedisDossierCache
from infra.localcache import LocalDossierCache
from infra.redisclient import RedisClient, connect, prepare
from tests.support.polling import wait_until
from tests.support.topology import redis_cluster

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
    def __init__(self, cache: RedisDossierCache, local: LocalDossierCache, recorder: Recorder):
        self.cache = cache
        self.local = local
        self.recorder = recorder


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


def _keyspace() -> KeySpace:
    return KeySpace(f"c2s-test:cluster-{uuid.uuid4().hex[:6]}:", b"test-salt")


async def start(stack: AsyncExitStack, keyspace: KeySpace, url: str) -> Process:
    client: RedisClient = connect(url, timeout_s=0.25, max_connections=16)
    stack.push_async_callback(client.aclose)
    await prepare(client)
    channel = keyspace.key("wa", "") + ":invalidated"
    local = LocalDossierCache(
        client, channel, max_bytes=1 << 20, max_entries=1000, stale_bound_s=BOUND_S
    )
    await stack.enter_async_context(local.running())
    recorder = Recorder()
    cache = RedisDossierCache(
        client, keyspace, HmacEnvelope(KEYS), 60, recorder, channel=channel, local=local
    )
    await wait_until(local.serving, 10, what="the invalidation channel to confirm")
    return Process(cache, local, recorder)


async def _serves(process: Process, body: bytes) -> bool:
    return await process.cache.get(KEY) == body


async def test_a_rewrite_reaches_every_process_within_the_bound_on_a_cluster(
    stack: AsyncExitStack, redis_cluster_topology: object
) -> None:
    url = redis_cluster_topology.url  # type: ignore[attr-defined]
    keyspace = _keyspace()
    processes = [await start(stack, keyspace, url) for _ in range(3)]
    writer, readers = processes[0], processes[1:]
    await writer.cache.put(KEY, b'{"v":1}')
    for reader in readers:
        assert await reader.cache.get(KEY) == b'{"v":1}'
        assert await reader.cache.get(KEY) == b'{"v":1}'
        assert reader.recorder.counts["hit_local"] == 1  # the second read from memory
    for version in range(2, 6):
        body = b'{"v":%d}' % version
        rewritten = time.monotonic()
        await writer.cache.put(KEY, body)
        for reader in readers:
            assert await wait_until(
                functools.partial(_serves, reader, body), 5, what="the rewrite", interval_s=0.005
            )
            assert time.monotonic() - rewritten <= BOUND_S


async def test_failover_of_the_channel_master_never_serves_stale_past_the_bound(
    stack: AsyncExitStack,
) -> None:
    with redis_cluster() as topology:
        keyspace = _keyspace()
        a = await start(stack, keyspace, topology.url)
        b = await start(stack, keyspace, topology.url)
        await a.cache.put(KEY, b'{"v":1}')
        assert await b.cache.get(KEY) == b'{"v":1}'

        channel = keyspace.key("wa", "") + ":invalidated"
        killed = time.monotonic()
        topology.kill(topology.owner_of(channel))
        # The listener loses its master: memory stops answering within the bound.
        await wait_until(lambda: not b.local.serving(), BOUND_S + 0.5, what="memory to stop")
        assert time.monotonic() - killed <= BOUND_S + 0.5

        topology.wait_ok()  # the replica is promoted
        # Both listeners subscribe on the new master, and a rewrite reaches b again.
        await wait_until(b.local.serving, 15, what="the listener on the promoted master")
        await wait_until(a.local.serving, 15, what="the writer's listener")
        rewritten = time.monotonic()
        await a.cache.put(KEY, b'{"v":2}')
        assert await wait_until(
            functools.partial(_serves, b, b'{"v":2}'), 5, what="the rewrite", interval_s=0.005
        )
        assert time.monotonic() - rewritten <= BOUND_S
        await stack.aclose()
