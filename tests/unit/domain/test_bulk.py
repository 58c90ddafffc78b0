"""Bulk enrichment jobs on the in-memory fakes: validation, pages, the runner's fairness, retries
and crash recovery, and who each lookup is accounted to."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import uuid

import msgspec
import pytest

from domain.bulk import (
    BulkJobs,
    BulkRunner,
    ClaimedItem,
    InvalidItems,
    JobPosition,
    decode_cursor,
    decode_jobs_cursor,
    encode_cursor,
    encode_jobs_cursor,
    run_item,
    summary_body,
)
from domain.customers import CustomerQuery
from domain.errors import InvalidInput, NotFound
from domain.tenancy import Caller, current_caller
from tests.support.factories import dossier_payload, new_cpf
from tests.support.fakes import FakeBulkJobs, World
from tests.support.polling import wait_until

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
ACME = Caller(tenant="acme", key_id="key-1", request_id="req-1", paid_quota=500)


def world_with(cpfs: list[str]) -> World:
    world = World()
    for cpf in cpfs:
        world.work_api.dossiers[cpf] = msgspec.json.encode(dossier_payload(cpf))
    return world


def jobs(store: FakeBulkJobs, max_items: int = 10_000) -> BulkJobs:
    return BulkJobs(store, max_items=max_items, environment="production")


async def test_one_invalid_item_rejects_the_job_naming_it_and_nothing_is_stored() -> None:
    store = FakeBulkJobs()
    items = [
        (None, CustomerQuery(cpf=new_cpf())),
        ("r2", CustomerQuery(cpf="123.456.789-00")),
        ("r3", CustomerQuery(email="not-an-email")),
        ("r4", CustomerQuery()),
    ]
    with pytest.raises(InvalidItems) as raised:
        await jobs(store).submit(items, caller=ACME, may_fetch=True)
    assert [field for field, _ in raised.value.errors] == [
        "items[1].cpf",
        "items[2].email",
        "items[3].cpf",
    ]
    assert raised.value.field == "items[1].cpf"
    assert "3 invalid items" in raised.value.detail
    assert store.jobs == {}


async def test_too_many_items_or_none_is_a_400_on_items() -> None:
    store = FakeBulkJobs()
    many = [(None, CustomerQuery(cpf=new_cpf())) for _ in range(6)]
    with pytest.raises(InvalidInput) as raised:
        await jobs(store, max_items=5).submit(many, caller=ACME, may_fetch=True)
    assert raised.value.field == "items"
    with pytest.raises(InvalidInput):
        await jobs(store).submit([], caller=ACME, may_fetch=True)
    assert store.jobs == {}


async def test_a_job_whose_callback_url_is_refused_is_not_stored() -> None:
    store = FakeBulkJobs()
    for bad in (
        "http://crm.example.com/hook",
        "/relative",
        "https://u:p@crm.example.com/",
        "https://10.0.0.1/hook",
    ):
        with pytest.raises(InvalidInput) as raised:
            await jobs(store).submit(
                [(None, CustomerQuery(cpf=new_cpf()))],
                caller=ACME,
                may_fetch=True,
                callback_url=bad,
            )
        assert raised.value.field == "callback_url"
    assert not store.jobs
    view = await jobs(store).submit(
        [(None, CustomerQuery(cpf=new_cpf()))],
        caller=ACME,
        may_fetch=True,
        callback_url=" https://crm.example.com/hook ",
    )
    assert view.callback is not None
    assert view.callback.url == "https://crm.example.com/hook"


def test_cursors_round_trip_and_foreign_ones_are_a_400() -> None:
    assert decode_cursor(encode_cursor(41)) == 41
    assert decode_cursor(None) == -1
    for bad in ("abc", "czE6eA", encode_cursor(1) + "!!"):
        with pytest.raises(InvalidInput) as raised:
            decode_cursor(bad)
        assert raised.value.field == "cursor"


def test_job_listing_cursors_round_trip_to_the_microsecond_and_others_are_a_400() -> None:
    at = JobPosition(created_at=NOW.replace(microsecond=123456), job_id=uuid.uuid4())
    assert decode_jobs_cursor(encode_jobs_cursor(at)) == at
    assert decode_jobs_cursor(None) is None
    # A position whose time has no UTC offset is not one the API made.
    naive_json = msgspec.json.encode(["2026-12-07T12:00:00", at.job_id])
    naive = base64.urlsafe_b64encode(naive_json).decode()
    for bad in ("abc", encode_cursor(3), naive, encode_cursor(1)[:-1] + "!"):
        with pytest.raises(InvalidInput) as raised:
            decode_jobs_cursor(bad)
        assert raised.value.field == "cursor"


async def test_jobs_are_listed_newest_first_ties_by_id_page_by_page() -> None:
    store = FakeBulkJobs()
    submitted = []
    for n in range(5):
        if n % 2:
            store.clock.advance(1)  # pairs of jobs created at the same instant
        view = await jobs(store).submit(
            [(None, CustomerQuery(cpf=new_cpf()))], caller=ACME, may_fetch=True
        )
        submitted.append((view.created_at, view.id))
    other = Caller(tenant="other", key_id="key-2", request_id="req-2")
    await jobs(store).submit([(None, CustomerQuery(cpf=new_cpf()))], caller=other, may_fetch=True)
    listed: list[tuple[dt.datetime, uuid.UUID]] = []
    cursor: str | None = None
    while True:
        page = await jobs(store).jobs("acme", state=None, cursor=cursor, limit=2)
        listed.extend((job.created_at, job.id) for job in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert listed == sorted(submitted, reverse=True)
    with pytest.raises(InvalidInput) as raised:
        await jobs(store).jobs("acme", state="finished", cursor=None, limit=2)
    assert raised.value.field == "state"


async def test_jobs_are_visible_to_their_tenant_only() -> None:
    store = FakeBulkJobs()
    view = await jobs(store).submit(
        [(None, CustomerQuery(cpf=new_cpf()))], caller=ACME, may_fetch=True
    )
    assert (await jobs(store).view("acme", view.id)).counts.queued == 1
    for call in (
        jobs(store).view("other", view.id),
        jobs(store).results("other", view.id, cursor=None, limit=10),
        jobs(store).cancel("other", view.id),
    ):
        with pytest.raises(NotFound):
            await call
    assert store.states[view.id] == "queued"  # the other tenant's cancel did nothing


async def test_the_job_runs_every_item_for_its_key_and_pages_the_results_in_order() -> None:
    cpfs = [new_cpf() for _ in range(7)]
    world = world_with(cpfs[:6])  # the last one is unknown to the Work API
    seen: list[Caller | None] = []
    original = world.repository.find_by_cpf

    async def find_by_cpf(cpf: str):  # type: ignore[no-untyped-def]
        seen.append(current_caller.get())
        return await original(cpf)

    world.repository.find_by_cpf = find_by_cpf  # type: ignore[method-assign]
    store = FakeBulkJobs()
    bulk = jobs(store)
    view = await bulk.submit(
        [(f"r{i}", CustomerQuery(cpf=cpf)) for i, cpf in enumerate(cpfs)],
        caller=ACME,
        may_fetch=True,
        callback_url="https://crm.example.com/done",
    )
    runner = BulkRunner(
        store,
        world.enricher(),
        concurrency=3,
        tenant_concurrency=2,
        lease_s=30,
        poll_interval_s=0.01,
        max_attempts=1,
        clock=lambda: NOW,
    )
    task = asyncio.create_task(runner.run())
    await wait_until(lambda: store.states[view.id] == "done", timeout_s=5, what="the job")
    runner.stop()
    await task
    done = await bulk.view("acme", view.id)
    assert (done.counts.done, done.counts.not_found, done.counts.total) == (6, 1, 7)
    assert store.ended == [(view.id, "done")]
    # Every lookup ran as the job's key (audit, usage meter and quota see that key).
    assert seen
    assert {c.key_id if c else None for c in seen} == {"key-1"}
    assert {c.paid_quota if c else None for c in seen} == {500}
    first = await bulk.results("acme", view.id, cursor=None, limit=4)
    rest = await bulk.results("acme", view.id, cursor=first.next_cursor, limit=4)
    assert rest.next_cursor is None
    pages = first.items + rest.items
    assert [i.seq for i in pages] == list(range(7))
    assert [i.ref for i in pages] == [f"r{i}" for i in range(7)]
    assert [i.customer.personal_info.cpf for i in pages[:6] if i.customer] == cpfs[:6]
    assert pages[6].state == "not_found"
    assert pages[6].error is not None
    assert pages[6].error.status == 404
    # At most two of the tenant's items were ever in flight at once.
    assert max(len(c) for c in store.claims) <= 2


async def test_tenants_are_served_in_turn() -> None:
    store = FakeBulkJobs()
    bulk = jobs(store)
    big = await bulk.submit(
        [(None, CustomerQuery(cpf=new_cpf())) for _ in range(50)], caller=ACME, may_fetch=True
    )
    small = await bulk.submit(
        [(None, CustomerQuery(cpf=new_cpf())) for _ in range(4)],
        caller=Caller(tenant="beta", key_id="key-2"),
        may_fetch=True,
    )
    claimed = await store.claim(uuid.uuid4(), limit=4, tenant_limit=10, lease_s=30)
    assert {c.job_id for c in claimed} == {big.id, small.id}
    assert sum(1 for c in claimed if c.job_id == small.id) == 2


async def test_a_transient_failure_is_retried_then_final_and_never_stored_twice() -> None:
    cpf = new_cpf()
    world = world_with([cpf])
    world.work_api.down = True
    item = ClaimedItem(
        job_id=uuid.uuid4(), seq=0, query=CustomerQuery(cpf=cpf), attempts=1, tenant="acme"
    )
    retry = await run_item(world.enricher(), item, now=NOW, max_attempts=3, rand=lambda: 0.5)
    assert retry.state == "retry"
    assert retry.retry_after_s == pytest.approx(1.0)
    last = msgspec.structs.replace(item, attempts=3)
    failed = await run_item(world.enricher(), last, now=NOW, max_attempts=3)
    assert failed.state == "failed"
    assert failed.result is not None
    assert msgspec.json.decode(failed.result)["status"] == 503
    world.work_api.down = False
    done = await run_item(world.enricher(), last, now=NOW, max_attempts=3)
    assert done.state == "done"
    assert done.subject_cpf == cpf


async def test_after_a_crash_the_rerun_buys_nothing_already_bought() -> None:
    cpfs = [new_cpf() for _ in range(10)]
    world = world_with(cpfs)
    store = FakeBulkJobs()
    bulk = jobs(store)
    view = await bulk.submit(
        [(None, CustomerQuery(cpf=cpf)) for cpf in cpfs], caller=ACME, may_fetch=True
    )
    enricher = world.enricher()
    dead = uuid.uuid4()
    # A worker claimed four items, ran them (dossiers bought and stored) and died before
    # storing their results.
    for item in await store.claim(dead, limit=4, tenant_limit=10, lease_s=30):
        await run_item(enricher, item, now=NOW, max_attempts=3)
    assert len(world.work_api.calls) == 4
    assert store.expire_leases() == 4
    runner = BulkRunner(
        store,
        enricher,
        concurrency=4,
        tenant_concurrency=4,
        lease_s=30,
        poll_interval_s=0.01,
        max_attempts=3,
    )
    task = asyncio.create_task(runner.run())
    await wait_until(lambda: store.states[view.id] == "done", timeout_s=5, what="the job")
    runner.stop()
    await task
    assert (await bulk.view("acme", view.id)).counts.done == 10
    assert sorted(world.work_api.calls) == sorted(cpfs)  # one paid call per person


async def test_cancel_ends_a_job_with_nothing_running_and_the_summary_has_no_personal_data() -> (
    None
):
    store = FakeBulkJobs()
    bulk = jobs(store)
    cpf = new_cpf()
    view = await bulk.submit([("r1", CustomerQuery(cpf=cpf))], caller=ACME, may_fetch=True)
    cancelled = await bulk.cancel("acme", view.id)
    assert cancelled.state == "cancelled"
    assert cancelled.counts.cancelled == 1
    assert await store.claim(uuid.uuid4(), limit=5, tenant_limit=5, lease_s=30) == []
    body = summary_body(cancelled, results_url=f"/api/v1/enrich/jobs/{view.id}/results")
    decoded = msgspec.json.decode(body)
    assert set(decoded) == {"job_id", "state", "counts", "finished_at", "results_url"}
    assert cpf not in body.decode()
