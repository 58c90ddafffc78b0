"""The retention purge (``infra/db/retention.py``) on a database of its own: exactly the rows past
their age go, in bounded batches; a dry run counts them and changes nothing; the worker's
scheduler runs it."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from domain.audit import SubjectDigester
from domain.dossier import decode_dossier
from infra.db.migrate import migrate
from infra.db.repository import PgPartyRepository
from infra.db.retention import (
    RETENTION_ENTRYPOINT,
    PgRetention,
    RetentionPolicy,
    retention_scheduler,
)
from infra.db.retention import RetentionReport as Report
from tests.support.db import create_database
from tests.support.factories import dossier_payload, encode, new_cpf, new_mobile, new_token
from tests.support.fakes import FakeAuditTrail
from tests.support.polling import wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.integration

POLICY = RetentionPolicy(days=730, raw_days=90, batch=2, audit_months=24, bulk_days=30)
SHARED_STREET = f"RUA {new_token()}"


class Purged:
    """Records what the listener is told."""

    def __init__(self) -> None:
        self.kinds: dict[str, int] = {}
        self.runs: list[float] = []

    def purged(self, kind: str, count: int) -> None:
        self.kinds[kind] = self.kinds.get(kind, 0) + count

    def finished(self, at: float) -> None:
        self.runs.append(at)


@pytest.fixture
async def pool(scratch_database: tuple[str, str]) -> AsyncIterator[asyncpg.Pool]:
    name, url = scratch_database
    await create_database(name)
    await migrate(url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


def address(street: str) -> dict[str, Any]:  # Any: raw Work API JSON
    return {
        "tipoLogradouro": "R",
        "logradouro": street,
        "logradouroNumero": "10",
        "bairro": "CENTRO",
        "cidade": "SAO PAULO",
        "uf": "SP",
        "cep": "01310100",
    }


async def store(repo: PgPartyRepository, *, own_street: str) -> str:
    cpf = new_cpf()
    payload = dossier_payload(
        cpf,
        emails=(f"{new_token()}@example.com",),
        phones=((new_mobile(), False),),
        addresses=(address(SHARED_STREET), address(own_street)),
    )
    raw = encode(payload)
    await repo.store_dossier(cpf, decode_dossier(raw), raw, f"lead-{new_token()}")
    return cpf


async def age(pool: asyncpg.Pool, cpf: str, *, party_days: int, raw_days: int) -> None:
    """Move a party's refresh and its enrichments back in time (history bypasses its trigger)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "UPDATE core.parties SET updated_at = now() - make_interval(days => $2) "
            "WHERE cpf_cnpj = $1",
            cpf,
            party_days,
        )
        for table in ("core.party_enrichments", "core.party_enrichment_history"):
            await conn.execute(
                f"UPDATE {table} SET enriched_at = now() - make_interval(days => $2) "  # noqa: S608
                "WHERE party_id IN (SELECT id FROM core.parties WHERE cpf_cnpj = $1)",
                cpf,
                raw_days,
            )


async def snapshot(pool: asyncpg.Pool) -> dict[str, Any]:
    row = await pool.fetchrow(
        """
        SELECT (SELECT count(*) FROM core.parties) AS parties,
               (SELECT count(*) FROM core.people) AS people,
               (SELECT count(*) FROM core.party_contacts) AS contacts,
               (SELECT count(*) FROM core.addresses) AS addresses,
               (SELECT count(*) FROM core.party_enrichments) AS enrichments,
               (SELECT count(*) FROM core.party_enrichments
                 WHERE raw_payload = 'null'::jsonb) AS raw_purged,
               (SELECT count(*) FROM core.party_enrichment_history) AS history
        """
    )
    assert row is not None
    return dict(row)


async def test_purges_exactly_what_is_past_its_age_and_a_dry_run_nothing(
    pool: asyncpg.Pool,
) -> None:
    repo = PgPartyRepository(pool)
    old = [await store(repo, own_street=f"RUA VELHA {new_token()}") for _ in range(3)]
    stale_raw = await store(repo, own_street=f"RUA MEIA {new_token()}")
    young = await store(repo, own_street=f"RUA NOVA {new_token()}")
    for cpf in old:
        await age(pool, cpf, party_days=800, raw_days=800)
    await age(pool, stale_raw, party_days=10, raw_days=100)
    before = await snapshot(pool)
    assert before["parties"] == 5
    assert before["addresses"] == 6  # one shared by all, one of each

    purged = Purged()
    audit = FakeAuditTrail()
    retention = PgRetention(
        pool, POLICY, listener=purged, audit=audit, digester=SubjectDigester(b"retention-salt")
    )
    dry = await retention.run(dry_run=True)
    assert dry == Report(dry_run=True, parties=3, raw_payloads=4, enrichment_history=4)
    assert await snapshot(pool) == before
    assert purged.kinds == {}

    report = await retention.run()
    # Parties first (removed whole, their history with them), then the raw payload and the
    # history row of the party that stays.
    assert report == Report(dry_run=False, parties=3, raw_payloads=1, enrichment_history=1)
    after = await snapshot(pool)
    assert after["parties"] == 2
    assert after["people"] == 2
    assert after["contacts"] == 4
    assert after["addresses"] == 3  # the shared one stays: young parties still live there
    assert after["enrichments"] == 2
    assert after["raw_purged"] == 1
    assert after["history"] == 1
    assert purged.kinds["parties"] == 3
    # One audit record per purged person, by digest.
    assert sorted(r.subject for r in audit.records) == sorted(
        SubjectDigester(b"retention-salt").digest(cpf) for cpf in old
    )
    assert {r.operation for r in audit.records} == {"retention"}
    assert len(purged.runs) == 1
    remaining = {r["cpf_cnpj"] for r in await pool.fetch("SELECT cpf_cnpj FROM core.parties")}
    assert remaining == {stale_raw, young}
    # The purged raw payload is no longer offered as a reusable dossier; the young one is.
    assert await repo.find_enrichment(stale_raw) is None
    assert await repo.find_enrichment(young) is not None
    # Nothing left to do: a second run purges nothing.
    assert await retention.run() == Report(dry_run=False)


