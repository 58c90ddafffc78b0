"""The pgqueuer consumer against real PostgreSQL, with in-memory upstream fakes.

Every wait is bounded; nothing here sleeps for a fixed time to "let things happen".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from pgqueuer import AsyncpgDriver
from pgqueuer.ports.repository import EntrypointExecutionParameter

from domain.errors import DependencyUnavailable
from domain.webhooks import QueueStats, RetryPolicy, is_provably_unsent
from infra.breaker import BreakerConfig, BreakerOpen, BreakerRegistry
from infra.db.events import PgEventStore
from infra.queue import ENTRYPOINT, EventConsumer, provably_unsent, queue_queries
from infra.upstream import C2SClient, C2SConfig, create_session
from tests.support.polling import wait_until
from tests.support.queue import (
    APPLICATION_NAME,
    LEAD_ID,
    BlockingDiretrix,
    accept_one,
    helena_world,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import asyncpg
    from pgqueuer.domain.types import QueueEntrypoint, QueueManagerId

    from tests.support.fakes import World

pytestmark = pytest.mark.integration


async def status_of(store: PgEventStore, event_id: uuid.UUID) -> str | None:
    row = await store.load(event_id)
    return row.status if row is not None else None


class Recorder:
    """A QueueListener that keeps what it was told."""

    def __init__(self) -> None:
        self.started: list[float | None] = []
        self.finished: list[str] = []
        self.dead_letters = 0
        self.samples: list[QueueStats] = []

    def job_started(self, age_s: float | None) -> None:
        self.started.append(age_s)

    def job_finished(self, outcome: str, duration_s: float) -> None:
        self.finished.append(outcome)

    def dead_lettered(self) -> None:
        self.dead_letters += 1

    def sampled(self, stats: QueueStats) -> None:
        self.samples.append(stats)


@contextlib.asynccontextmanager
async def running(consumer: EventConsumer) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(consumer.run())
    try:
        yield task
    finally:
        consumer.stop()
        done, _ = await asyncio.wait({task}, timeout=5)
        if not done:
            await consumer.release_in_flight()
            done, _ = await asyncio.wait({task}, timeout=5)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=5)
        if task.done() and not task.cancelled():
            task.result()


def consumer_for(
    pool: asyncpg.Pool,
    world: World,
    *,
    policy: RetryPolicy | None = None,
    lease_timeout_s: float = 30.0,
    listener: Recorder | None = None,
    concurrency: int = 2,
) -> EventConsumer:
    return EventConsumer(
        pool=pool,
        store=PgEventStore(pool),
        enricher=world.enricher(),
        concurrency=concurrency,
        lease_timeout_s=lease_timeout_s,
        policy=policy or RetryPolicy(),
        listener=listener,
        rand=lambda: 0.5,  # full jitter at its midpoint: half of each capped delay
        sample_interval_s=0.2,
        poll_interval_s=0.2,
    )


async def test_consumer_completes_a_job_and_sends_one_message(pool: asyncpg.Pool) -> None:
    world, store, recorder = helena_world(), PgEventStore(pool), Recorder()
    event_id = await accept_one(store)
    async with running(consumer_for(pool, world, listener=recorder)):
        await wait_until(lambda: _is(store, event_id, "completed"), what="the event to complete")
        await wait_until(lambda: _no_jobs(pool), what="the job to leave the queue")
    assert len(world.c2s.messages[LEAD_ID]) == 1
    assert recorder.finished == ["completed"]
    assert recorder.started[0] is not None
    assert recorder.samples  # the depth sampler ran
    statuses = await pool.fetch("SELECT status::text FROM queue.pgqueuer_log ORDER BY id")
    assert [r["status"] for r in statuses] == ["queued", "picked", "successful"]


async def test_transient_failure_is_retried_with_backoff_then_dead_lettered(
    pool: asyncpg.Pool,
) -> None:
    world, store, recorder = helena_world(), PgEventStore(pool), Recorder()
    world.diretrix.down = True
    policy = RetryPolicy(max_attempts=3, base_delay_s=0.4, max_delay_s=5.0)  # 0.2, 0.4 s at 0.5
    event_id = await accept_one(store)
    async with running(consumer_for(pool, world, policy=policy, listener=recorder)):
        await wait_until(lambda: _is(store, event_id, "failed"), what="the dead letter")
    row = await store.load(event_id)
    assert row is not None
    assert row.attempts == 3
    assert row.error_message == "gave up after 3 attempts: diretrix unavailable"
    assert recorder.finished == ["retry", "retry", "failed"]
    assert recorder.dead_letters == 1
    picks = await pool.fetch(
        "SELECT created FROM queue.pgqueuer_log WHERE status = 'picked' ORDER BY id"
    )
    gaps = [(b["created"] - a["created"]).total_seconds() for a, b in itertools.pairwise(picks)]
    assert len(gaps) == 2
    assert gaps[0] >= 0.2
    assert gaps[1] >= 0.4
    retries = await pool.fetchval(
        "SELECT count(*) FROM queue.pgqueuer_log WHERE status = 'queued' AND traceback IS NOT NULL"
    )
    assert retries == 2
    assert LEAD_ID not in world.c2s.messages


async def test_a_job_whose_worker_crashed_is_taken_over_after_its_lease(
    pool: asyncpg.Pool,
) -> None:
    world, store = helena_world(), PgEventStore(pool)
    event_id = await accept_one(store)
    # A worker picks the job, claims the event... and dies: no heartbeat ever again.
    async with pool.acquire() as conn:
        queries = queue_queries(AsyncpgDriver(conn))  # type: ignore[arg-type]
        picked = await queries.dequeue(
            batch_size=1,
            entrypoints={
                _entrypoint(ENTRYPOINT): EntrypointExecutionParameter(concurrency_limit=0)
            },
            queue_manager_id=_manager(uuid.uuid4()),
            global_concurrency_limit=None,
            heartbeat_timeout=timedelta(seconds=30),
        )
    assert len(picked) == 1
    await store.mark_processing(event_id)
    crashed_at = time.monotonic()
    async with running(consumer_for(pool, world, lease_timeout_s=1.0)):
        await wait_until(lambda: _is(store, event_id, "completed"), what="the take-over")
    assert time.monotonic() - crashed_at >= 1.0  # not before the lease expired
    row = await store.load(event_id)
    assert row is not None
    assert row.attempts == 2  # the crashed run counted too
    assert len(world.c2s.messages[LEAD_ID]) == 1


async def test_shutdown_releases_in_flight_jobs_at_once_for_another_worker(
    pool: asyncpg.Pool,
) -> None:
    world, store = helena_world(), PgEventStore(pool)
    blocking = BlockingDiretrix(world.diretrix)
    world.diretrix = blocking
    event_id = await accept_one(store)
    first = consumer_for(pool, world, lease_timeout_s=60.0)
    task = asyncio.create_task(first.run())
    await asyncio.wait_for(blocking.entered.wait(), 15)
    first.stop()
    assert await first.release_in_flight() == 1
    await asyncio.wait_for(task, 10)
    job = await pool.fetchrow("SELECT status::text, queue_manager_id FROM queue.pgqueuer")
    assert job is not None
    assert (job["status"], job["queue_manager_id"]) == ("queued", None)  # lease given back
    assert await status_of(store, event_id) == "processing"
    blocking.release.set()
    started = time.monotonic()
    async with running(consumer_for(pool, world, lease_timeout_s=60.0)):
        await wait_until(lambda: _is(store, event_id, "completed"), what="the second worker")
    assert time.monotonic() - started < 10  # no lease expiry was waited for
    assert len(world.c2s.messages[LEAD_ID]) == 1


async def test_stopping_gives_back_prefetched_jobs_that_have_not_started(
    pool: asyncpg.Pool,
) -> None:
    world, store = helena_world(), PgEventStore(pool)
    blocking = BlockingDiretrix(world.diretrix)
    world.diretrix = blocking
    ids = [await accept_one(store, lead_id=f"lead{i}") for i in range(3)]
    # One job at a time: the first blocks in Diretrix, the other two are leased and waiting.
    consumer = consumer_for(pool, world, concurrency=1, lease_timeout_s=60.0)
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(blocking.entered.wait(), 15)
    await wait_until(lambda: _picked(pool, 2), what="a second job to be prefetched")
    consumer.stop()
    blocking.release.set()  # the running job finishes within the drain
    await asyncio.wait_for(task, 10)
    statuses = [await status_of(store, event_id) for event_id in ids]
    assert statuses.count("completed") == 1
    assert len(world.c2s.messages) == 1
    jobs = await pool.fetch("SELECT status::text, queue_manager_id FROM queue.pgqueuer")
    assert [(j["status"], j["queue_manager_id"]) for j in jobs] == [("queued", None)] * 2


async def test_many_events_are_each_completed_exactly_once_by_two_consumers(
    pool: asyncpg.Pool,
) -> None:
    world, store = helena_world(), PgEventStore(pool)
    ids = [await accept_one(store, lead_id=f"lead{i:03d}") for i in range(30)]
    async with (
        running(consumer_for(pool, world, concurrency=4)),
        running(consumer_for(pool, world, concurrency=4)),
    ):
        await wait_until(lambda: _all_completed(pool, len(ids)), timeout_s=30, what="all 30 events")
    assert sorted(world.c2s.messages) == sorted(f"lead{i:03d}" for i in range(30))
    assert all(len(messages) == 1 for messages in world.c2s.messages.values())


async def _is(store: PgEventStore, event_id: uuid.UUID, status: str) -> bool:
    return await status_of(store, event_id) == status


async def _picked(pool: asyncpg.Pool, n: int) -> bool:
    picked: int = await pool.fetchval("SELECT count(*) FROM queue.pgqueuer WHERE status = 'picked'")
    return picked >= n


async def _no_jobs(pool: asyncpg.Pool) -> bool:
    jobs: int = await pool.fetchval("SELECT count(*) FROM queue.pgqueuer")
    return jobs == 0


async def _all_completed(pool: asyncpg.Pool, n: int) -> bool:
    done: int = await pool.fetchval(
        "SELECT count(*) FROM core.webhook_events WHERE status = 'completed'"
    )
    return done == n


def _entrypoint(name: str) -> QueueEntrypoint:
    from pgqueuer.domain.types import QueueEntrypoint

    return QueueEntrypoint(name)


def _manager(value: uuid.UUID) -> QueueManagerId:
    from pgqueuer.domain.types import QueueManagerId

    return QueueManagerId(value)


async def test_the_consumer_survives_its_database_connections_being_killed(
    pool: asyncpg.Pool,
) -> None:
    world, store = helena_world(), PgEventStore(pool)
    first = await accept_one(store, lead_id="before")
    async with running(consumer_for(pool, world)) as task:
        await wait_until(lambda: _is(store, first, "completed"), what="the first event")
        killed = await pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1 AND pid <> pg_backend_pid()",
            APPLICATION_NAME,
        )
        assert killed >= 1
        second = await accept_one(store, lead_id="after")
        await wait_until(
            lambda: _is(store, second, "completed"), timeout_s=20, what="the event after"
        )
        assert not task.done()
    assert sorted(world.c2s.messages) == ["after", "before"]


async def test_a_refused_connection_or_an_open_breaker_proves_a_send_never_happened() -> None:
    registry = BreakerRegistry(None, configs={"c2s": BreakerConfig(minimum_calls=2, window_size=2)})
    session = create_session(4)
    try:
        # Nothing listens on port 9 of the loopback: the connection is refused.
        client = C2SClient(
            session, C2SConfig(base_url="http://127.0.0.1:9", token="t"), registry.get("c2s")
        )
        refused: list[BaseException] = []
        for _ in range(3):
            try:
                await client.send_message(LEAD_ID, "hello")
            except DependencyUnavailable as exc:
                refused.append(exc)
        assert len(refused) == 3
        assert not is_provably_unsent(refused[0])  # the domain alone cannot tell
        assert all(provably_unsent(exc) for exc in refused)
        assert any(isinstance(exc, BreakerOpen) for exc in refused)
    finally:
        await session.close()
        await registry.aclose()
    assert not provably_unsent(DependencyUnavailable("c2s", "c2s did not answer in time"))
