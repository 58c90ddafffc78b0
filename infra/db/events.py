"""PostgreSQL event store: the durable inbox of webhook events and their jobs (asyncpg).

Implements :class:`domain.webhooks.EventStore` over ``core.webhook_events`` and pgqueuer's
``queue.pgqueuer`` table, and :class:`domain.webhooks.GoogleLeadClaims` over the same table
(rows with ``source = 'google_ads'``).

* :meth:`PgEventStore.accept` inserts every event of a webhook body and enqueues a job for each
  NEW one in a single statement (one round trip). The arbiter is the unique key ``(source, lead_id,
  updated_at)`` (``INSERT ... ON CONFLICT DO NOTHING RETURNING``): of N concurrent deliveries of
  one event exactly one inserts (the others wait for its commit, then see the row), so exactly
  one job exists. Rows are inserted in key order, so two bodies holding the same events in
  different orders cannot deadlock.
* Every status write is one auto-committed statement, guarded by the status it expects, so a
  late or concurrent run can never move a terminal event backwards.
* Outage-like failures surface as ``DependencyUnavailable("postgres")``.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Final

import msgspec

from domain.webhooks import AcceptResult, GoogleLeadClaim, QueueStats, StoredEvent
from infra.db.pool import pooled_connection
from infra.db.repository import DEFAULT_ACQUIRE_TIMEOUT_S, jsonb_text
from infra.queue import enqueue_event_jobs

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from contextlib import AbstractAsyncContextManager
    from uuid import UUID

    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    from domain.webhooks import WebhookEvent

__all__ = [
    "CLAIM_GOOGLE_LEAD",
    "COMPLETE_GOOGLE_LEAD",
    "COUNT_DEAD_LETTERS",
    "FAIL_GOOGLE_LEAD",
    "FIND_ORPHANS",
    "INSERT_EVENTS",
    "MARK_COMPLETED_UNSENT",
    "MARK_FAILED",
    "MARK_PROCESSING",
    "MARK_SEND_INTENT",
    "MARK_SENT_COMPLETED",
    "OPEN_COUNTS",
    "RECORD_ATTEMPT",
    "RELEASE_GOOGLE_LEAD",
    "SELECT_EVENT",
    "SOURCE_C2S",
    "SOURCE_GOOGLE_ADS",
    "PgEventStore",
    "PgGoogleLeadClaims",
    "PooledStore",
]

SOURCE_C2S: Final = "c2s"
SOURCE_GOOGLE_ADS: Final = "google_ads"
# Google leads are deduplicated on their id alone; the key's timestamp part is a fixed sentinel.
_GOOGLE_KEY_TIME: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# Insert a webhook body's events and a job for each new one, in ONE statement (one round trip,
# atomic without an explicit transaction); duplicates are skipped by the arbiter and get no job.
# $1 text: source; $2 text[]: lead ids; $3 timestamptz[]: updated_at; $4 text[]: hook actions
# (NULL items allowed); $5 text[]: payloads (JSON text); $6 jsonb: trace context or NULL (also
# the jobs' headers). Returns id, lead_id, updated_at of each inserted row.
# The job is enqueued by the same statement, hence the initial status 'queued'; its insert is
# infra.queue.ENQUEUE_EVENT_JOBS's, without the arbiter (a new event cannot have a job yet).
INSERT_EVENTS: Final = """
WITH new_events AS (
    INSERT INTO core.webhook_events
        (source, lead_id, updated_at, hook_action, payload_raw, status, trace_context)
    SELECT $1, t.lead_id, t.updated_at, t.hook_action, t.payload::jsonb, 'queued', $6::jsonb
      FROM unnest($2::text[], $3::timestamptz[], $4::text[], $5::text[])
           AS t(lead_id, updated_at, hook_action, payload)
     ORDER BY t.lead_id, t.updated_at
    ON CONFLICT (source, lead_id, updated_at) DO NOTHING
    RETURNING id, lead_id, updated_at
),
new_jobs AS (
    INSERT INTO queue.pgqueuer AS job (priority, entrypoint, payload, dedupe_key, headers, status)
    SELECT 0, 'enrich_event', convert_to(e.id::text, 'UTF8'), 'webhook_event:' || e.id::text,
           $6::jsonb, 'queued'
      FROM new_events AS e
    RETURNING id, entrypoint, priority
),
logged_jobs AS (
    INSERT INTO queue.pgqueuer_log (job_id, status, entrypoint, priority)
    SELECT id, 'queued', entrypoint, priority FROM new_jobs
)
SELECT id, lead_id, updated_at FROM new_events
"""

# One event. $1 uuid: event id.
SELECT_EVENT: Final = """
SELECT id, source, lead_id, updated_at, hook_action, payload_raw::text AS payload, status,
       attempts, received_at, send_intent_at, message_sent_at, error_message, redriven_at
  FROM core.webhook_events
 WHERE id = $1
