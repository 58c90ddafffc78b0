"""``/api/v1/enrich/jobs`` through the real app in-process (PostgreSQL and Redis, no worker):
what a client sees on submission, reads, pages, cancellation, and across tenants."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from tests.support.db import CANCEL_OPEN_BULK_JOBS
from tests.support.factories import issue_key, new_cpf

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from litestar import Litestar
    from litestar.testing import AsyncTestClient

pytestmark = pytest.mark.integration

JOBS = "/api/v1/enrich/jobs"


@pytest.fixture(autouse=True, scope="module")
async def _no_job_left_open(database_url: str) -> AsyncIterator[None]:
    """These jobs are never run: end them, so a worker started by a later test (the database is
    the session's) does not spend thousands of upstream calls on them."""
    yield
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(CANCEL_OPEN_BULK_JOBS)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def acme(database_url: str) -> dict[str, str]:
    plaintext, _ = await issue_key(database_url, tenant="bulk-acme", scopes="read,enrich")
    return {"Authorization": f"Bearer {plaintext}"}


@pytest.fixture(scope="module")
async def beta(database_url: str) -> dict[str, str]:
    plaintext, _ = await issue_key(database_url, tenant="bulk-beta", scopes="read,enrich")
    return {"Authorization": f"Bearer {plaintext}"}


async def submit(
    client: AsyncTestClient[Litestar], headers: dict[str, str], body: dict[str, Any]
) -> Any:  # Any: the httpx response
    return await client.post(JOBS, json=body, headers=headers)


async def test_ten_thousand_rows_are_accepted_and_stored_before_the_202(
    client: AsyncTestClient[Litestar], acme: dict[str, str]
) -> None:
    items = [
        {
            "cpf": new_cpf(),
            "email": f"customer.{i}@example.com",
            "phone": "+55 11 91234-5678",
            "name": "Maria Aparecida dos Santos Silva",
            "ref": f"crm-export-2026-12-row-{i:06d}",
        }
        for i in range(10_000)
    ]
    answer = await submit(client, acme, {"items": items, "max_age": 3600, "min_likelihood": 0.8})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert answer.headers["location"] == f"{JOBS}/{body['id']}"
    assert body["state"] == "queued"
    assert body["counts"]["total"] == body["counts"]["queued"] == 10_000
    assert (body["max_age_s"], body["min_likelihood"]) == (3600, 0.8)
    view = await client.get(f"{JOBS}/{body['id']}", headers=acme)
    assert view.json()["counts"]["queued"] == 10_000
    page = (await client.get(f"{JOBS}/{body['id']}/results?limit=3", headers=acme)).json()
    assert [(i["seq"], i["ref"], i["state"]) for i in page["items"]] == [
        (n, f"crm-export-2026-12-row-{n:06d}", "queued") for n in range(3)
    ]
    assert "customer" not in page["items"][0]
    after = await client.get(
        f"{JOBS}/{body['id']}/results", params={"cursor": page["next_cursor"]}, headers=acme
    )
    assert after.json()["items"][0]["seq"] == 3
    assert len(after.json()["items"]) == 100  # the default page


async def test_one_invalid_row_rejects_the_job_and_names_each_invalid_row(
    client: AsyncTestClient[Litestar], acme: dict[str, str]
) -> None:
    items = [{"cpf": new_cpf()} for _ in range(5)]
    items[2] = {"cpf": "111.111.111-11", "ref": "bad-cpf"}
    items[4] = {"email": "nope"}
    answer = await submit(client, acme, {"items": items})
    assert answer.status_code == 400
    problem = answer.json()
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in problem["errors"]] == ["items[2].cpf", "items[4].email"]
    assert "111" not in answer.text  # the invalid value is not echoed


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": []}, "items"),
        ({"items": [{"cpf": "52998224725", "extra": 1}]}, "items[0]"),
        ({"items": [{"cpf": "52998224725"}], "callback_url": "ftp://x"}, "callback_url"),
        ({"items": [{"cpf": "52998224725"}], "min_likelihood": 2}, "min_likelihood"),
    ],
)
async def test_malformed_jobs_are_a_400_naming_the_field(
    client: AsyncTestClient[Litestar], acme: dict[str, str], body: dict[str, Any], field: str
) -> None:
    answer = await submit(client, acme, body)
    assert answer.status_code == 400, answer.text
    assert field in {e["field"] for e in answer.json()["errors"]}


async def test_a_body_over_the_bulk_limit_is_a_413(
    client: AsyncTestClient[Litestar], acme: dict[str, str], app: Litestar
) -> None:
    limit = 16 * 1024 * 1024
    big = b'{"items":[{"name":"' + b"x" * limit + b'"}]}'
    answer = await client.post(
        JOBS, content=big, headers={**acme, "Content-Type": "application/json"}
    )
    assert answer.status_code == 413


