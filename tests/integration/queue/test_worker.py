"""The worker's lifecycle (``app.cli.worker.consume_until``) against real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from app.cli.worker import consume_until
from infra.db.events import PgEventStore
from tests.support.clocks import VirtualClock
from tests.support.db import create_database, drop_database
from tests.support.polling import wait_until
from tests.support.queue import LEAD_ID, BlockingDiretrix, accept_one, helena_world

pytestmark = pytest.mark.integration


async def test_stop_drains_then_releases_a_stuck_job_within_the_grace(pool: asyncpg.Pool) -> None:
    world, store = helena_world(), PgEventStore(pool)
    blocking = BlockingDiretrix(world.diretrix)
    world.diretrix = blocking
    event_id = await accept_one(store)
    stop, clock = asyncio.Event(), VirtualClock()
    worker = asyncio.create_task(
        consume_until(
            stop,
            pool=pool,
            enricher=world.enricher(),
            concurrency=1,
            grace_s=2.0,
            sleep=clock.sleep,
        )
    )
    await asyncio.wait_for(blocking.entered.wait(), 15)
    stop.set()
    await clock.until_sleeping()
    assert clock.requested == [1.5]  # drained for 75 % of the grace...
    clock.advance(1.4)
    assert await _held(pool)  # ...holding the job until the drain is over...
    assert not worker.done()
    clock.advance(0.2)
    assert await asyncio.wait_for(worker, 10) == 0  # ...then released it
    job = await pool.fetchrow("SELECT status::text, queue_manager_id FROM queue.pgqueuer")
    assert job is not None
    assert (job["status"], job["queue_manager_id"]) == ("queued", None)
    row = await store.load(event_id)
    assert row is not None
    assert row.status == "processing"
    assert LEAD_ID not in world.c2s.messages
    blocking.release.set()


async def test_stop_waits_for_a_job_that_finishes_within_the_drain(pool: asyncpg.Pool) -> None:
    world, store = helena_world(), PgEventStore(pool)
    blocking = BlockingDiretrix(world.diretrix)
    world.diretrix = blocking
    event_id = await accept_one(store)
    stop, clock = asyncio.Event(), VirtualClock()
    worker = asyncio.create_task(
        consume_until(
            stop,
            pool=pool,
            enricher=world.enricher(),
            concurrency=1,
            grace_s=10.0,
            sleep=clock.sleep,
        )
    )
    await asyncio.wait_for(blocking.entered.wait(), 15)
    stop.set()
    await clock.until_sleeping()  # the drain has begun; its time never runs out here
    blocking.release.set()  # the job ends during the drain
    assert await asyncio.wait_for(worker, 10) == 0
    row = await store.load(event_id)
    assert row is not None
    assert row.status == "completed"
    assert len(world.c2s.messages[LEAD_ID]) == 1


async def test_a_second_signal_skips_the_drain(pool: asyncpg.Pool) -> None:
    world, store = helena_world(), PgEventStore(pool)
    blocking = BlockingDiretrix(world.diretrix)
    world.diretrix = blocking
    await accept_one(store)
    stop, urgent, clock = asyncio.Event(), asyncio.Event(), VirtualClock()
    worker = asyncio.create_task(
        consume_until(
            stop,
            pool=pool,
            enricher=world.enricher(),
            grace_s=20.0,
            urgent=urgent,
            sleep=clock.sleep,
        )
    )
    await asyncio.wait_for(blocking.entered.wait(), 15)
    stop.set()
    urgent.set()
    # The drain's clock never moves: only the second signal can end the drain.
    assert await asyncio.wait_for(worker, 10) == 0
    await wait_until(lambda: _queued(pool), what="the job to be re-queued")
    blocking.release.set()


async def test_a_database_without_the_queue_schema_fails_the_worker() -> None:
    name = f"c2s_noqueue_{uuid.uuid4().hex[:8]}"
    url = await create_database(name)
    try:
        empty = await asyncpg.create_pool(url, min_size=1, max_size=4)
        try:
            code = await asyncio.wait_for(
                consume_until(asyncio.Event(), pool=empty, enricher=helena_world().enricher()),
                10,
            )
        finally:
            await empty.close()
        assert code == 1
    finally:
        await drop_database(name)


async def _held(pool: asyncpg.Pool) -> bool:
    manager = await pool.fetchval("SELECT queue_manager_id FROM queue.pgqueuer")
    return manager is not None


async def _queued(pool: asyncpg.Pool) -> bool:
    status = await pool.fetchval("SELECT status::text FROM queue.pgqueuer")
    return bool(status == "queued")
