"""The audit trail end to end: real requests through the app (PostgreSQL, Redis, the sandbox over
HTTP), a webhook job run by a worker process, the admin search, and nothing lost on SIGTERM.

Each test works in a tenant of its own, so the records it reads are its own.
"""

from __future__ import annotations

import os
import signal
import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from domain.audit import SubjectDigester
from tests.support.factories import issue_key
from tests.support.polling import wait_until
from tests.support.processes import ChildProcess, free_port, granian_argv
from tests.support.sandbox import PEOPLE, WEBHOOK_SECRET

if TYPE_CHECKING:
    from collections.abc import Callable

    import asyncpg
    from litestar import Litestar
    from litestar.testing import AsyncTestClient

    from app.config import Settings
    from tests.support.sandbox import SandboxAdmin as Sandbox

pytestmark = pytest.mark.integration

AUDIT = "/api/v1/admin/audit"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def digester(settings: Settings) -> SubjectDigester:
    return SubjectDigester(settings.cache_key_salt.get().encode())


async def records_of(db: asyncpg.Pool, tenant: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT operation, subject, paid, upstream, key_id, request_id"
        " FROM audit.access_log WHERE tenant = $1 ORDER BY at, id",
        tenant,
    )


async def wait_for_records(db: asyncpg.Pool, tenant: str, count: int) -> list[asyncpg.Record]:
    async def enough() -> list[asyncpg.Record] | None:
        rows = await records_of(db, tenant)
        return rows if len(rows) >= count else None

    rows = await wait_until(enough, timeout_s=15, what=f"{count} audit records of {tenant}")
    assert isinstance(rows, list)
    return rows


async def test_every_read_of_a_person_is_one_record(
    client: AsyncTestClient[Litestar],
    sandbox: Sandbox,
    db: asyncpg.Pool,
    database_url: str,
    e2e_settings: Settings,
) -> None:
    tenant = f"audit-{uuid.uuid4().hex[:8]}"
    key, stored = await issue_key(database_url, tenant=tenant, scopes="read,enrich")
    headers = auth(key)
    subjects = digester(e2e_settings)
    lookup_cpf, enrich_cpf, work_cpf = (PEOPLE.cpf_for(n) for n in (911, 912, 913))
    batch_cpfs = [PEOPLE.cpf_for(614), PEOPLE.cpf_for(615)]

    found = await client.get(
        "/api/v1/contributor/customer", params={"cpf": lookup_cpf}, headers=headers
    )
    assert found.status_code == 200, found.text
    assert (
        await client.post("/api/v1/enrich", json={"cpf": enrich_cpf}, headers=headers)
    ).is_success
    batch = await client.post(
        "/api/v1/enrich/batch",
        json={"items": [{"cpf": c} for c in batch_cpfs] + [{"cpf": "12345678900"}]},
        headers=headers,
    )
    assert batch.status_code == 200, batch.text
    for _ in range(2):  # a paid miss, then a free cache hit
        module = await client.get(
            "/api/v1/work/modules/all", params={"documento": work_cpf}, headers=headers
        )
        assert module.status_code == 200, module.text
    party_id = found.json()["metadata"]["party_id"]
    assert (await client.get(f"/api/v1/customers/{party_id}", headers=headers)).is_success
    lead = await sandbox.create_lead(person_index=616)
    processed = await client.get(
        "/api/v1/leads/process", params={"id": lead["lead_id"]}, headers=headers
    )
    assert processed.json()["success"] is True, processed.text
    direct_lead = await sandbox.create_lead(person_index=617)
    enriched = await client.post(f"/api/v1/c2s/enrich/{direct_lead['lead_id']}", headers=headers)
    assert enriched.status_code == 200, enriched.text

    rows = await wait_for_records(db, tenant, 9)
    seen = [(r["operation"], r["subject"]) for r in rows]
    # The batch's items run concurrently: their two records in either order.
    assert sorted(seen[2:4]) == sorted(("batch", subjects.digest(c)) for c in batch_cpfs)
    assert seen[:2] + seen[4:] == [
        ("lookup", subjects.digest(lookup_cpf)),
        ("lookup", subjects.digest(enrich_cpf)),
        ("work_module", subjects.digest(work_cpf)),
        ("work_module", subjects.digest(work_cpf)),
        ("customer", subjects.digest(lookup_cpf)),
        ("lead", subjects.digest(lead["cpf"])),
        ("lead", subjects.digest(direct_lead["cpf"])),
    ]
    by_op = {(r["operation"], r["subject"]): r for r in rows}
    assert (rows[0]["paid"], rows[0]["upstream"]) == (True, "work_api")
    paid_miss, free_hit = (r for r in rows if r["operation"] == "work_module")
    assert (paid_miss["paid"], free_hit["paid"]) == (True, False)
    assert not by_op[("customer", subjects.digest(lookup_cpf))]["paid"]
    assert "diretrix" in by_op[("lead", subjects.digest(direct_lead["cpf"]))]["upstream"]
    assert {r["key_id"] for r in rows} == {str(stored.id)}
    assert all(r["request_id"] for r in rows)
    # No CPF anywhere in the table.
    text = await db.fetchval("SELECT string_agg(t::text, '|') FROM audit.access_log t")
    for cpf in (lookup_cpf, enrich_cpf, work_cpf, *batch_cpfs, lead["cpf"], direct_lead["cpf"]):
        assert cpf not in text


