"""The synthetic-data seed against a real PostgreSQL."""

from __future__ import annotations

import asyncpg
import msgspec
import pytest

from domain.documents import is_valid_cpf
from domain.dossier import NormalizedPerson
from domain.emails import is_valid_email
from domain.phones import parse_br_phone
from infra.db.migrate import migrate
from infra.db.seed import PartyGenerator, cpf_for, seed
from tests.support.db import create_database

pytestmark = pytest.mark.integration

SMALL = 2_000

_INDEXES_SQL = """
SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS definition
  FROM pg_index WHERE indrelid = ANY('{core.parties,core.people,core.party_contacts,
                                       core.party_enrichments}'::regclass[])
 ORDER BY 1
"""
_CONSTRAINTS_SQL = """
SELECT conname::text AS name, pg_get_constraintdef(oid) AS definition
  FROM pg_constraint WHERE connamespace = 'core'::regnamespace ORDER BY 1
"""


async def _catalog(conn: asyncpg.Connection) -> tuple[list[tuple[str, str]], ...]:
    indexes = [(r["name"], r["definition"]) for r in await conn.fetch(_INDEXES_SQL)]
    constraints = [(r["name"], r["definition"]) for r in await conn.fetch(_CONSTRAINTS_SQL)]
    return indexes, constraints


async def test_seed_with_index_rebuild_loads_valid_people_and_restores_the_schema(
    scratch_database: tuple[str, str],
) -> None:
    name, url = scratch_database
    await create_database(name)
    await migrate(url)
    lines: list[str] = []
    conn = await asyncpg.connect(url)
    try:
        catalog_before = await _catalog(conn)

        report = await seed(
            url, SMALL, seed=3, batch=700, rebuild_indexes=True, progress=lines.append
        )

        catalog_after = await _catalog(conn)
        counts = await conn.fetchrow(
            """
            SELECT (SELECT count(*) FROM core.parties) AS parties,
                   (SELECT count(DISTINCT cpf_cnpj) FROM core.parties) AS cpfs,
                   (SELECT count(*) FROM core.people) AS people,
                   (SELECT count(*) FROM core.party_contacts) AS contacts,
                   (SELECT count(*) FROM core.party_enrichments) AS enrichments,
                   (SELECT count(*) FROM core.parties WHERE enriched) AS enriched
            """
        )
        cpfs = [r["cpf_cnpj"] for r in await conn.fetch("SELECT cpf_cnpj FROM core.parties")]
        emails = [
            r["value"]
            for r in await conn.fetch(
                "SELECT value FROM core.party_contacts WHERE contact_type = 'email'"
            )
        ]
        phones = [
            r["value"]
            for r in await conn.fetch(
                "SELECT value FROM core.party_contacts WHERE contact_type <> 'email' LIMIT 500"
            )
        ]
        documents = [
            r["nd"]
            for r in await conn.fetch(
                "SELECT normalized_data::text AS nd FROM core.party_enrichments LIMIT 50"
            )
        ]
    finally:
        await conn.close()

    assert counts is not None
    assert report.parties == counts["parties"] == counts["cpfs"] == counts["people"] == SMALL
    assert report.contacts == counts["contacts"]
    assert 2 * SMALL <= counts["contacts"] <= 6 * SMALL
    assert report.enrichments == counts["enrichments"] == counts["enriched"]
    assert 0.4 * SMALL < counts["enrichments"] < 0.6 * SMALL
    assert report.rebuilt_indexes is True
    assert catalog_after == catalog_before  # every index and constraint is back, unchanged
    assert all(is_valid_cpf(cpf) and len(cpf) == 11 for cpf in cpfs)
    assert all(e == e.lower() and is_valid_email(e) for e in emails)
    for phone in phones:
        parsed = parse_br_phone(phone)
        assert parsed.national == phone
    for document in documents:
        decoded = msgspec.json.decode(document, type=NormalizedPerson)
        assert decoded.cpf is not None
        assert is_valid_cpf(decoded.cpf)
        assert decoded.emails
    assert any("parties" in line for line in lines)


async def test_seed_is_deterministic_and_a_repeat_changes_nothing(
    scratch_database: tuple[str, str],
) -> None:
    name, url = scratch_database
    await create_database(name)
    await migrate(url)
    await seed(url, 300, seed=11, progress=lambda _line: None)

    with pytest.raises(asyncpg.UniqueViolationError):
        await seed(url, 300, seed=11, progress=lambda _line: None)

    conn = await asyncpg.connect(url)
    try:
        stored = {r["cpf_cnpj"] for r in await conn.fetch("SELECT cpf_cnpj FROM core.parties")}
    finally:
        await conn.close()
    assert stored == {cpf_for(11, index) for index in range(300)}
    assert PartyGenerator(5).batch(0, 20) == PartyGenerator(5).batch(0, 20)
    assert PartyGenerator(5).batch(0, 20) != PartyGenerator(6).batch(0, 20)
