"""The usage meter against real PostgreSQL and Redis: batched counts, quota counters, fallback."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis

from domain.usage import UsageCount
from infra.db.usage import PgUsageLedger
from infra.usage import TenantLabels, UsageRecorder
from observability.metrics import PAID_CALLS, PAID_QUOTA_USE_RATIO, QUOTA_EXCEEDED
from tests.support.db import REDIS_BASE_URL

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    import asyncpg

pytestmark = pytest.mark.integration

TODAY = dt.datetime.now(dt.UTC).date()


class CountingLedger(PgUsageLedger):
    """The real ledger, counting the statements it runs."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.statements = 0

    async def add(self, counts: Sequence[UsageCount]) -> None:
        self.statements += 1
        await super().add(counts)


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(REDIS_BASE_URL)
    yield redis
    await redis.aclose()


@pytest.fixture
def prefix(redis_prefix: str, redis_cleanup: None) -> str:
    return f"{redis_prefix}usage-{uuid.uuid4().hex[:6]}:"


def tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def test_counts_are_written_in_one_statement_per_flush_and_add_up(
    db_pool: asyncpg.Pool, client: aioredis.Redis, prefix: str
) -> None:
    ledger = CountingLedger(db_pool)
    first = UsageRecorder(ledger, client, prefix=prefix, flush_s=3600)
    second = UsageRecorder(ledger, client, prefix=prefix, flush_s=3600)
    acme = tenant()
    for _ in range(5):
        first.record(UsageCount(TODAY, acme, "k1", "work_api", 1))
    first.record(UsageCount(TODAY, acme, "k1", "diretrix", 1))
    first.record(UsageCount(TODAY, acme, "k2", "work_api", 1))
    for _ in range(3):
        second.record(UsageCount(TODAY, acme, "k1", "work_api", 1))
    await asyncio.gather(first.flush(), second.flush())
    assert ledger.statements == 2
    await first.flush()  # nothing pending: no statement
    assert ledger.statements == 2
    rows = await ledger.usage(acme, TODAY, TODAY)
    assert {(r.key_id, r.upstream): r.calls for r in rows} == {
        ("k1", "work_api"): 8,
        ("k1", "diretrix"): 1,
        ("k2", "work_api"): 1,
    }
    assert await ledger.usage(tenant(), TODAY, TODAY) == []


async def test_the_drain_writes_what_is_left(
    db_pool: asyncpg.Pool, client: aioredis.Redis, prefix: str
) -> None:
    ledger = PgUsageLedger(db_pool)
    acme = tenant()
    async with UsageRecorder(ledger, client, prefix=prefix, flush_s=3600).running() as recorder:
        recorder.record(UsageCount(TODAY, acme, "k1", "work_api", 4))
        assert await ledger.usage(acme, TODAY, TODAY) == []
    rows = await ledger.usage(acme, TODAY, TODAY)
    assert [(r.key_id, r.calls) for r in rows] == [("k1", 4)]


async def test_the_background_task_flushes_every_period(
    db_pool: asyncpg.Pool, client: aioredis.Redis, prefix: str
) -> None:
    ledger = PgUsageLedger(db_pool)
    acme = tenant()
    async with UsageRecorder(ledger, client, prefix=prefix, flush_s=0.05).running() as recorder:
        recorder.record(UsageCount(TODAY, acme, "k1", "work_api", 1))
        deadline = time.monotonic() + 5
        while not await ledger.usage(acme, TODAY, TODAY):
            assert time.monotonic() < deadline, "not flushed within 5 s"
            await asyncio.sleep(0.02)


async def test_a_failed_write_keeps_the_counts_for_the_next_one(
    db_pool: asyncpg.Pool, client: aioredis.Redis, prefix: str
) -> None:
    class Flaky(PgUsageLedger):
        fail = True

        async def add(self, counts: Sequence[UsageCount]) -> None:
            if self.fail:
                self.fail = False
                raise OSError("connection refused")
            await super().add(counts)

    ledger = Flaky(db_pool)
    recorder = UsageRecorder(ledger, client, prefix=prefix, flush_s=3600)
    acme = tenant()
    recorder.record(UsageCount(TODAY, acme, "k1", "work_api", 2))
    await recorder.flush()
    assert recorder.pending == 2
    recorder.record(UsageCount(TODAY, acme, "k1", "work_api", 1))
    await recorder.flush()
    assert recorder.pending == 0
    assert [r.calls for r in await ledger.usage(acme, TODAY, TODAY)] == [3]


