"""Bulk enrichment jobs on PostgreSQL: ``core.enrich_jobs`` and ``core.enrich_job_items``.

One adapter implements both ports of ``domain/bulk``: :class:`~domain.ports.BulkJobStore` (the
HTTP side, every query scoped by tenant) and :class:`~domain.ports.BulkQueue` (the workers).

* **Submission** is ONE statement (:data:`INSERT_JOB`): the job row and its items, unnested from
  one array per column, so 10,000 items are one round trip and atomic.
* **Claims** (:data:`CLAIM_ITEMS`) run in a short transaction under a transaction-level advisory
  lock, so the per-tenant bound holds across workers: for each tenant with open jobs, its oldest
  job's next queued items, at most ``tenant_limit`` running per tenant; the tenants' items are
  interleaved (first item of each tenant, then the second...) before ``limit`` is applied, so one
  tenant's 10,000 rows never starve another's job. A claimed item is ``running`` with a lease
  (``claimed_by``, ``lease_until``), renewed by its worker; an expired lease puts the item back
  (:data:`REAP_EXPIRED`).
* **Finishing** an item (:data:`FINISH_ITEM`) stores its result and updates the job's counters in
  one statement; only the worker holding the item's lease may. The update that takes the job's
  open items to zero ends the job, and its callback is enqueued on the same connection in the
  same transaction (``callback_sink``: ``infra.db.callbacks.enqueue_callback``).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Final

import msgspec

from domain.bulk import (
    BulkStats,
    CallbackView,
    ClaimedItem,
    EnrichJobView,
    ItemError,
    ItemView,
    JobCounts,
    results_path,
    summary_body,
)
from domain.customers import CustomerQuery, UnifiedCustomer
from infra.db.events import PooledStore
from infra.db.repository import DEFAULT_ACQUIRE_TIMEOUT_S, jsonb_text

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from uuid import UUID

    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    from domain.bulk import CallbackSink, ItemOutcome, JobPosition, NewJob
    from domain.callbacks import DeliveryView

__all__ = [
    "CANCEL_JOB",
    "CLAIM_ITEMS",
    "FINISH_ITEM",
    "INSERT_JOB",
    "LIST_JOBS",
    "REAP_EXPIRED",
    "PgBulkJobs",
]

# Serialises claims across workers (pg_advisory_xact_lock): the per-tenant bound is exact.
CLAIM_LOCK_KEY: Final = 0x62756C6B  # "bulk"

# $1 uuid id; $2 tenant; $3 key_id; $4 request_id; $5 may_fetch; $6 paid_quota; $7 max_age_s;
# $8 min_likelihood; $9 callback_url; $10..$14 text[]: ref, cpf, email, phone, name (one
# element per item, in order). Returns the job's created_at.
INSERT_JOB: Final = """
WITH job AS (
    INSERT INTO core.enrich_jobs (id, tenant, key_id, request_id, may_fetch, paid_quota,
                                  max_age_s, min_likelihood, callback_url, total, open_items)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, cardinality($10::text[]),
            cardinality($10::text[]))
    RETURNING id, created_at
),
items AS (
    INSERT INTO core.enrich_job_items (job_id, seq, ref, cpf, email, phone, name)
    SELECT (SELECT id FROM job), t.seq - 1, t.ref, t.cpf, t.email, t.phone, t.name
      FROM unnest($10::text[], $11::text[], $12::text[], $13::text[], $14::text[])
           WITH ORDINALITY AS t(ref, cpf, email, phone, name, seq)
)
SELECT created_at FROM job
"""

# A job as its view shows it (PgBulkJobs._view), from core.enrich_jobs j: GET_JOB and LIST_JOBS.
_JOB_VIEW: Final = """
SELECT j.id, j.state, j.total, j.open_items, j.n_done, j.n_failed, j.n_not_found, j.n_cancelled,
       j.created_at, j.started_at, j.finished_at, j.cancel_requested_at, j.max_age_s,
       j.min_likelihood, j.callback_url,
       (SELECT count(*) FROM core.enrich_job_items r
         WHERE r.job_id = j.id AND r.state = 'running') AS running
  FROM core.enrich_jobs j"""

# $1 uuid; $2 tenant.
GET_JOB: Final = f"""{_JOB_VIEW}
 WHERE j.id = $1 AND j.tenant = $2
