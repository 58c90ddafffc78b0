"""The v1 HTTP contract end to end: the real app, PostgreSQL, Redis and the sandbox over HTTP.

Every endpoint of docs/contract.md §1 is driven through the app factory with a real API key;
the upstreams are the sandbox subprocess (see ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from tests.support.factories import issue_key
from tests.support.processes import granian_server
from tests.support.sandbox import PEOPLE

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from litestar import Litestar
    from litestar.testing import AsyncTestClient

    from tests.support.sandbox import SandboxAdmin

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).resolve().parents[1] / "golden"

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def live_url(e2e_env: dict[str, str]) -> Iterator[str]:
    """The app under Granian in a subprocess, for tests that need truly concurrent requests.

    (The in-process test client serialises requests, so it cannot show a race.)
    """
    with granian_server(
        "app.main:create_app", env={**os.environ, **e2e_env}, ready_path="/health"
    ) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture(autouse=True)
async def _clean_sandbox(sandbox: SandboxAdmin) -> None:
    """Every test starts with the sandbox reset (no faults left by another test)."""


@pytest.fixture(scope="module")
async def key(database_url: str) -> str:
    plaintext, _ = await issue_key(database_url, tenant="e2e", scopes="read,enrich")
    return plaintext


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def new_lead(sandbox: SandboxAdmin, **body: Any) -> dict[str, Any]:
    """A sandbox lead; ``customer`` overrides the person's contact fields."""
    result: dict[str, Any] = await sandbox._json("POST", "/_sandbox/leads", body)
    return result


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["error"]
    return body


# --- /leads/process ------------------------------------------------------------------------


async def test_process_enriches_stores_and_sends_the_golden_message(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, key: str
) -> None:
    lead = await new_lead(sandbox, person_index=11)
    response = await client.get(
        "/api/v1/leads/process", params={"id": lead["lead_id"]}, headers=auth(key)
    )
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True, body
    assert body["cpfs_processed"] == [lead["cpf"]]
    assert body["entities_stored"] == 1
    assert body["message"] == (
        "Successfully processed and enriched lead. Stored 1 entities in database."
    )
    assert body["matches"][0]["via"] == "both"
    [message] = await sandbox.messages(lead["lead_id"])
    golden = GOLDEN / "e2e_process_same_person.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_bytes(message["body"].encode())
    assert message["body"].encode() == golden.read_bytes()


async def test_process_answers_a_repeat_with_the_finished_result(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, key: str
) -> None:
    lead = await new_lead(sandbox, person_index=12)
    params = {"id": lead["lead_id"]}
    first = (await client.get("/api/v1/leads/process", params=params, headers=auth(key))).json()
    second = (await client.get("/api/v1/leads/process", params=params, headers=auth(key))).json()
    assert second == {**first, "duplicate_request": True}
    assert len(await sandbox.messages(lead["lead_id"])) == 1


async def test_process_blocks_a_concurrent_duplicate(
    live_url: str, http: aiohttp.ClientSession, sandbox: SandboxAdmin, key: str
) -> None:
    lead = await new_lead(sandbox, person_index=13)
    await sandbox.set_faults("work_api", latency_ms=600)
    url = f"{live_url}/api/v1/leads/process?id={lead['lead_id']}"

    async def get() -> dict[str, Any]:
        async with http.get(url, headers=auth(key)) as response:
            assert response.status == 200
            body: dict[str, Any] = await response.json()
            return body

    first, blocked = await asyncio.gather(get(), _later(get(), 0.2))
    assert first["success"] is True
    assert blocked["duplicate_request"] is True
    assert blocked["message"].startswith("Lead already being processed (started ")
    assert blocked["message"].endswith(" seconds ago). Duplicate request blocked.")
    assert len(await sandbox.messages(lead["lead_id"])) == 1


async def _later(coro: Any, delay: float) -> Any:
    await asyncio.sleep(delay)
    return await coro


async def test_process_without_id_is_the_reference_400(
    client: AsyncTestClient[Litestar], key: str
) -> None:
    body = assert_problem(await client.get("/api/v1/leads/process", headers=auth(key)), 400)
    assert body["error"] == "Missing 'id' parameter"
    assert body["errors"][0]["field"] == "id"


async def test_process_with_blank_id_names_the_wire_parameter(
    client: AsyncTestClient[Litestar], key: str
) -> None:
    response = await client.get("/api/v1/leads/process?id=", headers=auth(key))
    body = assert_problem(response, 400)
    assert body["error"] == "Missing 'id' parameter"
    assert body["errors"] == [
        {"field": "id", "message": "Missing 'id' parameter", "source": "query"}
    ]


async def test_process_of_unknown_lead_is_success_false(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, key: str
) -> None:
    response = await client.get("/api/v1/leads/process", params={"id": "f" * 32}, headers=auth(key))
    assert response.status_code == 200
    assert response.json()["success"] is False
    assert response.json()["message"].startswith("Failed to fetch lead from C2S")


