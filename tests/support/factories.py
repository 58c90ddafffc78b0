"""Test data: API keys issued into a test database, synthetic Work API dossiers, fresh ids.

Dossiers and contacts are invented (valid CPFs, random names); every call gives new values, so
tests sharing the session database keep apart.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec

from domain.documents import cpf_check_digits
from domain.keys import ApiKey, NewApiKey, generate_key, parse_scopes
from infra.db.keys import PgApiKeyStore

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "SEEDED_PARTIES",
    "dossier_payload",
    "encode",
    "issue_key",
    "new_cpf",
    "new_mobile",
    "new_token",
]

# With 20,000 parties a sequential scan of the (narrow) parties table is still cheaper than the
# trigram index for the planner; from ~50,000 on it picks the index, as it does at 1M.
SEEDED_PARTIES = 50_000


async def issue_key(
    database_url: str,
    *,
    tenant: str = "acme",
    scopes: str | Iterable[str] = "read,enrich",
    name: str = "test",
    expires_in: timedelta | None = None,
    paid_quota: int | None = None,
) -> tuple[str, ApiKey]:
    """Create a key through the real store; return ``(plaintext, stored key)``.

    Args:
        database_url: A migrated database.
        tenant: The key's tenant.
        scopes: Granted scopes.
        name: Label.
        expires_in: Lifetime from now (may be negative: an already expired key).
        paid_quota: The key's daily paid-call quota (``None``: no quota).
    """
    generated = generate_key()
    expires_at = datetime.now(UTC) + expires_in if expires_in is not None else None
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        stored = await PgApiKeyStore(pool).create(
            NewApiKey(
                name=name,
                tenant=tenant,
                prefix=generated.prefix,
                digest=generated.digest,
                scopes=parse_scopes(scopes),
                expires_at=expires_at,
                paid_quota_daily=paid_quota,
            )
        )
    finally:
        await pool.close()
    return generated.plaintext, stored


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
