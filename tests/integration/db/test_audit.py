"""The audit trail in PostgreSQL (``audit.access_log``, :class:`infra.db.audit.PgAuditTrail`):
records land in their month's partition, cannot be changed through the app's own connection,
page stably per tenant, survive an outage in the buffer, and never hold a CPF.

A database of its own (migrated here): the tests create and drop partitions.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING

import asyncpg
import pytest

from domain.audit import AccessRecord, AuditQuery, SubjectDigester
from infra.db.audit import PgAuditTrail
from infra.db.migrate import migrate
from infra.db.pool import create_pool
from tests.support.db import RUN_ID, DbSettings, create_database, drop_database

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

DIGESTER = SubjectDigester(b"integration-subject-key")
HELENA_CPF = "39053344705"


@pytest.fixture(scope="module")
async def audit_url() -> AsyncIterator[str]:
    name = f"c2s_test_{RUN_ID}_audit"
    url = await create_database(name)
    try:
        await migrate(url)
        yield url
    finally:
        await drop_database(name)


@pytest.fixture
async def pool(audit_url: str) -> AsyncIterator[asyncpg.Pool]:
    """The app's kind of pool (``infra.db.pool.create_pool``): the role and settings it runs as."""
    pool = await create_pool(DbSettings(audit_url, pool_max=4))
    try:
        yield pool
    finally:
        await pool.close()


def rec(
    tenant: str, at: dt.datetime, *, subject: str = "s", key_id: str | None = "k"
) -> AccessRecord:
    return AccessRecord(
        at=at, tenant=tenant, key_id=key_id, operation="lookup", subject=subject, paid=True
    )


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


async def write(pool: asyncpg.Pool, *records: AccessRecord) -> PgAuditTrail:
    trail = PgAuditTrail(pool, batch=1000)
    for record in records:
        trail.record(record)
    await trail.flush()
    assert trail.pending == 0
    return trail


async def test_a_flush_is_one_insert_into_the_months_partition(pool: asyncpg.Pool) -> None:
    t = tenant()
    now = dt.datetime.now(dt.UTC)
    far = dt.datetime(2031, 5, 17, 8, tzinfo=dt.UTC)  # no partition for it yet
    await write(pool, rec(t, now), rec(t, far))
    rows = await pool.fetch(
        "SELECT tableoid::regclass::text AS part, at FROM audit.access_log WHERE tenant = $1"
        " ORDER BY at",
        t,
    )
    assert [r["part"] for r in rows] == [f"audit.access_log_{now:%Y%m}", "audit.access_log_203105"]
    # The next month is made ready too; the safety net stays empty.
    assert await pool.fetchval("SELECT to_regclass('audit.access_log_203106')") is not None
    assert await pool.fetchval("SELECT count(*) FROM audit.access_log_default") == 0


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit.access_log SET paid = false WHERE tenant = $1",
        "DELETE FROM audit.access_log WHERE tenant = $1",
    ],
)
async def test_records_cannot_be_changed_through_the_apps_connection(
    pool: asyncpg.Pool, statement: str
) -> None:
    t = tenant()
    await write(pool, rec(t, dt.datetime.now(dt.UTC)))
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pool.execute(statement, t)
    assert await pool.fetchval("SELECT count(*) FROM audit.access_log WHERE tenant = $1", t) == 1


@pytest.mark.parametrize("table", ["audit.access_log", "audit.access_log_default"])
async def test_the_log_cannot_be_truncated(pool: asyncpg.Pool, table: str) -> None:
    await write(pool, rec(tenant(), dt.datetime.now(dt.UTC)))
    month = f"audit.access_log_{dt.datetime.now(dt.UTC):%Y%m}"
    for target in (table, month):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await pool.execute(f"TRUNCATE {target}")


