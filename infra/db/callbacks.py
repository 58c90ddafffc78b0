"""PostgreSQL store of bulk-job callback deliveries (``core.callback_deliveries``).

* :func:`enqueue_callback` records a delivery in the caller's transaction (the one that ends the
  job), so a job is never marked done without its callback, nor the reverse.
* :func:`deliveries_of` lists a job's deliveries for the job view (no body).
* :class:`PgCallbackDeliveries` is the delivery loop's side: claim due rows (``FOR UPDATE SKIP
  LOCKED``: several workers never take the same row), record an attempt's outcome, give a row
  back. A claim moves ``next_attempt_at`` past the attempt (the lease) and sets a fresh
  ``claim_token``: a worker that dies mid-attempt leaves the row due again when the lease ends,
  and a late answer of a worker whose lease ran out is ignored (the token changed).

Times of the delivery loop come from the caller's clock (``now`` parameters), so tests run the
24-hour schedule on a virtual clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Final
from uuid import UUID

import msgspec

from domain.callbacks import DeliveryView
from infra.db.pool import pooled_connection

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    from domain.callbacks import DeliveryState

__all__ = [
    "CLAIM_DUE",
    "ClaimedDelivery",
    "PgCallbackDeliveries",
    "deliveries_of",
    "enqueue_callback",
]

DEFAULT_ACQUIRE_TIMEOUT_S: Final = 2.0

# $1 job_id uuid, $2 tenant text, $3 key_id uuid, $4 url text, $5 body bytea. Due at once.
INSERT_DELIVERY: Final = """
INSERT INTO core.callback_deliveries (job_id, tenant, key_id, url, body)
VALUES ($1, $2, $3, $4, $5)
"""

# $1 job_id uuid. Oldest first; never selects the body.
DELIVERIES_OF: Final = """
SELECT id, job_id, url, state, attempts, last_status, last_error,
       CASE WHEN state = 'pending' THEN next_attempt_at END AS next_attempt_at,
       created_at, first_attempt_at, last_attempt_at, delivered_at, failed_at
  FROM core.callback_deliveries
 WHERE job_id = $1
 ORDER BY created_at, id
"""

# $1 now timestamptz, $2 lease end timestamptz, $3 limit int. Due rows, the longest due first;
# each claimed row counts an attempt, starts its retry window on the first one and is leased.
CLAIM_DUE: Final = """
WITH due AS (
    SELECT id
      FROM core.callback_deliveries
     WHERE state = 'pending' AND next_attempt_at <= $1
     ORDER BY next_attempt_at
     LIMIT $3
       FOR UPDATE SKIP LOCKED
)
UPDATE core.callback_deliveries AS d
   SET attempts = d.attempts + 1,
       claim_token = gen_random_uuid(),
       next_attempt_at = $2,
       first_attempt_at = coalesce(d.first_attempt_at, $1),
       last_attempt_at = $1
  FROM due
 WHERE d.id = due.id
RETURNING d.id, d.claim_token, d.job_id, d.tenant, d.key_id, d.url, d.body, d.attempts,
          d.first_attempt_at
"""

# $1 id, $2 claim_token, $3 state, $4 next_attempt_at, $5 last_status, $6 last_error, $7 now.
FINISH_ATTEMPT: Final = """
UPDATE core.callback_deliveries
   SET state = $3,
       next_attempt_at = $4,
       last_status = $5,
       last_error = $6,
       claim_token = NULL,
       delivered_at = CASE WHEN $3 = 'delivered' THEN $7::timestamptz END,
       failed_at = CASE WHEN $3 = 'failed' THEN $7::timestamptz END
 WHERE id = $1 AND claim_token = $2 AND state = 'pending'
"""

# $1 id, $2 claim_token, $3 now, $4 last_error. The attempt was interrupted (worker stopping):
# due again at once, for this or another worker.
RELEASE_CLAIM: Final = """
UPDATE core.callback_deliveries
   SET next_attempt_at = $3, claim_token = NULL, last_error = $4
 WHERE id = $1 AND claim_token = $2 AND state = 'pending'
