"""The composition root's wiring: settings -> pools, clients, adapters, use cases.

Used by the HTTP lifespan and by ``c2s-api worker``, so both run the same adapters with the same
configuration. Everything opened here is closed by :func:`open_container`'s exit, in reverse.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
import structlog
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from app.config import parse_hmac_keys, redact_url
from app.upstreams import open_upstreams
from domain.pipeline import Enricher, PipelineSettings
from infra.cache import (
    HmacEnvelope,
    KeySpace,
    RedisContactCpfCache,
    RedisDossierCache,
    RedisFillLocks,
    RedisLeadLocks,
    RedisRecentCpfs,
)
from infra.db.lead_messages import PgLeadMessages
from infra.db.pool import create_pool
from infra.db.repository import PgPartyRepository
from infra.flags import FlagStore, defaults_from_settings
from infra.sealing import AeadEnvelope
from observability.metrics import PipelineObserver, record_cache

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    import asyncpg

    from app.config import Settings
    from app.upstreams import Upstreams

__all__ = ["Container", "SystemClock", "open_container"]

log = structlog.get_logger(__name__)


class CacheMetrics:
    """Feeds cache outcomes to ``cache_requests_total``."""

    def record(self, cache: str, result: str) -> None:
        record_cache(cache, result)  # type: ignore[arg-type]  # adapters use the bounded names


class SystemClock:
    """Wall-clock time."""

    def now(self) -> float:
        return time.time()


@dataclass(slots=True)
class Container:
    """Everything one process shares."""

    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis
    repository: PgPartyRepository
    upstreams: Upstreams
    enricher: Enricher
    keys: KeySpace
    dossier_cache: RedisDossierCache
    flags: FlagStore


class _ClosedWriteIsConnectionError(AbstractConnection):
    """Report a write to a socket the peer already closed as ``ConnectionError``.

    Under uvloop, writing to a transport that Redis (or the network) reset raises
    ``RuntimeError: unable to perform operation on <TCPTransport closed=True ...>``, which
    redis-py lets through after dropping the connection; every adapter's ``except RedisError``
    missed it and requests answered 500 (found by tests/chaos/test_stateful.py). As a
    ``ConnectionError`` the client's retry reconnects, or the adapters degrade as designed.
    """

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        try:
            await super().send_packed_command(command, check_health)
        except RuntimeError as exc:
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc


class _TcpConnection(_ClosedWriteIsConnectionError, Connection):
    """``redis://``."""


class _SslConnection(_ClosedWriteIsConnectionError, SSLConnection):
    """``rediss://``."""


_CONNECTION_CLASSES: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: _TcpConnection,
    SSLConnection: _SslConnection,
}


def open_redis(settings: Settings) -> aioredis.Redis:
    """The process's Redis client; commands are bounded by ``REDIS_TIMEOUT_S``."""
    client = aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        max_connections=settings.redis_max_connections,
        health_check_interval=30,
    )
    # The URL's scheme picked the class (from_url overrides a connection_class argument).
    pool = client.connection_pool
    pool.connection_class = _CONNECTION_CLASSES.get(pool.connection_class, pool.connection_class)
    return client


@asynccontextmanager
async def open_container(settings: Settings) -> AsyncIterator[Container]:
    """Open every long-lived resource of a process; close them all on exit.

    Never fails because PostgreSQL or Redis is down: the pool connects lazily and Redis
    connects on first use, so the process starts and reports "not ready" instead of crash-looping.
    """
    async with AsyncExitStack() as stack:
        pool = await create_pool(settings, min_size=0)
        stack.push_async_callback(pool.close)
        redis = open_redis(settings)
        stack.push_async_callback(redis.aclose)
        keys = KeySpace(settings.redis_key_prefix, settings.cache_key_salt.get().encode())
        listener = CacheMetrics()
        repository = PgPartyRepository(pool, acquire_timeout=settings.db_connect_timeout_s)
        upstreams = await stack.enter_async_context(open_upstreams(settings, redis))
        # Feature flags: overrides polled from Redis every FLAG_CACHE_TTL_S (ADR 0007).
        flags = await stack.enter_async_context(
            FlagStore(
                redis,
                prefix=settings.redis_key_prefix,
                defaults=defaults_from_settings(settings),
                ttl_s=settings.flag_cache_ttl_s,
            ).running()
        )
        hmac_keys = parse_hmac_keys(settings.cache_hmac_keys.get())
        dossier_cache = RedisDossierCache(
            redis,
            keys,
            HmacEnvelope(hmac_keys),
            settings.work_api_cache_ttl_s,
            listener,
        )
        enricher = Enricher(
            c2s=upstreams.c2s,
            diretrix=upstreams.diretrix,
            work_api=upstreams.work_api,
            repository=repository,
            dossier_cache=dossier_cache,
            contact_cache=RedisContactCpfCache(
                redis,
                keys,
                settings.contact_cache_ttl_s,
                settings.contact_cache_negative_ttl_s,
                listener,
            ),
            lead_locks=RedisLeadLocks(
                redis,
                keys,
                AeadEnvelope(hmac_keys, purpose="lead_replay"),
                settings.lead_lock_ttl_s,
                settings.lead_replay_ttl_s,
                listener,
            ),
            recent_cpfs=RedisRecentCpfs(redis, keys, settings.recent_cpf_ttl_s, listener),
            observer=PipelineObserver(),
            clock=SystemClock(),
            settings=PipelineSettings(
                income_multiplier=settings.income_multiplier, fill_wait_s=settings.fill_wait_s
            ),
            flags=flags,
            fill_locks=RedisFillLocks(redis, keys, settings.fill_lock_ttl_s, listener),
            lead_messages=PgLeadMessages(pool, salt=settings.cache_key_salt.get().encode()),
        )
        await _warm_up(pool)
        log.info(
            "container_opened",
            database=redact_url(settings.database_url),
            redis=redact_url(settings.redis_url),
        )
        yield Container(
            settings=settings,
            pool=pool,
            redis=redis,
            repository=repository,
            upstreams=upstreams,
            enricher=enricher,
            keys=keys,
            dossier_cache=dossier_cache,
            flags=flags,
        )
    log.info("container_closed")


async def _warm_up(pool: asyncpg.Pool) -> None:
    """Open one connection now so the first request does not pay for it (best effort)."""
    import asyncpg as _asyncpg

    try:
        async with pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")
    except (OSError, _asyncpg.PostgresError, TimeoutError) as exc:
        log.warning("postgres_unavailable_at_start", error_type=type(exc).__name__)
