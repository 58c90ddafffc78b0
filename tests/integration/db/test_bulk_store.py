"""``PgBulkJobs`` on real PostgreSQL: one-statement submission, claims bounded per tenant across
workers and fair between tenants, leases, exact counts under concurrent finishes, and the callback
enqueued in the transaction that ends the job.

A database of its own: claims take every tenant's open items, so no other test's jobs may be
there.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec
import pytest

from domain.bulk import ItemOutcome, NewJob, NewJobItem
from domain.customers import CustomerQuery
from infra.db.bulk import PgBulkJobs
from infra.db.migrate import migrate
from tests.support.db import RUN_ID, create_database, drop_database
from tests.support.factories import new_cpf

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.integration

DONE = ItemOutcome(state="done", result=b'{"source":"c2s-api"}', subject_cpf=None)


@pytest.fixture(scope="module")
async def pool() -> AsyncIterator[asyncpg.Pool]:
    name = f"c2s_test_{RUN_ID}_bulk"
    url = await create_database(name)
    await migrate(url)
    created = await asyncpg.create_pool(url, min_size=1, max_size=12)
    try:
        yield created
    finally:
        await created.close()
        await drop_database(name)


@pytest.fixture
async def store(pool: asyncpg.Pool) -> PgBulkJobs:
    await pool.execute("TRUNCATE core.enrich_job_items, core.enrich_jobs")
    return PgBulkJobs(pool)


def job(tenant: str, count: int, *, callback_url: str | None = None) -> NewJob:
    return NewJob(
        id=uuid.uuid4(),
        tenant=tenant,
        key_id=f"key-{tenant}",
        request_id=None,
        may_fetch=True,
        callback_url=callback_url,
        items=[NewJobItem(ref=f"r{i}", query=CustomerQuery(cpf=new_cpf())) for i in range(count)],
    )


async def test_ten_thousand_items_are_one_statement_in_order(
    store: PgBulkJobs, pool: asyncpg.Pool
) -> None:
    new = job("acme", 10_000)
    view = await store.create(new)
    assert view.counts.total == view.counts.queued == 10_000
    rows = await pool.fetch(
        "SELECT seq, ref, cpf FROM core.enrich_job_items WHERE job_id = $1 ORDER BY seq", new.id
    )
    assert [(r["seq"], r["ref"], r["cpf"]) for r in rows] == [
        (i, item.ref, item.query.cpf) for i, item in enumerate(new.items)
    ]


async def test_claims_respect_the_tenant_bound_across_workers_and_take_tenants_in_turn(
    store: PgBulkJobs,
) -> None:
    big = job("big", 100)
    await store.create(big)
    small = job("small", 3)
    await store.create(small)
    workers = [uuid.uuid4() for _ in range(4)]
    claimed = await asyncio.gather(
        *(store.claim(w, limit=10, tenant_limit=5, lease_s=30) for w in workers)
    )
    flat = [item for batch in claimed for item in batch]
    assert sum(1 for i in flat if i.tenant == "big") == 5
    assert sum(1 for i in flat if i.tenant == "small") == 3
    assert len({(i.job_id, i.seq) for i in flat}) == len(flat)  # no item leased twice
    # The big tenant's items come in order, the key and options with them.
    assert sorted(i.seq for i in flat if i.tenant == "big") == [0, 1, 2, 3, 4]
    assert {i.key_id for i in flat if i.tenant == "small"} == {"key-small"}
    assert (await store.get("big", big.id)).state == "running"  # type: ignore[union-attr]


async def test_an_expired_lease_goes_to_another_worker_and_the_first_cannot_store(
    store: PgBulkJobs, pool: asyncpg.Pool
) -> None:
    new = job("acme", 1)
    await store.create(new)
    first, second = uuid.uuid4(), uuid.uuid4()
    [item] = await store.claim(first, limit=5, tenant_limit=5, lease_s=0.2)
    assert await store.claim(second, limit=5, tenant_limit=5, lease_s=30) == []
    await asyncio.sleep(0.3)
    assert await store.reap() == 1
    [again] = await store.claim(second, limit=5, tenant_limit=5, lease_s=30)
    assert again.attempts == 2
    assert await store.finish(first, item, DONE) is None  # its lease is gone
    assert await pool.fetchval(
        "SELECT state FROM core.enrich_job_items WHERE job_id = $1", new.id
    ) == ("running")
    assert await store.finish(second, again, DONE) == "done"
    view = await store.get("acme", new.id)
    assert view is not None
    assert (view.state, view.counts.done) == ("done", 1)


async def test_concurrent_finishes_count_exactly_and_end_the_job_once(
    store: PgBulkJobs,
) -> None:
    new = job("acme", 60)
    await store.create(new)
    workers = [uuid.uuid4() for _ in range(3)]
    claims = await asyncio.gather(
        *(store.claim(w, limit=20, tenant_limit=60, lease_s=30) for w in workers)
    )
    outcomes = {
        0: DONE,
        1: ItemOutcome(state="not_found", result=b'{"status":404,"detail":"nf"}'),
        2: ItemOutcome(state="failed", result=b'{"status":503,"detail":"x"}'),
    }
    ended = await asyncio.gather(
        *(
            store.finish(w, item, outcomes[item.seq % 3])
            for w, batch in zip(workers, claims, strict=True)
            for item in batch
        )
    )
    assert ended.count("done") == 1
    view = await store.get("acme", new.id)
    assert view is not None
    counts = view.counts
    assert (counts.done, counts.not_found, counts.failed, counts.queued, counts.running) == (
        20,
        20,
        20,
        0,
        0,
    )
    assert view.finished_at is not None


async def test_the_callback_is_enqueued_in_the_transaction_that_ends_the_job(
    pool: asyncpg.Pool,
) -> None:
    await pool.execute("TRUNCATE core.enrich_job_items, core.enrich_jobs")
    calls: list[dict[str, Any]] = []
    fail = True

    async def sink(conn: Any, *, job_id: uuid.UUID, tenant: str, key_id: str, url: str,
                   body: bytes) -> None:  # fmt: skip
        # Inside the ending transaction: the job reads as ended on this connection.
        state = await conn.fetchval("SELECT state FROM core.enrich_jobs WHERE id = $1", job_id)
        calls.append({"job_id": job_id, "tenant": tenant, "key_id": key_id, "url": url,
                      "body": msgspec.json.decode(body), "state": state})  # fmt: skip
        if fail:
            raise RuntimeError("delivery table unavailable")

    store = PgBulkJobs(pool, callback_sink=sink)
    new = job("acme", 1, callback_url="https://crm.example.com/done")
    await store.create(new)
    worker = uuid.uuid4()
    [item] = await store.claim(worker, limit=1, tenant_limit=1, lease_s=30)
    with pytest.raises(RuntimeError):
        await store.finish(worker, item, DONE)
    # The failed enqueue rolled the result back: the item is still running, the job open.
    view = await store.get("acme", new.id)
    assert view is not None
    assert (view.state, view.counts.running, view.counts.done) == ("running", 1, 0)
    fail = False
    assert await store.finish(worker, item, DONE) == "done"
    last = calls[-1]
    assert last["state"] == "done"
    assert (last["tenant"], last["key_id"], last["url"]) == (
        "acme",
        "key-acme",
        "https://crm.example.com/done",
    )
    assert last["body"]["job_id"] == str(new.id)
    assert last["body"]["results_url"] == f"/api/v1/enrich/jobs/{new.id}/results"
    assert last["body"]["counts"]["done"] == 1
    assert set(last["body"]) == {"job_id", "state", "counts", "finished_at", "results_url"}
    ended = await store.get("acme", new.id)
    assert ended is not None
    assert ended.callback is not None
    assert ended.callback.state == "enqueued"
