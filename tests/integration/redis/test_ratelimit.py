"""The multi-tier limiter against a real Redis: shared windows, tier isolation, degraded mode."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

import pytest
import redis.asyncio as aioredis

from infra.ratelimit import RateLimiter, parse_policy
from infra.redisclient import connect, prepare
from tests.support.topology import REDIS_KINDS, redis_url_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.integration


class Listener:
    def __init__(self) -> None:
        self.refused: list[str | None] = []
        self.allowed = 0
        self.degraded_events: list[bool] = []

    def decided(self, tier: str | None, allowed: bool) -> None:
        if allowed:
            self.allowed += 1
        else:
            self.refused.append(tier)

    def degraded(self, active: bool) -> None:
        self.degraded_events.append(active)


@pytest.fixture(params=REDIS_KINDS)
async def client(request: pytest.FixtureRequest) -> AsyncIterator[aioredis.Redis]:
    """One Redis server, then the Redis Cluster (ADR 0014): the same semantics on both."""
    redis = connect(redis_url_of(request, request.param), timeout_s=1.0, max_connections=64)
    await prepare(redis)
    yield cast("aioredis.Redis", redis)
    await redis.aclose()


def limiter(
    client: aioredis.Redis, prefix: str, *, ip: str = "", key: str = "", glob: str = ""
) -> RateLimiter:
    return RateLimiter(
        client,
        prefix=prefix,
        policies={"ip": parse_policy(ip), "key": parse_policy(key), "global": parse_policy(glob)},
        listener=Listener(),
    )


async def test_quota_is_shared_by_several_limiters(
    client: aioredis.Redis, redis_prefix: str, redis_cleanup: None, run_id: str
) -> None:
    prefix = f"{redis_prefix}rl1:"
    workers = [limiter(client, prefix, key="30/minute") for _ in range(4)]
    decisions = await asyncio.gather(*(workers[i % 4].check({"key": "k1"}) for i in range(50)))
    assert sum(d.allowed for d in decisions) == 30
    refused = [d for d in decisions if not d.allowed]
    assert all(d.retry_after_s >= 1 for d in refused)
    assert all(d.tightest is not None and d.tightest.remaining == 0 for d in refused)


async def test_a_refused_request_consumes_no_other_tier(
    client: aioredis.Redis, redis_prefix: str, redis_cleanup: None
) -> None:
    gate = limiter(client, f"{redis_prefix}rl2:", ip="2/minute", glob="100/minute")
    results = [await gate.check({"ip": "a", "global": "all"}) for _ in range(5)]
    assert [r.allowed for r in results] == [True, True, False, False, False]
    other = await gate.check({"ip": "b", "global": "all"})
    assert other.allowed
    global_state = next(s for s in other.states if s.tier == "global")
    assert global_state.remaining == 100 - 3  # two from "a", one from "b"


async def test_remaining_counts_down_and_names_the_tightest_tier(
    client: aioredis.Redis, redis_prefix: str, redis_cleanup: None
) -> None:
    gate = limiter(client, f"{redis_prefix}rl3:", ip="5/minute", key="100/minute")
    first = await gate.check({"ip": "x", "key": "k"})
    second = await gate.check({"ip": "x", "key": "k"})
    assert first.tightest is not None
    assert second.tightest is not None
    assert (first.tightest.tier, first.tightest.remaining) == ("ip", 4)
    assert second.tightest.remaining == 3
    assert 0 < second.tightest.reset_s <= 60


async def test_redis_down_degrades_to_the_same_quota_per_process() -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        listener = Listener()
        gate = RateLimiter(
            dead,
            prefix="x:",
            policies={"ip": parse_policy("3/minute")},
            listener=listener,
        )
        results = [await gate.check({"ip": "z"}) for _ in range(5)]
        assert [r.allowed for r in results] == [True, True, True, False, False]
        assert all(r.degraded for r in results)
        assert listener.degraded_events == [True]
        assert results[-1].retry_after_s >= 1
    finally:
        await dead.aclose()


async def test_a_request_can_cost_several_units_of_one_tier(
    client: aioredis.Redis, redis_prefix: str, redis_cleanup: None
) -> None:
    gate = limiter(client, f"{redis_prefix}rl5:", ip="100/minute", key="30/minute")
    first = await gate.check({"ip": "c", "key": "k"}, costs={"key": 10})
    assert first.allowed
    states = {s.tier: s.remaining for s in first.states}
    assert states == {"ip": 99, "key": 20}  # the cost applies to its tier only
    assert (await gate.check({"ip": "c", "key": "k"}, costs={"key": 20})).allowed
    refused = await gate.check({"ip": "c", "key": "k"}, costs={"key": 5})
    assert not refused.allowed
    assert refused.retry_after_s >= 1
    assert [s.tier for s in refused.states if s.refused] == ["key"]
    # The refused request consumed nothing: the IP tier counts the two served ones and this one.
    after = await gate.check({"ip": "c"})
    assert {s.tier: s.remaining for s in after.states} == {"ip": 97}


async def test_a_request_costing_more_than_the_quota_takes_the_whole_window(
    client: aioredis.Redis, redis_prefix: str, redis_cleanup: None
) -> None:
    gate = limiter(client, f"{redis_prefix}rl6:", key="30/minute")
    big = await gate.check({"key": "k"}, costs={"key": 100})
    assert big.allowed  # served alone in an empty window, not refused for ever
    assert big.tightest is not None
    assert big.tightest.remaining == 0
    assert not (await gate.check({"key": "k"})).allowed


async def test_costs_hold_in_the_per_process_fallback() -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        gate = RateLimiter(dead, prefix="x:", policies={"key": parse_policy("30/minute")})
        assert (await gate.check({"key": "k"}, costs={"key": 25})).allowed
        refused = await gate.check({"key": "k"}, costs={"key": 10})
        assert not refused.allowed
        assert refused.degraded
        assert (await gate.check({"key": "k"}, costs={"key": 5})).allowed
    finally:
        await dead.aclose()


async def test_every_failed_storage_call_is_counted() -> None:
    from observability.metrics import REGISTRY

    def errors() -> float:
        return REGISTRY.get_sample_value("rate_limit_storage_errors_total") or 0.0

    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        gate = RateLimiter(
            dead, prefix="x:", policies={"ip": parse_policy("3/minute")}, retry_redis_after_s=0.0
        )
        before = errors()
        for _ in range(4):
            await gate.check({"ip": "z"})
        assert errors() - before == 4
    finally:
        await dead.aclose()
