"""Departures from the earlier service (docs/contract.md §7), shown through the whole system.

The departures visible end to end are tested here; the rest are pinned closer to their code:

| earlier behaviour | ours | test |
|---|---|---|
| lead-dedup entry never cleared | lock released on completion, replay bounded | here |
| CPF/payload paired by list index | paired by CPF | tests/unit/domain/test_pipeline.py |
| single-source "PESSOAS DIFERENTES" header | source-specific header | here; test_message.py |
| `normalized_data = {}` (empty messages) | filled; reused | here; test_pipeline.py |
| address number from `numero` | from `logradouroNumero` | here |
| default sex 'M' | missing sex stays NULL | tests/integration/db/test_store.py |
| risk -> quality inverted | low risk, high quality | here |
| `{"error":"No data"}` cached | not found is a 404, never cached | here |
| circuit breaker unused | every upstream behind a breaker; open = fast 503 | here |
| 20 then 1 request per 10 s per IP | 10/s with bursts of 20 per client | here |
| Work API soft errors treated as data | typed error, 502, never cached | here |
| unified response read the wrong level | filled from the nested dossier | here |
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from app.main import create_app
from tests.support.factories import issue_key
from tests.support.sandbox import PEOPLE

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import asyncpg
    from litestar import Litestar

    from app.config import Settings
    from tests.support.sandbox import SandboxAdmin

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
async def _clean_sandbox(sandbox: SandboxAdmin) -> None:
    """Every test starts with the sandbox reset (no faults left by another test)."""


@pytest.fixture(scope="module")
async def key(database_url: str) -> str:
    plaintext, _ = await issue_key(database_url, tenant="defects", scopes="read,enrich")
    return plaintext


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


@pytest.fixture
async def isolated(e2e_settings: Settings) -> AsyncIterator[Any]:
    """Build an app with its own settings and Redis key space (breakers, limits, locks)."""
    opened: list[AsyncTestClient[Litestar]] = []

    async def build(**changes: Any) -> AsyncTestClient[Litestar]:
        settings = msgspec.structs.replace(
            e2e_settings,
            redis_key_prefix=f"{e2e_settings.redis_key_prefix}{uuid.uuid4().hex[:8]}:",
            **changes,
        )
        client: AsyncTestClient[Litestar] = AsyncTestClient(app=create_app(settings), timeout=30)
        await client.__aenter__()
        opened.append(client)
        return client

    yield build
    for client in opened:
        await client.__aexit__(None, None, None)


async def test_lead_lock_is_released_and_the_replay_window_ends(
    isolated: Any, sandbox: SandboxAdmin, key: str
) -> None:
    client = await isolated(lead_replay_ttl_s=1)
    lead = await sandbox.create_lead(person_index=40)
    params = {"id": lead["lead_id"]}
    first = (await client.get("/api/v1/leads/process", params=params, headers=auth(key))).json()
    assert first["success"] is True
    await asyncio.sleep(1.3)
    again = (await client.get("/api/v1/leads/process", params=params, headers=auth(key))).json()
    # Not "duplicate": the lead is processed again (its CPF was enriched seconds ago, so the
    # recent-CPF window answers without paying the Work API twice).
    assert "duplicate_request" not in again
    assert again["message"] == "CPFs already recently processed (deduplication)"


async def test_single_source_lead_gets_no_different_people_header(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, key: str
) -> None:
    person = PEOPLE.person(41)
    lead = await sandbox._json(
        "POST",
        "/_sandbox/leads",
        {"person_index": 41, "customer": {"email": "nobody-known@example.com"}},
    )
    response = await client.post(f"/api/v1/c2s/enrich/{lead['lead_id']}", headers=auth(key))
    assert response.status_code == 200, response.text
    [message] = await sandbox.messages(lead["lead_id"])
    assert "PESSOAS DIFERENTES" not in message["body"]
    assert message["body"].startswith("📞 Dados encontrados pelo telefone:")
    assert person.cpf in message["body"]


async def test_stored_enrichment_has_normalized_data_and_address_numbers(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, db: asyncpg.Pool, key: str
) -> None:
    cpf = PEOPLE.cpf_for(42)
    response = await client.get(
        "/api/v1/contributor/customer", params={"cpf": cpf}, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    row = await db.fetchrow(
        """
        SELECT e.normalized_data::text AS normalized, e.quality_score, p.sex
          FROM core.parties p JOIN core.party_enrichments e ON e.party_id = p.id
         WHERE p.cpf_cnpj = $1
        """,
        cpf,
    )
    assert row is not None
    normalized = msgspec.json.decode(row["normalized"])
    assert normalized["cpf"] == cpf
    assert normalized["name"]
    numbers = await db.fetch(
        """
        SELECT a.number FROM core.addresses a
          JOIN core.party_addresses l ON l.address_id = a.id
          JOIN core.parties p ON p.id = l.party_id
         WHERE p.cpf_cnpj = $1
        """,
        cpf,
    )
    dossier = msgspec.json.decode(PEOPLE.dossier_json(cpf))
    expected = {a["logradouroNumero"] for a in dossier["enderecos"] if a.get("logradouroNumero")}
    assert {r["number"] for r in numbers} == expected
    # Low risk means a high-quality record (docs/contract.md §5).
    risk = dossier["DadosEconomicos"]["score"]["scoreCSBAFaixaRisco"]
    quality = float(row["quality_score"])
    if risk.startswith(("BAIXISSIMO", "BAIXO")):
        assert quality >= 0.7
    elif risk.startswith(("ALTISSIMO", "ALTO")):
        assert quality <= 0.3


async def test_not_found_is_a_404_and_is_not_cached(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, key: str
) -> None:
    cpf = PEOPLE.cpf_for(43)
    await sandbox.set_faults("work_api", soft_error_rate=1.0, soft_error_kind="not_found")
    missing = await client.get(
        "/api/v1/work/modules/all", params={"documento": cpf}, headers=auth(key)
    )
    assert missing.status_code == 404
    await sandbox.set_faults("work_api")
    found = await client.get(
        "/api/v1/work/modules/all", params={"documento": cpf}, headers=auth(key)
    )
    assert found.status_code == 200
    assert found.content == PEOPLE.dossier_json(cpf)


async def test_soft_errors_are_errors_and_are_not_cached(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, key: str
) -> None:
    cpf = PEOPLE.cpf_for(44)
    await sandbox.set_faults("work_api", soft_error_rate=1.0, soft_error_kind="expired_token")
    failed = await client.get(
        "/api/v1/work/modules/all", params={"documento": cpf}, headers=auth(key)
    )
    assert failed.status_code in (502, 503)
    assert failed.headers["content-type"].startswith("application/problem+json")
    assert "statusMsg" not in failed.text
    await sandbox.set_faults("work_api")
    healed = await client.get(
        "/api/v1/work/modules/all", params={"documento": cpf}, headers=auth(key)
    )
    assert healed.status_code == 200
    assert healed.json()["DadosBasicos"]["cpf"] == cpf


async def test_breaker_opens_and_sheds_load_from_a_failing_upstream(
    isolated: Any, sandbox: SandboxAdmin, key: str
) -> None:
    client = await isolated()
    await sandbox.set_faults("work_api", error_rate=1.0, error_status=500)
    statuses: list[int] = []
    retry_after: str | None = None
    for i in range(30):
        response = await client.get(
            "/api/v1/work/modules/all",
            params={"documento": PEOPLE.cpf_for(100 + i)},
            headers=auth(key),
        )
        statuses.append(response.status_code)
        if response.status_code == 503:
            retry_after = response.headers.get("retry-after")
            break
    assert statuses[-1] == 503, statuses
    assert retry_after is not None
    assert int(retry_after) >= 1
    calls_when_open = sum((await sandbox.counters()).get("work_api", {}).values())
    for i in range(5):
        shed = await client.get(
            "/api/v1/work/modules/all",
            params={"documento": PEOPLE.cpf_for(200 + i)},
            headers=auth(key),
        )
        assert shed.status_code == 503
    assert sum((await sandbox.counters()).get("work_api", {}).values()) == calls_when_open


async def test_rate_limit_is_ten_per_second_with_bursts_of_twenty(isolated: Any, key: str) -> None:
    client = await isolated(rate_limit_ip="20/2second", rate_limit_key="", rate_limit_global="")
    statuses = [
        (await client.get("/api/v1/customers/" + str(uuid.uuid4()), headers=auth(key))).status_code
        for _ in range(25)
    ]
    assert statuses[:20] == [404] * 20
    assert statuses[20:] == [429] * 5
    refused = await client.get("/api/v1/customers/" + str(uuid.uuid4()), headers=auth(key))
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit"].startswith('"ip";r=0;')
    assert refused.headers["ratelimit-policy"] == '"ip";q=20;w=2'
    assert refused.headers["x-ratelimit-remaining"] == "0"


async def test_unified_response_is_filled_from_the_nested_dossier(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, key: str
) -> None:
    cpf = PEOPLE.cpf_for(45)
    dossier = msgspec.json.decode(PEOPLE.dossier_json(cpf))
    view = (
        await client.get("/api/v1/contributor/customer", params={"cpf": cpf}, headers=auth(key))
    ).json()
    basics = dossier["DadosBasicos"]
    day, month, year = basics["dataNascimento"].split("/")
    assert view["personal_info"]["name"] == basics["nome"]
    assert view["personal_info"]["birth_date"] == f"{year}-{month}-{day}"
    assert view["personal_info"]["mother_name"] == basics["nomeMae"]
    assert view["personal_info"]["gender"] == basics["sexo"][0]
    assert len(view["addresses"]) == len(dossier["enderecos"])
    assert view["addresses"][0]["cep"] == dossier["enderecos"][0]["cep"]
    assert (
        view["financial_info"]["risk_band"]
        == dossier["DadosEconomicos"]["score"]["scoreCSBAFaixaRisco"]
    )
