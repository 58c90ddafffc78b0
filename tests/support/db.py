"""The session's PostgreSQL and Redis: addresses, throwaway databases, key-space cleanup.

Each test session creates its own PostgreSQL database and uses its own Redis key prefix (both
named after :data:`RUN_ID`), so concurrent runs never collide.
"""

from __future__ import annotations

import os
import uuid

import asyncpg
import redis.asyncio as aioredis

__all__ = [
    "CANCEL_OPEN_BULK_JOBS",
    "PG_ADMIN_URL",
    "POOL_MAX",
    "REDIS_BASE_URL",
    "RUN_ID",
    "DbSettings",
    "create_database",
    "database_url_for",
    "delete_redis_keys",
    "drop_database",
]

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:10]
# The PostgreSQL adapter tests' pool: ten concurrent stores plus a spare connection for the
# assertions.
POOL_MAX = 12


class DbSettings:
    """Stand-in for ``app.config.Settings`` where ``infra.db.pool.create_pool`` wants one."""

    def __init__(
        self, database_url: str, *, pool_min: int = 0, pool_max: int = 2, statement_ms: int = 2000
    ) -> None:
        self.database_url = database_url
        self.db_pool_min = pool_min
        self.db_pool_max = pool_max
        self.db_statement_timeout_ms = statement_ms
        self.db_connect_timeout_s = 1.0
        self.service_name = "c2s-api-test"


def database_url_for(name: str) -> str:
    """The URL of database ``name`` on the test server (whether it exists or not)."""
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


async def create_database(name: str) -> str:
    """Create an empty database named ``name`` and return its URL."""
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_url_for(name)


async def drop_database(name: str) -> None:
    """Drop ``name``, terminating leftover connections first."""
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await conn.close()


async def delete_redis_keys(prefix: str, url: str = REDIS_BASE_URL) -> None:
    """Delete every key starting with ``prefix``; nothing else in Redis is touched."""
    client = aioredis.Redis.from_url(url)
    try:
        async for key in client.scan_iter(match=prefix + "*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


CANCEL_OPEN_BULK_JOBS = (
    "UPDATE core.enrich_jobs SET state = 'cancelled', finished_at = now() "
    "WHERE state IN ('queued', 'running')"
)
"""Ends every open bulk job, so a worker started by a later test does not run its items."""
