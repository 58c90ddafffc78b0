"""Lookups of PgPartyRepository against a real PostgreSQL."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import msgspec
import pytest

from domain.dossier import NormalizedPerson, decode_dossier
from tests.support.factories import dossier_payload, encode, new_cpf, new_mobile, new_token

if TYPE_CHECKING:
    import asyncpg

    from domain.models import StoredDossier
    from infra.db.repository import PgPartyRepository

pytestmark = pytest.mark.integration


async def _store(
    repo: PgPartyRepository,
    cpf: str,
    *,
    name: str = "FULANO DE TAL",
    emails: tuple[str, ...] = (),
    phones: tuple[tuple[str, bool], ...] = (),
) -> StoredDossier:
    raw = encode(dossier_payload(cpf, name=name, emails=emails, phones=phones))
    return await repo.store_dossier(cpf, decode_dossier(raw), raw, None)


# ------------------------------------------------------------------------------------ by CPF


async def test_find_by_cpf_returns_party_contacts_and_enrichment(repo: PgPartyRepository) -> None:
    cpf = new_cpf()
    email = f"{new_token().lower()}@example.com"
    mobile = new_mobile()
    stored = await _store(repo, cpf, name="ANA TESTE", emails=(email,), phones=((mobile, True),))

    found = await repo.find_by_cpf(cpf)

    assert found is not None
    assert found.party.id == stored.party_id
    assert found.party.cpf_cnpj == cpf
    assert found.party.party_type == "person"
    assert found.party.full_name == "ANA TESTE"
    assert found.party.enriched is True
    assert {(c.contact_type, c.value) for c in found.contacts} == {
        ("email", email),
        ("whatsapp", mobile),
    }
    assert found.normalized_data is not None
    person = msgspec.json.decode(found.normalized_data, type=NormalizedPerson)
    assert person.cpf == cpf
    assert found.enriched_at is not None


async def test_find_by_cpf_accepts_formatted_and_zero_padded_cpf(repo: PgPartyRepository) -> None:
    cpf = new_cpf()
    stored = await _store(repo, cpf)
    formatted = f"{cpf[:3]}.{cpf[3:6]}.{cpf[6:9]}-{cpf[9:]}"

    by_formatted = await repo.find_by_cpf(formatted)
    by_padded = await repo.find_by_cpf("000" + cpf)

    assert by_formatted is not None
    assert by_formatted.party.id == stored.party_id
    assert by_padded is not None
    assert by_padded.party.id == stored.party_id


async def test_find_by_cpf_unknown_returns_none(repo: PgPartyRepository) -> None:
    assert await repo.find_by_cpf(new_cpf()) is None
    assert await repo.find_by_cpf("") is None


async def test_find_by_cpf_returns_newest_duplicate_and_ignores_companies(
    repo: PgPartyRepository, db_pool: asyncpg.Pool
) -> None:
    cpf = new_cpf()
    async with db_pool.acquire() as conn:
        # Legacy duplicates (no UNIQUE on cpf_cnpj): an old person row and a company row.
        await conn.execute(
            "INSERT INTO core.parties (party_type, cpf_cnpj, full_name, updated_at) "
            "VALUES ('person', $1, 'OLD ROW', now() - interval '10 days'), "
            "('company', $1, 'A COMPANY', now() + interval '1 day')",
            cpf,
        )
        newest = await conn.fetchval(
            "INSERT INTO core.parties (party_type, cpf_cnpj, full_name, updated_at) "
            "VALUES ('person', $1, 'NEW ROW', now()) RETURNING id",
            cpf,
        )

    found = await repo.find_by_cpf(cpf)

    assert found is not None
    assert found.party.id == newest
    assert found.normalized_data is None
    assert found.enriched_at is None
    assert found.contacts == []


# ---------------------------------------------------------------------------------- by e-mail


async def test_find_by_email_ignores_case_and_surrounding_spaces(repo: PgPartyRepository) -> None:
    cpf = new_cpf()
    email = f"Mixed.{new_token()}@Example.COM"
    stored = await _store(repo, cpf, emails=(email,))

    found = await repo.find_by_email(f"  {email.upper()}  ")

    assert found is not None
    assert found.party.id == stored.party_id
    assert [c.value for c in found.contacts if c.contact_type == "email"] == [email.lower()]


async def test_find_by_email_unknown_returns_none(repo: PgPartyRepository) -> None:
    assert await repo.find_by_email(f"{new_token().lower()}@nowhere.example") is None
    assert await repo.find_by_email("   ") is None


async def test_find_by_email_does_not_match_a_phone_with_the_same_text(
    repo: PgPartyRepository,
) -> None:
    mobile = new_mobile()
    await _store(repo, new_cpf(), phones=((mobile, False),))

    assert await repo.find_by_email(mobile) is None


# ----------------------------------------------------------------------------------- by phone


async def test_find_by_phone_finds_plain_phone_in_any_format(repo: PgPartyRepository) -> None:
    mobile = new_mobile()
    stored = await _store(repo, new_cpf(), phones=((mobile, False),))
    e164 = f"+55 ({mobile[:2]}) {mobile[2:7]}-{mobile[7:]}"

    found = await repo.find_by_phone(e164)

    assert found is not None
    assert found.party.id == stored.party_id


async def test_find_by_phone_finds_whatsapp_contacts(repo: PgPartyRepository) -> None:
    mobile = new_mobile()
    stored = await _store(repo, new_cpf(), phones=((mobile, True),))

    found = await repo.find_by_phone(mobile)

    assert found is not None
    assert found.party.id == stored.party_id
    whatsapp = [c for c in found.contacts if c.value == mobile]
    assert len(whatsapp) == 1
    assert whatsapp[0].contact_type == "whatsapp"
    assert whatsapp[0].is_whatsapp is True


async def test_find_by_phone_unknown_returns_none(repo: PgPartyRepository) -> None:
    assert await repo.find_by_phone(new_mobile()) is None
    assert await repo.find_by_phone("no digits") is None


async def test_find_by_phone_returns_the_newest_owner(repo: PgPartyRepository) -> None:
    mobile = new_mobile()
    await _store(repo, new_cpf(), phones=((mobile, False),))
    newer = await _store(repo, new_cpf(), phones=((mobile, False),))

    found = await repo.find_by_phone(mobile)

    assert found is not None
    assert found.party.id == newer.party_id


# ---------------------------------------------------------------------------------- contacts


async def test_contacts_come_primary_first_then_oldest(repo: PgPartyRepository) -> None:
    cpf = new_cpf()
    token = new_token().lower()
    first, second, third = (f"{token}.{n}@example.com" for n in range(3))
    await _store(repo, cpf, emails=(first, second))
    await _store(repo, cpf, emails=(third,))  # a later enrichment: not primary any more

    found = await repo.find_by_cpf(cpf)

    assert found is not None
    assert [(c.value, c.is_primary) for c in found.contacts] == [
        (first, True),
        (second, False),
        (third, False),
    ]


# ------------------------------------------------------------------------------------ by name


async def test_search_by_name_is_case_and_accent_insensitive(repo: PgPartyRepository) -> None:
    token = new_token()
    stored = await _store(repo, new_cpf(), name=f"JOÃO {token} CONCEIÇÃO")

    found = await repo.search_by_name(f"joao {token.lower()} conceicao")

    assert [p.party.id for p in found] == [stored.party_id]
    assert found[0].party.full_name == f"JOÃO {token} CONCEIÇÃO"


async def test_search_by_name_ranks_the_closest_name_first(repo: PgPartyRepository) -> None:
    token = new_token()
    longer = await _store(repo, new_cpf(), name=f"MARIA {token} DOS SANTOS PEREIRA LIMA")
    exact = await _store(repo, new_cpf(), name=f"MARIA {token}")
    middle = await _store(repo, new_cpf(), name=f"MARIA {token} SOUZA")

    found = await repo.search_by_name(f"Maria {token}")

    assert [p.party.id for p in found] == [exact.party_id, middle.party_id, longer.party_id]


async def test_search_by_name_respects_the_limit(repo: PgPartyRepository) -> None:
    token = new_token()
    for n in range(4):
        await _store(repo, new_cpf(), name=f"PEDRO {token} {'X' * (n + 1)}")

    found = await repo.search_by_name(token, limit=2)

    assert len(found) == 2


async def test_search_by_name_treats_like_wildcards_literally(repo: PgPartyRepository) -> None:
    token = new_token()
    await _store(repo, new_cpf(), name=f"CARLOS {token}")

    assert await repo.search_by_name(f"{token[:3]}%{token[4:]}") == []
    assert await repo.search_by_name(f"{token[:3]}_{token[4:]}") == []
    assert await repo.search_by_name("   ") == []


async def test_search_by_name_without_match_is_empty(repo: PgPartyRepository) -> None:
    assert await repo.search_by_name(new_token() + new_token()) == []


# ------------------------------------------------------------------------------------- by id


async def test_get_party_by_id(repo: PgPartyRepository) -> None:
    email = f"{new_token().lower()}@example.com"
    stored = await _store(repo, new_cpf(), emails=(email,))

    found = await repo.get_party(stored.party_id)

    assert found is not None
    assert found.party.id == stored.party_id
    assert [c.value for c in found.contacts] == [email]
    assert found.normalized_data is not None


async def test_get_party_unknown_id_returns_none(repo: PgPartyRepository) -> None:
    assert await repo.get_party(uuid.uuid4()) is None
