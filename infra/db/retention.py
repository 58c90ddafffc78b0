"""Retention (LGPD art. 15-16): personal data is kept only as long as it is needed.

:class:`PgRetention` purges, oldest first, in batches of ``RETENTION_BATCH`` rows, each batch its
own short transaction (no long lock, no huge WAL burst):

* ``parties``: parties not refreshed (``updated_at``) for ``RETENTION_DAYS``, removed completely
  by :func:`infra.db.subjects.erase_parties` (the code a subject erasure uses; no tombstone: the
  person may be enriched again later). Redis needs nothing: every cache entry lives far shorter;
* ``raw_payloads``: the raw upstream payload of current enrichments older than
  ``RAW_RETENTION_DAYS`` becomes JSON ``null`` (the normalised data stays with the party);
* ``enrichment_history``: history rows (raw payloads) older than ``RAW_RETENTION_DAYS`` are
  deleted;
* ``audit_partitions``: the audit trail's monthly partitions (``audit.access_log_YYYYMM``) of the
  months before ``AUDIT_RETENTION_MONTHS`` ago are detached and dropped by the trail's own
  ``audit.drop_partitions_before(month)`` (the DEFAULT partition never is); skipped when that
  function does not exist.

``c2s-api worker`` runs it on pgqueuer's scheduler (:func:`retention_scheduler`, cron
``RETENTION_CRON``: one run per schedule across every worker); ``c2s-api retention [--dry-run]``
runs it by hand. A dry run counts what would go and changes nothing.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Final, Protocol

import msgspec
import structlog
from pgqueuer import AsyncpgPoolDriver
from pgqueuer.core.sm import SchedulerManager

from domain.audit import AccessRecord
from infra.db.events import PooledStore
from infra.db.subjects import erase_parties
from infra.queue import queue_queries

if TYPE_CHECKING:
    from collections.abc import Callable

    import asyncpg
    from pgqueuer.models import Schedule

    from domain.audit import SubjectDigester
    from domain.ports import AuditTrail

__all__ = [
    "RETENTION_ENTRYPOINT",
    "NullRetentionListener",
    "PgRetention",
    "RetentionListener",
    "RetentionPolicy",
    "RetentionReport",
    "retention_scheduler",
]

log = structlog.get_logger(__name__)

RETENTION_ENTRYPOINT: Final = "retention"
# Enough for a daily run; a backlog (first run on an old database) is finished by the next ones.
_MAX_BATCHES: Final = 10_000
_BATCH_TIMEOUT: Final = "SET LOCAL statement_timeout = '60s'"

# $1 timestamptz: cut-off. $2 int: batch. Oldest first, skipping rows a store holds.
_STALE_PARTIES: Final = """
SELECT id, cpf_cnpj FROM core.parties
 WHERE updated_at < $1
 ORDER BY updated_at
 LIMIT $2
   FOR UPDATE SKIP LOCKED
"""
_COUNT_STALE_PARTIES: Final = "SELECT count(*) FROM core.parties WHERE updated_at < $1"

_PURGE_RAW: Final = """
UPDATE core.party_enrichments SET raw_payload = 'null'::jsonb, updated_at = now()
 WHERE enrichment_id IN (
       SELECT enrichment_id FROM core.party_enrichments
        WHERE enriched_at < $1 AND raw_payload <> 'null'::jsonb
        ORDER BY enriched_at
        LIMIT $2
          FOR UPDATE SKIP LOCKED)
"""
_COUNT_RAW: Final = """
SELECT count(*) FROM core.party_enrichments
 WHERE enriched_at < $1 AND raw_payload <> 'null'::jsonb
"""

_PURGE_HISTORY: Final = """
DELETE FROM core.party_enrichment_history
 WHERE id IN (
       SELECT id FROM core.party_enrichment_history
        WHERE enriched_at < $1
        ORDER BY enriched_at
        LIMIT $2
          FOR UPDATE SKIP LOCKED)
"""
_COUNT_HISTORY: Final = "SELECT count(*) FROM core.party_enrichment_history WHERE enriched_at < $1"

# Bulk enrichment jobs ended before the cut-off, with their items (identifiers and results:
# personal data) by cascade. $2: jobs per batch (a job holds up to 10,000 items).
_PURGE_BULK_JOBS: Final = """
DELETE FROM core.enrich_jobs
 WHERE id IN (
       SELECT id FROM core.enrich_jobs
        WHERE finished_at < $1
        ORDER BY finished_at
        LIMIT $2
          FOR UPDATE SKIP LOCKED)
