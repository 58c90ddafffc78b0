"""Chaos fixtures: the form of the run, process starters, throwaway servers, API keys and
Redis prefixes. Every child process is killed at the end of its test, whatever happened; every
wait is bounded. The helpers behind them live in ``tests/support/chaos``.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.chaos.scenario import (
    LONG,
    PostgresCluster,
    Processes,
    Profile,
    RedisServer,
)
from tests.support.db import delete_redis_keys
from tests.support.factories import issue_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


@pytest.fixture(scope="session")
def profile() -> Profile:
    """The form of this run (``CHAOS_LONG=1`` for the long one)."""
    return Profile(long=LONG, rate_per_s=50.0 if LONG else 25.0)


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Process starter; every child is killed at the end of the test."""
    registry = Processes()
    try:
        yield registry
    finally:
        registry.stop_all()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A running throwaway Redis, killed at the end of the test."""
    workdir = Path(tempfile.mkdtemp(prefix="chaos-redis-"))
    server = RedisServer(workdir)
    try:
        server.start()
        yield server
    finally:
        server.kill()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A started throwaway cluster, stopped and deleted at the end of the test."""
    root = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
    cluster = PostgresCluster(root)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        if cluster.running():
            with contextlib.suppress(Exception):
                cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
async def chaos_key(database_url: str) -> str:
    """An API key (read, enrich) in the session database."""
    plaintext, _ = await issue_key(database_url, tenant="chaos", scopes="read,enrich", name="chaos")
    return plaintext


@pytest.fixture(scope="session")
async def probe_key(database_url: str) -> str:
    """A second API key, for rate-limit probes (its quota is apart from the load's)."""
    plaintext, _ = await issue_key(database_url, tenant="chaos", scopes="read,enrich", name="probe")
    return plaintext


@pytest.fixture
async def chaos_prefix(redis_prefix: str, redis_cleanup: None) -> AsyncIterator[str]:
    """This test's Redis key prefix on the machine's Redis; its keys are deleted afterwards."""
    prefix = f"{redis_prefix}chaos:{uuid.uuid4().hex[:8]}:"
    yield prefix
    await delete_redis_keys(prefix)
