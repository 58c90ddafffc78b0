"""PgPartyRepository.store_dossier against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec
import pytest

from domain.dossier import NormalizedPerson, decode_dossier, normalize_dossier
from domain.errors import DependencyUnavailable, InvalidInput
from infra.db.repository import PgPartyRepository, address_hash
from tests.support.db import POOL_MAX
from tests.support.factories import dossier_payload, encode, new_cpf, new_mobile, new_token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.integration


def _address(**overrides: Any) -> dict[str, Any]:  # Any: raw Work API JSON
    address: dict[str, Any] = {
        "tipoLogradouro": "R",
        "logradouro": f"RUA {new_token()}",
        "logradouroNumero": "123",
        "complemento": "APTO 4",
        "bairro": "CENTRO",
        "cidade": "SAO PAULO",
        "uf": "SP",
        "cep": "01310100",
    }
    address.update(overrides)
    return address


async def _counts(conn: asyncpg.pool.PoolConnectionProxy, cpf: str) -> dict[str, int]:
    row = await conn.fetchrow(
        """
        SELECT (SELECT count(*) FROM core.parties WHERE cpf_cnpj = $1) AS parties,
               (SELECT count(*) FROM core.people pe JOIN core.parties p ON p.id = pe.party_id
                 WHERE p.cpf_cnpj = $1) AS people,
               (SELECT count(*) FROM core.party_contacts c JOIN core.parties p
                    ON p.id = c.party_id WHERE p.cpf_cnpj = $1) AS contacts,
               (SELECT count(*) FROM core.party_addresses l JOIN core.parties p
                    ON p.id = l.party_id WHERE p.cpf_cnpj = $1) AS links,
               (SELECT count(*) FROM core.party_enrichments e JOIN core.parties p
                    ON p.id = e.party_id WHERE p.cpf_cnpj = $1) AS enrichments,
               (SELECT count(*) FROM core.party_enrichment_history h JOIN core.parties p
                    ON p.id = h.party_id WHERE p.cpf_cnpj = $1) AS history
        """,
        cpf,
    )
    assert row is not None
    return dict(row)


async def test_first_store_creates_party_with_everything(
    repo: PgPartyRepository, db_pool: asyncpg.Pool
) -> None:
    cpf = new_cpf()
    email = f"{new_token().lower()}@example.com"
    payload = dossier_payload(
        cpf,
        name="BEATRIZ  TESTE",
        emails=(email,),
        phones=((new_mobile(), True), (new_mobile(), False)),
        addresses=(_address(), _address()),
    )
    raw = encode(payload)

    stored = await repo.store_dossier(cpf, decode_dossier(raw), raw, "lead-abc")

    assert stored.created is True
    assert stored.contacts_added == 3
    assert stored.addresses_added == 2
    async with db_pool.acquire() as conn:
        assert await _counts(conn, cpf) == {
            "parties": 1,
            "people": 1,
            "contacts": 3,
            "links": 2,
            "enrichments": 1,
            "history": 1,
        }
        party = await conn.fetchrow("SELECT * FROM core.parties WHERE id = $1", stored.party_id)
        person = await conn.fetchrow(
            "SELECT * FROM core.people WHERE party_id = $1", stored.party_id
        )
    assert party is not None
    assert person is not None
    assert party["full_name"] == "BEATRIZ  TESTE"
    assert party["normalized_name"] == "BEATRIZ TESTE"
    assert party["sex"] == "M"
    assert party["enriched"] is True
    assert person["document_cpf"] == cpf
    assert person["marital_status"] == "CASADO(A)"
    assert person["income"] == Decimal("8500.50")


async def test_normalized_data_is_the_normalised_dossier(
    repo: PgPartyRepository, db_pool: asyncpg.Pool
) -> None:
    cpf = new_cpf()
    raw = encode(dossier_payload(cpf, emails=("a.b@example.com",), addresses=(_address(),)))
    dossier = decode_dossier(raw)

    stored = await repo.store_dossier(cpf, dossier, raw, None)

    async with db_pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT normalized_data::text AS nd, raw_payload::text AS raw "
            "FROM core.party_enrichments WHERE party_id = $1",
            stored.party_id,
        )
    assert row is not None
    assert row["nd"] not in (None, "{}")
    stored_person = msgspec.json.decode(row["nd"], type=NormalizedPerson)
    assert stored_person == normalize_dossier(dossier)
    assert "lead_id" not in msgspec.json.decode(row["raw"])


async def test_raw_payload_carries_the_lead_id(
    repo: PgPartyRepository, db_pool: asyncpg.Pool
) -> None:
    cpf = new_cpf()
    raw = encode(dossier_payload(cpf))

    stored = await repo.store_dossier(cpf, decode_dossier(raw), raw, "358f62821dc6cfa7")

    async with db_pool.acquire() as conn:
        current = await conn.fetchval(
            "SELECT raw_payload->>'lead_id' FROM core.party_enrichments WHERE party_id = $1",
            stored.party_id,
        )
        history = await conn.fetchval(
            "SELECT lead_id FROM core.party_enrichment_history WHERE party_id = $1",
            stored.party_id,
        )
    assert current == "358f62821dc6cfa7"
    assert history == "358f62821dc6cfa7"


async def test_restoring_the_same_dossier_is_idempotent_and_grows_history(
    repo: PgPartyRepository, db_pool: asyncpg.Pool
) -> None:
    cpf = new_cpf()
    payload = dossier_payload(
        cpf,
        emails=(f"{new_token().lower()}@example.com", f"{new_token().lower()}@example.com"),
        phones=((new_mobile(), True),),
        addresses=(_address(), _address(uf="XX")),
    )
    raw = encode(payload)
    first = await repo.store_dossier(cpf, decode_dossier(raw), raw, None)
    async with db_pool.acquire() as conn:
        before = await _counts(conn, cpf)
        addresses_before = await conn.fetchval("SELECT count(*) FROM core.addresses")

    again = await repo.store_dossier(cpf, decode_dossier(raw), raw, None)

    assert again.party_id == first.party_id
    assert again.created is False
    assert again.contacts_added == 0
    assert again.addresses_added == 0
    async with db_pool.acquire() as conn:
        after = await _counts(conn, cpf)
        addresses_after = await conn.fetchval("SELECT count(*) FROM core.addresses")
        primaries = await conn.fetchval(
            "SELECT count(*) FROM core.party_addresses WHERE party_id = $1 AND is_primary",
            first.party_id,
        )
    assert after == {**before, "history": before["history"] + 1}
    assert addresses_after == addresses_before
    assert primaries == 1


async def test_missing_sex_stays_null(repo: PgPartyRepository, db_pool: asyncpg.Pool) -> None:
    cpf = new_cpf()
    raw = encode(dossier_payload(cpf, sex=None))

    stored = await repo.store_dossier(cpf, decode_dossier(raw), raw, None)

    async with db_pool.acquire() as conn:
        party_sex = await conn.fetchval(
            "SELECT sex FROM core.parties WHERE id = $1", stored.party_id
        )
        person_sex = await conn.fetchval(
            "SELECT sex FROM core.people WHERE party_id = $1", stored.party_id
        )
    assert party_sex is None
    assert person_sex is None


async def test_address_number_comes_from_logradouro_numero(
    repo: PgPartyRepository, db_pool: asyncpg.Pool
) -> None:
    cpf = new_cpf()
    street = f"AVENIDA {new_token()}"
    address = _address(logradouro=street, logradouroNumero="1578", numero="WRONG")
    raw = encode(dossier_payload(cpf, addresses=(address,)))

    stored = await repo.store_dossier(cpf, decode_dossier(raw), raw, None)

    async with db_pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT a.* FROM core.addresses a JOIN core.party_addresses l ON l.address_id = a.id "
            "WHERE l.party_id = $1",
            stored.party_id,
        )
    assert row is not None
    assert row["street"] == street
    assert row["number"] == "1578"
    assert row["neighborhood"] == "CENTRO"
    assert row["state"] == "SP"
    assert row["zip_code"] == "01310100"


@pytest.mark.parametrize(
    ("uf", "cep", "state", "zip_code"),
    [
        ("XX", "01310100", None, "01310100"),
        ("São Paulo", "123", None, None),
        ("sp ", "ABCDEFGH", "SP", None),
        ("", "01310-100", None, "01310100"),
    ],
)
async def test_bad_uf_or_cep_is_stored_as_null_and_does_not_abort(
    repo: PgPartyRepository,
    db_pool: asyncpg.Pool,
    uf: str,
    cep: str,
    state: str | None,
    zip_code: str | None,
) -> None:
    cpf = new_cpf()
    email = f"{new_token().lower()}@example.com"
    raw = encode(dossier_payload(cpf, emails=(email,), addresses=(_address(uf=uf, cep=cep),)))

    stored = await repo.store_dossier(cpf, decode_dossier(raw), raw, None)

    assert stored.addresses_added == 1
    assert stored.contacts_added == 1
    async with db_pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT a.state, a.zip_code FROM core.addresses a "
            "JOIN core.party_addresses l ON l.address_id = a.id WHERE l.party_id = $1",
            stored.party_id,
        )
        assert (await _counts(conn, cpf))["enrichments"] == 1
    assert row is not None
    assert (row["state"], row["zip_code"]) == (state, zip_code)


async def test_same_address_in_two_dossiers_is_one_row(
    repo: PgPartyRepository, db_pool: asyncpg.Pool
) -> None:
    street = f"RUA {new_token()}"
    shared = _address(logradouro=street)
    spaced = _address(logradouro=f"  {street.lower()} ")  # same place, written differently
    cpf_a, cpf_b = new_cpf(), new_cpf()
    raw_a = encode(dossier_payload(cpf_a, addresses=(shared,)))
    raw_b = encode(dossier_payload(cpf_b, addresses=(spaced,)))

    await repo.store_dossier(cpf_a, decode_dossier(raw_a), raw_a, None)
    await repo.store_dossier(cpf_b, decode_dossier(raw_b), raw_b, None)

    digest = address_hash(street, "123", "APTO 4", "01310100", "SAO PAULO", "SP")
    async with db_pool.acquire() as conn:
        rows = await conn.fetchval("SELECT count(*) FROM core.addresses WHERE hash = $1", digest)
        links = await conn.fetchval(
            "SELECT count(*) FROM core.party_addresses l JOIN core.addresses a "
            "ON a.id = l.address_id WHERE a.hash = $1",
            digest,
        )
    assert rows == 1
    assert links == 2


async def test_quality_score_keeps_the_best_and_history_keeps_each(
    repo: PgPartyRepository, db_pool: asyncpg.Pool
) -> None:
    cpf = new_cpf()
    good = encode(dossier_payload(cpf, risk="BAIXISSIMO RISCO"))
    bad = encode(dossier_payload(cpf, risk="ALTO RISCO"))

    stored = await repo.store_dossier(cpf, decode_dossier(good), good, None)
    await repo.store_dossier(cpf, decode_dossier(bad), bad, None)

    async with db_pool.acquire() as conn:
        current = await conn.fetchval(
            "SELECT quality_score FROM core.party_enrichments WHERE party_id = $1",
            stored.party_id,
        )
        history = [
            r["quality_score"]
            for r in await conn.fetch(
                "SELECT quality_score FROM core.party_enrichment_history "
                "WHERE party_id = $1 ORDER BY id",
                stored.party_id,
            )
        ]
    assert current == Decimal("0.900")
    assert history == [Decimal("0.900"), Decimal("0.300")]


async def test_existing_party_keeps_its_values_and_gets_empty_ones_filled(
    repo: PgPartyRepository, db_pool: asyncpg.Pool
) -> None:
    cpf = new_cpf()
    async with db_pool.acquire() as conn:
        legacy = await conn.fetchval(
            "INSERT INTO core.parties (party_type, cpf_cnpj, full_name, mother_name) "
            "VALUES ('person', $1, 'LEGACY NAME', 'LEGACY MOTHER') RETURNING id",
            cpf,
        )
    raw = encode(dossier_payload(cpf, name="NEW NAME", mother="NEW MOTHER"))

    stored = await repo.store_dossier(cpf, decode_dossier(raw), raw, None)

    assert stored.party_id == legacy
    assert stored.created is False
    async with db_pool.acquire() as conn:
        party = await conn.fetchrow("SELECT * FROM core.parties WHERE id = $1", legacy)
    assert party is not None
    assert party["full_name"] == "LEGACY NAME"
    assert party["mother_name"] == "LEGACY MOTHER"
    assert party["sex"] == "M"  # was NULL: filled
    assert party["rg"] == "123456789"
    assert party["enriched"] is True


async def test_invalid_cpf_is_rejected_before_writing(repo: PgPartyRepository) -> None:
    raw = encode(dossier_payload("12345678900"))

    with pytest.raises(InvalidInput):
        await repo.store_dossier("12345678900", decode_dossier(raw), raw, None)


async def test_history_is_append_only(repo: PgPartyRepository, db_pool: asyncpg.Pool) -> None:
    cpf = new_cpf()
    raw = encode(dossier_payload(cpf))
    stored = await repo.store_dossier(cpf, decode_dossier(raw), raw, None)

    async with db_pool.acquire() as conn:
        with pytest.raises(asyncpg.RestrictViolationError):
            await conn.execute(
                "UPDATE core.party_enrichment_history SET provider = 'x' WHERE party_id = $1",
                stored.party_id,
            )


# ---------------------------------------------------------------------------------- atomicity


async def _nothing_written(db_pool: asyncpg.Pool, cpf: str, email: str, street: str) -> None:
    async with db_pool.acquire() as conn:
        assert await _counts(conn, cpf) == dict.fromkeys(
            ("parties", "people", "contacts", "links", "enrichments", "history"), 0
        )
        contacts = await conn.fetchval(
            "SELECT count(*) FROM core.party_contacts WHERE value = $1", email
        )
        addresses = await conn.fetchval(
            "SELECT count(*) FROM core.addresses WHERE street = $1", street
        )
    assert contacts == 0
    assert addresses == 0


async def test_a_failing_last_statement_rolls_everything_back(
    repo: PgPartyRepository, db_pool: asyncpg.Pool
) -> None:
    cpf = new_cpf()
    email = f"{new_token().lower()}@example.com"
    street = f"RUA {new_token()}"
    payload = dossier_payload(cpf, emails=(email,), addresses=(_address(logradouro=street),))
    dossier = decode_dossier(encode(payload))
    # The raw body is only parsed by the last statement (the enrichment upsert): a body
    # PostgreSQL rejects makes the store fail after party, contacts and addresses were written.
    broken_raw = b'{"DadosBasicos": '

    with pytest.raises(asyncpg.PostgresError):
        await repo.store_dossier(cpf, dossier, broken_raw, None)

    await _nothing_written(db_pool, cpf, email, street)


class _DropsBeforeCommit(asyncpg.Connection):
    """A connection that 'loses the server' after every write, before the store commits."""

    # The signature mirrors asyncpg.Connection.execute, timeout parameter included.
    async def execute(
        self,
        query: str,
        *args: object,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> str:
        if query == "COMMIT":
            raise asyncpg.exceptions.ConnectionDoesNotExistError("injected connection loss")
        return await super().execute(query, *args, timeout=timeout)


@pytest.fixture
async def failing_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool whose connections fail midway through store_dossier."""
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=2, connection_class=_DropsBeforeCommit
    )
    try:
        yield pool
    finally:
        await pool.close()


