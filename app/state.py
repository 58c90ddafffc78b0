"""Long-lived resources of one worker process, created and closed by the lifespan."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
import redis.asyncio as aioredis
import structlog

from app.config import redact_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from litestar import Litestar

    from app.config import Settings

__all__ = ["Resources", "lifespan"]

log = structlog.get_logger("app.state")


@dataclass(slots=True)
class Resources:
    """What the handlers of one worker share: pools and clients."""

    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis

    async def check_postgres(self) -> None:
        """Raise unless PostgreSQL answers ``SELECT 1``."""
        async with self.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    async def check_redis(self) -> None:
        """Raise unless Redis answers ``PING``."""
        await self.redis.ping()


async def open_resources(settings: Settings) -> Resources:
    """Create the pool and clients. Never fails because a dependency is down.

    The pool starts empty (``min_size=0``) and connects lazily, so the process starts and
    reports "not ready" through ``/health/ready`` instead of crash-looping while PostgreSQL is
    unreachable; it is warmed up right after.
    """
    pool = asyncpg.create_pool(
        settings.database_url,
        min_size=0,
        max_size=settings.db_pool_max,
        timeout=settings.db_connect_timeout_s,
        command_timeout=settings.db_statement_timeout_ms / 1000 + 1,
        server_settings={
            "statement_timeout": str(settings.db_statement_timeout_ms),
            "application_name": settings.service_name,
        },
    )
    await pool
    client = aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        max_connections=settings.redis_max_connections,
        health_check_interval=30,
    )
    resources = Resources(settings=settings, pool=pool, redis=client)
    try:
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        log.warning("postgres_unavailable_at_start", error_type=type(exc).__name__)
    log.info(
        "resources_opened",
        database=redact_url(settings.database_url),
        redis=redact_url(settings.redis_url),
    )
    return resources


async def close_resources(resources: Resources) -> None:
    """Close everything :func:`open_resources` opened."""
    await resources.redis.aclose()
    await resources.pool.close()


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    """Open the worker's resources on start-up, close them on shutdown."""
    settings: Settings = app.state.settings
    resources = await open_resources(settings)
    app.state.resources = resources
    try:
        yield
    finally:
        await close_resources(resources)
        log.info("resources_closed")