"""

# $1 tenant; $2 state or NULL; $3 timestamptz, $4 uuid: the last job of the previous page (NULL:
# the newest first); $5 limit. Newest first, answered by idx_enrich_jobs_listing.
LIST_JOBS: Final = f"""{_JOB_VIEW}
 WHERE j.tenant = $1
   AND ($2::text IS NULL OR j.state = $2)
   AND ($3::timestamptz IS NULL OR (j.created_at, j.id) < ($3, $4::uuid))
 ORDER BY j.created_at DESC, j.id DESC
 LIMIT $5
"""

# $1 uuid; $2 tenant; $3 after seq; $4 limit.
LIST_RESULTS: Final = """
SELECT i.seq, i.ref, i.state, i.result::text AS result
  FROM core.enrich_job_items i
  JOIN core.enrich_jobs j ON j.id = i.job_id AND j.tenant = $2
 WHERE i.job_id = $1 AND i.seq > $3
 ORDER BY i.seq
 LIMIT $4
"""

# $1 uuid; $2 tenant. Cancels the queued items of an open job; the job ends now when nothing is
# running. Returns the job when it was open. Items are locked before the job row, in the order of
# the claims and of FINISH_ITEM (no deadlock); the job's own update re-reads the latest row, so a
# job that ended meanwhile is left as it is.
CANCEL_JOB: Final = """
WITH owned AS (
    SELECT id FROM core.enrich_jobs
     WHERE id = $1 AND tenant = $2 AND state IN ('queued', 'running')
),
cancelled AS (
    UPDATE core.enrich_job_items i
       SET state = 'cancelled', finished_at = now(), lease_until = NULL
     WHERE i.job_id IN (SELECT id FROM owned) AND i.state = 'queued'
    RETURNING 1
),
n AS (SELECT count(*) AS c FROM cancelled)
UPDATE core.enrich_jobs j
   SET cancel_requested_at = coalesce(j.cancel_requested_at, now()),
       n_cancelled = j.n_cancelled + n.c,
       open_items = j.open_items - n.c,
       state = CASE WHEN j.open_items - n.c = 0 THEN 'cancelled' ELSE j.state END,
       finished_at = CASE WHEN j.open_items - n.c = 0 THEN now() ELSE j.finished_at END
  FROM n
 WHERE j.id IN (SELECT id FROM owned) AND j.state IN ('queued', 'running')
RETURNING j.id, j.state, j.total, j.open_items, j.n_done, j.n_failed, j.n_not_found, j.n_cancelled,
       j.created_at, j.started_at, j.finished_at, j.cancel_requested_at, j.max_age_s,
       j.min_likelihood, j.callback_url, j.tenant, j.key_id, 0::bigint AS running
"""

# $1 worker uuid; $2 limit; $3 tenant limit; $4 lease seconds. Run after the advisory lock.
CLAIM_ITEMS: Final = """
WITH tenants AS (
    SELECT DISTINCT tenant FROM core.enrich_jobs WHERE state IN ('queued', 'running')
),
free AS (
    SELECT t.tenant,
           $3::bigint - (SELECT count(*)
                           FROM core.enrich_jobs rj
                           JOIN core.enrich_job_items r ON r.job_id = rj.id AND r.state = 'running'
                          WHERE rj.tenant = t.tenant AND rj.state IN ('queued', 'running')) AS slots
      FROM tenants t
),
picked AS (
    SELECT x.job_id, x.seq, row_number() OVER (PARTITION BY f.tenant ORDER BY x.seq) AS turn
      FROM free f
      CROSS JOIN LATERAL (
          SELECT j.id FROM core.enrich_jobs j
           WHERE j.tenant = f.tenant AND j.state IN ('queued', 'running')
             AND EXISTS (SELECT 1 FROM core.enrich_job_items q
                          WHERE q.job_id = j.id AND q.state = 'queued'
                            AND (q.lease_until IS NULL OR q.lease_until <= now()))
           ORDER BY j.created_at, j.id
           LIMIT 1
      ) oj
      CROSS JOIN LATERAL (
          SELECT i.job_id, i.seq FROM core.enrich_job_items i
           WHERE i.job_id = oj.id AND i.state = 'queued'
             AND (i.lease_until IS NULL OR i.lease_until <= now())
           ORDER BY i.seq
           LIMIT greatest(0, least(f.slots, $2::bigint))
             FOR UPDATE SKIP LOCKED
      ) x
     WHERE f.slots > 0
),
chosen AS (
    SELECT job_id, seq FROM picked ORDER BY turn, random() LIMIT $2::bigint
),
claimed AS (
    UPDATE core.enrich_job_items i
       SET state = 'running', claimed_by = $1, attempts = i.attempts + 1,
           lease_until = now() + make_interval(secs => $4::double precision),
           started_at = coalesce(i.started_at, now())
      FROM chosen c
     WHERE i.job_id = c.job_id AND i.seq = c.seq
    RETURNING i.job_id, i.seq, i.cpf, i.email, i.phone, i.name, i.attempts
),
started AS (
    UPDATE core.enrich_jobs j
       SET state = 'running', started_at = coalesce(j.started_at, now())
     WHERE j.id IN (SELECT job_id FROM claimed) AND j.state = 'queued'
)
SELECT c.job_id, c.seq, c.cpf, c.email, c.phone, c.name, c.attempts, j.tenant, j.key_id,
       j.request_id, j.paid_quota, j.may_fetch, j.max_age_s, j.min_likelihood
  FROM claimed c
  JOIN core.enrich_jobs j ON j.id = c.job_id
 ORDER BY c.job_id, c.seq