async def test_old_audit_partitions_are_dropped_and_the_default_is_kept(
    pool: asyncpg.Pool,
) -> None:
    # The audit trail's own partitions (migration, ensure_partition) plus one of long ago.
    await pool.execute("SELECT audit.ensure_partition(DATE '2020-01-01')")
    recent = await pool.fetchval("SELECT audit.ensure_partition(date_trunc('month', now())::date)")
    retention = PgRetention(pool, POLICY)
    assert (await retention.run(dry_run=True)).audit_partitions == 1
    assert (await retention.run()).audit_partitions == 1
    left = await pool.fetchval(
        "SELECT array_agg(c.relname::text ORDER BY c.relname) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit.access_log'::regclass"
    )
    assert "access_log_default" in left
    assert "access_log_202001" not in left
    assert str(recent).rsplit(".", 1)[-1] in left
    assert (await retention.run(dry_run=True)).audit_partitions == 0


async def test_bulk_jobs_ended_past_their_retention_go_with_their_items(
    pool: asyncpg.Pool,
) -> None:
    async def job(ended_days_ago: float | None, items: int) -> uuid.UUID:
        job_id = uuid.uuid4()
        finished = (
            None
            if ended_days_ago is None
            else dt.datetime.now(dt.UTC) - dt.timedelta(days=ended_days_ago)
        )
        await pool.execute(
            "INSERT INTO core.enrich_jobs (id, tenant, may_fetch, total, open_items, state, "
            "finished_at) VALUES ($1, 'acme', true, $2, $3, $4, $5)",
            job_id,
            items,
            0 if finished else items,
            "done" if finished else "running",
            finished,
        )
        await pool.executemany(
            "INSERT INTO core.enrich_job_items (job_id, seq, cpf, state) VALUES ($1, $2, $3, $4)",
            [(job_id, n, new_cpf(), "done" if finished else "queued") for n in range(items)],
        )
        return job_id

    old = [await job(45, 3) for _ in range(3)]  # 3 jobs, batches of one job (batch=2 // 100)
    recent = await job(5, 2)
    running = await job(None, 2)
    retention = PgRetention(pool, POLICY)
    assert (await retention.run(dry_run=True)).bulk_jobs == 3
    assert await pool.fetchval("SELECT count(*) FROM core.enrich_jobs") == 5
    assert (await retention.run()).bulk_jobs == 3
    left = {r["id"] for r in await pool.fetch("SELECT id FROM core.enrich_jobs")}
    assert left == {recent, running}
    assert not set(old) & left
    items = await pool.fetchval("SELECT count(*) FROM core.enrich_job_items")
    assert items == 4  # the old jobs' items went with them


async def test_the_worker_scheduler_runs_the_purge(pool: asyncpg.Pool) -> None:
    repo = PgPartyRepository(pool)
    cpf = await store(repo, own_street=f"RUA AGENDA {new_token()}")
    await age(pool, cpf, party_days=800, raw_days=800)
    scheduler = retention_scheduler(pool, PgRetention(pool, POLICY), "17 3 * * *")
    # The schedule is due now (as it is once a day at 03:17).
    await pool.execute(
        "INSERT INTO queue.pgqueuer_schedules (expression, entrypoint, next_run) "
        "VALUES ('17 3 * * *', $1, now() - interval '1 second')",
        RETENTION_ENTRYPOINT,
    )
    task = asyncio.create_task(scheduler.run())
    try:

        async def purged() -> bool:
            count = await pool.fetchval(
                "SELECT count(*) FROM core.parties WHERE cpf_cnpj = $1", cpf
            )
            return bool(count == 0)

        await wait_until(purged, 15, what="the scheduled purge")
        # pgqueuer moved the schedule on to its next day.
        next_run = await pool.fetchval(
            "SELECT next_run FROM queue.pgqueuer_schedules WHERE entrypoint = $1",
            RETENTION_ENTRYPOINT,
        )
        assert next_run > dt.datetime.now(dt.UTC)
    finally:
        scheduler.shutdown.set()
        await asyncio.wait_for(task, timeout=10)


async def test_the_worker_process_runs_the_scheduled_purge(
    pool: asyncpg.Pool, scratch_database: tuple[str, str], base_env: dict[str, str]
) -> None:
    """``c2s-api worker``'s own wiring (``app.cli.worker``) schedules the purge on its pool."""
    from app.cli.worker import _scheduled_retention
    from app.config import load_settings

    settings = load_settings(
        {**base_env, "DATABASE_URL": scratch_database[1], "RETENTION_CRON": "5 4 * * *"}
    )
    repo = PgPartyRepository(pool)
    cpf = await store(repo, own_street=f"RUA WORKER {new_token()}")
    await age(pool, cpf, party_days=800, raw_days=800)
    await pool.execute(
        "INSERT INTO queue.pgqueuer_schedules (expression, entrypoint, next_run) "
        "VALUES ('5 4 * * *', $1, now() - interval '1 second')",
        RETENTION_ENTRYPOINT,
    )
    async with _scheduled_retention(settings, pool):

        async def purged() -> bool:
            count = await pool.fetchval(
                "SELECT count(*) FROM core.parties WHERE cpf_cnpj = $1", cpf
            )
            return bool(count == 0)

        await wait_until(purged, 15, what="the worker's scheduled purge")