"""

# Claim an open event for one attempt. $1 uuid. Returns the row, or nothing when terminal.
MARK_PROCESSING: Final = """
UPDATE core.webhook_events
   SET status = 'processing', attempts = attempts + 1
 WHERE id = $1 AND status IN ('received', 'queued', 'processing')
RETURNING id, source, lead_id, updated_at, hook_action, payload_raw::text AS payload, status,
          attempts, received_at, send_intent_at, message_sent_at, error_message, redriven_at
"""

# Record the intent to send; only one run can win it. $1 uuid. Returns id when won.
MARK_SEND_INTENT: Final = """
UPDATE core.webhook_events
   SET send_intent_at = now()
 WHERE id = $1 AND status = 'processing' AND send_intent_at IS NULL AND message_sent_at IS NULL
RETURNING id
"""

# Forget an intent whose send provably failed. $1 uuid.
CLEAR_SEND_INTENT: Final = """
UPDATE core.webhook_events SET send_intent_at = NULL WHERE id = $1 AND message_sent_at IS NULL
"""

# The message is sent: completed, whatever a concurrent run wrote meanwhile. $1 uuid.
MARK_SENT_COMPLETED: Final = """
UPDATE core.webhook_events
   SET message_sent_at = coalesce(message_sent_at, now()),
       processed_at = CASE WHEN status = 'completed' THEN processed_at ELSE now() END,
       status = 'completed',
       error_message = NULL
 WHERE id = $1
"""

# Completed without a message: the lead already has its message for these contacts
# (docs/contract.md §2). $1 uuid; $2 text: note without personal data.
MARK_COMPLETED_UNSENT: Final = """
UPDATE core.webhook_events
   SET status = 'completed', error_message = $2, processed_at = now(), send_intent_at = NULL
 WHERE id = $1 AND status = 'processing' AND message_sent_at IS NULL
"""

# Fail an event (never over a completed one). $1 uuid; $2 text: reason without personal data;
# $3 bool: a dead letter (a transient failure given up on: redrivable, counted in the DLQ depth).
MARK_FAILED: Final = """
UPDATE core.webhook_events
   SET status = 'failed', error_message = $2, processed_at = now(),
       dead_lettered_at = CASE WHEN $3::bool THEN now() END
 WHERE id = $1 AND status <> 'completed'
"""

# Dead letters waiting for an operator (served by idx_webhook_events_dead). $1 text: source.
COUNT_DEAD_LETTERS: Final = """
SELECT count(*) FROM core.webhook_events
 WHERE status = 'failed' AND dead_lettered_at IS NOT NULL AND source = $1
"""

# A transient failure: back to queued (the job is re-queued with a delay). $1 uuid; $2 text.
RECORD_ATTEMPT: Final = """
UPDATE core.webhook_events
   SET status = 'queued', error_message = $2
 WHERE id = $1 AND status NOT IN ('completed', 'failed')
"""

# Open C2S events by status, and the age of the oldest one waiting for a worker (received or
# queued; NULL when none); served by idx_webhook_events_open.
# $1 text: source. Returns status, n, oldest_age_s (the same on every row).
OPEN_COUNTS: Final = """
SELECT status, count(*) AS n,
       extract(epoch FROM now() - min(min(received_at) FILTER (WHERE status <> 'processing'))
                                  OVER ())::float8 AS oldest_age_s
  FROM core.webhook_events
 WHERE status IN ('received', 'queued', 'processing') AND source = $1
 GROUP BY status
"""

# Open C2S events without a live job, oldest first (the orphan sweep).
# $1 text: source; $2 float8: minimum age in seconds; $3 int: limit. Returns id.
# The job table and the dedupe-key prefix are infra.queue's (a test checks they agree); the
# lookup is served by pgqueuer's unique index on dedupe_key for queued/picked jobs.
FIND_ORPHANS: Final = """
SELECT e.id
  FROM core.webhook_events AS e
 WHERE e.status IN ('received', 'queued', 'processing')
   AND e.source = $1
   AND e.received_at < now() - make_interval(secs => $2)
   AND NOT EXISTS (
       SELECT 1
         FROM queue.pgqueuer AS j
        WHERE j.dedupe_key = 'webhook_event:' || e.id::text
          AND j.status IN ('queued', 'picked'))
 ORDER BY e.received_at
 LIMIT $3
