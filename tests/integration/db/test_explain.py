"""Every lookup query is served by an index on a realistically filled table.

The database is seeded with 50,000 parties and analysed; no planner setting is forced, so the
plans are the ones PostgreSQL picks by itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
import pytest

from infra.db import sql
from infra.db.repository import DEFAULT_NAME_CANDIDATES, contains_pattern, name_search_key
from tests.support.factories import SEEDED_PARTIES

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def seeded(seeded_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the seeded database."""
    conn = await asyncpg.connect(seeded_url)
    try:
        yield conn
    finally:
        await conn.close()


async def _plan(conn: asyncpg.Connection, query: str, *args: object) -> str:
    rows = await conn.fetch("EXPLAIN " + query, *args)
    return "\n".join(r[0] for r in rows)


async def _sample(conn: asyncpg.Connection, query: str) -> str:
    value = await conn.fetchval(query)
    assert isinstance(value, str)
    return value


# Plans are checked with the tenant filter on, as an API request runs them.
TENANT = "tenant-a"


async def test_seeded_database_has_the_expected_size(seeded: asyncpg.Connection) -> None:
    assert await seeded.fetchval("SELECT count(*) FROM core.parties") == SEEDED_PARTIES


async def test_lookup_by_cpf_uses_the_cpf_index(seeded: asyncpg.Connection) -> None:
    cpf = await _sample(seeded, "SELECT cpf_cnpj FROM core.parties OFFSET 777 LIMIT 1")

    plan = await _plan(seeded, sql.FIND_BY_CPF, cpf, TENANT)

    assert "idx_parties_cpf_cnpj" in plan
    assert "uq_party_contact_unique" in plan  # the contacts of the party
    assert "Seq Scan" not in plan


async def test_lookup_by_email_uses_the_contact_value_index(seeded: asyncpg.Connection) -> None:
    email = await _sample(
        seeded,
        "SELECT value FROM core.party_contacts WHERE contact_type = 'email' OFFSET 999 LIMIT 1",
    )

    plan = await _plan(seeded, sql.FIND_BY_EMAIL, email, TENANT)

    assert "idx_party_contacts_value" in plan
    assert "Seq Scan" not in plan


async def test_lookup_by_phone_uses_the_contact_value_index(seeded: asyncpg.Connection) -> None:
    phone = await _sample(
        seeded,
        "SELECT value FROM core.party_contacts WHERE contact_type = 'whatsapp' OFFSET 321 LIMIT 1",
    )

    plan = await _plan(seeded, sql.FIND_BY_PHONE, phone, TENANT)

    assert "idx_party_contacts_value" in plan
    assert "Seq Scan" not in plan


async def test_search_by_name_uses_the_trigram_index(seeded: asyncpg.Connection) -> None:
    full_name = await _sample(seeded, "SELECT full_name FROM core.parties OFFSET 4321 LIMIT 1")
    key = name_search_key(full_name)

    plan = await _plan(
        seeded, sql.SEARCH_BY_NAME, key, contains_pattern(key), 10, DEFAULT_NAME_CANDIDATES, TENANT
    )

    assert "idx_parties_name_trgm" in plan
    assert "Seq Scan" not in plan


async def test_get_party_uses_the_primary_key(seeded: asyncpg.Connection) -> None:
    party_id = await seeded.fetchval("SELECT id FROM core.parties OFFSET 55 LIMIT 1")

    plan = await _plan(seeded, sql.GET_PARTY, party_id, TENANT)

    assert "parties_pkey" in plan
    assert "uq_party_enrichments_party" in plan
    assert "Seq Scan" not in plan
