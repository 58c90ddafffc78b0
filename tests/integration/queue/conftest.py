"""Fixtures of the queue tests: a pool on the session database and clean queue tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
import pytest

from tests.support.queue import APPLICATION_NAME

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture(scope="session")
async def queue_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the session's migrated database, large enough for 100 concurrent callers."""
    pool = await asyncpg.create_pool(
        database_url,
        min_size=1,
        max_size=30,
        server_settings={"application_name": APPLICATION_NAME},
    )
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def pool(queue_pool: asyncpg.Pool) -> asyncpg.Pool:
    """The pool, with the event and queue tables emptied for this test."""
    await queue_pool.execute(
        "TRUNCATE core.webhook_events, queue.pgqueuer, queue.pgqueuer_log, "
        "queue.pgqueuer_statistics"
    )
    return queue_pool
