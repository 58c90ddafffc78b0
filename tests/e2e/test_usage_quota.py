"""Usage and paid-call quotas end to end (docs/security.md, "Usage and quotas").

The real app (in-process, and under Granian for the SIGTERM drain), the sandbox counting the
upstream calls it receives, PostgreSQL holding the counts: a key with a quota of 2 makes two paid
calls, then gets 429 ``quota-exceeded`` with ``Retry-After`` and the Work API sees no third call;
cached and stored reads stay free; ``GET /api/v1/usage`` shows exactly what was paid, per day,
key and upstream, to the key's own tenant only; counts still in memory are written when the API
process or a worker is told to stop.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from tests.support.factories import issue_key
from tests.support.polling import wait_until
from tests.support.processes import APP_FACTORY, ChildProcess, granian_server, worker_argv
from tests.support.sandbox import PEOPLE, WEBHOOK_SECRET

if TYPE_CHECKING:
    import asyncpg
    from litestar import Litestar
    from litestar.testing import AsyncTestClient

    from tests.support.sandbox import SandboxAdmin

pytestmark = pytest.mark.integration

QUOTA_TYPE = "https://c2s-api.dev/problems/quota-exceeded"
DOSSIER = "/api/v1/work/modules/all"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def fresh_tenant() -> str:
    return f"usage-{uuid.uuid4().hex[:8]}"


async def work_api_calls(sandbox: SandboxAdmin) -> int:
    return sum((await sandbox.counters()).get("work_api", {}).values())


def seconds_to_midnight() -> float:
    now = dt.datetime.now(dt.UTC)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    return (midnight - now).total_seconds()


def assert_quota_exceeded(response: Any) -> None:
    assert response.status_code == 429
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == QUOTA_TYPE
    assert "quota" in body["detail"]
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= seconds_to_midnight() + 2
    assert body["retry_after"] == retry_after


async def test_a_key_with_a_quota_of_two_pays_twice_then_gets_429_and_no_third_call(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, database_url: str
) -> None:
    tenant = fresh_tenant()
    key, stored = await issue_key(database_url, tenant=tenant, paid_quota=2)
    first, second, third = (PEOPLE.cpf_for(i) for i in (7101, 7102, 7103))
    for cpf in (first, second):
        paid = await client.get(DOSSIER, params={"documento": cpf}, headers=auth(key))
        assert paid.status_code == 200
    assert await work_api_calls(sandbox) == 2
    refused = await client.get(DOSSIER, params={"documento": third}, headers=auth(key))
    assert_quota_exceeded(refused)
    assert await work_api_calls(sandbox) == 2  # the Work API never saw the third call
    # Cached and stored data are free and keep working past the quota.
    cached = await client.get(DOSSIER, params={"documento": first}, headers=auth(key))
    assert cached.status_code == 200
    cached_lookup = await client.get(
        "/api/v1/contributor/customer", params={"cpf": second}, headers=auth(key)
    )
    # The proxy caches the dossier (it does not store the customer): the customer lookup is
    # answered from the cached dossier without a Work API call.
    assert cached_lookup.status_code == 200
    assert await work_api_calls(sandbox) == 2
    # A batch: the item over the quota is an item error, the others are answered.
    batch = await client.post(
        "/api/v1/enrich/batch",
        json={"items": [{"cpf": first}, {"cpf": third}]},
        headers=auth(key),
    )
    assert batch.status_code == 200
    results = batch.json()["results"]
    assert [r["status"] for r in results] == [200, 429]
    assert await work_api_calls(sandbox) == 2

    usage = await client.get("/api/v1/usage", headers=auth(key))
    assert usage.status_code == 200
    report = usage.json()
    today = dt.datetime.now(dt.UTC).date()
    assert report["tenant"] == tenant
    assert (report["from"], report["to"]) == (today.replace(day=1).isoformat(), today.isoformat())
    assert report["rows"] == [
        {"day": today.isoformat(), "key_id": str(stored.id), "upstream": "work_api", "calls": 2}
    ]
    assert report["total"] == 2
    assert report["by_upstream"] == {"work_api": 2}
    assert report["by_key"] == {str(stored.id): 2}


async def test_usage_is_counted_per_key_and_upstream_and_shown_to_its_own_tenant_only(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, database_url: str
) -> None:
    tenant, other_tenant = fresh_tenant(), fresh_tenant()
    one, one_key = await issue_key(database_url, tenant=tenant)
    two, two_key = await issue_key(database_url, tenant=tenant, scopes="read")
    enricher, _ = await issue_key(database_url, tenant=tenant, scopes="enrich")
    stranger, _ = await issue_key(database_url, tenant=other_tenant)
    person = PEOPLE.person(487)
    # A Diretrix resolution (by e-mail) and a Work API fetch for key one.
    found = await client.get(
        "/api/v1/contributor/customer", params={"email": person.email}, headers=auth(one)
    )
    assert found.status_code == 200
    # A Work API fetch of another person for the stranger.
    fetched = await client.get(
        DOSSIER, params={"documento": PEOPLE.cpf_for(7111)}, headers=auth(stranger)
    )
    assert fetched.status_code == 200
    counters = await sandbox.counters()
    assert sum(counters.get("diretrix", {}).values()) == 1
    assert sum(counters.get("work_api", {}).values()) == 2

    # Any key of the tenant with `read` sees every key of its tenant; nothing of the other.
    for key in (one, two):
        report = (await client.get("/api/v1/usage", headers=auth(key))).json()
        assert report["tenant"] == tenant
        assert report["by_key"] == {str(one_key.id): 2}
        assert report["by_upstream"] == {"diretrix": 1, "work_api": 1}
        assert str(two_key.id) not in report["by_key"]
    theirs = (await client.get("/api/v1/usage", headers=auth(stranger))).json()
    assert theirs["tenant"] == other_tenant
    assert theirs["total"] == 1
    assert str(one_key.id) not in theirs["by_key"]
    # `read` is the scope of the report: an enrich-only key is refused.
    assert (await client.get("/api/v1/usage", headers=auth(enricher))).status_code == 403
    # Another period: nothing.
    empty = await client.get(
        "/api/v1/usage", params={"from": "2020-01-01", "to": "2020-01-31"}, headers=auth(one)
    )
    assert empty.status_code == 200
    assert empty.json()["rows"] == []
    bad = await client.get("/api/v1/usage", params={"from": "01/02/2026"}, headers=auth(one))
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["field"] == "from"


async def test_counts_still_in_memory_are_written_when_the_api_process_gets_sigterm(
    e2e_env: dict[str, str], sandbox: SandboxAdmin, db: asyncpg.Pool, database_url: str
) -> None:
    tenant = fresh_tenant()
    key, stored = await issue_key(database_url, tenant=tenant, paid_quota=10)
    env = {
        **os.environ,
        **e2e_env,
        "REDIS_KEY_PREFIX": e2e_env["REDIS_KEY_PREFIX"] + f"sigterm-{uuid.uuid4().hex[:6]}:",
        # Nothing is written before the drain: only the shutdown can put the counts in the table.
        "USAGE_FLUSH_MS": "60000",
        "DB_POOL_MAX": "5",
    }
    cpfs = [PEOPLE.cpf_for(i) for i in (7121, 7122, 7123)]
    with granian_server(APP_FACTORY, env=env, ready_path="/health", start_timeout_s=60) as url:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            for cpf in cpfs:
                async with session.get(
                    f"{url}{DOSSIER}", params={"documento": cpf}, headers=auth(key)
                ) as response:
                    assert response.status == 200
        rows = await db.fetch("SELECT * FROM core.usage_daily WHERE tenant = $1", tenant)
        assert rows == []  # still in the process's memory
    # granian_server has sent SIGTERM and waited for the exit: the drain wrote the counts.
    rows = await db.fetch(
        "SELECT day, key_id, upstream, calls FROM core.usage_daily WHERE tenant = $1", tenant
    )
    assert [tuple(r) for r in rows] == [
        (dt.datetime.now(dt.UTC).date(), str(stored.id), "work_api", 3)
    ]
    assert await work_api_calls(sandbox) == 3


async def system_calls(db: asyncpg.Pool) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT upstream, calls FROM core.usage_daily WHERE tenant = '_system' AND day = $1",
        dt.datetime.now(dt.UTC).date(),
    )
    return {row["upstream"]: row["calls"] for row in rows}


async def test_the_worker_writes_its_counts_when_it_stops(
    client: AsyncTestClient[Litestar],
    e2e_env: dict[str, str],
    sandbox: SandboxAdmin,
    db: asyncpg.Pool,
) -> None:
    before = await system_calls(db)
    lead = await sandbox.create_lead(person_index=488)
    event = {
        "id": lead["lead_id"],
        "hook_action": "on_update_lead",
        "attributes": {"updated_at": "2026-12-07 07:00:00.000 -0300", "customer": lead["customer"]},
    }
    answer = await client.post(
        "/api/v1/webhooks/c2s", json=event, headers={"X-Webhook-Token": WEBHOOK_SECRET}
    )
    assert answer.json()["processed"] == 1
    env = {**os.environ, **e2e_env, "USAGE_FLUSH_MS": "60000"}
    worker = ChildProcess("worker", worker_argv(concurrency=1, lease_timeout_s=30, grace_s=5), env)
    try:

        async def done() -> bool:
            status = await db.fetchval(
                "SELECT status FROM core.webhook_events WHERE lead_id = $1", lead["lead_id"]
            )
            return status in ("completed", "failed")

        await wait_until(done, timeout_s=45, what=f"the job to finish\n{worker.output()}")
        # A webhook job acts for no key: its paid calls are the system's, still in memory.
        assert await system_calls(db) == before
        assert worker.terminate(timeout_s=15) == 0
    finally:
        worker.stop()
    counters = await sandbox.counters()
    paid = {
        upstream: sum(counters.get(upstream, {}).values()) for upstream in ("work_api", "diretrix")
    }
    assert paid["work_api"] >= 1
    after = await system_calls(db)
    written = {u: after.get(u, 0) - before.get(u, 0) for u in paid}
    # The lead's own paid calls (its dossier, its contacts' resolution) were written at the stop.
    # The sandbox is shared with the session's other processes: its counts bound them, no more.
    assert written["work_api"] >= 1
    assert written["diretrix"] >= 1
    assert all(written[u] <= paid[u] for u in paid), (written, paid)