async def test_pages_are_stable_newest_first_and_never_show_another_tenant(
    pool: asyncpg.Pool,
) -> None:
    mine, theirs = tenant(), tenant()
    base = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    # Ties on `at` are broken by id; the other tenant's records interleave.
    mine_records = [rec(mine, base + dt.timedelta(seconds=n // 2)) for n in range(7)]
    theirs_records = [rec(theirs, base + dt.timedelta(seconds=n)) for n in range(5)]
    interleaved = [r for pair in zip(mine_records[:5], theirs_records, strict=True) for r in pair]
    trail = await write(pool, *interleaved)
    await write(pool, *mine_records[5:])
    seen: list[tuple[dt.datetime, str]] = []
    page = await trail.search(AuditQuery(tenant=mine, limit=3))
    pages = 1
    while True:
        assert all(r.tenant == mine for r in page.records)
        seen.extend((r.at, r.subject) for r in page.records)
        if page.next is None:
            break
        # A record written between pages does not shift the pages after the cursor.
        await write(pool, rec(mine, dt.datetime.now(dt.UTC)))
        page = await trail.search(AuditQuery(tenant=mine, limit=3, after=page.next))
        pages += 1
    assert len(seen) == 7
    assert pages == 3
    assert [at for at, _ in seen] == sorted((at for at, _ in seen), reverse=True)


async def test_search_filters_by_subject_key_and_time(pool: asyncpg.Pool) -> None:
    t = tenant()
    base = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    helena = DIGESTER.digest(HELENA_CPF)
    trail = await write(
        pool,
        rec(t, base, subject=helena, key_id="a"),
        rec(t, base + dt.timedelta(minutes=1), subject=helena, key_id="b"),
        rec(t, base + dt.timedelta(minutes=2), subject="other", key_id="a"),
    )
    by_subject = await trail.search(AuditQuery(tenant=t, subject=helena))
    assert [r.key_id for r in by_subject.records] == ["b", "a"]
    by_key = await trail.search(AuditQuery(tenant=t, key_id="a"))
    assert [r.subject for r in by_key.records] == ["other", helena]
    window = await trail.search(
        AuditQuery(
            tenant=t,
            since=base + dt.timedelta(seconds=30),
            until=base + dt.timedelta(minutes=2),
        )
    )
    assert [r.key_id for r in window.records] == ["b"]
    assert [r.key_id for r in await trail.about(t, helena)] == ["a", "b"]
    assert await trail.about(tenant(), helena) == []


async def test_an_outage_keeps_the_records_until_postgres_answers(audit_url: str) -> None:
    down = await create_pool(
        DbSettings("postgresql://postgres@127.0.0.1:1/nowhere", pool_max=1), min_size=0
    )
    t = tenant()
    try:
        trail = PgAuditTrail(down, batch=10, acquire_timeout=0.5)
        trail.record(rec(t, dt.datetime.now(dt.UTC)))
        await trail.flush()
        assert trail.pending == 1  # kept, not lost
    finally:
        await down.close()


async def test_old_partitions_are_dropped_whole(pool: asyncpg.Pool) -> None:
    t = tenant()
    await write(pool, rec(t, dt.datetime(2020, 1, 5, tzinfo=dt.UTC)))
    trail = PgAuditTrail(pool)
    assert await trail.drop_partitions_before(dt.date(2020, 2, 1)) >= 1
    assert await pool.fetchval("SELECT to_regclass('audit.access_log_202001')") is None
    assert await pool.fetchval("SELECT to_regclass('audit.access_log_202002')") is not None


async def test_the_table_holds_digests_never_a_cpf(pool: asyncpg.Pool) -> None:
    await write(pool, rec(tenant(), dt.datetime.now(dt.UTC), subject=DIGESTER.digest(HELENA_CPF)))
    text = await pool.fetchval("SELECT string_agg(t::text, '|') FROM audit.access_log t")
    assert DIGESTER.digest(HELENA_CPF) in text
    assert HELENA_CPF not in text
