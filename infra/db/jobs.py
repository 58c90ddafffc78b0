"""Operator view of the webhook queue: list events by state, redrive dead letters (asyncpg).

Backs ``c2s-api jobs`` and ``/api/v1/admin/jobs`` (docs/runbooks/QueueDeadLetters.md). A *dead
letter* is an event failed after its retry budget (``dead_lettered_at`` set, see
:mod:`domain.webhooks.job`); other failed events failed for a permanent reason (no CPF found, lead
deleted in C2S...). A redrive puts a failed event back to ``queued`` with its attempts reset and
``redriven_at`` set (the retry budget counts from it), and enqueues its job, in one transaction.

An event whose earlier attempt may have posted its message (a send intent without a sent mark,
"send outcome unknown") is never redriven: C2S may already have the message, and the at-most-once
promise (ADR 0004) wins; an operator checks the lead in C2S and decides outside this tool.

Webhook events carry no tenant (they come from the deployment's one C2S account through an
anonymous, signed webhook), so these operations are not tenant-scoped: they are for the
operators' ``admin`` keys (docs/security.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from domain.webhooks.jobs import JOB_STATES, JobState, JobView, RedriveOutcome
from infra.db.events import SOURCE_C2S, PooledStore
from infra.db.repository import DEFAULT_ACQUIRE_TIMEOUT_S
from infra.queue import enqueue_event_jobs

if TYPE_CHECKING:
    from uuid import UUID

    import asyncpg

__all__ = [
    "JOB_STATES",
    "LIST_JOBS",
    "REDRIVE_DEAD",
    "REDRIVE_ONE",
    "JobState",
    "JobView",
    "PgJobAdmin",
    "RedriveOutcome",
]


# The state filter of each listing: `dead` (redrivable dead letters), `failed` (every failed
# event), `open` (waiting or running), `completed`, `all`.
_STATE_FILTERS: Final = {
    "dead": "status = 'failed' AND dead_lettered_at IS NOT NULL",
    "failed": "status = 'failed'",
    "open": "status IN ('received', 'queued', 'processing')",
    "completed": "status = 'completed'",
    "all": "TRUE",
}

# $1 text: source; $2 int: limit. Newest first by their last change. {where} is one of the fixed
# filters above (never client input).
LIST_JOBS: Final = """
SELECT id, lead_id, status, attempts, error_message, received_at, processed_at,
       dead_lettered_at, redriven_at,
       (send_intent_at IS NOT NULL AND message_sent_at IS NULL) AS send_unknown
  FROM core.webhook_events
 WHERE source = $1 AND {where}
 ORDER BY coalesce(processed_at, received_at) DESC
 LIMIT $2
"""

# Redrive one failed event. $1 uuid; $2 text: source. Returns id when it was redriven.
REDRIVE_ONE: Final = """
UPDATE core.webhook_events
   SET status = 'queued', attempts = 0, dead_lettered_at = NULL, redriven_at = now(),
       processed_at = NULL, error_message = 'redriven: ' || coalesce(error_message, '')
 WHERE id = $1 AND source = $2 AND status = 'failed'
   AND NOT (send_intent_at IS NOT NULL AND message_sent_at IS NULL)
RETURNING id
"""

# Why an event could not be redriven. $1 uuid; $2 text: source.
EXPLAIN_REFUSAL: Final = """
SELECT status, (send_intent_at IS NOT NULL AND message_sent_at IS NULL) AS send_unknown
  FROM core.webhook_events WHERE id = $1 AND source = $2
"""

# Redrive every dead letter (a bounded batch). $1 text: source; $2 int: limit. Returns ids.
REDRIVE_DEAD: Final = """
UPDATE core.webhook_events
   SET status = 'queued', attempts = 0, dead_lettered_at = NULL, redriven_at = now(),
       processed_at = NULL, error_message = 'redriven: ' || coalesce(error_message, '')
 WHERE id IN (
       SELECT id FROM core.webhook_events
        WHERE source = $1 AND status = 'failed' AND dead_lettered_at IS NOT NULL
          AND NOT (send_intent_at IS NOT NULL AND message_sent_at IS NULL)
        ORDER BY dead_lettered_at
        LIMIT $2
          FOR UPDATE SKIP LOCKED)
RETURNING id
"""


class PgJobAdmin(PooledStore):
    """List and redrive webhook events (one source: ``c2s``).

    Args:
        pool: An asyncpg pool.
        source: The events' source.
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

    async def list_jobs(self, state: JobState = "all", limit: int = 50) -> list[JobView]:
        """Events in ``state``, most recently changed first, at most ``limit``."""
        query = LIST_JOBS.format(where=_STATE_FILTERS[state])
        async with self._connection() as conn:
            rows = await conn.fetch(query, self._source, limit)
        return [
            JobView(
                id=row["id"],
                lead_id=row["lead_id"],
                status=row["status"],
                dead_letter=row["dead_lettered_at"] is not None,
                send_unknown=bool(row["send_unknown"]),
                attempts=row["attempts"],
                error=row["error_message"],
                received_at=row["received_at"],
                processed_at=row["processed_at"],
                dead_lettered_at=row["dead_lettered_at"],
                redriven_at=row["redriven_at"],
            )
            for row in rows
        ]

    async def redrive(self, event_id: UUID) -> RedriveOutcome:
        """Put one failed event back in the queue (any failed event but a send-unknown one)."""
        async with (
            self._connection() as conn,
            conn.transaction(),
        ):
            done = await conn.fetchval(REDRIVE_ONE, event_id, self._source)
            if done is not None:
                await enqueue_event_jobs(conn, [event_id])
                return RedriveOutcome(id=event_id, status="redriven")
            row = await conn.fetchrow(EXPLAIN_REFUSAL, event_id, self._source)
        if row is None:
            return RedriveOutcome(id=event_id, status="not_found")
        if row["status"] == "failed" and row["send_unknown"]:
            return RedriveOutcome(id=event_id, status="send_unknown")
        return RedriveOutcome(id=event_id, status="not_failed")

    async def redrive_dead(self, limit: int = 1000) -> list[UUID]:
        """Redrive every dead letter (at most ``limit`` per call, oldest first); their ids."""
        async with (
            self._connection() as conn,
            conn.transaction(),
        ):
            ids: list[UUID] = [
                row["id"] for row in await conn.fetch(REDRIVE_DEAD, self._source, limit)
            ]
            await enqueue_event_jobs(conn, ids)
        return ids