"""

# Claim a Google lead id. $1 text: Google lead id; $2 timestamptz: the key sentinel;
# $3 text: payload JSON. Returns id when this call claimed it.
CLAIM_GOOGLE_LEAD: Final = """
INSERT INTO core.webhook_events (source, lead_id, updated_at, payload_raw, status, attempts)
VALUES ('google_ads', $1, $2, $3::jsonb, 'processing', 1)
ON CONFLICT (source, lead_id, updated_at) DO NOTHING
RETURNING id
"""

# The C2S lead created for an earlier claim. $1 text; $2 timestamptz. Returns external_ref.
FIND_GOOGLE_LEAD: Final = """
SELECT external_ref FROM core.webhook_events
 WHERE source = 'google_ads' AND lead_id = $1 AND updated_at = $2
"""

# $1 text: Google lead id; $2 timestamptz: sentinel; $3 text: C2S lead id.
COMPLETE_GOOGLE_LEAD: Final = """
UPDATE core.webhook_events
   SET status = 'completed', external_ref = $3, processed_at = now(), error_message = NULL
 WHERE source = 'google_ads' AND lead_id = $1 AND updated_at = $2
"""

# Drop an in-flight claim (nothing was created). $1 text; $2 timestamptz.
RELEASE_GOOGLE_LEAD: Final = """
DELETE FROM core.webhook_events
 WHERE source = 'google_ads' AND lead_id = $1 AND updated_at = $2
   AND status = 'processing'
"""

# $1 text; $2 timestamptz; $3 text: reason.
FAIL_GOOGLE_LEAD: Final = """
UPDATE core.webhook_events
   SET status = 'failed', error_message = $3, processed_at = now()
 WHERE source = 'google_ads' AND lead_id = $1 AND updated_at = $2
   AND status <> 'completed'
"""


def _to_event(row: asyncpg.Record) -> StoredEvent:
    return StoredEvent(
        id=row["id"],
        source=row["source"],
        lead_id=row["lead_id"],
        updated_at=row["updated_at"],
        hook_action=row["hook_action"],
        payload=row["payload"].encode(),
        status=row["status"],
        attempts=row["attempts"],
        received_at=row["received_at"],
        send_intent_at=row["send_intent_at"],
        message_sent_at=row["message_sent_at"],
        error_message=row["error_message"],
        redriven_at=row["redriven_at"],
    )


class PooledStore:
    """Base of the PostgreSQL adapters on the process's pool: one way to take a connection."""

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout

    def _connection(self) -> AbstractAsyncContextManager[PoolConnectionProxy]:
        """A pooled connection; outages become ``DependencyUnavailable``."""
        return pooled_connection(self._pool, self._acquire_timeout)

    async def _execute(self, query: str, *args: object) -> str:
        async with self._connection() as conn:
            status: str = await conn.execute(query, *args)
        return status


