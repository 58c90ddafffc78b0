"""PostgreSQL outages surface as DependencyUnavailable quickly, never as a hang."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import asyncpg
import pytest

from domain.dossier import decode_dossier
from domain.errors import DependencyUnavailable
from infra.db import sql
from infra.db.pool import create_pool
from infra.db.repository import PgPartyRepository
from tests.support.db import DbSettings
from tests.support.factories import dossier_payload, encode, new_cpf

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

# A guard against hangs, not a performance figure: every case below should take well under it.
FAST_S = 5.0
CLOSED_PORT_URL = "postgresql://postgres@127.0.0.1:1/c2s_nowhere"


async def _assert_unavailable(call: Callable[[], Awaitable[object]]) -> DependencyUnavailable:
    started = time.monotonic()
    with pytest.raises(DependencyUnavailable) as caught:
        await call()
    assert time.monotonic() - started < FAST_S
    assert caught.value.dependency == "postgres"
    assert caught.value.retry_after == 1
    return caught.value


@pytest.fixture
async def closed_port_repo() -> AsyncIterator[PgPartyRepository]:
    """A repository whose pool points at a port nothing listens on."""
    pool = await create_pool(DbSettings(CLOSED_PORT_URL))
    try:
        yield PgPartyRepository(pool, acquire_timeout=2.0)
    finally:
        await pool.close()


async def test_lookup_on_unreachable_server_is_unavailable(
    closed_port_repo: PgPartyRepository,
) -> None:
    cpf = new_cpf()

    error = await _assert_unavailable(lambda: closed_port_repo.find_by_cpf(cpf))

    assert cpf not in error.detail


async def test_every_lookup_maps_the_outage(closed_port_repo: PgPartyRepository) -> None:
    await _assert_unavailable(lambda: closed_port_repo.find_by_email("a@b.com"))
    await _assert_unavailable(lambda: closed_port_repo.find_by_phone("11987654321"))
    await _assert_unavailable(lambda: closed_port_repo.search_by_name("MARIA"))


async def test_store_on_unreachable_server_is_unavailable(
    closed_port_repo: PgPartyRepository,
) -> None:
    cpf = new_cpf()
    raw = encode(dossier_payload(cpf))

    await _assert_unavailable(
        lambda: closed_port_repo.store_dossier(cpf, decode_dossier(raw), raw, None)
    )


async def test_exhausted_pool_is_unavailable_after_the_acquire_timeout(database_url: str) -> None:
    pool = await create_pool(DbSettings(database_url, pool_max=1))
    repo = PgPartyRepository(pool, acquire_timeout=0.2)
    try:
        async with pool.acquire():  # the only connection is busy
            await _assert_unavailable(lambda: repo.find_by_cpf(new_cpf()))
        assert await repo.find_by_cpf(new_cpf()) is None  # and it recovers
    finally:
        await pool.close()


async def test_statement_timeout_is_unavailable_and_writes_nothing(
    database_url: str, db_pool: asyncpg.Pool
) -> None:
    cpf = new_cpf()
    raw = encode(dossier_payload(cpf))
    pool = await create_pool(DbSettings(database_url, statement_ms=300))
    repo = PgPartyRepository(pool)
    try:
        async with db_pool.acquire() as blocker, blocker.transaction():
            # Hold the per-CPF lock the store needs: its wait hits the statement timeout.
            await blocker.execute(sql.LOCK_CPF, cpf)
            error = await _assert_unavailable(
                lambda: repo.store_dossier(cpf, decode_dossier(raw), raw, None)
            )
        assert isinstance(error.__cause__, asyncpg.exceptions.QueryCanceledError)
        async with db_pool.acquire() as conn:
            assert (
                await conn.fetchval("SELECT count(*) FROM core.parties WHERE cpf_cnpj = $1", cpf)
                == 0
            )
    finally:
        await pool.close()


async def test_lookup_past_the_statement_timeout_is_unavailable_and_the_pool_recovers(
    database_url: str, db_pool: asyncpg.Pool
) -> None:
    pool = await create_pool(DbSettings(database_url, pool_max=1, statement_ms=300))
    repo = PgPartyRepository(pool)
    try:
        async with db_pool.acquire() as blocker, blocker.transaction():
            # A lookup reads core.parties: an exclusive lock makes it wait past the timeout.
            await blocker.execute("LOCK TABLE core.parties IN ACCESS EXCLUSIVE MODE")
            error = await _assert_unavailable(lambda: repo.find_by_cpf(new_cpf()))
        assert isinstance(error.__cause__, asyncpg.exceptions.QueryCanceledError)
        assert await repo.find_by_cpf(new_cpf()) is None  # the same connection serves again
    finally:
        await pool.close()


async def test_connection_killed_mid_store_is_unavailable_and_writes_nothing(
    database_url: str, db_pool: asyncpg.Pool
) -> None:
    cpf = new_cpf()
    raw = encode(dossier_payload(cpf))
    pool = await create_pool(DbSettings(database_url, pool_max=1, statement_ms=20_000))
    repo = PgPartyRepository(pool)
    try:
        async with db_pool.acquire() as blocker, blocker.transaction():
            await blocker.execute(sql.LOCK_CPF, cpf)
            store = asyncio.create_task(repo.store_dossier(cpf, decode_dossier(raw), raw, None))
            async with db_pool.acquire() as admin:
                # Wait until the store is blocked on the lock, then kill its backend, as a
                # failover or an administrator would.
                for _ in range(200):
                    killed = await admin.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = 'c2s-api-test' AND wait_event_type = 'Lock'"
                    )
                    if killed:
                        break
                    await asyncio.sleep(0.01)
            await _assert_unavailable(lambda: store)
        async with db_pool.acquire() as conn:
            assert (
                await conn.fetchval("SELECT count(*) FROM core.parties WHERE cpf_cnpj = $1", cpf)
                == 0
            )
        assert await repo.find_by_cpf(cpf) is None  # the pool reconnects
    finally:
        await pool.close()
