"""The development key created at start-up by ``ensure_dev_key`` (app/cli/dev_key.py)."""

from __future__ import annotations

import asyncio
import io
import re
from typing import TYPE_CHECKING

import asyncpg
import pytest

from app.cli.dev_key import ensure_dev_key
from domain.keys import digest_key
from infra.db.keys import PgApiKeyStore
from tests.support.db import RUN_ID, create_database, drop_database

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.integration


@pytest.fixture
async def empty_keys_pool() -> AsyncIterator[asyncpg.Pool]:
    """A pool on a fresh migrated database with no API key at all."""
    from infra.db.migrate import migrate

    name = f"c2s_test_{RUN_ID}_devkey"
    url = await create_database(name)
    try:
        await migrate(url)
        pool = await asyncpg.create_pool(url, min_size=0, max_size=8)
        try:
            yield pool
        finally:
            await pool.close()
    finally:
        await drop_database(name)


async def test_workers_starting_together_create_exactly_one_key_printed_once(
    empty_keys_pool: asyncpg.Pool,
) -> None:
    outs = [io.StringIO() for _ in range(4)]
    keys = await asyncio.gather(*(ensure_dev_key(empty_keys_pool, out=out) for out in outs))
    created = [key for key in keys if key is not None]
    assert len(created) == 1
    printed = "".join(out.getvalue() for out in outs)
    assert printed.count(created[0]) == 1
    stored = await PgApiKeyStore(empty_keys_pool).find_by_hash(digest_key(created[0]))
    assert stored is not None
    assert stored.tenant == "dev"
    assert set(stored.scopes) == {"read", "enrich", "admin"}
    # A later start finds it and prints nothing.
    later = io.StringIO()
    assert await ensure_dev_key(empty_keys_pool, out=later) is None
    assert later.getvalue() == ""


async def test_no_dev_key_outside_development(empty_keys_pool: asyncpg.Pool) -> None:
    out = io.StringIO()
    for environment in ("test", "production"):
        assert await ensure_dev_key(empty_keys_pool, environment=environment, out=out) is None
    assert out.getvalue() == ""
    assert await PgApiKeyStore(empty_keys_pool).list() == []


async def test_dev_key_is_recreated_after_revocation(
    empty_keys_pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    first = await ensure_dev_key(empty_keys_pool)
    assert first is not None
    assert re.search(r"c2s_[a-z0-9]{8}_", capsys.readouterr().out)  # stdout by default
    store = PgApiKeyStore(empty_keys_pool)
    (key,) = await store.list()
    await store.revoke(key.id)
    second = await ensure_dev_key(empty_keys_pool)
    assert second is not None
    assert second != first
