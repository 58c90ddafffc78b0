"""Each lookup is ONE statement on the wire, on the pool the service builds (``create_pool``).

The pool holds a single connection whose query logger (asyncpg's ``add_query_logger``) records
every statement sent on it, the pool's reset on release included; a lookup must add exactly its
own SELECT: no tenant ``SET``, no ``BEGIN``/``COMMIT``, no reset query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from domain.dossier import decode_dossier
from infra.db import sql
from infra.db.pool import ReadConnection, create_pool, pooled_connection
from infra.db.repository import PgPartyRepository
from tests.support.db import DbSettings
from tests.support.factories import dossier_payload, encode, new_cpf, new_mobile, new_token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    import asyncpg
    from asyncpg.connection import LoggedQuery

pytestmark = pytest.mark.integration


@dataclass
class _Wire:
    """The service's pool with one connection, and every statement sent on it."""

    pool: asyncpg.Pool
    statements: list[str]

    async def sent_by(self, call: Callable[[], Awaitable[object]]) -> list[str]:
        self.statements.clear()
        await call()
        return list(self.statements)


@pytest.fixture
async def wire(database_url: str) -> AsyncIterator[_Wire]:
    pool = await create_pool(DbSettings(database_url, pool_min=1, pool_max=1, statement_ms=20_000))
    statements: list[str] = []

    def record(logged: LoggedQuery) -> None:
        statements.append(logged.query)

    try:
        async with pool.acquire() as conn:
            conn.add_query_logger(record)
        yield _Wire(pool, statements)
    finally:
        await pool.close()


async def _stored_person(repo: PgPartyRepository) -> tuple[str, str, str]:
    cpf, email, mobile = new_cpf(), f"{new_token().lower()}@example.com", new_mobile()
    raw = encode(dossier_payload(cpf, emails=(email,), phones=((mobile, False),)))
    await repo.store_dossier(cpf, decode_dossier(raw), raw, None)
    return cpf, email, mobile


async def test_a_lookup_by_cpf_email_or_phone_sends_exactly_one_statement(wire: _Wire) -> None:
    repo = PgPartyRepository(wire.pool)
    cpf, email, mobile = await _stored_person(repo)
    lookups: dict[str, Callable[[], Awaitable[object]]] = {
        sql.FIND_BY_CPF: lambda: repo.find_by_cpf(cpf),
        sql.FIND_BY_EMAIL: lambda: repo.find_by_email(email),
        sql.FIND_BY_PHONE: lambda: repo.find_by_phone(mobile),
    }

    for query, lookup in lookups.items():
        assert (await lookup()) is not None  # found, and its statement now prepared
        assert await wire.sent_by(lookup) == [query]
        assert await wire.sent_by(lookup) == [query]  # the release left nothing to send


async def test_get_party_name_search_and_enrichment_send_exactly_one_statement(
    wire: _Wire,
) -> None:
    repo = PgPartyRepository(wire.pool)
    cpf, _email, _mobile = await _stored_person(repo)
    found = await repo.find_by_cpf(cpf)
    assert found is not None

    assert await wire.sent_by(lambda: repo.get_party(found.party.id)) == [sql.GET_PARTY]
    assert await wire.sent_by(lambda: repo.find_enrichment(cpf)) == [sql.FIND_ENRICHMENT]
    assert await wire.sent_by(lambda: repo.search_by_name(found.party.full_name)) == [
        sql.SEARCH_BY_NAME
    ]


async def test_a_write_is_still_followed_by_the_reset(wire: _Wire) -> None:
    repo = PgPartyRepository(wire.pool)

    sent = await wire.sent_by(lambda: _stored_person(repo))

    assert sent[-1] == _reset_query(sent)
    assert len(sent) > 2  # the store's own statements came first


async def test_session_state_never_leaks_to_the_next_holder(wire: _Wire) -> None:
    async with ReadConnection(wire.pool, 2.0) as conn:
        configured = await conn.fetchval("SHOW statement_timeout")
    async with pooled_connection(wire.pool, 2.0) as conn:
        await conn.execute("SET statement_timeout = 1234")
    async with ReadConnection(wire.pool, 2.0) as conn:
        after_write = await conn.fetchval("SHOW statement_timeout")

    async def failed_read() -> None:
        async with ReadConnection(wire.pool, 2.0) as conn:
            await conn.execute("SET statement_timeout = 4321")
            raise RuntimeError("a read that failed half way")

    with pytest.raises(RuntimeError):
        await failed_read()
    async with ReadConnection(wire.pool, 2.0) as conn:
        after_failed_read = await conn.fetchval("SHOW statement_timeout")

    assert configured == "20s"  # the server setting create_pool passes
    assert after_write == after_failed_read == configured


def _reset_query(sent: list[str]) -> str:
    resets = [statement for statement in sent if "RESET ALL" in statement]
    assert resets, sent
    return resets[-1]