"""

# $1 job; $2 seq; $3 worker; $4 state (done, failed, not_found); $5 result (JSON text);
# $6 subject CPF. Only the lease holder stores. Returns the job when the item was stored.
FINISH_ITEM: Final = """
WITH item AS (
    UPDATE core.enrich_job_items
       SET state = $4, result = $5::jsonb, subject_cpf = $6, finished_at = now(),
           claimed_by = NULL, lease_until = NULL
     WHERE job_id = $1 AND seq = $2 AND state = 'running' AND claimed_by = $3
    RETURNING state
)
UPDATE core.enrich_jobs j
   SET open_items = j.open_items - 1,
       n_done = j.n_done + (i.state = 'done')::int,
       n_failed = j.n_failed + (i.state = 'failed')::int,
       n_not_found = j.n_not_found + (i.state = 'not_found')::int,
       state = CASE WHEN j.open_items = 1
                    THEN CASE WHEN j.cancel_requested_at IS NULL THEN 'done' ELSE 'cancelled' END
                    ELSE j.state END,
       finished_at = CASE WHEN j.open_items = 1 THEN now() ELSE j.finished_at END
  FROM item i
 WHERE j.id = $1
RETURNING j.id, j.state, j.total, j.open_items, j.n_done, j.n_failed, j.n_not_found, j.n_cancelled,
       j.created_at, j.started_at, j.finished_at, j.cancel_requested_at, j.max_age_s,
       j.min_likelihood, j.callback_url, j.tenant, j.key_id, 0::bigint AS running
"""

# $1 job; $2 seq; $3 worker; $4 seconds before it may run again.
RETRY_ITEM: Final = """
UPDATE core.enrich_job_items
   SET state = 'queued', claimed_by = NULL,
       lease_until = now() + make_interval(secs => $4::double precision)
 WHERE job_id = $1 AND seq = $2 AND state = 'running' AND claimed_by = $3
"""

# $1 worker; $2 lease seconds.
RENEW_LEASES: Final = """
UPDATE core.enrich_job_items
   SET lease_until = now() + make_interval(secs => $2::double precision)
 WHERE state = 'running' AND claimed_by = $1
"""

REAP_EXPIRED: Final = """
UPDATE core.enrich_job_items
   SET state = 'queued', claimed_by = NULL, lease_until = NULL
 WHERE state = 'running' AND lease_until <= now()
"""

SAMPLE_JOBS: Final = """
SELECT state, count(*) AS n, extract(epoch FROM now() - min(created_at))::float8 AS oldest_s
  FROM core.enrich_jobs
 WHERE state IN ('queued', 'running')
 GROUP BY state
