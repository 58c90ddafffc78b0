"""Session fixtures shared by every test tier.

Each test session creates its own PostgreSQL database (dropped at the end) and uses its own Redis
key prefix, so concurrent runs never collide and the machine's services stay as they were found.
One upstream sandbox serves the whole session. The helpers behind these fixtures live in
``tests/support``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import aiohttp
import pytest

from app.config import Settings, load_settings
from tests.support.db import (
    REDIS_BASE_URL,
    RUN_ID,
    create_database,
    delete_redis_keys,
    drop_database,
)
from tests.support.pg_replica import PgReplica, running_replica
from tests.support.sandbox import SandboxAdmin, serve_sandbox
from tests.support.topology import redis_cluster_topology  # noqa: F401 (session fixture)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

# Tests never export traces anywhere.
os.environ.setdefault("OTEL_SDK_DISABLED", "true")


@pytest.fixture(scope="session")
def run_id() -> str:
    """A short id unique to this test session."""
    return RUN_ID


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    """A fresh database for the session, migrated to the latest schema."""
    from infra.db.migrate import migrate

    name = f"c2s_test_{RUN_ID}"
    url = await create_database(name)
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
    await delete_redis_keys(redis_prefix)


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


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    """Base URL of the upstream sandbox shared by the whole test run (Granian, a subprocess).

    Tests run one at a time, and the ``sandbox`` fixture resets its leads, faults and counters
    before each test, so tests that inject faults or count calls can share it too.
    """
    with serve_sandbox() as url:
        yield url


@pytest.fixture(scope="session")
async def _sandbox_session(sandbox_url: str) -> AsyncIterator[SandboxAdmin]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield SandboxAdmin(session, sandbox_url)


@pytest.fixture
async def sandbox(_sandbox_session: SandboxAdmin) -> SandboxAdmin:
    """The shared sandbox's admin API, reset for this test."""
    await _sandbox_session.reset()
    return _sandbox_session


@pytest.fixture(scope="session")
def pg_replica() -> Iterator[PgReplica]:
    """A streaming read replica of the test PostgreSQL server (started only for the tests that
    ask for it; stopped and deleted at the end of the session)."""
    with running_replica() as replica:
        yield replica
