"""Freshness (``max_age``, ``enriched_at``, ``data_age_s``) and the match threshold
(``min_likelihood``) of the lookups, the batch and ``/leads/process`` (issue #15 parts 4-5).

Paid calls are counted by the sandbox; stored data is aged by moving its ``enriched_at`` back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.factories import issue_key
from tests.support.sandbox import PEOPLE

if TYPE_CHECKING:
    import asyncpg
    from litestar import Litestar
    from litestar.testing import AsyncTestClient

    from tests.support.sandbox import SandboxAdmin

pytestmark = pytest.mark.integration

CUSTOMER = "/api/v1/contributor/customer"
# A name nothing like any synthetic person's: a contact's candidate scores low against it.
STRANGER = "Xisto Quebrangulo Wyvern"


@pytest.fixture(scope="module")
async def enrich_key(database_url: str) -> str:
    plaintext, _ = await issue_key(database_url, tenant="fresh", scopes="read,enrich")
    return plaintext


@pytest.fixture(scope="module")
async def read_key(database_url: str) -> str:
    plaintext, _ = await issue_key(database_url, tenant="fresh", scopes="read")
    return plaintext


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def work_calls(sandbox: SandboxAdmin) -> int:
    return sum((await sandbox.counters()).get("work_api", {}).values())


async def age_enrichment(db: asyncpg.Pool, cpf: str, seconds: int) -> None:
    """Move the stored dossier of ``cpf`` back in time by ``seconds``."""
    await db.execute(
        """UPDATE core.party_enrichments AS e
              SET enriched_at = now() - make_interval(secs => $2)
             FROM core.parties AS p
            WHERE p.id = e.party_id AND p.cpf_cnpj = $1""",
        cpf,
        seconds,
    )


def enriched_at(view: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(view["enriched_at"].replace("Z", "+00:00"))


async def test_max_age_refetches_old_data_once_and_serves_young_data(
    client: AsyncTestClient[Litestar],
    sandbox: SandboxAdmin,
    db: asyncpg.Pool,
    enrich_key: str,
) -> None:
    cpf = PEOPLE.cpf_for(701)
    first = await client.get(CUSTOMER, params={"cpf": cpf}, headers=auth(enrich_key))
    assert first.status_code == 200, first.text
    assert first.json()["enriched_at"] is not None
    assert first.json()["data_age_s"] <= 5
    calls = await work_calls(sandbox)

    young = await client.get(
        CUSTOMER, params={"cpf": cpf, "max_age": 3600}, headers=auth(enrich_key)
    )
    assert young.status_code == 200
    assert await work_calls(sandbox) == calls  # young enough: served from storage

    await age_enrichment(db, cpf, 7200)
    stored = await client.get(CUSTOMER, params={"cpf": cpf}, headers=auth(enrich_key))
    assert stored.json()["data_age_s"] >= 7200  # no max_age: any age is served, and told
    assert await work_calls(sandbox) == calls

    await asyncio.sleep(1.2)  # the cached Work API body is now older than max_age=1 too
    refreshed = await client.get(
        CUSTOMER, params={"cpf": cpf, "max_age": 1}, headers=auth(enrich_key)
    )
    assert refreshed.status_code == 200, refreshed.text
    assert await work_calls(sandbox) == calls + 1
    assert refreshed.json()["data_age_s"] <= 1
    assert enriched_at(refreshed.json()) > enriched_at(stored.json())
    assert refreshed.json()["personal_info"]["cpf"] == cpf

    again = await client.get(CUSTOMER, params={"cpf": cpf, "max_age": 60}, headers=auth(enrich_key))
    assert again.status_code == 200
    assert await work_calls(sandbox) == calls + 1


async def test_old_data_for_a_read_only_key_is_403_naming_enrich(
    client: AsyncTestClient[Litestar],
    sandbox: SandboxAdmin,
    db: asyncpg.Pool,
    enrich_key: str,
    read_key: str,
) -> None:
    cpf = PEOPLE.cpf_for(702)
    assert (
        await client.get(CUSTOMER, params={"cpf": cpf}, headers=auth(enrich_key))
    ).status_code == 200
    await age_enrichment(db, cpf, 600)
    calls = await work_calls(sandbox)
    refused = await client.get(CUSTOMER, params={"cpf": cpf, "max_age": 60}, headers=auth(read_key))
    assert refused.status_code == 403
    assert "'enrich' scope" in refused.json()["detail"]
    served = await client.get(
        CUSTOMER, params={"cpf": cpf, "max_age": 3600}, headers=auth(read_key)
    )
    assert served.status_code == 200
    assert 600 <= served.json()["data_age_s"] < 700
    assert await work_calls(sandbox) == calls


async def test_batch_max_age_item_value_wins_over_the_batch(
    client: AsyncTestClient[Litestar],
    sandbox: SandboxAdmin,
    db: asyncpg.Pool,
    enrich_key: str,
) -> None:
    old, kept = PEOPLE.cpf_for(703), PEOPLE.cpf_for(704)
    for cpf in (old, kept):
        stored = await client.post("/api/v1/enrich", json={"cpf": cpf}, headers=auth(enrich_key))
        assert stored.status_code == 200
        await age_enrichment(db, cpf, 7200)
    await asyncio.sleep(1.2)
    calls = await work_calls(sandbox)
    response = await client.post(
        "/api/v1/enrich/batch",
        json={"max_age": 1, "items": [{"cpf": old}, {"cpf": kept, "max_age": 86400}]},
        headers=auth(enrich_key),
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [200, 200]
    assert await work_calls(sandbox) == calls + 1  # only the item the batch's max_age covers
    assert results[0]["customer"]["data_age_s"] <= 1
    assert results[1]["customer"]["data_age_s"] >= 7200


@pytest.mark.parametrize(
    ("params", "field"),
    [({"max_age": "-1"}, "max_age"), ({"min_likelihood": "1.5"}, "min_likelihood")],
)
async def test_out_of_range_parameters_are_400_naming_the_field(
    client: AsyncTestClient[Litestar], enrich_key: str, params: dict[str, str], field: str
) -> None:
    response = await client.get(
        CUSTOMER, params={"cpf": PEOPLE.cpf_for(705), **params}, headers=auth(enrich_key)
    )
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == [field]
    body = await client.post(
        "/api/v1/enrich",
        json={"cpf": PEOPLE.cpf_for(705), field: float(params[field])},
        headers=auth(enrich_key),
    )
    assert body.status_code == 400
    assert field in body.text


async def test_min_likelihood_above_the_score_fetches_nothing_and_says_so(
    client: AsyncTestClient[Litestar],
    sandbox: SandboxAdmin,
    db: asyncpg.Pool,
    enrich_key: str,
) -> None:
    lead = await sandbox.create_lead(person_index=706)  # Diretrix now knows the contacts
    email = lead["customer"]["email"]
    calls = await work_calls(sandbox)
    weak = await client.get(
        CUSTOMER,
        params={"email": email, "name": STRANGER, "min_likelihood": 0.9},
        headers=auth(enrich_key),
    )
    assert weak.status_code == 200, weak.text
    view = weak.json()
    assert view["matched"] is False
    assert view["reason"] == "below_min_likelihood"
    assert view["match"]["score"] < 0.9
    assert view["match"]["matched"] is False
    assert view["personal_info"]["cpf"] is None  # the weak match's data is not shown
    assert await work_calls(sandbox) == calls
    assert (
        await db.fetchval("SELECT count(*) FROM core.parties WHERE cpf_cnpj = $1", lead["cpf"]) == 0
    )

    # The same lookup with a threshold below the score: enriched as before.
    accepted = await client.get(
        CUSTOMER,
        params={"email": email, "name": STRANGER, "min_likelihood": 0},
        headers=auth(enrich_key),
    )
    assert accepted.status_code == 200
    assert accepted.json()["matched"] is True
    assert accepted.json()["personal_info"]["cpf"] == lead["cpf"]
    assert await work_calls(sandbox) == calls + 1


async def test_leads_process_below_min_likelihood_sends_nothing(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, enrich_key: str
) -> None:
    weak = await sandbox.create_lead(person_index=707, customer={"name": STRANGER})
    calls = await work_calls(sandbox)
    response = await client.get(
        "/api/v1/leads/process",
        params={"id": weak["lead_id"], "min_likelihood": 0.9},
        headers=auth(enrich_key),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is False
    assert body["reason"] == "below_min_likelihood"
    assert body["matches"]
    for person in body["matches"]:
        assert person["match"]["matched"] is False
        assert person["match"]["reason"] == "below_min_likelihood"
        assert person["match"]["score"] < 0.9
    assert await work_calls(sandbox) == calls
    assert await sandbox.messages(weak["lead_id"]) == []

    # The person's own name scores above the threshold: enriched and messaged.
    strong = await sandbox.create_lead(person_index=708)
    done = await client.get(
        "/api/v1/leads/process",
        params={"id": strong["lead_id"], "min_likelihood": 0.9},
        headers=auth(enrich_key),
    )
    assert done.json()["success"] is True, done.text
    assert await work_calls(sandbox) == calls + 1
    assert len(await sandbox.messages(strong["lead_id"])) == 1

    bad = await client.get(
        "/api/v1/leads/process",
        params={"id": strong["lead_id"], "min_likelihood": 2},
        headers=auth(enrich_key),
    )
    assert bad.status_code == 400
    assert [e["field"] for e in bad.json()["errors"]] == ["min_likelihood"]


async def test_customer_by_id_carries_its_freshness(
    client: AsyncTestClient[Litestar], db: asyncpg.Pool, enrich_key: str
) -> None:
    cpf = PEOPLE.cpf_for(709)
    view = await client.get(CUSTOMER, params={"cpf": cpf}, headers=auth(enrich_key))
    await age_enrichment(db, cpf, 90)
    party_id = view.json()["metadata"]["party_id"]
    detail = await client.get(f"/api/v1/customers/{party_id}", headers=auth(enrich_key))
    assert detail.status_code == 200
    assert 90 <= detail.json()["data_age_s"] < 190
    assert detail.json()["enriched_at"] is not None