class PgEventStore(PooledStore):
    """The webhook-event inbox and its queue, on an asyncpg pool.

    Args:
        pool: The process's pool.
        source: Which events this store serves (``c2s``).
        acquire_timeout: Seconds to wait for a pooled connection.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        source: str = SOURCE_C2S,
        acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT_S,
    ) -> None:
        super().__init__(pool, acquire_timeout=acquire_timeout)
        self._source = source

    async def accept(
        self, events: Sequence[WebhookEvent], trace_context: Mapping[str, str] | None = None
    ) -> AcceptResult:
        """Store each event idempotently and enqueue a job per new event, in one statement.

        Args:
            events: The valid events of one webhook body.
            trace_context: W3C trace context of the request, stored with the events and put in
                the jobs' headers so the worker's span links back to the request.

        Returns:
            Counts, and the ids of the newly stored events in input order.
        """
        if not events:
            return AcceptResult(received=0, processed=0, duplicates=0, ids=[])
        context = msgspec.json.encode(dict(trace_context)).decode() if trace_context else None
        async with self._connection() as conn:
            rows = await conn.fetch(
                INSERT_EVENTS,
                self._source,
                [e.lead_id for e in events],
                [e.updated_at for e in events],
                [e.hook_action for e in events],
                [jsonb_text(e.raw) for e in events],
                context,
            )
        new = {(r["lead_id"], r["updated_at"]): r["id"] for r in rows}
        ids: list[UUID] = []
        for event in events:
            event_id = new.pop((event.lead_id, event.updated_at), None)
            if event_id is not None:
                ids.append(event_id)
        return AcceptResult(
            received=len(events), processed=len(ids), duplicates=len(events) - len(ids), ids=ids
        )

    async def load(self, event_id: UUID) -> StoredEvent | None:
        """The event, or ``None``."""
        async with self._connection() as conn:
            row = await conn.fetchrow(SELECT_EVENT, event_id)
        return None if row is None else _to_event(row)

    async def mark_processing(self, event_id: UUID) -> StoredEvent | None:
        """Claim an open event for one attempt; ``None`` when missing or terminal."""
        async with self._connection() as conn:
            row = await conn.fetchrow(MARK_PROCESSING, event_id)
        return None if row is None else _to_event(row)

    async def mark_send_intent(self, event_id: UUID) -> bool:
        """Record the intent to send; ``False`` when another run holds it already."""
        async with self._connection() as conn:
            won = await conn.fetchval(MARK_SEND_INTENT, event_id)
        return won is not None

    async def clear_send_intent(self, event_id: UUID) -> None:
        """Forget the intent of a send that provably did not reach C2S."""
        await self._execute(CLEAR_SEND_INTENT, event_id)

    async def mark_sent_completed(self, event_id: UUID) -> None:
        """Record the message as sent and the event completed."""
        await self._execute(MARK_SENT_COMPLETED, event_id)

    async def mark_completed_unsent(self, event_id: UUID, note: str) -> None:
        """Complete a processing event that needs no message, with ``note``."""
        await self._execute(MARK_COMPLETED_UNSENT, event_id, note)

    async def mark_failed(self, event_id: UUID, reason: str, *, dead_letter: bool = False) -> None:
        """Fail the event with ``reason``; ``dead_letter`` records it as redrivable."""
        await self._execute(MARK_FAILED, event_id, reason, dead_letter)

    async def record_attempt(self, event_id: UUID, reason: str) -> None:
        """Record a transient failure; the event waits for its retry."""
        await self._execute(RECORD_ATTEMPT, event_id, reason)

    async def queue_stats(self) -> QueueStats:
        """Open events by status (all three statuses present) and the oldest waiting one's age."""
        async with self._connection() as conn:
            rows = await conn.fetch(OPEN_COUNTS, self._source)
            dead = await conn.fetchval(COUNT_DEAD_LETTERS, self._source)
        counts = {"received": 0, "queued": 0, "processing": 0}
        oldest: float | None = None
        for row in rows:
            counts[row["status"]] = int(row["n"])
            if row["oldest_age_s"] is not None:
                oldest = float(row["oldest_age_s"])
        return QueueStats(counts=counts, oldest_open_age_s=oldest, dead_letters=int(dead))

    async def requeue_orphans(self, min_age_s: float, limit: int) -> int:
        """Enqueue a job for each open event older than ``min_age_s`` that has no live job.

        Returns:
            How many jobs were created (a concurrent sweep's jobs are not counted twice).
        """
        async with self._connection() as conn, conn.transaction():
            rows = await conn.fetch(FIND_ORPHANS, self._source, min_age_s, limit)
            return await enqueue_event_jobs(conn, [r["id"] for r in rows])


class PgGoogleLeadClaims(PooledStore):
    """Google Ads lead dedup: one ``core.webhook_events`` row per Google lead id.

    PostgreSQL rather than a Redis ``SET NX``: the claim must outlive Redis restarts and the
    C2S lead id it records is looked up on every redelivery (ADR 0004).
    """

    def __init__(
        self, pool: asyncpg.Pool, *, acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT_S
    ) -> None:
        super().__init__(pool, acquire_timeout=acquire_timeout)

    async def claim(self, google_lead_id: str, payload: bytes) -> GoogleLeadClaim:
        """Claim the id; a loser learns the C2S lead created by the winner, when known."""
        async with self._connection() as conn:
            won = await conn.fetchval(
                CLAIM_GOOGLE_LEAD, google_lead_id, _GOOGLE_KEY_TIME, jsonb_text(payload)
            )
            if won is not None:
                return GoogleLeadClaim(acquired=True)
            ref = await conn.fetchval(FIND_GOOGLE_LEAD, google_lead_id, _GOOGLE_KEY_TIME)
        return GoogleLeadClaim(acquired=False, c2s_lead_id=ref)

    async def complete(self, google_lead_id: str, c2s_lead_id: str) -> None:
        """Record the created C2S lead."""
        await self._execute(COMPLETE_GOOGLE_LEAD, google_lead_id, _GOOGLE_KEY_TIME, c2s_lead_id)

    async def release(self, google_lead_id: str) -> None:
        """Drop an in-flight claim."""
        await self._execute(RELEASE_GOOGLE_LEAD, google_lead_id, _GOOGLE_KEY_TIME)

    async def fail(self, google_lead_id: str, reason: str) -> None:
        """Keep the claim as failed."""
        await self._execute(FAIL_GOOGLE_LEAD, google_lead_id, _GOOGLE_KEY_TIME, reason)