"""

COUNT_PENDING: Final = "SELECT count(*) FROM core.callback_deliveries WHERE state = 'pending'"


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


async def enqueue_callback(
    conn: asyncpg.Connection | PoolConnectionProxy,
    *,
    job_id: UUID | str,
    tenant: str,
    key_id: UUID | str,
    url: str,
    body: bytes,
) -> None:
    """Record a callback delivery, due at once, in the caller's transaction.

    The URL is expected valid (``domain.callbacks.validate_callback_url`` at job creation); the
    delivery loop checks it again, and the addresses it resolves to, before every attempt.

    Args:
        conn: A connection, inside the transaction that ends the job.
        job_id: The job's id.
        tenant: The job's tenant.
        key_id: The API key that created the job (its callback secrets sign the delivery).
        url: The job's ``callback_url``.
        body: The exact JSON to post (a job summary: no personal data).
    """
    await conn.execute(INSERT_DELIVERY, _uuid(job_id), tenant, _uuid(key_id), url, body)


async def deliveries_of(
    conn_or_pool: asyncpg.Connection | PoolConnectionProxy | asyncpg.Pool,
    job_id: UUID | str,
) -> list[DeliveryView]:
    """The job's callback deliveries, oldest first (attempts, states, last errors).

    Args:
        conn_or_pool: A connection or a pool.
        job_id: The job's id.
    """
    rows = await conn_or_pool.fetch(DELIVERIES_OF, _uuid(job_id))
    return [
        DeliveryView(
            id=row["id"],
            job_id=row["job_id"],
            url=row["url"],
            state=row["state"],
            attempts=row["attempts"],
            last_status=row["last_status"],
            last_error=row["last_error"],
            next_attempt_at=row["next_attempt_at"],
            created_at=row["created_at"],
            first_attempt_at=row["first_attempt_at"],
            last_attempt_at=row["last_attempt_at"],
            delivered_at=row["delivered_at"],
            failed_at=row["failed_at"],
        )
        for row in rows
    ]


class ClaimedDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery the loop holds for one attempt.

    Attributes:
        id: The delivery's id.
        claim_token: Proves the claim when the outcome is recorded.
        job_id: The job it announces.
        tenant: The job's tenant.
        key_id: The key whose callback secrets sign it.
        url: Where to post.
        body: What to post, byte for byte.
        attempts: Attempts including this one.
        first_attempt_at: Start of the retry window.
    """

    id: UUID
    claim_token: UUID
    job_id: UUID
    tenant: str
    key_id: UUID
    url: str
    body: bytes
    attempts: int
    first_attempt_at: datetime


class PgCallbackDeliveries:
    """The delivery loop's access to ``core.callback_deliveries``.

    Args:
        pool: The process's pool.
        acquire_timeout: Seconds to wait for a pooled connection.
    """

    def __init__(
        self, pool: asyncpg.Pool, *, acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT_S
    ) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout

    async def claim_due(
        self, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[ClaimedDelivery]:
        """Claim up to ``limit`` due deliveries (one attempt each), leased until ``lease_until``.

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        async with pooled_connection(self._pool, self._acquire_timeout) as conn:
            rows = await conn.fetch(CLAIM_DUE, now, lease_until, limit)
        return [
            ClaimedDelivery(
                id=row["id"],
                claim_token=row["claim_token"],
                job_id=row["job_id"],
                tenant=row["tenant"],
                key_id=row["key_id"],
                url=row["url"],
                body=bytes(row["body"]),
                attempts=row["attempts"],
                first_attempt_at=row["first_attempt_at"],
            )
            for row in rows
        ]

    async def finish(
        self,
        claimed: ClaimedDelivery,
        *,
        state: DeliveryState,
        next_attempt_at: datetime,
        last_status: int | None,
        last_error: str | None,
        now: datetime,
    ) -> bool:
        """Record an attempt's outcome; ``False`` when the claim was lost (lease expired).

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        async with pooled_connection(self._pool, self._acquire_timeout) as conn:
            status = await conn.execute(
                FINISH_ATTEMPT,
                claimed.id,
                claimed.claim_token,
                state,
                next_attempt_at,
                last_status,
                last_error,
                now,
            )
        return status.endswith(" 1")

    async def release(self, claimed: ClaimedDelivery, *, now: datetime, reason: str) -> None:
        """Give an interrupted attempt back: the delivery is due again at once.

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        async with pooled_connection(self._pool, self._acquire_timeout) as conn:
            await conn.execute(RELEASE_CLAIM, claimed.id, claimed.claim_token, now, reason)

    async def pending(self) -> int:
        """Deliveries not yet delivered nor given up (the ``callback_pending`` gauge).

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        async with pooled_connection(self._pool, self._acquire_timeout) as conn:
            count = await conn.fetchval(COUNT_PENDING)
        return int(count or 0)