async def test_process_without_a_resolvable_contact_is_success_false(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, key: str
) -> None:
    lead = await new_lead(
        sandbox, customer={"name": "Ninguem", "phone": "+5511900000000", "email": None}
    )
    response = await client.get(
        "/api/v1/leads/process", params={"id": lead["lead_id"]}, headers=auth(key)
    )
    assert response.json() == {
        "success": False,
        "message": "Could not find CPF from phone or email",
        "lead_id": lead["lead_id"],
    }


# --- /c2s/enrich/{lead_id} -----------------------------------------------------------------


async def test_direct_enrich_reports_stored_entities(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, key: str
) -> None:
    lead = await new_lead(sandbox, person_index=14)
    response = await client.post(f"/api/v1/c2s/enrich/{lead['lead_id']}", headers=auth(key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["message_sent"] is True
    assert body["stored_in_db"] == 1
    assert len(body["entity_ids"]) == 1
    assert body["cpfs_enriched"] == [lead["cpf"]]
    assert body["same_person"] is True
    [message] = await sandbox.messages(lead["lead_id"])
    assert message["body"].startswith(
        "📞📧 Telefone e e-mail da mesma pessoa\n\n✅ DADOS PESSOAIS\n"
    )


async def test_direct_enrich_without_cpf_is_404(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, key: str
) -> None:
    lead = await new_lead(sandbox, customer={"name": "X", "phone": None, "email": None})
    body = assert_problem(
        await client.post(f"/api/v1/c2s/enrich/{lead['lead_id']}", headers=auth(key)), 404
    )
    assert body["error"] == "Could not find CPF via Diretrix"


async def test_direct_enrich_with_the_work_api_failing_is_502(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, key: str
) -> None:
    lead = await new_lead(sandbox, person_index=15)
    await sandbox.set_faults("work_api", soft_error_rate=1.0, soft_error_kind="no_credits")
    body = assert_problem(
        await client.post(f"/api/v1/c2s/enrich/{lead['lead_id']}", headers=auth(key)), 502
    )
    assert body["error"] == "External service error"
    assert await sandbox.messages(lead["lead_id"]) == []


# --- customer lookups ------------------------------------------------------------------------


async def test_customer_lookup_by_every_identifier(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, key: str
) -> None:
    person = PEOPLE.person(16)
    by_cpf = await client.get(
        "/api/v1/contributor/customer", params={"cpf": person.cpf}, headers=auth(key)
    )
    assert by_cpf.status_code == 200, by_cpf.text
    view = by_cpf.json()
    assert view["personal_info"]["cpf"] == person.cpf
    assert view["personal_info"]["name"]
    assert view["personal_info"]["birth_date"]
    assert view["addresses"]
    assert view["metadata"]["sources"] == ["work_api"]
    party_id = view["metadata"]["party_id"]
    email = view["contact_info"]["emails"][0]["email"]
    phone = view["contact_info"]["phones"][0]["phone"]
    for params in ({"cpf": person.cpf}, {"email": email.upper()}, {"phone": phone}):
        again = await client.get("/api/v1/contributor/customer", params=params, headers=auth(key))
        assert again.status_code == 200, (params, again.text)
        assert again.json()["metadata"]["party_id"] == party_id
        assert again.json()["metadata"]["sources"] == ["local_db"]
    name = view["personal_info"]["name"].split()[0].lower()
    by_name = await client.get(
        "/api/v1/contributor/customer", params={"name": name}, headers=auth(key)
    )
    assert by_name.status_code == 200
    detail = await client.get(f"/api/v1/customers/{party_id}", headers=auth(key))
    assert detail.status_code == 200
    assert detail.json()["customer"]["cpf_cnpj"] == person.cpf
    assert detail.json()["enrichment_data"]["cpf"] == person.cpf


async def test_customer_lookup_needs_an_identifier(
    client: AsyncTestClient[Litestar], key: str
) -> None:
    body = assert_problem(await client.get("/api/v1/contributor/customer", headers=auth(key)), 400)
    assert "At least one identifier required" in body["error"]


async def test_enrich_by_unknown_email_reports_the_match(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, key: str
) -> None:
    lead = await new_lead(sandbox, person_index=17)  # registers the person's contacts
    response = await client.post(
        "/api/v1/enrich", json={"email": lead["customer"]["email"]}, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["personal_info"]["cpf"] == lead["cpf"]
    assert view["match"]["source"] == "diretrix"


async def test_unknown_customer_id_is_404(client: AsyncTestClient[Litestar], key: str) -> None:
    assert_problem(
        await client.get(
            "/api/v1/customers/00000000-0000-4000-8000-000000000000", headers=auth(key)
        ),
        404,
    )


async def test_batch_answers_item_by_item(client: AsyncTestClient[Litestar], key: str) -> None:
    person = PEOPLE.person(18)
    response = await client.post(
        "/api/v1/enrich/batch",
        json={"items": [{"cpf": person.cpf}, {"cpf": "12345678900"}, {}]},
        headers=auth(key),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["status"] for r in body["results"]] == [200, 400, 400]
    assert body["results"][1]["field"] == "cpf"
    assert (body["succeeded"], body["failed"]) == (1, 2)


async def test_batch_refuses_more_than_100_items(
    client: AsyncTestClient[Litestar], key: str
) -> None:
    response = await client.post(
        "/api/v1/enrich/batch", json={"items": [{"cpf": "1"}] * 101}, headers=auth(key)
    )
    assert_problem(response, 400)


async def test_basic_lead_processing(client: AsyncTestClient[Litestar], key: str) -> None:
    person = PEOPLE.person(19)
    response = await client.post(
        "/api/v1/leads",
        json={
            "lead_id": "lead-19",
            "personal_info": {"name": "Someone", "cpf": person.cpf},
            "contact_info": {"phones": []},
        },
        headers=auth(key),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["data"]["customer"]["cpf_cnpj"] == person.cpf


# --- Work API proxy --------------------------------------------------------------------------


async def test_work_all_serves_the_dossier_verbatim_from_cache(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, key: str
) -> None:
    cpf = PEOPLE.cpf_for(20)
    first = await client.get(
        "/api/v1/work/modules/all", params={"documento": cpf}, headers=auth(key)
    )
    second = await client.get(
        "/api/v1/work/modules/all", params={"documento": cpf}, headers=auth(key)
    )
    assert first.status_code == second.status_code == 200
    assert first.content == second.content == PEOPLE.dossier_json(cpf)
    calls = (await sandbox.counters()).get("work_api", {})
    assert sum(calls.values()) == 1  # the second answer came from the shared cache


async def test_work_cep_module(client: AsyncTestClient[Litestar], key: str) -> None:
    response = await client.get(
        "/api/v1/work/modules/cep", params={"documento": "01304001"}, headers=auth(key)
    )
    assert response.status_code == 200
    assert isinstance(response.json(), list)


async def test_work_all_rejects_an_invalid_cpf(client: AsyncTestClient[Litestar], key: str) -> None:
    body = assert_problem(
        await client.get(
            "/api/v1/work/modules/all", params={"documento": "12345678900"}, headers=auth(key)
        ),
        400,
    )
    assert body["errors"][0]["field"] == "cpf"


# --- Idempotency-Key -----------------------------------------------------------------------


async def test_idempotency_key_replays_the_first_answer(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, key: str
) -> None:
    lead = await new_lead(sandbox, person_index=21)
    headers = {**auth(key), "Idempotency-Key": f"enrich-{lead['lead_id']}"}
    url = f"/api/v1/c2s/enrich/{lead['lead_id']}"
    first = await client.post(url, headers=headers)
    second = await client.post(url, headers=headers)
    assert first.status_code == second.status_code == 200
    assert second.content == first.content
    assert second.headers["idempotent-replayed"] == "true"
    assert len(await sandbox.messages(lead["lead_id"])) == 1  # one message, not two


async def test_idempotency_key_with_another_body_is_422(
    client: AsyncTestClient[Litestar], key: str
) -> None:
    headers = {**auth(key), "Idempotency-Key": "same-key-different-body"}
    person = PEOPLE.person(22)
    first = await client.post("/api/v1/enrich", json={"cpf": person.cpf}, headers=headers)
    assert first.status_code == 200
    other = await client.post("/api/v1/enrich", json={"cpf": PEOPLE.cpf_for(23)}, headers=headers)
    assert_problem(other, 422)


async def test_idempotency_key_compares_the_request_not_the_bytes(
    client: AsyncTestClient[Litestar], key: str
) -> None:
    headers = {**auth(key), "Idempotency-Key": "same-key-respaced-body"}
    headers["Content-Type"] = "application/json"
    cpf = PEOPLE.person(25).cpf
    first = await client.post("/api/v1/enrich", content=f'{{"cpf":"{cpf}"}}', headers=headers)
    assert first.status_code == 200
    # The same parameters spelled with other whitespace: a retry, not a misuse (422).
    spaced = f'{{ "cpf" : "{cpf}" }}'
    retry = await client.post("/api/v1/enrich", content=spaced, headers=headers)
    assert retry.status_code == 200
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.content == first.content


async def test_idempotency_key_in_flight_is_409(
    live_url: str, http: aiohttp.ClientSession, sandbox: SandboxAdmin, key: str
) -> None:
    lead = await new_lead(sandbox, person_index=24)
    await sandbox.set_faults("work_api", latency_ms=600)
    headers = {**auth(key), "Idempotency-Key": f"slow-{lead['lead_id']}"}
    url = f"{live_url}/api/v1/c2s/enrich/{lead['lead_id']}"

    async def post() -> tuple[int, str, dict[str, Any]]:
        async with http.post(url, headers=headers) as response:
            return response.status, response.headers["content-type"], await response.json()

    (status1, _, _), (status2, type2, body2) = await asyncio.gather(post(), _later(post(), 0.2))
    assert status1 == 200
    assert status2 == 409
    assert type2.startswith(PROBLEM)
    assert body2["status"] == 409
    assert len(await sandbox.messages(lead["lead_id"])) == 1
