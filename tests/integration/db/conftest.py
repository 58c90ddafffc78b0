"""Fixtures for the PostgreSQL adapter tests: pools, the repository, synthetic dossiers.

Lookup and store tests share the session database (``database_url`` from ``tests/conftest.py``)
and keep apart by using fresh random CPFs, e-mails, phones and name tokens in every test. Tests
that need a database of their own (migrations, seed, query plans) create and drop it.
"""

from __future__ import annotations

import random
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec
import pytest

from domain.documents import cpf_check_digits
from infra.db.migrate import migrate
from infra.db.repository import PgPartyRepository
from infra.db.seed import seed
from tests.conftest import PG_ADMIN_URL, RUN_ID, create_database, drop_database

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

# Ten concurrent stores plus a spare connection for the assertions.
POOL_MAX = 12
# With 20,000 parties a sequential scan of the (narrow) parties table is still cheaper than the
# trigram index for the planner; from ~50,000 on it picks the index, as it does at 1M.
SEEDED_PARTIES = 50_000

_rng = random.Random()


def new_cpf() -> str:
    """A random CPF with valid check digits, unlikely to exist in the session database."""
    while True:
        base = f"{_rng.randrange(10**9):09d}"
        if base != base[0] * 9:
            return base + cpf_check_digits(base)


def new_token() -> str:
    """A random upper-case word to make names unique to one test (letters only)."""
    return "".join(_rng.choice("BCDFGHJKLMNPQRSTVWXZ") for _ in range(8))


def new_mobile() -> str:
    """A random São Paulo mobile number in storage form (DDD + 9 digits)."""
    return f"119{_rng.randint(6, 9)}{_rng.randrange(10_000_000):07d}"


def dossier_payload(
    cpf: str,
    *,
    name: str = "FULANO DE TAL",
    sex: str | None = "M - MASCULINO",
    emails: tuple[str, ...] = (),
    phones: tuple[tuple[str, bool], ...] = (),
    addresses: tuple[dict[str, Any], ...] = (),
    risk: str | None = "BAIXO RISCO",
    mother: str | None = "MAE DE TAL",
) -> dict[str, Any]:  # Any: a JSON document of the Work API's shape
    """A synthetic Work API ``modulo=cpf`` dossier (invented person, valid CPF).

    Args:
        cpf: The person's CPF.
        name: ``DadosBasicos.nome``.
        sex: ``DadosBasicos.sexo``; None leaves the key out.
        emails: Addresses, first is the primary.
        phones: ``(digits, is_whatsapp)`` pairs.
        addresses: Raw ``enderecos`` items.
        risk: ``scoreCSBAFaixaRisco``.
        mother: ``nomeMae``.

    Returns:
        The payload as a dict, ready for ``msgspec.json.encode``.
    """
    basic: dict[str, Any] = {
        "nome": name,
        "cpf": cpf,
        "dataNascimento": "15/03/1985",
        "estadoCivil": "CASADO(A)",
    }
    if sex is not None:
        basic["sexo"] = sex
    if mother is not None:
        basic["nomeMae"] = mother
    return {
        "status": 200,
        "DadosBasicos": basic,
        "DadosEconomicos": {
            "renda": "8500,50",
            "score": {"scoreCSBA": "812", "scoreCSBAFaixaRisco": risk},
        },
        "registroGeral": {"numero": "123456789", "orgaoEmissor": "SSP"},
        "emails": [
            {"email": address, "prioridade": "ALTA", "qualidade": "BOM"} for address in emails
        ],
        "telefones": [
            {
                "telefone": digits,
                "status": "ATIVO",
                "tipo": "CELULAR",
                "operadora": "VIVO",
                "whatsapp": "SIM" if whatsapp else None,
            }
            for digits, whatsapp in phones
        ],
        "enderecos": list(addresses),
    }


def encode(payload: dict[str, Any]) -> bytes:
    """The payload as the upstream's JSON bytes."""
    return msgspec.json.encode(payload)


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
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    try:
        yield name, url
    finally:
        await drop_database(name)
