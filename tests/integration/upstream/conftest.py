"""Fixtures for the upstream layer: real clients against the session's sandbox, real Redis.

Clients are built per test through ``make_clients`` so each test chooses its timeouts and
breakers. Redis keys live under a prefix unique to the session (and to the test) and are deleted
afterwards; nothing else in Redis is touched.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import pytest
import stamina

from infra.breaker import BreakerConfig, BreakerRegistry
from infra.redisclient import connect, prepare
from infra.upstream import (
    DEFAULT_RETRY,
    C2SConfig,
    DiretrixConfig,
    RetryPolicy,
    UpstreamClients,
    WorkApiConfig,
    create_session,
    create_upstream_clients,
)
from tests.support.db import delete_redis_keys
from tests.support.sandbox import C2S_TOKEN, DIRETRIX_PASS, DIRETRIX_USER, WORK_API_TOKEN
from tests.support.topology import REDIS_KINDS, redis_url_of
from tests.support.upstream import LENIENT, RETRY_ATTEMPTS, MakeClients

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    import aiohttp
    import redis.asyncio as aioredis

    from tests.support.sandbox import SandboxAdmin


@pytest.fixture(autouse=True)
def _no_retry_waits() -> Iterator[None]:
    """Retries keep their attempt count but never sleep in tests."""
    with stamina.set_testing(True, attempts=RETRY_ATTEMPTS):
        yield


@dataclass
class _Resources:
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)
    registries: list[BreakerRegistry] = field(default_factory=list)


@pytest.fixture
async def make_clients(sandbox_url: str, sandbox: SandboxAdmin) -> AsyncIterator[MakeClients]:
    """Factory of clients pointed at the (reset) sandbox; everything it built is closed
    afterwards."""
    resources = _Resources()

    def build(
        *,
        timeout_s: float = 5.0,
        breaker_config: BreakerConfig = LENIENT,
        redis: aioredis.Redis | None = None,
        key_prefix: str = "",
        c2s_token: str = C2S_TOKEN,
        diretrix_pass: str = DIRETRIX_PASS,
        work_api_token: str = WORK_API_TOKEN,
        base_url: str | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> UpstreamClients:
        url = base_url or sandbox_url
        session = create_session(20)
        registry = BreakerRegistry(
            redis,
            key_prefix=key_prefix,
            configs={name: breaker_config for name in ("c2s", "diretrix", "work_api")},
        )
        resources.sessions.append(session)
        resources.registries.append(registry)
        return create_upstream_clients(
            session,
            registry,
            c2s=C2SConfig(base_url=url, token=c2s_token, timeout_s=timeout_s, retry=retry),
            diretrix=DiretrixConfig(
                base_url=url,
                user=DIRETRIX_USER,
                password=diretrix_pass,
                timeout_s=timeout_s,
                retry=retry,
            ),
            work_api=WorkApiConfig(
                base_url=url, token=work_api_token, timeout_s=timeout_s, retry=retry
            ),
        )

    yield build
    for registry in resources.registries:
        await registry.aclose()
    for session in resources.sessions:
        await session.close()


@pytest.fixture
async def clients(make_clients: MakeClients) -> UpstreamClients:
    """Default clients: 5 s timeouts, breakers that never trip, no Redis."""
    return make_clients()


@pytest.fixture(scope="session")
def redis_session_prefix() -> str:
    """Prefix of every Redis key this test session writes."""
    return f"c2s-test:upstream:{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def breaker_prefix(redis_session_prefix: str) -> str:
    """A Redis key prefix unique to one test."""
    return f"{redis_session_prefix}{uuid.uuid4().hex[:8]}:"


@pytest.fixture(params=REDIS_KINDS)
def redis_url(request: pytest.FixtureRequest) -> str:
    """The test Redis, then the Redis Cluster (ADR 0014)."""
    return redis_url_of(request, request.param)


@pytest.fixture
async def redis_client(redis_url: str, redis_session_prefix: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the test Redis, then of the Redis Cluster (ADR 0014); the session's keys are
    deleted afterwards."""
    client = cast(
        "aioredis.Redis",
        connect(redis_url, timeout_s=1.0, max_connections=64),
    )
    await prepare(client)
    try:
        yield client
    finally:
        await client.aclose()
        await delete_redis_keys(redis_session_prefix)
