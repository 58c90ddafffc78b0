"""Circuit breakers with real Redis: tripping through a client, sharing across instances and
processes, and degrading to per-process protection when Redis is unreachable."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import textwrap
import time
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis

from domain.errors import DependencyUnavailable, UpstreamError
from infra.breaker import (
    BreakerConfig,
    BreakerOpen,
    BreakerState,
    CircuitBreaker,
    LocalBreakerCore,
    NullListener,
)
from tests.support.db import REDIS_BASE_URL
from tests.support.processes import ROOT
from tests.support.sandbox import PEOPLE
from tests.support.tcp_proxy import TcpProxy

if TYPE_CHECKING:
    from tests.support.sandbox import SandboxAdmin
    from tests.support.upstream import MakeClients

pytestmark = pytest.mark.integration

FAST = BreakerConfig(
    window_size=4,
    minimum_calls=4,
    failure_rate_threshold=50,
    wait_in_open_s=0.5,
    permitted_calls_in_half_open=1,
    cache_ttl_s=0.2,
    redis_timeout_s=0.25,
    redis_retry_interval_s=0.1,
)
LONG_OPEN = BreakerConfig(
    window_size=4, minimum_calls=4, wait_in_open_s=30, redis_retry_interval_s=0.1
)
REJECTION_BUDGET_S = 0.005


class Recorder(NullListener):
    """Remembers what the breaker reported."""

    def __init__(self) -> None:
        self.transitions: list[tuple[BreakerState, BreakerState]] = []
        self.degraded: list[bool] = []
        self.rejections = 0

    def on_state_change(self, name: str, old: BreakerState, new: BreakerState) -> None:
        self.transitions.append((old, new))

    def on_rejected(self, name: str, state: BreakerState) -> None:
        self.rejections += 1

    def on_storage_degraded(self, name: str, degraded: bool) -> None:
        self.degraded.append(degraded)


def _state(breaker: CircuitBreaker) -> BreakerState:
    # A call, so mypy does not narrow the property between two reads.
    return breaker.state


def _degraded(breaker: CircuitBreaker) -> bool:
    return breaker.degraded


async def _fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(RuntimeError):
            async with breaker.guard():
                raise RuntimeError("upstream exploded")


async def test_breaker_opens_rejects_fast_probes_after_its_wait_and_closes(
    make_clients: MakeClients,
    sandbox: SandboxAdmin,
    redis_client: aioredis.Redis,
    breaker_prefix: str,
) -> None:
    clients = make_clients(breaker_config=FAST, redis=redis_client, key_prefix=breaker_prefix)
    breaker = clients.diretrix.breaker
    phone = PEOPLE.person(61).mobile
    await sandbox.set_faults("diretrix", error_rate=1)
    for _ in range(2):  # 2 lookups x 3 attempts > 4 outcomes in the window
        with pytest.raises((UpstreamError, DependencyUnavailable)):
            await clients.diretrix.search_by_phone(phone)
    await breaker.flush()
    assert _state(breaker) is BreakerState.OPEN
    assert not _degraded(breaker)
    route = "GET /Consultas/Pessoa/Telefone/{phone}"
    calls = await sandbox.count("diretrix", route)

    start = time.perf_counter()
    with pytest.raises(BreakerOpen) as caught:
        await clients.diretrix.search_by_phone(phone)
    elapsed = time.perf_counter() - start
    assert elapsed < REJECTION_BUDGET_S
    assert caught.value.dependency == "diretrix"
    assert 0 < caught.value.retry_after <= FAST.wait_in_open_s
    assert await sandbox.count("diretrix", route) == calls  # nothing reached Diretrix

    await asyncio.sleep(FAST.wait_in_open_s + 0.05)
    await sandbox.clear_faults()
    assert await clients.diretrix.search_by_phone(phone) != []  # the half-open probe
    assert _state(breaker) is BreakerState.CLOSED
    fresh = CircuitBreaker("diretrix", FAST, redis=redis_client, key_prefix=breaker_prefix)
    try:
        await (await fresh.acquire()).success()
        assert _state(fresh) is BreakerState.CLOSED
    finally:
        await fresh.aclose()


async def test_the_shared_count_window_slides(
    redis_client: aioredis.Redis, breaker_prefix: str
) -> None:
    breaker = CircuitBreaker("c2s", FAST, redis=redis_client, key_prefix=breaker_prefix)
    try:
        for _ in range(3):
            for _ in range(10):  # far more outcomes than the 4-call window holds
                await (await breaker.acquire()).success()
            await breaker.flush()
        await _fail(breaker, 1)
        await breaker.flush()
        assert _state(breaker) is BreakerState.CLOSED  # 1 of the last 4
        await _fail(breaker, 1)
        await breaker.flush()
        assert _state(breaker) is BreakerState.OPEN  # 2 of the last 4
        assert not _degraded(breaker)
    finally:
        await breaker.aclose()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("window_type", ["count_based", "time_based"])
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_the_lua_window_agrees_with_the_local_state_machine(
    redis_client: aioredis.Redis, breaker_prefix: str, window_type: str, seed: int
) -> None:
    config = BreakerConfig(
        window_type="count_based" if window_type == "count_based" else "time_based",
        window_size=6,
        minimum_calls=4,
        failure_rate_threshold=50,
        slow_call_rate_threshold=60,
        slow_call_duration_s=1.0,
        wait_in_open_s=30,
    )
    clock = FakeClock()
    shared = CircuitBreaker(
        "work_api",
        config,
        redis=redis_client,
        key_prefix=breaker_prefix,
        clock=clock,
        wall_clock=clock,
    )
    reference = LocalBreakerCore(config)
    rng = random.Random(seed)
    try:
        for _ in range(60):
            failed, slow = rng.random() < 0.35, rng.random() < 0.3
            permit = await shared.acquire()
            clock.now += 1.5 if slow else rng.choice((0.1, 0.4, 0.9))
            await (permit.failure() if failed else permit.success())
            await shared.flush()
            reference.record(int(failed) | int(slow) << 1, BreakerState.CLOSED, 0, clock.now)
            assert _state(shared) is reference.state
            if reference.state is BreakerState.OPEN:
                break
        assert reference.state is BreakerState.OPEN  # the sequences do reach a trip
        assert not _degraded(shared)
    finally:
        await shared.aclose()


async def test_a_failed_probe_opens_the_breaker_again(
    redis_client: aioredis.Redis, breaker_prefix: str
) -> None:
    breaker = CircuitBreaker("work_api", FAST, redis=redis_client, key_prefix=breaker_prefix)
    try:
        await breaker.trip()
        await asyncio.sleep(FAST.wait_in_open_s + 0.05)
        await _fail(breaker, 1)
        assert _state(breaker) is BreakerState.OPEN
        with pytest.raises(BreakerOpen):
            await breaker.acquire()
    finally:
        await breaker.aclose()


SUBPROCESS_PROBE = textwrap.dedent(
    """
    import asyncio, json, sys
    from infra.breaker import BreakerConfig, BreakerOpen, CircuitBreaker
    from infra.redisclient import connect

    async def main():
        client = connect(sys.argv[1], timeout_s=1.0, max_connections=8)
        breaker = CircuitBreaker(
            "work_api", BreakerConfig(window_size=4, minimum_calls=4, wait_in_open_s=30),
            redis=client, key_prefix=sys.argv[2],
        )
        try:
            try:
                await breaker.acquire()
                out = {"state": breaker.state.value, "rejected": False}
            except BreakerOpen as exc:
                out = {"state": breaker.state.value, "rejected": True,
                       "retry_after": exc.retry_after}
            await breaker.reset()  # the parent must see this
        finally:
            await breaker.aclose()
            await client.aclose()
        print(json.dumps(out))

    asyncio.run(main())
    """
)


async def test_another_process_sees_the_open_state_and_its_reset_is_seen_here(
    redis_client: aioredis.Redis, redis_url: str, breaker_prefix: str
) -> None:
    breaker = CircuitBreaker("work_api", LONG_OPEN, redis=redis_client, key_prefix=breaker_prefix)
    try:
        await _fail(breaker, 4)
        await breaker.flush()
        assert _state(breaker) is BreakerState.OPEN
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SUBPROCESS_PROBE,
            redis_url,
            breaker_prefix,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert proc.returncode == 0, err.decode()
        # structlog may print its own lines first; the verdict is the last line.
        verdict = json.loads(out.decode().strip().splitlines()[-1])
        assert verdict["state"] == "open"
        assert verdict["rejected"] is True
        assert 25 < verdict["retry_after"] <= LONG_OPEN.wait_in_open_s

        await asyncio.sleep(LONG_OPEN.cache_ttl_s + 0.05)
        await (await breaker.acquire()).success()
        assert _state(breaker) is BreakerState.CLOSED
    finally:
        await breaker.aclose()


async def test_instances_share_half_open_permits(
    redis_client: aioredis.Redis, breaker_prefix: str
) -> None:
    one = CircuitBreaker("c2s", FAST, redis=redis_client, key_prefix=breaker_prefix)
    two = CircuitBreaker("c2s", FAST, redis=redis_client, key_prefix=breaker_prefix)
    try:
        await one.trip()
        await asyncio.sleep(FAST.wait_in_open_s + 0.05)
        probe = await one.acquire()
        assert probe.phase is BreakerState.HALF_OPEN
        with pytest.raises(BreakerOpen) as caught:
            await two.acquire()  # the only permit is taken by the other instance
        assert caught.value.state is BreakerState.HALF_OPEN
        await probe.success()
        assert _state(one) is BreakerState.CLOSED
        await asyncio.sleep(FAST.cache_ttl_s + 0.05)
        await (await two.acquire()).success()
        assert _state(two) is BreakerState.CLOSED
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_time_based_window_trips_through_redis(
    redis_client: aioredis.Redis, breaker_prefix: str
) -> None:
    config = BreakerConfig(
        window_type="time_based", window_size=10, minimum_calls=3, wait_in_open_s=5
    )
    breaker = CircuitBreaker("postgres", config, redis=redis_client, key_prefix=breaker_prefix)
    try:
        await (await breaker.acquire()).success()
        await _fail(breaker, 2)
        await breaker.flush()
        assert _state(breaker) is BreakerState.OPEN  # 2 of 3 calls failed >= 50 %
    finally:
        await breaker.aclose()


async def test_operator_states_are_shared(
    redis_client: aioredis.Redis, breaker_prefix: str
) -> None:
    one = CircuitBreaker("redis", FAST, redis=redis_client, key_prefix=breaker_prefix)
    two = CircuitBreaker("redis", FAST, redis=redis_client, key_prefix=breaker_prefix)
    try:
        await one.force_open()
        with pytest.raises(BreakerOpen) as caught:
            await two.acquire()
        assert caught.value.state is BreakerState.FORCED_OPEN
        await one.disable()
        await asyncio.sleep(FAST.cache_ttl_s + 0.05)
        await _fail(two, 10)  # disabled: nothing is recorded, nothing trips
        await two.flush()
        assert _state(two) is BreakerState.DISABLED
        await two.reset()
        await asyncio.sleep(FAST.cache_ttl_s + 0.05)
        await (await one.acquire()).success()
        assert _state(one) is BreakerState.CLOSED
    finally:
        await one.aclose()
        await two.aclose()


async def test_breaker_protects_locally_when_redis_is_unreachable() -> None:
    client = aioredis.Redis.from_url(
        "redis://127.0.0.1:1/0", socket_connect_timeout=0.2, socket_timeout=0.2
    )
    recorder = Recorder()
    breaker = CircuitBreaker("diretrix", LONG_OPEN, redis=client, listener=recorder)
    try:
        await _fail(breaker, 4)  # no Redis error escapes: only the RuntimeErrors
        assert _degraded(breaker)
        assert _state(breaker) is BreakerState.OPEN
        start = time.perf_counter()
        with pytest.raises(BreakerOpen):
            await breaker.acquire()
        assert time.perf_counter() - start < REJECTION_BUDGET_S
        assert recorder.degraded == [True]
        assert (BreakerState.CLOSED, BreakerState.OPEN) in recorder.transitions
        assert recorder.rejections == 1
    finally:
        await breaker.aclose()
        await client.aclose()


async def test_breaker_recovers_shared_state_when_redis_returns(breaker_prefix: str) -> None:
    # One server behind a proxy and a watcher on the same server (not the cluster).
    redis_client = aioredis.Redis.from_url(REDIS_BASE_URL)
    proxy = TcpProxy(
        aioredis.Redis.from_url(REDIS_BASE_URL).connection_pool.connection_kwargs["port"]
    )
    await proxy.start()
    via_proxy = aioredis.Redis(
        host="127.0.0.1", port=proxy.port, socket_connect_timeout=0.2, socket_timeout=0.2
    )
    recorder = Recorder()
    breaker = CircuitBreaker(
        "work_api", LONG_OPEN, redis=via_proxy, key_prefix=breaker_prefix, listener=recorder
    )
    watcher = CircuitBreaker("work_api", LONG_OPEN, redis=redis_client, key_prefix=breaker_prefix)
    try:
        await (await breaker.acquire()).success()
        await breaker.flush()
        assert not _degraded(breaker)

        await proxy.stop()  # Redis "goes away" while the upstream fails
        await _fail(breaker, 4)
        await breaker.flush()
        assert _degraded(breaker)
        assert _state(breaker) is BreakerState.OPEN
        assert await watcher.acquire()  # Redis never heard of it: still closed there

        await proxy.start()  # Redis "returns"
        await asyncio.sleep(LONG_OPEN.redis_retry_interval_s + 0.05)
        with pytest.raises(BreakerOpen):
            await breaker.acquire()  # still rejects, and starts the recovery probe
        for _ in range(100):
            if not _degraded(breaker):
                break
            await asyncio.sleep(0.02)
        assert not _degraded(breaker)
        assert recorder.degraded == [True, False]
        await asyncio.sleep(LONG_OPEN.cache_ttl_s + 0.05)
        with pytest.raises(BreakerOpen):
            await watcher.acquire()  # the local OPEN was published to the other workers
    finally:
        await breaker.aclose()
        await watcher.aclose()
        await via_proxy.aclose()
        await proxy.stop()
        await redis_client.aclose()


async def test_exported_state_follows_the_shared_state_without_calls(run_id: str) -> None:
    # A process that saw the breaker open and then made no call used to report "open" until its
    # next call (CircuitBreakerOpen paged while the fleet's breaker was half-open, then closed).
    from infra.breaker import BreakerRegistry
    from observability.metrics import REGISTRY, BreakerMetrics

    def gauge(name: str) -> float | None:
        return REGISTRY.get_sample_value("circuit_breaker_state", {"name": name})

    redis = aioredis.Redis.from_url(REDIS_BASE_URL)
    prefix = f"c2s-test:{run_id}:sync:"
    name = "sync_probe"
    gauges = BreakerMetrics()
    seen: list[tuple[str, BreakerState, bool]] = []
    ours = BreakerRegistry(redis, key_prefix=prefix, configs={name: FAST}, listener=gauges)
    theirs = BreakerRegistry(redis, key_prefix=prefix, configs={name: FAST})
    try:
        ours.get(name)
        await theirs.get(name).trip()
        await ours.sync(gauges.publish)
        assert gauge(name) == 2  # open, as the fleet sees it
        await asyncio.sleep(FAST.wait_in_open_s + 0.1)
        await ours.sync(gauges.publish)
        assert gauge(name) == 1  # half-open, without any call from this process
        await theirs.get(name).reset()  # another process's probes succeeded

        def publish(name: str, state: BreakerState, degraded: bool) -> None:
            seen.append((name, state, degraded))
            gauges.publish(name, state, degraded)

        ours.start_sync(0.05, publish)
        deadline = time.monotonic() + 5
        while gauge(name) != 0:
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.05)
        assert seen[-1] == (name, BreakerState.CLOSED, False)
    finally:
        await ours.aclose()
        await theirs.aclose()
        await redis.delete(*[k async for k in redis.scan_iter(f"{prefix}*")])
        await redis.aclose()
