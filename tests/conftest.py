"""Session fixtures shared by every test tier.

Each test session creates its own PostgreSQL database (dropped at the end) and uses its own Redis
key prefix, so concurrent runs never collide and the machine's services stay as they were found.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

import asyncpg
import pytest
import redis.asyncio as aioredis

from app.config import Settings, load_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

# Tests never export traces anywhere.
os.environ.setdefault("OTEL_SDK_DISABLED", "true")

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:10]


def _test_db_url(name: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


async def create_database(name: str) -> str:
    """Create an empty database named ``name`` and return its URL."""
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _test_db_url(name)


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


@pytest.fixture(scope="session")
def run_id() -> str:
    """A short id unique to this test session."""
    return RUN_ID


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    """A fresh database for the session, migrated to the latest schema."""
    name = f"c2s_test_{RUN_ID}"
    url = await create_database(name)
    try:
        from infra.db.migrate import migrate
    except ImportError:  # storage not built yet: an empty database still serves the edge tests
        pass
    else:
        await migrate(url)
    yield url
    await drop_database(name)


@pytest.fixture(scope="session")
def redis_prefix() -> str:
    """The Redis key prefix of this session; every key the app writes starts with it."""
    return f"c2s-test:{RUN_ID}:"


@pytest.fixture(scope="session")
async def redis_cleanup(redis_prefix: str) -> AsyncIterator[None]:
    """Delete every key of this session at the end."""
    yield
    client = aioredis.Redis.from_url(REDIS_BASE_URL)
    try:
        async for key in client.scan_iter(match=redis_prefix + "*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def base_env(database_url: str, redis_prefix: str, redis_cleanup: None) -> dict[str, str]:
    """Environment variables describing this session's services."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_BASE_URL,
        "REDIS_KEY_PREFIX": redis_prefix,
        "ENVIRONMENT": "test",
        "LOG_LEVEL": "WARNING",
        # Functional tests must not trip the limiter; its own tests set tight quotas.
        "RATE_LIMIT_IP": "100000/second",
        "RATE_LIMIT_KEY": "100000/second",
        "RATE_LIMIT_GLOBAL": "100000/second",
        # Many tests send unknown keys on purpose from one address; the flood tests set it tight.
        "AUTH_FAILURE_LIMIT": "100000/second",
    }


@pytest.fixture(scope="session")
def settings(base_env: dict[str, str]) -> Settings:
    """Settings for an app under test."""
    return load_settings(base_env)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every variable the settings read, for tests of configuration."""
    for name in Settings.__struct_fields__:
        monkeypatch.delenv(name.upper(), raising=False)
