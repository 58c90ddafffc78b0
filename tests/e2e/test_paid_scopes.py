"""Paid calls need the ``enrich`` scope (docs/security.md, "Scopes per operation").

A ``read``-only key is answered from stored data: no Diretrix or Work API call (counted by the
sandbox), no database write, 404 naming the ``enrich`` scope when nothing is stored. An ``enrich``
key fetches as before.
"""

from __future__ import annotations

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

ENRICH_HINT = "a key with the 'enrich' scope would fetch it"


@pytest.fixture(scope="module")
async def read_key(database_url: str) -> str:
    plaintext, _ = await issue_key(database_url, tenant="paid", scopes="read")
    return plaintext


@pytest.fixture(scope="module")
async def enrich_key(database_url: str) -> str:
    plaintext, _ = await issue_key(database_url, tenant="paid", scopes="read,enrich")
    return plaintext


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def paid_calls(sandbox: SandboxAdmin) -> int:
    counters = await sandbox.counters()
    return sum(counters.get("work_api", {}).values()) + sum(counters.get("diretrix", {}).values())


async def stored(db: asyncpg.Pool, cpf: str) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM core.parties WHERE cpf_cnpj = $1", cpf)
    return count


def assert_not_stored_problem(response: Any) -> None:
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert ENRICH_HINT in response.json()["detail"]


async def test_read_key_customer_lookup_makes_no_paid_call_and_no_write(
    client: AsyncTestClient[Litestar],
    sandbox: SandboxAdmin,
    db: asyncpg.Pool,
    read_key: str,
    enrich_key: str,
) -> None:
    cpf = PEOPLE.cpf_for(610)
    before = await paid_calls(sandbox)
    refused = await client.get(
        "/api/v1/contributor/customer", params={"cpf": cpf}, headers=auth(read_key)
    )
    assert_not_stored_problem(refused)
    assert await paid_calls(sandbox) == before
    assert await stored(db, cpf) == 0
    # The same question with `enrich`: fetched from the Work API and stored, as before.
    fetched = await client.get(
        "/api/v1/contributor/customer", params={"cpf": cpf}, headers=auth(enrich_key)
    )
    assert fetched.status_code == 200
    assert fetched.json()["metadata"]["sources"] == ["work_api"]
    assert await paid_calls(sandbox) == before + 1
    assert await stored(db, cpf) == 1
    # Now stored: the read key is answered from the database, still without a paid call.
    again = await client.get(
        "/api/v1/contributor/customer", params={"cpf": cpf}, headers=auth(read_key)
    )
    assert again.status_code == 200
    assert again.json()["metadata"]["sources"] == ["local_db"]
    assert await paid_calls(sandbox) == before + 1


async def test_read_key_lookup_by_email_does_not_resolve_it_through_diretrix(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, read_key: str
) -> None:
    person = PEOPLE.person(611)
    before = await paid_calls(sandbox)
    refused = await client.get(
        "/api/v1/contributor/customer", params={"email": person.email}, headers=auth(read_key)
    )
    assert_not_stored_problem(refused)
    assert await paid_calls(sandbox) == before


async def test_read_key_work_module_is_answered_from_the_cache_only(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, read_key: str, enrich_key: str
) -> None:
    cpf = PEOPLE.cpf_for(612)
    url = "/api/v1/work/modules/all"
    before = await paid_calls(sandbox)
    refused = await client.get(url, params={"documento": cpf}, headers=auth(read_key))
    assert_not_stored_problem(refused)
    assert await paid_calls(sandbox) == before
    fetched = await client.get(url, params={"documento": cpf}, headers=auth(enrich_key))
    assert fetched.status_code == 200
    assert await paid_calls(sandbox) == before + 1
    # A cached dossier is not a paid call: the read key gets it, byte for byte.
    cached = await client.get(url, params={"documento": cpf}, headers=auth(read_key))
    assert cached.status_code == 200
    assert cached.content == fetched.content
    assert await paid_calls(sandbox) == before + 1
    # One module, uncached: the same rule.
    module = await client.get(
        "/api/v1/work/modules/cpf",
        params={"documento": PEOPLE.cpf_for(613)},
        headers=auth(read_key),
    )
    assert_not_stored_problem(module)
    assert await paid_calls(sandbox) == before + 1


async def test_read_key_cannot_call_the_paid_posts(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, read_key: str
) -> None:
    before = await paid_calls(sandbox)
    body = {"cpf": PEOPLE.cpf_for(614)}
    for url, payload in (
        ("/api/v1/enrich", body),
        ("/api/v1/enrich/batch", {"items": [body]}),
    ):
        response = await client.post(url, json=payload, headers=auth(read_key))
        assert response.status_code == 403
        assert "'enrich' scope" in response.json()["detail"]
    assert await paid_calls(sandbox) == before
