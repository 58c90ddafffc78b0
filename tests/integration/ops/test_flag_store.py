"""The feature flag store (infra/flags.py) on the session's real Redis.

Each test uses a key prefix of its own, so overrides never leak into other tests.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis

from app.config import load_settings
from domain.errors import DependencyUnavailable
from domain.flags import DEFAULTS, Flag
from infra.flags import FlagStore, UnknownFlag, defaults_from_settings
from observability.metrics import REGISTRY
from tests.support.clocks import FakeClock, VirtualClock
from tests.support.db import REDIS_BASE_URL
from tests.support.polling import wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from app.config import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_BASE_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def dead_redis() -> AsyncIterator[aioredis.Redis]:
    """A client whose server does not exist (port 1): every call fails like an outage."""
    client = aioredis.Redis.from_url(
        "redis://127.0.0.1:1/0", socket_timeout=0.2, socket_connect_timeout=0.2
    )
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def prefix(ops_settings: Settings) -> str:
    return ops_settings.redis_key_prefix


def _gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_without_overrides_every_flag_has_its_default(
    redis: aioredis.Redis, prefix: str
) -> None:
    store = FlagStore(redis, prefix=prefix)
    assert await store.refresh()
    assert {name: store.enabled(name) for name in DEFAULTS} == dict(DEFAULTS)
    assert all(state.override is None for state in store.states())
    assert [state.name for state in store.states()] == [flag.value for flag in Flag]


def test_settings_change_the_defaults() -> None:
    settings = load_settings({"FLAG_ENABLE_BATCH": "false", "FLAG_USE_DOSSIER_CACHE": "0"})
    assert defaults_from_settings(settings) == {
        "send_c2s_messages": True,
        "use_dossier_cache": False,
        "enable_batch": False,
    }


async def test_an_override_wins_and_unset_returns_to_the_default(
    redis: aioredis.Redis, prefix: str
) -> None:
    wall = FakeClock()
    store = FlagStore(redis, prefix=prefix, defaults={"enable_batch": True}, wall_clock=wall.now)
    state = await store.set("enable_batch", False, actor="cli")
    assert not state.enabled
    assert state.default
    assert state.override is not None
    assert state.override.changed_by == "cli"
    assert state.override.changed_at == wall.now()
    assert not store.enabled("enable_batch")  # applied in the writing process at once
    state = await store.unset("enable_batch", actor="cli")
    assert state.enabled
    assert state.override is None
    assert store.enabled("enable_batch")


async def test_another_worker_applies_a_change_within_the_ttl(
    redis: aioredis.Redis, prefix: str
) -> None:
    """Two stores on one prefix are two workers. The reader keeps its cached value until the
    TTL passes (no Redis round trip per read), then the next read brings the change in."""
    clock = VirtualClock()
    writer = FlagStore(redis, prefix=prefix)
    reader = FlagStore(redis, prefix=prefix, ttl_s=2.0, clock=clock)
    assert await reader.refresh()
    assert reader.enabled("send_c2s_messages")
    await writer.set("send_c2s_messages", False, actor="cli")
    clock.advance(1.9)
    assert reader.enabled("send_c2s_messages")  # cached: still the old value
    await redis.ping()  # a refresh, had one been started, would have had its round trip
    assert reader.enabled("send_c2s_messages")  # and no refresh was started
    clock.advance(0.1)  # the TTL has passed: this read starts a refresh in the background
    assert reader.enabled("send_c2s_messages")
    await wait_until(
        lambda: not reader.enabled("send_c2s_messages"), 5, what="the background refresh"
    )


async def test_the_background_refresh_brings_changes_in_within_the_ttl(
    redis: aioredis.Redis, prefix: str
) -> None:
    ttl = 0.3
    clock = VirtualClock()
    writer = FlagStore(redis, prefix=prefix)
    reader = FlagStore(redis, prefix=prefix, ttl_s=ttl, clock=clock, sleep=clock.sleep)
    async with reader.running():
        assert reader.enabled("use_dossier_cache")
        await writer.set("use_dossier_cache", False, actor="cli")
        await clock.until_sleeping()
        assert clock.requested == [ttl]  # the poller waits one TTL between reads
        assert reader.enabled("use_dossier_cache")  # not yet re-read
        clock.advance(ttl)
        await wait_until(lambda: not reader.enabled("use_dossier_cache"), 5, what="the poll")
        await writer.unset("use_dossier_cache", actor="cli")
        await clock.until_sleeping()
        assert not reader.enabled("use_dossier_cache")
        clock.advance(ttl)
        await wait_until(lambda: reader.enabled("use_dossier_cache"), 5, what="the next poll")
        assert clock.requested[:2] == [ttl, ttl]


async def test_values_are_exported_as_a_gauge(redis: aioredis.Redis, prefix: str) -> None:
    store = FlagStore(redis, prefix=prefix)
    await store.set("enable_batch", False, actor="cli")
    assert _gauge("feature_flag_enabled", flag="enable_batch") == 0.0
    assert _gauge("feature_flag_enabled", flag="send_c2s_messages") == 1.0
    await store.unset("enable_batch", actor="cli")
    assert _gauge("feature_flag_enabled", flag="enable_batch") == 1.0
    assert await store.refresh()
    assert _gauge("feature_flag_storage_degraded") == 0.0


async def test_redis_down_means_defaults_never_an_error(
    dead_redis: aioredis.Redis, prefix: str
) -> None:
    store = FlagStore(dead_redis, prefix=prefix, defaults={"enable_batch": False})
    # Bounded by the client's timeouts (0.2 s): the guard only catches a refresh that hangs.
    assert not await asyncio.wait_for(store.refresh(), 5)
    assert store.degraded
    assert _gauge("feature_flag_storage_degraded") == 1.0
    assert store.enabled("send_c2s_messages")
    assert not store.enabled("enable_batch")  # the deployment's default, not the built-in one
    with pytest.raises(DependencyUnavailable):
        await store.set("send_c2s_messages", False, actor="cli")
    assert store.enabled("send_c2s_messages")
    # The background task keeps trying without raising; reads stay instant.
    async with store.running():
        assert store.enabled("use_dossier_cache")


async def test_redis_lost_after_a_read_keeps_the_last_known_values(
    redis: aioredis.Redis, dead_redis: aioredis.Redis, prefix: str
) -> None:
    """An operator's kill switch must not silently turn back on during a Redis incident."""
    await FlagStore(redis, prefix=prefix).set("send_c2s_messages", False, actor="cli")
    store = FlagStore(redis, prefix=prefix)
    assert await store.refresh()
    assert not store.enabled("send_c2s_messages")
    store.redis = dead_redis  # the outage
    assert not await store.refresh()
    assert _gauge("feature_flag_storage_degraded") == 1.0
    assert not store.enabled("send_c2s_messages")
    store.redis = redis  # recovery
    assert await store.refresh()
    assert not store.degraded
    assert _gauge("feature_flag_storage_degraded") == 0.0


async def test_garbage_and_retired_flags_in_redis_are_ignored(
    redis: aioredis.Redis, prefix: str
) -> None:
    await redis.hset(f"{prefix}flags", mapping={"enable_batch": b"off", "retired_flag": b"{}"})
    store = FlagStore(redis, prefix=prefix)
    assert await store.refresh()
    assert store.enabled("enable_batch")  # unreadable override: the default applies
    assert [s.name for s in store.states()] == [flag.value for flag in Flag]


async def test_unknown_names_are_refused(redis: aioredis.Redis, prefix: str) -> None:
    with pytest.raises(UnknownFlag):
        FlagStore(redis, prefix=prefix, defaults={"no_such_flag": True})
    store = FlagStore(redis, prefix=prefix)
    with pytest.raises(UnknownFlag):
        await store.set("no_such_flag", True, actor="cli")
    with pytest.raises(KeyError):
        store.enabled("no_such_flag")
