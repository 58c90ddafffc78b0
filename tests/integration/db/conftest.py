"""Fixtures for the PostgreSQL adapter tests: pools, the repository, seeded databases.

Lookup and store tests share the session database (``database_url`` from ``tests/conftest.py``)
and keep apart by using fresh random CPFs, e-mails, phones and name tokens in every test. Tests
that need a database of their own (migrations, seed, query plans) create and drop it.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import asyncpg
import pytest

from infra.db.migrate import migrate
from infra.db.repository import PgPartyRepository
from infra.db.seed import seed
from tests.support.db import POOL_MAX, RUN_ID, create_database, database_url_for, drop_database
from tests.support.factories import SEEDED_PARTIES

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture(scope="session")
async def db_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the session database, big enough for the concurrency tests."""
    pool = await asyncpg.create_pool(
        database_url,
        min_size=1,
        max_size=POOL_MAX,
        command_timeout=30,
        server_settings={"statement_timeout": "20000"},
    )
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def repo(db_pool: asyncpg.Pool) -> PgPartyRepository:
    """The repository under test on the session database."""
    return PgPartyRepository(db_pool)


@pytest.fixture(scope="session")
async def seeded_url() -> AsyncIterator[str]:
    """A database of its own with 50,000 seeded, analysed parties (for query plans)."""
    name = f"c2s_test_{RUN_ID}_seeded"
    url = await create_database(name)
    try:
        await migrate(url)
        await seed(url, SEEDED_PARTIES, seed=7, rebuild_indexes=True, progress=lambda _line: None)
        yield url
    finally:
        await drop_database(name)


@pytest.fixture
async def scratch_database() -> AsyncIterator[tuple[str, str]]:
    """A name and URL for a database that does not exist yet; dropped afterwards if created."""
    name = f"c2s_test_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    url = database_url_for(name)
    try:
        yield name, url
    finally:
        await drop_database(name)
