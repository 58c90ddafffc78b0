"""End-to-end fixtures: the real app in-process, the sandbox and workers as real processes.

* The sandbox (simulated C2S, Diretrix and Work API) is the session's (``tests/conftest.py``);
  its state is reset before each test that asks for ``sandbox``.
* The app is ``create_app(settings)`` driven by ``AsyncTestClient`` (lifespan included), with
  upstream URLs pointing at the sandbox, the session's PostgreSQL database and Redis prefix.
* Workers are ``run_worker`` in subprocesses, so a test can SIGKILL one mid-job.

Every wait is bounded.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from app.config import Settings, load_settings
from tests.support.db import CANCEL_OPEN_BULK_JOBS
from tests.support.processes import ChildProcess, worker_argv
from tests.support.sandbox import (
    C2S_TOKEN,
    DIRETRIX_PASS,
    DIRETRIX_USER,
    WEBHOOK_SECRET,
    WORK_API_TOKEN,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from litestar import Litestar


@pytest.fixture(scope="session")
def e2e_env(base_env: dict[str, str], sandbox_url: str) -> dict[str, str]:
    """Environment of the app and the workers: session services + the sandbox upstreams."""
    return {
        **base_env,
        # Own Redis key space (breakers, caches, locks) apart from the other test tiers' apps.
        "REDIS_KEY_PREFIX": base_env["REDIS_KEY_PREFIX"] + "e2e:",
        "C2S_BASE_URL": sandbox_url,
        "C2S_TOKEN": C2S_TOKEN,
        "DIRETRIX_BASE_URL": sandbox_url,
        "DIRETRIX_USER": DIRETRIX_USER,
        "DIRETRIX_PASS": DIRETRIX_PASS,
        "WORK_API_BASE_URL": sandbox_url,
        "WORK_API_TOKEN": WORK_API_TOKEN,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        # The tests fire 100 deliveries at once from one address: no per-client limit here.
        "RATE_LIMIT_IP": "",
        "RATE_LIMIT_KEY": "",
        "RATE_LIMIT_GLOBAL": "",
        "DB_POOL_MAX": "30",
    }


@pytest.fixture(scope="session")
def e2e_settings(e2e_env: dict[str, str]) -> Settings:
    """Settings of the in-process app."""
    return load_settings(e2e_env)


@pytest.fixture(scope="session")
async def client(e2e_settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The real app (lifespan included) for the session."""
    from app.main import create_app

    app = create_app(e2e_settings)
    async with AsyncTestClient(app=app, timeout=30) as test_client:
        yield test_client


@pytest.fixture(scope="session")
async def _db_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def db(_db_pool: asyncpg.Pool) -> asyncpg.Pool:
    """A pool for the tests' own reads; the queue starts empty and no bulk job is open (no other
    test's leftovers for this test's workers to pick up)."""
    await _db_pool.execute("TRUNCATE queue.pgqueuer")
    await _db_pool.execute(CANCEL_OPEN_BULK_JOBS)
    return _db_pool


@pytest.fixture
def start_worker(e2e_env: dict[str, str]) -> Iterator[Callable[..., ChildProcess]]:
    """Start ``run_worker`` processes; any still alive at the end of the test is killed."""
    started: list[ChildProcess] = []

    def start(
        *, concurrency: int = 2, lease_timeout_s: float = 30.0, grace_s: float = 5.0
    ) -> ChildProcess:
        argv = worker_argv(
            concurrency=concurrency, lease_timeout_s=lease_timeout_s, grace_s=grace_s
        )
        worker = ChildProcess("worker", argv, {**os.environ, **e2e_env, "LOG_LEVEL": "INFO"})
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