async def test_another_tenants_job_is_not_found_and_untouched(
    client: AsyncTestClient[Litestar], acme: dict[str, str], beta: dict[str, str]
) -> None:
    created = (await submit(client, acme, {"items": [{"cpf": new_cpf()}]})).json()
    for method, path in (
        ("GET", f"{JOBS}/{created['id']}"),
        ("GET", f"{JOBS}/{created['id']}/results"),
        ("DELETE", f"{JOBS}/{created['id']}"),
    ):
        answer = await client.request(method, path, headers=beta)
        assert answer.status_code == 404, (method, path, answer.text)
        assert created["id"] in answer.json()["detail"]
    assert (await client.get(f"{JOBS}/{created['id']}", headers=acme)).json()["state"] == "queued"
    unknown = await client.get(f"{JOBS}/{uuid.uuid4()}", headers=acme)
    assert unknown.status_code == 404
    not_uuid = await client.get(f"{JOBS}/not-a-uuid", headers=acme)
    assert not_uuid.status_code in (400, 404)
    assert not_uuid.headers["content-type"].startswith("application/problem+json")


async def test_cancel_before_any_worker_cancels_every_row(
    client: AsyncTestClient[Litestar], acme: dict[str, str]
) -> None:
    created = (await submit(client, acme, {"items": [{"cpf": new_cpf()} for _ in range(3)]})).json()
    answer = await client.delete(f"{JOBS}/{created['id']}", headers=acme)
    assert answer.status_code == 200
    body = answer.json()
    assert body["state"] == "cancelled"
    assert body["counts"]["cancelled"] == 3
    assert body["finished_at"] is not None
    again = await client.delete(f"{JOBS}/{created['id']}", headers=acme)
    assert again.json()["counts"] == body["counts"]  # an ended job is left as it is
    page = (await client.get(f"{JOBS}/{created['id']}/results", headers=acme)).json()
    assert {i["state"] for i in page["items"]} == {"cancelled"}


async def test_bad_cursors_and_limits_are_400(
    client: AsyncTestClient[Litestar], acme: dict[str, str]
) -> None:
    created = (await submit(client, acme, {"items": [{"cpf": new_cpf()}]})).json()
    path = f"{JOBS}/{created['id']}/results"
    for params in ({"cursor": "bm90LWEtY3Vyc29y"}, {"limit": 0}, {"limit": 1001}):
        answer = await client.get(path, params=params, headers=acme)
        assert answer.status_code == 400, (params, answer.text)


async def test_an_idempotent_retry_gets_the_same_job(
    client: AsyncTestClient[Litestar], acme: dict[str, str]
) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"items": [{"cpf": new_cpf()} for _ in range(2)]}
    first = await client.post(JOBS, json=body, headers={**acme, **key})
    second = await client.post(JOBS, json=body, headers={**acme, **key})
    assert first.status_code == second.status_code == 202
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["location"] == first.headers["location"]
    assert second.headers["idempotent-replayed"] == "true"


async def test_a_read_only_key_cannot_submit_but_can_read(
    client: AsyncTestClient[Litestar], acme: dict[str, str], database_url: str
) -> None:
    plaintext, _ = await issue_key(database_url, tenant="bulk-acme", scopes="read")
    reader = {"Authorization": f"Bearer {plaintext}"}
    refused = await submit(client, reader, {"items": [{"cpf": new_cpf()}]})
    assert refused.status_code == 403
    created = (await submit(client, acme, {"items": [{"cpf": new_cpf()}]})).json()
    assert (await client.get(f"{JOBS}/{created['id']}", headers=reader)).status_code == 200


async def test_the_tenants_jobs_are_listed_newest_first_page_by_page(
    client: AsyncTestClient[Litestar], database_url: str, beta: dict[str, str]
) -> None:
    tenant = f"bulk-list-{uuid.uuid4().hex[:8]}"
    plaintext, _ = await issue_key(database_url, tenant=tenant, scopes="read,enrich")
    own = {"Authorization": f"Bearer {plaintext}"}
    ids = [
        (await submit(client, own, {"items": [{"cpf": new_cpf()} for _ in range(n)]})).json()["id"]
        for n in (1, 2, 3, 4, 5)
    ]
    cancelled = ids[1]
    assert (await client.delete(f"{JOBS}/{cancelled}", headers=own)).status_code == 200
    beta_job = (await submit(client, beta, {"items": [{"cpf": new_cpf()}]})).json()["id"]

    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        answer = await client.get(JOBS, params=params, headers=own)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page["items"]) <= 2
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [job["id"] for job in seen] == ids[::-1]  # newest first, no gap, no duplicate
    assert [job["counts"]["total"] for job in seen] == [5, 4, 3, 2, 1]
    assert beta_job not in {job["id"] for job in seen}

    only = (await client.get(JOBS, params={"state": "cancelled"}, headers=own)).json()
    assert [(job["id"], job["state"]) for job in only["items"]] == [(cancelled, "cancelled")]
    assert only["next_cursor"] is None
    queued = (await client.get(JOBS, params={"state": "queued"}, headers=own)).json()
    assert {job["id"] for job in queued["items"]} == set(ids) - {cancelled}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"state": "finished"}, "state"),
        ({"cursor": "bm90LWEtY3Vyc29y"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
    ],
)
async def test_a_bad_listing_is_a_400_naming_the_parameter(
    client: AsyncTestClient[Litestar], acme: dict[str, str], params: dict[str, Any], field: str
) -> None:
    answer = await client.get(JOBS, params=params, headers=acme)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert [error["field"] for error in answer.json()["errors"]] == [field]