async def test_a_connection_lost_midway_rolls_back_and_reports_unavailable(
    failing_pool: asyncpg.Pool, db_pool: asyncpg.Pool
) -> None:
    cpf = new_cpf()
    email = f"{new_token().lower()}@example.com"
    street = f"RUA {new_token()}"
    raw = encode(dossier_payload(cpf, emails=(email,), addresses=(_address(logradouro=street),)))

    with pytest.raises(DependencyUnavailable) as caught:
        await PgPartyRepository(failing_pool).store_dossier(cpf, decode_dossier(raw), raw, None)

    assert caught.value.dependency == "postgres"
    assert cpf not in caught.value.detail
    await _nothing_written(db_pool, cpf, email, street)


# -------------------------------------------------------------------------------- concurrency


async def test_concurrent_stores_of_one_cpf_make_one_party_without_duplicates(
    repo: PgPartyRepository, db_pool: asyncpg.Pool
) -> None:
    cpf = new_cpf()
    emails = tuple(f"{new_token().lower()}@example.com" for _ in range(3))
    phones = ((new_mobile(), True), (new_mobile(), False))
    raw = encode(dossier_payload(cpf, emails=emails, phones=phones, addresses=(_address(),)))
    stores = POOL_MAX - 2

    results = await asyncio.gather(
        *(repo.store_dossier(cpf, decode_dossier(raw), raw, None) for _ in range(stores))
    )

    assert len({r.party_id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert sum(r.contacts_added for r in results) == 5
    assert sum(r.addresses_added for r in results) == 1
    async with db_pool.acquire() as conn:
        assert await _counts(conn, cpf) == {
            "parties": 1,
            "people": 1,
            "contacts": 5,
            "links": 1,
            "enrichments": 1,
            "history": stores,
        }


async def test_concurrent_stores_sharing_addresses_do_not_deadlock(
    repo: PgPartyRepository, db_pool: asyncpg.Pool
) -> None:
    shared = (_address(), _address(), _address())
    cpfs = [new_cpf() for _ in range(POOL_MAX - 2)]
    raws = [
        # Each dossier lists the shared addresses in a different order.
        encode(dossier_payload(cpf, addresses=shared[n % 3 :] + shared[: n % 3]))
        for n, cpf in enumerate(cpfs)
    ]

    results = await asyncio.gather(
        *(
            repo.store_dossier(cpf, decode_dossier(raw), raw, None)
            for cpf, raw in zip(cpfs, raws, strict=True)
        )
    )

    assert all(r.addresses_added == 3 for r in results)
    streets = [a["logradouro"] for a in shared]
    async with db_pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM core.addresses WHERE street = ANY($1::text[])", streets
            )
            == 3
        )