"""


def _rows_changed(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class PgBulkJobs(PooledStore):
    """Bulk jobs and items on the process's pool (both ports of ``domain/bulk``).

    Args:
        pool: The process's pool.
        callback_sink: Enqueues a job's callback in the transaction that ends it
            (``infra.db.callbacks.enqueue_callback``); ``None``: callbacks are not delivered (the
            job view says ``pending``).
        callback_state: The latest delivery of a job's callback, its state and attempts
            (``infra.db.callbacks.latest_delivery``), for the job view; ``None``: the view says
            ``enqueued``.
        acquire_timeout: Seconds to wait for a pooled connection.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        callback_sink: CallbackSink | None = None,
        callback_state: Callable[[asyncpg.Pool, UUID], Awaitable[DeliveryView | None]]
        | None = None,
        acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT_S,
    ) -> None:
        super().__init__(pool, acquire_timeout=acquire_timeout)
        self._callback_sink = callback_sink
        self._callback_state = callback_state

    # --- BulkJobStore ----------------------------------------------------------------------------

    async def create(self, job: NewJob) -> EnrichJobView:
        """Store the job and its items in one statement."""
        items = job.items
        async with self._connection() as conn:
            created_at = await conn.fetchval(
                INSERT_JOB,
                job.id,
                job.tenant,
                job.key_id,
                job.request_id,
                job.may_fetch,
                job.paid_quota,
                job.max_age_s,
                job.min_likelihood,
                job.callback_url,
                [item.ref for item in items],
                [item.query.cpf for item in items],
                [item.query.email for item in items],
                [item.query.phone for item in items],
                [item.query.name for item in items],
            )
        zero = dict.fromkeys(("running", "done", "failed", "not_found", "cancelled"), 0)
        return EnrichJobView(
            id=job.id,
            state="queued",
            counts=JobCounts(total=len(items), queued=len(items), **zero),
            created_at=created_at,
            max_age_s=job.max_age_s,
            min_likelihood=job.min_likelihood,
            callback=CallbackView(url=job.callback_url, state="waiting")
            if job.callback_url
            else None,
        )

    async def get(self, tenant: str, job_id: UUID) -> EnrichJobView | None:
        """The job, if ``tenant`` owns it."""
        async with self._connection() as conn:
            row = await conn.fetchrow(GET_JOB, job_id, tenant)
        if row is None:
            return None
        state = None
        if row["callback_url"] and row["finished_at"] and self._callback_state is not None:
            state = await self._callback_state(self._pool, job_id)
        return self._view(row, callback_state=state)

    async def results(
        self, tenant: str, job_id: UUID, *, after_seq: int, limit: int
    ) -> list[ItemView] | None:
        """Items after ``after_seq``, in order; ``None`` when ``tenant`` has no such job."""
        async with self._connection() as conn:
            rows = await conn.fetch(LIST_RESULTS, job_id, tenant, after_seq, limit)
            if not rows and not await conn.fetchval(
                "SELECT 1 FROM core.enrich_jobs WHERE id = $1 AND tenant = $2", job_id, tenant
            ):
                return None
        return [_item_view(row) for row in rows]

    async def cancel(self, tenant: str, job_id: UUID) -> EnrichJobView | None:
        """Cancel the queued items; the job as it is after (ended jobs unchanged)."""
        async with self._connection() as conn, conn.transaction():
            row = await conn.fetchrow(CANCEL_JOB, job_id, tenant)
            if row is not None and row["state"] == "cancelled":
                await self._job_ended(conn, row)
        return await self.get(tenant, job_id)

    async def list_jobs(
        self, tenant: str, *, state: str | None, before: JobPosition | None, limit: int
    ) -> list[EnrichJobView]:
        """The tenant's jobs, newest first (one statement)."""
        at, job_id = (before.created_at, before.job_id) if before is not None else (None, None)
        async with self._connection() as conn:
            rows = await conn.fetch(LIST_JOBS, tenant, state, at, job_id, limit)
        return [self._view(row) for row in rows]

    # --- BulkQueue -------------------------------------------------------------------------------

    async def claim(
        self, worker: UUID, *, limit: int, tenant_limit: int, lease_s: float
    ) -> list[ClaimedItem]:
        """Lease up to ``limit`` items, tenants in turn (see the module)."""
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK_KEY)
            rows = await conn.fetch(CLAIM_ITEMS, worker, limit, tenant_limit, lease_s)
        return [
            ClaimedItem(
                job_id=row["job_id"],
                seq=row["seq"],
                query=CustomerQuery(
                    cpf=row["cpf"], email=row["email"], phone=row["phone"], name=row["name"]
                ),
                attempts=row["attempts"],
                tenant=row["tenant"],
                key_id=row["key_id"],
                request_id=row["request_id"],
                paid_quota=row["paid_quota"],
                may_fetch=row["may_fetch"],
                max_age_s=row["max_age_s"],
                min_likelihood=row["min_likelihood"],
            )
            for row in rows
        ]

    async def finish(self, worker: UUID, item: ClaimedItem, outcome: ItemOutcome) -> str | None:
        """Store the item's result (or re-queue it); the job's final state if it ended."""
        if outcome.state == "retry":
            await self._execute(RETRY_ITEM, item.job_id, item.seq, worker, outcome.retry_after_s)
            return None
        result = jsonb_text(outcome.result) if outcome.result is not None else None
        args = (item.job_id, item.seq, worker, outcome.state, result, outcome.subject_cpf)
        async with self._connection() as conn:
            if self._callback_sink is None:  # one statement, nothing else to write
                row = await conn.fetchrow(FINISH_ITEM, *args)
            else:
                async with conn.transaction():
                    row = await conn.fetchrow(FINISH_ITEM, *args)
                    if row is not None and row["finished_at"] is not None:
                        await self._job_ended(conn, row)
        if row is None or row["finished_at"] is None:
            return None
        state: str = row["state"]
        return state

    async def renew(self, worker: UUID, *, lease_s: float) -> int:
        """Extend the worker's leases."""
        return _rows_changed(await self._execute(RENEW_LEASES, worker, lease_s))

    async def reap(self) -> int:
        """Re-queue running items whose lease expired."""
        return _rows_changed(await self._execute(REAP_EXPIRED))

    async def sample(self) -> BulkStats:
        """Open jobs by state and the oldest one's age."""
        async with self._connection() as conn:
            rows = await conn.fetch(SAMPLE_JOBS)
        jobs = {"queued": 0, "running": 0}
        oldest: float | None = None
        for row in rows:
            jobs[row["state"]] = int(row["n"])
            age = float(row["oldest_s"])
            oldest = age if oldest is None else max(oldest, age)
        return BulkStats(jobs=jobs, oldest_open_age_s=oldest)

    # --- helpers ---------------------------------------------------------------------------------

    async def _job_ended(self, conn: PoolConnectionProxy, row: asyncpg.Record) -> None:
        """The job just ended: enqueue its callback in the caller's transaction."""
        url = row["callback_url"]
        if not url or self._callback_sink is None:
            return
        view = self._view(row)
        await self._callback_sink(
            conn,
            job_id=row["id"],
            tenant=row["tenant"],
            key_id=row["key_id"] or "",
            url=url,
            body=summary_body(view, results_url=results_path(row["id"])),
        )

    def _view(
        self, row: asyncpg.Record, *, callback_state: DeliveryView | None = None
    ) -> EnrichJobView:
        running = int(row["running"])
        callback = None
        if row["callback_url"]:
            callback = _callback_view(
                row["callback_url"],
                ended=row["finished_at"] is not None,
                delivery=callback_state,
                sink=self._callback_sink is not None,
            )
        return EnrichJobView(
            id=row["id"],
            state=row["state"],
            counts=JobCounts(
                total=int(row["total"]),
                queued=max(0, int(row["open_items"]) - running),
                running=running,
                done=int(row["n_done"]),
                failed=int(row["n_failed"]),
                not_found=int(row["n_not_found"]),
                cancelled=int(row["n_cancelled"]),
            ),
            created_at=_utc(row["created_at"]),
            started_at=_utc(row["started_at"]),
            finished_at=_utc(row["finished_at"]),
            cancel_requested_at=_utc(row["cancel_requested_at"]),
            max_age_s=row["max_age_s"],
            min_likelihood=row["min_likelihood"],
            callback=callback,
        )


