"""Local admission against a real Redis: no command per request in steady state, one shared
quota held by several limiters, grants given back on close, and the per-process fallback."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis

from infra.ratelimit import RateLimiter, parse_policy
from tests.support.db import REDIS_BASE_URL

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.integration

SYNC_S = 0.05


class CountingRedis(aioredis.Redis):
    """A client that counts the commands it sends (scripts included), not other clients'."""

    sent = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent += 1
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


@pytest.fixture
async def client() -> AsyncIterator[CountingRedis]:
    redis = CountingRedis(connection_pool=aioredis.ConnectionPool.from_url(REDIS_BASE_URL))
    yield redis
    await redis.aclose(close_connection_pool=True)


def limiter(
    client: aioredis.Redis, prefix: str, *, ip: str = "", key: str = "", glob: str = ""
) -> RateLimiter:
    return RateLimiter(
        client,
        prefix=prefix,
        policies={"ip": parse_policy(ip), "key": parse_policy(key), "global": parse_policy(glob)},
        sync_s=SYNC_S,
    )


async def test_steady_state_requests_send_no_redis_command_but_the_periodic_sync(
    client: CountingRedis, redis_prefix: str, redis_cleanup: None
) -> None:
    unreachable = "1000000/second"
    gate = limiter(client, f"{redis_prefix}lo1:", ip=unreachable, key=unreachable, glob=unreachable)
    identities = {"ip": "client", "key": "key-id", "global": "all"}
    async with gate.running():
        for _ in range(10):  # warm up: the view learns the demand of a period
            for _ in range(20):
                assert (await gate.admit(identities)).allowed  # type: ignore[arg-type]
            await asyncio.sleep(SYNC_S)
        before, started = client.sent, time.monotonic()
        for _ in range(10):  # 200 requests, paced at the warm-up's rate
            for _ in range(20):
                decision = await gate.admit(identities)  # type: ignore[arg-type]
                assert decision.allowed
                assert not decision.degraded
            await asyncio.sleep(SYNC_S)
        sent, elapsed = client.sent - before, time.monotonic() - started
    periods = elapsed / SYNC_S
    assert sent <= periods + 2, (sent, periods)  # the batched sync, not one per request


async def test_several_limiters_syncing_hold_one_shared_quota(
    client: CountingRedis, redis_prefix: str, redis_cleanup: None
) -> None:
    quota, seconds = 50, 3.0
    gates = [limiter(client, f"{redis_prefix}lo2:", key=f"{quota}/second") for _ in range(4)]
    admitted = 0
    refused: list[int] = []
    async with AllRunning(gates):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for gate in gates:
                for _ in range(5):
                    decision = await gate.admit({"key": "k"})
                    if decision.allowed:
                        admitted += 1
                    else:
                        refused.append(decision.retry_after_s)
            await asyncio.sleep(0.005)
    assert admitted <= quota * seconds * 1.05 + quota  # the window open at the start, once
    assert admitted >= quota * seconds * 0.5
    assert refused
    assert all(retry >= 1 for retry in refused)


async def test_closing_the_limiter_pushes_spent_units_and_gives_grants_back(
    client: CountingRedis, redis_prefix: str, redis_cleanup: None
) -> None:
    prefix = f"{redis_prefix}lo3:"
    first = limiter(client, prefix, key="10/minute")
    async with first.running():
        for _ in range(3):
            assert (await first.admit({"key": "k"})).allowed
    second = limiter(client, prefix, key="10/minute")
    async with second.running():
        results = [(await second.admit({"key": "k"})).allowed for _ in range(10)]
    assert results.count(True) == 7  # the three spent count; the unspent grant came back
    assert not (await second.check({"key": "k"})).allowed  # the exact path sees them too


async def test_redis_down_degrades_the_local_view_to_per_process_limits() -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        gate = limiter(dead, "x:", ip="3/minute")
        async with gate.running():
            results = [await gate.admit({"ip": "z"}) for _ in range(5)]
        assert [r.allowed for r in results] == [True, True, True, False, False]
        assert all(r.degraded for r in results)
        assert gate.degraded
        assert results[-1].retry_after_s >= 1
    finally:
        await dead.aclose()


class AllRunning:
    """Run the sync of every limiter of ``gates`` while open."""

    def __init__(self, gates: list[RateLimiter]) -> None:
        self._stacks = [gate.running() for gate in gates]

    async def __aenter__(self) -> None:
        for stack in self._stacks:
            await stack.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        for stack in self._stacks:
            await stack.__aexit__(None, None, None)