async def test_the_admin_search_pages_its_own_tenant_only(
    client: AsyncTestClient[Litestar], sandbox: Sandbox, db: asyncpg.Pool, database_url: str
) -> None:
    tenant, other = f"audit-{uuid.uuid4().hex[:8]}", f"audit-{uuid.uuid4().hex[:8]}"
    reader, _ = await issue_key(database_url, tenant=tenant, scopes="read,enrich")
    stranger, _ = await issue_key(database_url, tenant=other, scopes="read,enrich")
    admin, _ = await issue_key(database_url, tenant=tenant, scopes="admin")
    cpfs = [PEOPLE.cpf_for(n) for n in range(621, 626)]
    for cpf in cpfs:
        for key in (reader, stranger):
            answer = await client.post("/api/v1/enrich", json={"cpf": cpf}, headers=auth(key))
            assert answer.status_code == 200, answer.text
    await wait_for_records(db, tenant, 5)
    await wait_for_records(db, other, 5)

    pages: list[list[dict[str, Any]]] = []
    params: dict[str, str] = {"limit": "2"}
    while True:
        answer = await client.get(AUDIT, params=params, headers=auth(admin))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.append(body["records"])
        if body["next_cursor"] is None:
            break
        params = {"limit": "2", "cursor": body["next_cursor"]}
    assert [len(p) for p in pages] == [2, 2, 1]
    records = [r for page in pages for r in page]
    assert {r["tenant"] for r in records} == {tenant}
    stamps = [r["at"] for r in records]
    assert stamps == sorted(stamps, reverse=True)

    one = await client.get(AUDIT, params={"subject_cpf": cpfs[0]}, headers=auth(admin))
    assert one.status_code == 200
    [record] = one.json()["records"]
    assert cpfs[0] not in one.text  # the subject is a digest; the CPF is never echoed
    assert record["operation"] == "lookup"

    bad = await client.get(AUDIT, params={"subject_cpf": "12345678900"}, headers=auth(admin))
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert "12345678900" not in bad.text
    forged = await client.get(AUDIT, params={"cursor": "bm9wZQ"}, headers=auth(admin))
    assert forged.status_code == 400
    too_many = await client.get(AUDIT, params={"limit": "1001"}, headers=auth(admin))
    assert too_many.status_code == 400
    assert (await client.get(AUDIT, headers=auth(reader))).status_code == 403

    # from/to are RFC 3339 times (an offset or none: UTC); a number is not one.
    window = {"from": min(stamps), "to": "2999-01-01T00:00:00"}
    within = await client.get(AUDIT, params={**window, "limit": "10"}, headers=auth(admin))
    assert within.status_code == 200, within.text
    assert len(within.json()["records"]) == 5
    later = await client.get(AUDIT, params={"from": "2999-01-01T00:00:00Z"}, headers=auth(admin))
    assert later.json()["records"] == []
    for field, value in (("from", "12"), ("from", "-4.5e-231"), ("to", "2026-13-01T00:00:00Z")):
        answer = await client.get(AUDIT, params={field: value}, headers=auth(admin))
        assert answer.status_code == 400, (field, value, answer.text)
        assert [e["field"] for e in answer.json()["errors"]] == [field]


@pytest.mark.slow
async def test_a_webhook_job_records_the_person_it_enriched(
    client: AsyncTestClient[Litestar],
    sandbox: Sandbox,
    db: asyncpg.Pool,
    e2e_settings: Settings,
    start_worker: Callable[..., ChildProcess],
) -> None:
    lead = await sandbox.create_lead(person_index=631)
    body = {
        "id": lead["lead_id"],
        "hook_action": "on_create_lead",
        "attributes": {"updated_at": "2025-11-26T10:00:00Z", "customer": lead["customer"]},
    }
    answer = await client.post(
        "/api/v1/webhooks/c2s", json=body, headers={"X-Webhook-Token": WEBHOOK_SECRET}
    )
    assert answer.json()["processed"] == 1
    subject = digester(e2e_settings).digest(lead["cpf"])
    worker = start_worker(concurrency=1)

    async def recorded() -> asyncpg.Record | None:
        return await db.fetchrow(
            "SELECT tenant, operation, paid, key_id FROM audit.access_log"
            " WHERE subject = $1 AND operation = 'webhook'",
            subject,
        )

    await wait_until(recorded, timeout_s=45, what=f"the job's record\n{worker.output()}")
    row = await recorded()
    assert row is not None
    assert dict(row) == {"tenant": "", "operation": "webhook", "paid": True, "key_id": None}
    assert worker.terminate(timeout_s=15) == 0


async def test_records_buffered_at_sigterm_are_written_by_the_drain(
    e2e_env: dict[str, str], sandbox: Sandbox, db: asyncpg.Pool, database_url: str
) -> None:
    tenant = f"audit-{uuid.uuid4().hex[:8]}"
    key, _ = await issue_key(database_url, tenant=tenant, scopes="read,enrich")
    port = free_port()
    # A flush period longer than the test: only the drain can write the records.
    env = {**os.environ, **e2e_env, "AUDIT_FLUSH_MS": "60000", "LOG_LEVEL": "INFO"}
    server = ChildProcess("api", granian_argv("app.main:create_app", port), env)
    try:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

            async def ready() -> bool:
                try:
                    async with http.get(f"{url}/health") as answer:
                        return answer.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(ready, timeout_s=30, what=f"the app to start\n{server.output()}")
            for n in range(641, 644):
                async with http.post(
                    f"{url}/api/v1/enrich", json={"cpf": PEOPLE.cpf_for(n)}, headers=auth(key)
                ) as answer:
                    assert answer.status == 200, await answer.text()
        assert await records_of(db, tenant) == []  # still buffered
        server.signal(signal.SIGTERM)
        assert await server.wait(timeout_s=20) == 0, server.output()
    finally:
        server.stop()
    rows = await records_of(db, tenant)
    assert [r["operation"] for r in rows] == ["lookup"] * 3