def _utc(value: Any) -> Any:  # Any: a timestamptz column (datetime) or NULL
    return value.astimezone(dt.UTC) if value is not None else None


_CUSTOMER: Final = msgspec.json.Decoder(UnifiedCustomer)
_ERROR: Final = msgspec.json.Decoder(ItemError)


def _item_view(row: asyncpg.Record) -> ItemView:
    raw: str | None = row["result"]
    state = row["state"]
    customer = _CUSTOMER.decode(raw) if raw is not None and state == "done" else None
    error = _ERROR.decode(raw) if raw is not None and state in ("failed", "not_found") else None
    return ItemView(seq=row["seq"], ref=row["ref"], state=state, customer=customer, error=error)


def _callback_view(
    url: str, *, ended: bool, delivery: DeliveryView | None, sink: bool
) -> CallbackView:
    """The job's callback: waiting for the job's end, then its delivery and attempts."""
    if not ended:
        return CallbackView(url=url, state="waiting")
    if delivery is None:
        return CallbackView(url=url, state="enqueued" if sink else "pending")
    return CallbackView(
        url=url,
        state=delivery.state,
        attempts=delivery.attempts,
        last_status=delivery.last_status,
        last_error=delivery.last_error,
        next_attempt_at=delivery.next_attempt_at,
        delivered_at=delivery.delivered_at,
    )
