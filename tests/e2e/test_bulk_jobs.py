"""Bulk enrichment jobs end to end: the real app in-process, worker processes, PostgreSQL, Redis and
the sandbox upstreams.

What a customer notices: 10,000 rows are enriched within a minute with every result pageable
and the counts exact; a worker killed mid-job loses no row and buys no dossier twice; webhook
events and another tenant's job keep moving while a big job runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import TYPE_CHECKING, Any

import pytest

from app.config import Settings, parse_hmac_keys
from infra.db.callback_secrets import SEALING_PURPOSE, PgCallbackSecrets
from infra.sealing import AeadEnvelope
from tests.support.callbacks import verify
from tests.support.db import CANCEL_OPEN_BULK_JOBS
from tests.support.factories import issue_key, new_cpf
from tests.support.http_servers import CallbackReceiver, serving
from tests.support.polling import wait_until
from tests.support.processes import ChildProcess, worker_argv
from tests.support.sandbox import WEBHOOK_SECRET, SandboxAdmin

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    import asyncpg
    from litestar import Litestar
    from litestar.testing import AsyncTestClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JOBS = "/api/v1/enrich/jobs"
WEBHOOK = "/api/v1/webhooks/c2s"
WORK_API_ROUTE = "GET /api"


@pytest.fixture
def start_bulk_worker(e2e_env: dict[str, str]) -> Iterator[Callable[..., ChildProcess]]:
    """``c2s-api worker`` processes with bulk settings of the test's choosing; killed at the
    end."""
    started: list[ChildProcess] = []

    def start(**bulk: str) -> ChildProcess:
        env = {**os.environ, **e2e_env, "LOG_LEVEL": "INFO", **bulk}
        argv = worker_argv(concurrency=4, lease_timeout_s=30.0, grace_s=5.0)
        worker = ChildProcess("worker", argv, env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
async def bulk_db(db: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    """No other test's open jobs for this test's workers (``db`` ends them), and none of this
    test's left for a later test's workers."""
    yield db
    await db.execute(CANCEL_OPEN_BULK_JOBS)


async def key_for(database_url: str, tenant: str) -> dict[str, str]:
    plaintext, _ = await issue_key(database_url, tenant=tenant, scopes="read,enrich")
    return {"Authorization": f"Bearer {plaintext}"}


async def submit(
    client: AsyncTestClient[Litestar], headers: dict[str, str], items: list[dict[str, Any]]
) -> dict[str, Any]:
    answer = await client.post(JOBS, json={"items": items}, headers=headers)
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    assert answer.headers["location"] == f"{JOBS}/{body['id']}"
    return body


async def job(
    client: AsyncTestClient[Litestar], headers: dict[str, str], job_id: str
) -> dict[str, Any]:
    answer = await client.get(f"{JOBS}/{job_id}", headers=headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def all_results(
    client: AsyncTestClient[Litestar], headers: dict[str, str], job_id: str
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        answer = await client.get(f"{JOBS}/{job_id}/results", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return items


async def test_10000_rows_finish_with_exact_counts_while_webhooks_and_other_tenants_move(
    client: AsyncTestClient[Litestar],
    sandbox: SandboxAdmin,
    bulk_db: asyncpg.Pool,
    database_url: str,
    start_bulk_worker: Callable[..., ChildProcess],
) -> None:
    big = await key_for(database_url, "bulk-big")
    small = await key_for(database_url, "bulk-small")
    # 9,500 people the Work API knows, 500 e-mails nobody knows (not found).
    rows: list[dict[str, Any]] = [{"cpf": new_cpf(), "ref": f"row-{i}"} for i in range(9500)]
    rows += [
        {"email": f"nobody.{i}.{time.time_ns()}@example.org", "ref": f"row-{9500 + i}"}
        for i in range(500)
    ]
    started = time.monotonic()
    created = await submit(client, big, rows)
    assert created["state"] == "queued"
    assert created["counts"]["total"] == 10_000
    # Two worker processes (the way it scales), each with 16 bulk slots; the tenant's bound
    # (24) leaves room for the other tenant.
    worker = start_bulk_worker(BULK_CONCURRENCY="16", BULK_TENANT_CONCURRENCY="24")
    start_bulk_worker(BULK_CONCURRENCY="16", BULK_TENANT_CONCURRENCY="24")

    async def progressed() -> bool:
        return bool((await job(client, big, created["id"]))["counts"]["done"] >= 500)

    await wait_until(progressed, timeout_s=30, what=f"the job to start\n{worker.output(40)}")

    # Another tenant's small job, submitted behind 9,500 rows, is served alongside.
    other = await submit(client, small, [{"cpf": new_cpf(), "ref": f"s-{i}"} for i in range(50)])

    # A webhook event arriving now is processed within 5 s.
    lead = await sandbox.create_lead(person_index=31)
    posted = time.monotonic()
    hook = {
        "id": lead["lead_id"],
        "hook_action": "on_update_lead",
        "attributes": {"updated_at": "2025-11-26 08:00:00.000 -0300", "customer": lead["customer"]},
    }
    delivered = await client.post(WEBHOOK, json=hook, headers={"X-Webhook-Token": WEBHOOK_SECRET})
    assert delivered.status_code == 200

    async def webhook_done() -> bool:
        status = await bulk_db.fetchval(
            "SELECT status FROM core.webhook_events WHERE source = 'c2s' AND lead_id = $1",
            lead["lead_id"],
        )
        return status in ("completed", "failed")

    await wait_until(webhook_done, timeout_s=5, what="the webhook event within 5 s")
    webhook_s = time.monotonic() - posted

    async def small_done() -> bool:
        return bool((await job(client, small, other["id"]))["state"] == "done")

    await wait_until(small_done, timeout_s=20, what="the other tenant's job")
    big_then = await job(client, big, created["id"])
    assert big_then["state"] == "running"  # the small job did not wait for the big one

    async def big_done() -> bool:
        return bool((await job(client, big, created["id"]))["state"] == "done")

    await wait_until(big_done, timeout_s=90, what=f"the 10,000 rows\n{worker.output(40)}")
    elapsed = time.monotonic() - started
    final = await job(client, big, created["id"])
    assert final["counts"] == {
        "total": 10_000,
        "queued": 0,
        "running": 0,
        "done": 9500,
        "failed": 0,
        "not_found": 500,
        "cancelled": 0,
    }
    assert final["finished_at"] is not None
    results = await all_results(client, big, created["id"])
    assert [r["seq"] for r in results] == list(range(10_000))
    assert [r["ref"] for r in results] == [row["ref"] for row in rows]
    assert {r["state"] for r in results[:9500]} == {"done"}
    assert {r["state"] for r in results[9500:]} == {"not_found"}
    # Each result is the customer of its row's CPF.
    assert all(
        r["customer"]["personal_info"]["cpf"] == row["cpf"]
        for r, row in zip(results[:9500], rows[:9500], strict=True)
    )
    assert all(r["error"]["status"] == 404 for r in results[9500:])
    print(f"10,000 items in {elapsed:.1f} s; webhook event in {webhook_s:.2f} s")
    # About 60 s on a quiet 2-core machine; the bound leaves room for a loaded CI runner.
    assert elapsed < 150


async def test_a_worker_killed_mid_job_loses_no_row_and_buys_no_dossier_twice(
    client: AsyncTestClient[Litestar],
    sandbox: SandboxAdmin,
    bulk_db: asyncpg.Pool,
    database_url: str,
    start_bulk_worker: Callable[..., ChildProcess],
) -> None:
    headers = await key_for(database_url, "bulk-kill")
    cpfs = [new_cpf() for _ in range(600)]
    created = await submit(client, headers, [{"cpf": cpf} for cpf in cpfs])
    first = start_bulk_worker(BULK_CONCURRENCY="8", BULK_LEASE_S="2")

    async def some_done() -> bool:
        return bool((await job(client, headers, created["id"]))["counts"]["done"] >= 150)

    await wait_until(some_done, timeout_s=30, what=f"items done\n{first.output(40)}")
    first.kill()
    done_at_kill = (await job(client, headers, created["id"]))["counts"]["done"]
    assert done_at_kill < 600
    calls_at_kill = await sandbox.count("work_api", WORK_API_ROUTE)

    second = start_bulk_worker(BULK_CONCURRENCY="8", BULK_LEASE_S="2")

    async def all_done() -> bool:
        return bool((await job(client, headers, created["id"]))["state"] == "done")

    await wait_until(all_done, timeout_s=60, what=f"the job after the kill\n{second.output(40)}")
    final = await job(client, headers, created["id"])
    assert final["counts"]["done"] == 600
    assert final["counts"]["queued"] == final["counts"]["running"] == 0
    results = await all_results(client, headers, created["id"])
    assert [r["customer"]["personal_info"]["cpf"] for r in results] == cpfs
    # The rows done before the kill were not bought again: the second worker made at most one
    # Work API call per row that was not done, and a row whose dossier the first run had bought
    # was served from the stored data or the cache. Only a call in flight at the very moment of
    # the kill (at most BULK_CONCURRENCY) may have been paid twice.
    calls = await sandbox.count("work_api", WORK_API_ROUTE)
    assert calls_at_kill >= done_at_kill
    assert calls - calls_at_kill <= len(cpfs) - done_at_kill, (done_at_kill, calls_at_kill, calls)
    assert calls <= len(cpfs) + 8, (calls_at_kill, calls)
    rerun = await bulk_db.fetchval(
        "SELECT count(*) FROM core.enrich_job_items WHERE job_id = $1 AND attempts > 1",
        created["id"],
    )
    assert calls - len(cpfs) < max(rerun, 1)  # rows run twice mostly did not pay twice
    assert second.terminate(timeout_s=15) == 0


async def test_cancel_stops_the_rows_not_started(
    client: AsyncTestClient[Litestar],
    sandbox: SandboxAdmin,
    bulk_db: asyncpg.Pool,
    database_url: str,
    start_bulk_worker: Callable[..., ChildProcess],
) -> None:
    headers = await key_for(database_url, "bulk-cancel")
    await sandbox.set_faults("work_api", latency_ms=200)
    created = await submit(client, headers, [{"cpf": new_cpf()} for _ in range(400)])
    worker = start_bulk_worker(BULK_CONCURRENCY="4", BULK_TENANT_CONCURRENCY="4")

    async def started() -> bool:
        return bool((await job(client, headers, created["id"]))["counts"]["done"] >= 4)

    await wait_until(started, timeout_s=30, what=f"the job to start\n{worker.output(40)}")
    answer = await client.delete(f"{JOBS}/{created['id']}", headers=headers)
    assert answer.status_code == 200, answer.text
    cancelled = answer.json()["counts"]["cancelled"]
    assert cancelled > 300

    async def ended() -> bool:
        return bool((await job(client, headers, created["id"]))["state"] == "cancelled")

    await wait_until(ended, timeout_s=15, what="the running rows to finish")
    final = await job(client, headers, created["id"])
    counts = final["counts"]
    assert counts["cancelled"] == cancelled
    assert counts["done"] + counts["cancelled"] == 400
    assert counts["queued"] == counts["running"] == 0
    await asyncio.sleep(1.5)
    assert (await job(client, headers, created["id"]))["counts"] == counts  # nothing more ran


async def test_a_worker_stopped_mid_job_exits_in_its_grace_and_the_job_completes_elsewhere(
    client: AsyncTestClient[Litestar],
    sandbox: SandboxAdmin,
    bulk_db: asyncpg.Pool,
    database_url: str,
    start_bulk_worker: Callable[..., ChildProcess],
) -> None:
    headers = await key_for(database_url, "bulk-term")
    await sandbox.set_faults("work_api", latency_ms=300)
    cpfs = [new_cpf() for _ in range(120)]
    created = await submit(client, headers, [{"cpf": cpf} for cpf in cpfs])
    first = start_bulk_worker(BULK_CONCURRENCY="8", BULK_LEASE_S="2")

    async def some_done() -> bool:
        return bool((await job(client, headers, created["id"]))["counts"]["done"] >= 16)

    await wait_until(some_done, timeout_s=30, what=f"items done\n{first.output(40)}")
    started = time.monotonic()
    assert await asyncio.to_thread(first.terminate, 15) == 0, first.output(40)
    assert time.monotonic() - started < 10  # within WORKER_GRACE_S (5 s here) plus cleanup
    assert (await job(client, headers, created["id"]))["state"] == "running"
    await sandbox.clear_faults()
    second = start_bulk_worker(BULK_CONCURRENCY="8", BULK_LEASE_S="2")

    async def all_done() -> bool:
        return bool((await job(client, headers, created["id"]))["state"] == "done")

    await wait_until(all_done, timeout_s=60, what=f"the job after the stop\n{second.output(40)}")
    final = await job(client, headers, created["id"])
    assert final["counts"]["done"] == 120
    results = await all_results(client, headers, created["id"])
    assert [r["customer"]["personal_info"]["cpf"] for r in results] == cpfs
    assert await sandbox.count("work_api", WORK_API_ROUTE) <= len(cpfs) + 8


async def test_a_finished_job_is_announced_signed_and_retried_until_the_receiver_takes_it(
    client: AsyncTestClient[Litestar],
    bulk_db: asyncpg.Pool,
    database_url: str,
    e2e_env: dict[str, str],
    start_bulk_worker: Callable[..., ChildProcess],
) -> None:
    plaintext, key = await issue_key(database_url, tenant="bulk-callback", scopes="read,enrich")
    headers = {"Authorization": f"Bearer {plaintext}"}
    sealing = e2e_env.get("CACHE_HMAC_KEYS") or Settings().cache_hmac_keys.get()
    secrets = PgCallbackSecrets(
        bulk_db, AeadEnvelope(parse_hmac_keys(sealing), purpose=SEALING_PURPOSE)
    )
    secret = await secrets.rotate(key.id)
    cpfs = [new_cpf() for _ in range(5)]
    items = [{"cpf": cpf, "ref": f"row-{n}"} for n, cpf in enumerate(cpfs)]
    with serving(CallbackReceiver([500, 500, 200])) as receiver:
        answer = await client.post(
            JOBS, json={"items": items, "callback_url": receiver.url}, headers=headers
        )
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]
        worker = start_bulk_worker(CALLBACK_RETRY_BASE_S="0.05", CALLBACK_POLL_S="0.05")

        async def delivered() -> bool:
            callback = (await job(client, headers, job_id))["callback"]
            return bool(callback["state"] == "delivered")

        await wait_until(delivered, timeout_s=60, what=f"the callback\n{worker.output(40)}")
    callback = (await job(client, headers, job_id))["callback"]
    assert callback["attempts"] == 3
    assert callback["last_status"] == 200
    assert len(receiver.received) == 3  # two 500s, then the 2xx
    now = time.time()
    for post in receiver.received:
        assert verify(post.headers["c2s-signature"], post.body, secret, now)
        assert post.body == receiver.received[0].body  # the same summary, re-sent
    summary = json.loads(receiver.received[-1].body)
    assert summary["job_id"] == job_id
    assert summary["state"] == "done"
    assert summary["counts"]["total"] == 5
    assert summary["results_url"].endswith(f"{JOBS}/{job_id}/results")
    text = receiver.received[-1].body.decode()
    assert not any(cpf in text for cpf in cpfs)  # a summary, no personal data