async def test_the_quota_is_shared_by_every_process_through_redis(
    db_pool: asyncpg.Pool, client: aioredis.Redis, prefix: str
) -> None:
    ledger = PgUsageLedger(db_pool)
    one = UsageRecorder(ledger, client, prefix=prefix)
    two = UsageRecorder(ledger, client, prefix=prefix)
    key_id = str(uuid.uuid4())
    grants = await asyncio.gather(
        *(r.reserve("acme", key_id, TODAY, 3) for r in (one, two, one, two, one))
    )
    assert sorted(grants) == [False, False, True, True, True]
    counter = one.quota_key(key_id, TODAY)
    assert counter.endswith(f"quota:{{{key_id}}}:{TODAY:%Y%m%d}")
    assert await client.get(counter) == b"3"
    midnight = dt.datetime.combine(TODAY + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp()
    expires_at = await client.expiretime(counter)
    assert midnight < expires_at <= midnight + 3600
    # A call that was not paid gives its unit back: one more call fits.
    await two.release(key_id, TODAY)
    assert await one.reserve("acme", key_id, TODAY, 3) is True
    assert await two.reserve("acme", key_id, TODAY, 3) is False
    # Another key and another day have their own counters.
    assert await one.reserve("acme", str(uuid.uuid4()), TODAY, 1) is True
    assert await one.reserve("acme", key_id, TODAY + dt.timedelta(days=1), 3) is True


async def test_with_redis_down_the_process_count_decides(
    db_pool: asyncpg.Pool, client: aioredis.Redis, prefix: str
) -> None:
    healthy = UsageRecorder(PgUsageLedger(db_pool), client, prefix=prefix)
    key_id = str(uuid.uuid4())
    assert await healthy.reserve("acme", key_id, TODAY, 3) is True
    # Same process, Redis now unreachable (a closed port): it goes on from the count it knew.
    down = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    try:
        degraded = UsageRecorder(PgUsageLedger(db_pool), down, prefix=prefix)
        degraded._local = healthy._local  # the process's own count (one recorder per process)
        results = [await degraded.reserve("acme", key_id, TODAY, 3) for _ in range(3)]
        assert results == [True, True, False]
        await degraded.release(key_id, TODAY)
        assert await degraded.reserve("acme", key_id, TODAY, 3) is True
    finally:
        await down.aclose()


async def test_metrics_bound_the_tenant_label_and_show_the_quota_use(
    db_pool: asyncpg.Pool, client: aioredis.Redis, prefix: str
) -> None:
    labels = TenantLabels(max_tenants=1)
    recorder = UsageRecorder(PgUsageLedger(db_pool), client, prefix=prefix, labels=labels)
    first, second = tenant(), tenant()
    other_before = PAID_CALLS.labels("other", "work_api")._value.get()
    recorder.record(UsageCount(TODAY, first, "k1", "work_api", 1))
    recorder.record(UsageCount(TODAY, second, "k2", "work_api", 2))
    assert PAID_CALLS.labels(first, "work_api")._value.get() == 1
    assert PAID_CALLS.labels("other", "work_api")._value.get() == other_before + 2
    refused_before = QUOTA_EXCEEDED.labels(first, "diretrix")._value.get()
    recorder.refused(first, "diretrix")
    assert QUOTA_EXCEEDED.labels(first, "diretrix")._value.get() == refused_before + 1
    key_id = str(uuid.uuid4())
    for _ in range(9):
        await recorder.reserve(first, key_id, TODAY, 10)
    recorder.publish()
    assert PAID_QUOTA_USE_RATIO.labels(first)._value.get() == pytest.approx(0.9)
    await recorder.reserve(first, key_id, TODAY, 10)
    recorder.publish()
    assert PAID_QUOTA_USE_RATIO.labels(first)._value.get() == pytest.approx(1.0)
