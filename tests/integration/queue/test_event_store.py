"""The PostgreSQL event store: idempotent intake with its job in the same transaction."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import TYPE_CHECKING

import msgspec
import pytest
from pgqueuer import AsyncpgDriver, QueueManager
from pgqueuer.ports.repository import EntrypointExecutionParameter

from domain.webhooks import WebhookEvent, parse_webhook_body
from infra.db.events import FIND_ORPHANS, INSERT_EVENTS, PgEventStore, PgGoogleLeadClaims
from infra.queue import (
    ENQUEUE_EVENT_JOBS,
    ENTRYPOINT,
    JOB_DEDUPE_PREFIX,
    job_dedupe_key,
    queue_queries,
    queue_settings,
)

if TYPE_CHECKING:
    import asyncpg

pytestmark = pytest.mark.integration


def events(*lead_ids: str, updated_at: str = "2025-11-26T10:00:00Z") -> list[WebhookEvent]:
    document = [
        {
            "id": lead_id,
            "hook_action": "on_create_lead",
            "attributes": {
                "updated_at": updated_at,
                "customer": {"name": "Helena", "phone": "+5511987654321"},
            },
        }
        for lead_id in lead_ids
    ]
    return parse_webhook_body(msgspec.json.encode(document)).events


async def counts(pool: asyncpg.Pool) -> tuple[int, int]:
    rows = await pool.fetchval("SELECT count(*) FROM core.webhook_events WHERE source = 'c2s'")
    jobs = await pool.fetchval("SELECT count(*) FROM queue.pgqueuer")
    return rows, jobs


async def test_accept_stores_each_event_with_one_job_and_is_idempotent(pool: asyncpg.Pool) -> None:
    store = PgEventStore(pool)
    first = await store.accept(
        events("a1", "b2"), {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    )
    assert (first.received, first.processed, first.duplicates) == (2, 2, 0)
    again = await store.accept(events("a1", "b2"))
    assert (again.received, again.processed, again.duplicates, again.ids) == (2, 0, 2, [])
    assert await counts(pool) == (2, 2)
    jobs = await pool.fetch(
        "SELECT entrypoint, payload, dedupe_key, status, headers FROM queue.pgqueuer"
    )
    assert {bytes(j["payload"]).decode() for j in jobs} == {str(i) for i in first.ids}
    assert {j["dedupe_key"] for j in jobs} == {job_dedupe_key(i) for i in first.ids}
    assert {(j["entrypoint"], j["status"]) for j in jobs} == {(ENTRYPOINT, "queued")}
    assert all("traceparent" in msgspec.json.decode(j["headers"]) for j in jobs)
    row = await pool.fetchrow("SELECT * FROM core.webhook_events WHERE id = $1", first.ids[0])
    assert row is not None
    assert row["status"] == "queued"
    assert row["updated_at"] == dt.datetime(2025, 11, 26, 10, tzinfo=dt.UTC)
    assert msgspec.json.decode(row["payload_raw"])["id"] == "a1"


async def test_a_new_updated_at_is_a_new_event(pool: asyncpg.Pool) -> None:
    store = PgEventStore(pool)
    await store.accept(events("a1"))
    later = await store.accept(events("a1", updated_at="2025-11-26 10:00:00.001"))
    assert later.processed == 1
    assert await counts(pool) == (2, 2)


async def test_the_same_event_twice_in_one_body_is_stored_once(pool: asyncpg.Pool) -> None:
    result = await PgEventStore(pool).accept(events("a1", "a1"))
    assert (result.processed, result.duplicates) == (1, 1)
    assert await counts(pool) == (1, 1)


async def test_100_concurrent_deliveries_of_one_event_give_one_row_and_one_job(
    pool: asyncpg.Pool,
) -> None:
    store = PgEventStore(pool, acquire_timeout=20)
    batch = events("same-lead")
    results = await asyncio.gather(*(store.accept(batch) for _ in range(100)))
    assert sum(r.processed for r in results) == 1
    assert sum(r.duplicates for r in results) == 99
    assert await counts(pool) == (1, 1)


async def test_bodies_with_the_same_events_in_opposite_orders_do_not_deadlock(
    pool: asyncpg.Pool,
) -> None:
    store = PgEventStore(pool, acquire_timeout=20)
    forward, backward = events("a1", "b2", "c3"), events("c3", "b2", "a1")
    results = await asyncio.wait_for(
        asyncio.gather(*(store.accept(forward if i % 2 else backward) for i in range(40))), 30
    )
    assert sum(r.processed for r in results) == 3
    assert await counts(pool) == (3, 3)


async def test_a_nul_character_in_the_payload_does_not_break_the_insert(pool: asyncpg.Pool) -> None:
    document = {
        "id": "n1",
        "attributes": {"updated_at": "2025-11-26T10:00:00Z", "description": "a\u0000b"},
    }
    parsed = parse_webhook_body(msgspec.json.encode(document))
    result = await PgEventStore(pool).accept(parsed.events)
    assert result.processed == 1


async def test_status_writes_are_guarded_and_terminal_states_stick(pool: asyncpg.Pool) -> None:
    store = PgEventStore(pool)
    [event_id] = (await store.accept(events("a1"))).ids
    claimed = await store.mark_processing(event_id)
    assert claimed is not None
    assert (claimed.status, claimed.attempts) == ("processing", 1)
    assert await store.mark_send_intent(event_id)
    assert not await store.mark_send_intent(event_id)  # only one run can own the send
    await store.mark_sent_completed(event_id)
    await store.mark_failed(event_id, "late failure")  # never over completed
    await store.record_attempt(event_id, "late retry")
    done = await store.load(event_id)
    assert done is not None
    assert (done.status, done.error_message) == ("completed", None)
    assert done.message_sent_at is not None
    assert await store.mark_processing(event_id) is None
    assert await store.load(uuid.uuid4()) is None


async def test_a_transient_failure_goes_back_to_queued_with_its_reason(pool: asyncpg.Pool) -> None:
    store = PgEventStore(pool)
    [event_id] = (await store.accept(events("a1"))).ids
    await store.mark_processing(event_id)
    await store.mark_send_intent(event_id)
    await store.clear_send_intent(event_id)
    await store.record_attempt(event_id, "diretrix unavailable")
    row = await store.load(event_id)
    assert row is not None
    assert (row.status, row.error_message, row.send_intent_at) == (
        "queued",
        "diretrix unavailable",
        None,
    )
    await store.mark_failed(event_id, "gave up")
    failed = await store.load(event_id)
    assert failed is not None
    assert failed.status == "failed"


async def test_queue_stats_count_open_events_and_the_oldest_waiting(pool: asyncpg.Pool) -> None:
    store = PgEventStore(pool)
    empty = await store.queue_stats()
    assert empty.counts == {"received": 0, "queued": 0, "processing": 0}
    assert empty.oldest_open_age_s is None
    ids = (await store.accept(events("a1", "b2", "c3"))).ids
    await store.mark_processing(ids[0])
    await store.mark_processing(ids[1])
    await store.mark_failed(ids[1], "x")
    stats = await store.queue_stats()
    assert stats.counts == {"received": 0, "queued": 1, "processing": 1}
    assert stats.oldest_open_age_s is not None
    assert stats.oldest_open_age_s >= 0


async def test_orphan_sweep_reenqueues_open_events_without_a_live_job(pool: asyncpg.Pool) -> None:
    store = PgEventStore(pool)
    ids = (await store.accept(events("a1", "b2"))).ids
    await pool.execute("DELETE FROM queue.pgqueuer WHERE payload = $1", str(ids[0]).encode())
    assert await store.requeue_orphans(3600, 100) == 0  # too young to be an orphan
    assert await store.requeue_orphans(0, 100) == 1
    assert await store.requeue_orphans(0, 100) == 0  # it has a live job again
    assert await counts(pool) == (2, 2)


def test_orphan_sql_names_the_queue_objects_of_infra_queue() -> None:
    assert f"FROM {queue_settings().qualified.queue_table} AS j" in FIND_ORPHANS
    assert f"'{JOB_DEDUPE_PREFIX}' || e.id::text" in FIND_ORPHANS


@pytest.mark.parametrize("sql", [INSERT_EVENTS, ENQUEUE_EVENT_JOBS])
def test_job_inserts_name_the_queue_objects_of_infra_queue(sql: str) -> None:
    names = queue_settings().qualified
    assert f"INSERT INTO {names.queue_table} AS job" in sql
    assert f"INSERT INTO {names.queue_table_log} (job_id" in sql
    assert f"'{ENTRYPOINT}', convert_to(e.id::text, 'UTF8'), '{JOB_DEDUPE_PREFIX}' ||" in sql


async def test_accepted_jobs_are_dequeued_by_pgqueuer_with_their_event_and_trace(
    pool: asyncpg.Pool,
) -> None:
    store = PgEventStore(pool)
    traceparent = "00-" + "3" * 32 + "-" + "4" * 16 + "-01"
    accepted = await store.accept(events("a1", "b2"), {"traceparent": traceparent})
    async with pool.acquire() as conn:
        jobs = await queue_queries(AsyncpgDriver(conn)).dequeue(  # type: ignore[arg-type]
            batch_size=10,
            entrypoints={ENTRYPOINT: EntrypointExecutionParameter(concurrency_limit=0)},  # type: ignore[dict-item]
            queue_manager_id=uuid.uuid4(),  # type: ignore[arg-type]
            global_concurrency_limit=None,
            heartbeat_timeout=dt.timedelta(seconds=30),
        )
    assert sorted(j.payload or b"" for j in jobs) == sorted(str(i).encode() for i in accepted.ids)
    assert all(j.headers == {"traceparent": traceparent} for j in jobs)
    logged = await pool.fetchval(
        "SELECT count(*) FROM queue.pgqueuer_log WHERE status = 'queued' AND entrypoint = $1",
        ENTRYPOINT,
    )
    assert logged == 2


async def test_requeued_orphans_carry_no_headers_and_are_never_doubled(pool: asyncpg.Pool) -> None:
    store = PgEventStore(pool)
    ids = (await store.accept(events("a1"))).ids
    await pool.execute("DELETE FROM queue.pgqueuer")
    async with pool.acquire() as conn:
        created = await conn.fetchval(ENQUEUE_EVENT_JOBS, [ids[0], ids[0]], None)
        again = await conn.fetchval(ENQUEUE_EVENT_JOBS, ids, None)
    assert (created, again) == (1, 0)
    assert await pool.fetchval("SELECT headers FROM queue.pgqueuer") is None


async def test_the_migration_installs_exactly_pgqueuers_schema(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        queries = queue_queries(AsyncpgDriver(conn))  # type: ignore[arg-type]
        await QueueManager(queries).verify_structure()
        plan = await queries.plan_upgrade()
    assert plan.statements == ()


async def test_google_lead_claims_have_one_winner_and_remember_the_c2s_lead(
    pool: asyncpg.Pool,
) -> None:
    claims = PgGoogleLeadClaims(pool, acquire_timeout=20)
    results = await asyncio.gather(*(claims.claim("g-1", b'{"lead_id":"g-1"}') for _ in range(20)))
    assert sum(r.acquired for r in results) == 1
    await claims.complete("g-1", "c2s-123")
    again = await claims.claim("g-1", b"{}")
    assert (again.acquired, again.c2s_lead_id) == (False, "c2s-123")
    await claims.release("g-1")  # a completed claim is never released
    assert not (await claims.claim("g-1", b"{}")).acquired


async def test_google_claim_released_or_failed(pool: asyncpg.Pool) -> None:
    claims = PgGoogleLeadClaims(pool)
    assert (await claims.claim("g-2", b"{}")).acquired
    await claims.release("g-2")
    assert (await claims.claim("g-2", b"{}")).acquired
    await claims.fail("g-2", "create outcome unknown")
    assert not (await claims.claim("g-2", b"{}")).acquired
    row = await pool.fetchrow(
        "SELECT status, error_message FROM core.webhook_events WHERE lead_id = 'g-2'"
    )
    assert row is not None
    assert (row["status"], row["error_message"]) == ("failed", "create outcome unknown")
    # Google rows never show up as C2S queue work.
    assert (await PgEventStore(pool).queue_stats()).counts["processing"] == 0
