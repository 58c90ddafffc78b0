"""Long-lived resources of one worker process, created and closed by the lifespan."""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from app.config import parse_hmac_keys
from app.container import Container, open_container
from app.http.middleware.auth import install_key_verifier
from app.http.middleware.idempotency import IdempotencyStore
from app.http.middleware.ratelimit import AUTH_FAILURE_POLICY, AuthFailureGuard, ClientAddress
from infra.ratelimit import RateLimiter, parse_policy
from infra.sealing import AeadEnvelope
from observability.metrics import RATE_LIMIT_DEGRADED, record_rate_limit, track_pool
from observability.tracing import flush_tracing, freeze_gc_after_startup

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import asyncpg
    import redis.asyncio as aioredis
    from litestar import Litestar

    from app.config import Settings
    from infra.ratelimit import Tier

__all__ = ["EdgeConfig", "Resources", "lifespan"]

log = structlog.get_logger("app.state")


@dataclass(slots=True)
class Resources:
    """What the handlers of one worker share."""

    settings: Settings
    container: Container

    @property
    def pool(self) -> asyncpg.Pool:
        return self.container.pool

    @property
    def redis(self) -> aioredis.Redis:
        return self.container.redis

    async def check_postgres(self) -> None:
        """Raise unless PostgreSQL answers ``SELECT 1``."""
        async with self.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    async def check_redis(self) -> None:
        """Raise unless Redis answers ``PING``."""
        await self.redis.ping()


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """Per-process helpers of the HTTP edge (client address, identity digests)."""

    client_address: ClientAddress
    salt: bytes


class RateLimitMetrics:
    """Feeds limiter decisions and the degraded flag to Prometheus."""

    def decided(self, tier: Tier | None, allowed: bool) -> None:
        record_rate_limit(tier or "all", allowed=allowed)

    def degraded(self, active: bool) -> None:
        RATE_LIMIT_DEGRADED.set(1 if active else 0)


class AuthFailureMetrics:
    """Feeds failed-authentication decisions to Prometheus (policy ``auth_failure``).

    The degraded flag is left to the request limiter: both share one Redis.
    """

    def decided(self, tier: Tier | None, allowed: bool) -> None:
        record_rate_limit(AUTH_FAILURE_POLICY, allowed=allowed)

    def degraded(self, active: bool) -> None:
        return None


def build_auth_failure_guard(
    settings: Settings, container: Container, edge: EdgeConfig
) -> AuthFailureGuard | None:
    """The failed-authentication limit per client IP; ``None`` when ``AUTH_FAILURE_LIMIT`` is
    empty."""
    policy = parse_policy(settings.auth_failure_limit)
    if not policy:
        return None
    limiter = RateLimiter(
        container.redis,
        prefix=settings.redis_key_prefix,
        policies={"auth": policy},
        listener=AuthFailureMetrics(),
    )
    return AuthFailureGuard(limiter, edge.client_address, edge.salt)


def build_rate_limiter(settings: Settings, container: Container) -> RateLimiter:
    """The limiter with the configured quotas per tier."""
    return RateLimiter(
        container.redis,
        prefix=settings.redis_key_prefix,
        policies={
            "ip": parse_policy(settings.rate_limit_ip),
            "key": parse_policy(settings.rate_limit_key),
            "global": parse_policy(settings.rate_limit_global),
        },
        listener=RateLimitMetrics(),
    )


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    """Open the worker's resources on start-up, close them on shutdown."""
    settings: Settings = app.state.settings
    async with AsyncExitStack() as stack:
        container = await stack.enter_async_context(open_container(settings))
        app.state.resources = Resources(settings=settings, container=container)
        app.state.enricher = container.enricher
        app.state.dossier_cache = container.dossier_cache
        app.state.rate_limiter = build_rate_limiter(settings, container)
        app.state.idempotency = IdempotencyStore(
            container.redis,
            settings.redis_key_prefix,
            settings.idempotency_ttl_s,
            settings.idempotency_lock_ttl_s,
            envelope=AeadEnvelope(
                parse_hmac_keys(settings.cache_hmac_keys.get()), purpose="idempotency"
            ),
            salt=settings.cache_key_salt.get().encode(),
        )
        app.state.edge = edge = EdgeConfig(
            client_address=ClientAddress(settings.trusted_proxies),
            salt=settings.cache_key_salt.get().encode(),
        )
        app.state.auth_failures = build_auth_failure_guard(settings, container, edge)
        verifier = install_key_verifier(app.state, container.pool, settings.api_key_cache_ttl_s)
        stack.push_async_callback(verifier.drain)  # pending last_used_at writes, before the pool
        stack.callback(track_pool(container.pool))  # pool gauges read at scrape time
        stack.callback(freeze_gc_after_startup())  # start-up objects out of later GC scans
        try:
            yield
        finally:
            log.info("shutting_down")
    flush_tracing()  # export the spans still queued
    log.info("resources_closed")
