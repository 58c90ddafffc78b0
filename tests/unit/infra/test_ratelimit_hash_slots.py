"""Every Lua script touches keys of ONE Redis Cluster hash slot per call.

A recording client stands in for Redis: each script call records the keys it is given (and
fails, as an unreachable Redis would), and the test computes their slots with Redis's own CRC16
(``redis.crc.key_slot``). Covered: the rate limiter's check and sync scripts, the idempotency
claim, the shared breaker's scripts.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

from app.http.middleware.idempotency import IdempotencyStore
from infra.breaker.settings import BreakerConfig
from infra.breaker.shared import SharedState
from infra.ratelimit import RateLimiter, parse_policy
from infra.sealing import AeadEnvelope

if TYPE_CHECKING:
    from collections.abc import Sequence

    import limits

    from domain.admission import Tier


class RecordingRedis:
    """``register_script`` only: every call records its keys and fails like a dead Redis."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def register_script(self, source: str) -> Any:
        calls = self.calls

        async def script(keys: Sequence[str] = (), args: Sequence[Any] = ()) -> Any:
            calls.append(list(keys))
            raise RedisConnectionError("recording only")

        return script


def slots(keys: list[str]) -> set[int]:
    return {key_slot(key.encode()) for key in keys}


async def test_rate_limit_scripts_touch_one_slot_per_call() -> None:
    redis = RecordingRedis()
    policies: dict[Tier, list[limits.RateLimitItem]] = {
        "ip": parse_policy("20/2second"),
        "key": parse_policy("50/second;2000/minute"),
        "global": parse_policy("2000/second"),
    }
    exact = RateLimiter(redis, prefix="c2s:", policies=policies, retry_redis_after_s=0.0)  # type: ignore[arg-type]
    local = RateLimiter(
        redis,  # type: ignore[arg-type]
        prefix="c2s:",
        policies=policies,
        retry_redis_after_s=0.0,
        sync_s=0.05,
    )
    identities = {"ip": "a1b2", "key": "key-id", "global": "all"}
    await exact.check(identities)  # type: ignore[arg-type]
    await exact.check(identities, costs={"key": 7})  # type: ignore[arg-type]
    await local.admit(identities)  # type: ignore[arg-type]
    await local.admit({"ip": "other", "global": "all"})
    assert len(redis.calls) == 4
    for keys in redis.calls:
        assert len(keys) >= 2  # several limits in one call...
        assert len(slots(keys)) == 1  # ...all in one slot


async def test_idempotency_claim_touches_one_slot() -> None:
    redis = RecordingRedis()
    store = IdempotencyStore(
        redis,  # type: ignore[arg-type]
        "c2s:",
        60,
        10,
        envelope=AeadEnvelope([("k1", b"x" * 32)], purpose="idempotency"),
        salt=b"salt",
    )
    with contextlib.suppress(RedisConnectionError):
        await store.claim(store.name("tenant:key", "abc"), "fingerprint")
    assert len(redis.calls) == 1
    assert all(len(slots(keys)) == 1 for keys in redis.calls)


async def test_breaker_scripts_touch_one_slot_per_call() -> None:
    redis = RecordingRedis()
    state = SharedState(redis, "c2s:", "work_api", BreakerConfig())  # type: ignore[arg-type]
    for call in (
        state.read(),
        state.acquire(),
        state.release(1),
        state.record("closed", 1, "01", 1_800_000_000.0),
        state.transition("open", 1000),
    ):
        with contextlib.suppress(RedisConnectionError):
            await call
    assert len(redis.calls) == 5
    for keys in redis.calls:
        assert len(keys) == 6
        assert len(slots(keys)) == 1