"""
_COUNT_BULK_JOBS: Final = "SELECT count(*) FROM core.enrich_jobs WHERE finished_at < $1"
# Items of a job per row of a party batch: a batch of bulk jobs is this many times smaller.
_ITEMS_PER_JOB_BATCH: Final = 100

# The audit trail's monthly partitions before a month, and their purge (the trail's own function,
# infra/db/audit.py; nothing when the trail is not installed). $1 date: first kept month.
_AUDIT_PARTITIONS_BEFORE: Final = """
SELECT count(*)
  FROM pg_inherits AS i
  JOIN pg_class AS c ON c.oid = i.inhrelid
 WHERE i.inhparent = to_regclass('audit.access_log')
   AND c.relname ~ '^access_log_[0-9]{6}$'
   AND substr(c.relname, 12) < to_char($1::date, 'YYYYMM')
"""
_HAS_AUDIT_DROP: Final = "SELECT to_regprocedure('audit.drop_partitions_before(date)') IS NOT NULL"
_AUDIT_DROP: Final = "SELECT audit.drop_partitions_before($1::date)"


class RetentionPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How long each kind of data is kept (the ``*RETENTION*`` settings)."""

    days: int = 730
    raw_days: int = 90
    batch: int = 1000
    audit_months: int = 24
    bulk_days: int = 30


class RetentionReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one run purged (or, dry, would purge): counts only, never an identifier."""

    dry_run: bool
    parties: int = 0
    raw_payloads: int = 0
    enrichment_history: int = 0
    audit_partitions: int = 0
    bulk_jobs: int = 0

    def lines(self) -> list[str]:
        """The report as the CLI prints it."""
        verb = "would purge" if self.dry_run else "purged"
        return [
            f"{verb} parties: {self.parties}",
            f"{verb} raw_payloads: {self.raw_payloads}",
            f"{verb} enrichment_history: {self.enrichment_history}",
            f"{verb} audit_partitions: {self.audit_partitions}",
            f"{verb} bulk_jobs: {self.bulk_jobs}",
        ]


class RetentionListener(Protocol):
    """Receives what a run purged (the app wires Prometheus here)."""

    def purged(self, kind: str, count: int) -> None:
        """``count`` rows of ``kind`` went (one batch)."""
        ...

    def finished(self, at: float) -> None:
        """A (non-dry) run finished at Unix time ``at``."""
        ...


class NullRetentionListener:
    def purged(self, kind: str, count: int) -> None:
        return None

    def finished(self, at: float) -> None:
        return None


def _month_start(moment: dt.datetime, months_back: int) -> dt.date:
    index = moment.year * 12 + (moment.month - 1) - months_back
    return dt.date(index // 12, index % 12 + 1, 1)


def _count(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class PgRetention(PooledStore):
    """The retention purge over the process's pool (see the module doc).

    Args:
        pool: The pool.
        policy: The retention settings.
        acquire_timeout: Seconds to wait for a pooled connection.
        listener: Metrics.
        now: The current time (tests pass a fixed one).
        audit: The audit trail: one ``retention`` record per purged person (with ``digester``).
        digester: Names a purged person in the audit trail.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        policy: RetentionPolicy,
        *,
        acquire_timeout: float = 2.0,
        listener: RetentionListener | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        audit: AuditTrail | None = None,
        digester: SubjectDigester | None = None,
    ) -> None:
        super().__init__(pool, acquire_timeout=acquire_timeout)
        self.policy = policy
        self._listener: RetentionListener = listener or NullRetentionListener()
        self._now = now
        self._audit = audit
        self._digester = digester

    async def run(self, *, dry_run: bool = False) -> RetentionReport:
        """Purge (or count, ``dry_run``) everything past its retention.

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve (what was purged stays purged).
        """
        now = self._now()
        party_cut = now - dt.timedelta(days=self.policy.days)
        raw_cut = now - dt.timedelta(days=self.policy.raw_days)
        audit_cut = _month_start(now, self.policy.audit_months)
        bulk_cut = now - dt.timedelta(days=self.policy.bulk_days)
        if dry_run:
            return await self._count(party_cut, raw_cut, audit_cut, bulk_cut)
        report = RetentionReport(
            dry_run=False,
            parties=await self._purge_parties(party_cut),
            raw_payloads=await self._batches("raw_payloads", _PURGE_RAW, raw_cut),
            enrichment_history=await self._batches("enrichment_history", _PURGE_HISTORY, raw_cut),
            audit_partitions=await self._drop_audit_partitions(audit_cut),
            bulk_jobs=await self._batches(
                "bulk_jobs",
                _PURGE_BULK_JOBS,
                bulk_cut,
                batch=max(1, self.policy.batch // _ITEMS_PER_JOB_BATCH),
            ),
        )
        self._listener.finished(time.time())
        log.info("retention_finished", **msgspec.structs.asdict(report))
        return report

    async def _count(
        self,
        party_cut: dt.datetime,
        raw_cut: dt.datetime,
        audit_cut: dt.date,
        bulk_cut: dt.datetime,
    ) -> RetentionReport:
        async with self._connection() as conn:
            parties = await conn.fetchval(_COUNT_STALE_PARTIES, party_cut)
            raw = await conn.fetchval(_COUNT_RAW, raw_cut)
            history = await conn.fetchval(_COUNT_HISTORY, raw_cut)
            partitions = await conn.fetchval(_AUDIT_PARTITIONS_BEFORE, audit_cut)
            bulk_jobs = await conn.fetchval(_COUNT_BULK_JOBS, bulk_cut)
        return RetentionReport(
            dry_run=True,
            parties=int(parties),
            raw_payloads=int(raw),
            enrichment_history=int(history),
            audit_partitions=int(partitions),
            bulk_jobs=int(bulk_jobs),
        )

    async def _purge_parties(self, cut: dt.datetime) -> int:
        total = 0
        for _ in range(_MAX_BATCHES):
            async with self._connection() as conn, conn.transaction():
                await conn.execute(_BATCH_TIMEOUT)
                rows = await conn.fetch(_STALE_PARTIES, cut, self.policy.batch)
                if not rows:
                    break
                erased = await erase_parties(
                    conn,
                    [r["id"] for r in rows],
                    [r["cpf_cnpj"] for r in rows if r["cpf_cnpj"]],
                    deep=False,
                )
            total += erased.counts.parties
            self._listener.purged("parties", erased.counts.parties)
            self._record([r["cpf_cnpj"] for r in rows if r["cpf_cnpj"]])
            if len(rows) < self.policy.batch:
                break
        return total

    def _record(self, cpfs: list[str]) -> None:
        """One ``retention`` audit record per purged person (a CPF-less party has none)."""
        if self._audit is None or self._digester is None:
            return
        at = self._now()
        for cpf in sorted(set(cpfs)):
            self._audit.record(
                AccessRecord(
                    at=at,
                    tenant="",
                    key_id=None,
                    operation="retention",
                    subject=self._digester.digest(cpf),
                )
            )

    async def _batches(
        self, kind: str, statement: str, cut: dt.datetime, *, batch: int | None = None
    ) -> int:
        size = batch or self.policy.batch
        total = 0
        for _ in range(_MAX_BATCHES):
            async with self._connection() as conn, conn.transaction():
                await conn.execute(_BATCH_TIMEOUT)
                done = _count(await conn.execute(statement, cut, size))
            total += done
            self._listener.purged(kind, done)
            if done < size:
                break
        return total

    async def _drop_audit_partitions(self, cut: dt.date) -> int:
        async with self._connection() as conn:
            if not await conn.fetchval(_HAS_AUDIT_DROP):
                return 0
            dropped = int(await conn.fetchval(_AUDIT_DROP, cut) or 0)
        self._listener.purged("audit_partitions", dropped)
        return dropped


def retention_scheduler(pool: asyncpg.Pool, retention: PgRetention, cron: str) -> SchedulerManager:
    """pgqueuer's scheduler running ``retention`` on ``cron`` (one run per schedule across every
    worker: pgqueuer's schedule table arbitrates). Run it with ``await scheduler.run()``; stop it
    with ``scheduler.shutdown.set()``.

    Raises:
        ValueError: ``cron`` is not a cron expression.
    """
    scheduler = SchedulerManager(queue_queries(AsyncpgPoolDriver(pool)))

    @scheduler.schedule(RETENTION_ENTRYPOINT, cron)
    async def purge(schedule: Schedule) -> None:
        report = await retention.run()
        log.info("retention_scheduled_run", expression=schedule.expression, parties=report.parties)

    return scheduler
