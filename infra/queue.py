"""The durable job queue of webhook events, on pgqueuer 1.6 (PostgreSQL, ``queue`` schema).

* **Enqueue**: the intake inserts the events and their jobs in ONE statement
  (``infra.db.events.INSERT_EVENTS``, whose job insert is :data:`ENQUEUE_EVENT_JOBS`'s): an
  accepted event always has a job, a duplicate never gets one (no outbox relay needed).
  :func:`enqueue_event_jobs` enqueues jobs for stored events on the caller's connection (the
  orphan sweep, redrives). The job's payload is the event id; its pgqueuer ``dedupe_key``
  (``webhook_event:<id>``) keeps at most one live job per event.
* **Consume** (:class:`EventConsumer`): one entrypoint, ``enrich_event``, running
  :func:`domain.webhooks.run_event_job` with at most ``concurrency`` jobs per worker.

  - *Leases.* pgqueuer marks a dequeued job ``picked`` and refreshes its ``heartbeat`` every
    ``lease_timeout / 2`` while it runs; any worker's dequeue re-picks a ``picked`` job whose
    heartbeat is older than ``lease_timeout``. A worker killed mid-job therefore loses its jobs
    to the next dequeue after at most ``lease_timeout`` (30 s by default).
  - *Retries.* Transient failures come back from the use case as ``retry`` outcomes with an
    exponential, jittered delay; the job is re-queued in place with pgqueuer's
    ``RetryRequested(delay)`` (``execute_after`` bumped). Retries go on until the retry budget
    (``WORKER_RETRY_BUDGET_S`` from the event's arrival or last redrive) is spent; the attempt
    count that caps them is the event row's, so runs that died mid-job count too. Then the event
    is ``failed`` with ``dead_lettered_at`` set: that row is the dead letter, listed and redriven
    by ``c2s-api jobs`` and ``/api/v1/admin/jobs`` (:mod:`infra.db.jobs`).
  - *Orphans.* A job can still vanish without its event reaching a terminal state (its status
    write failed while PostgreSQL was down and pgqueuer logged it as an exception, which deletes
    it). A periodic sweep re-enqueues open events that have no live job.
  - *Prefetch.* One dequeue leases a batch of ``concurrency`` jobs and a worker holds at most
    twice that; only ``concurrency`` run at once, the others wait for a free slot with their
    heartbeat running, so a finished job is followed at once, without a dequeue round trip.
  - *Shutdown.* :meth:`EventConsumer.stop` stops dequeuing; in-flight jobs finish, prefetched
    jobs that have not started are given back at once;
    :meth:`EventConsumer.release_in_flight` cancels the rest, which re-queues each of them at once
    (pgqueuer ``retry_job``) instead of waiting for its lease to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol
from uuid import UUID

import msgspec
import structlog
from aiohttp import ClientConnectorError
from opentelemetry import propagate, trace
from pgqueuer import AsyncpgDriver, AsyncpgPoolDriver, Queries, QueueManager, RetryRequested
from pgqueuer.adapters.persistence.qb import (
    QueryBuilderEnvironment,
    QueryQueueBuilder,
    QuerySchedulerBuilder,
)
from pgqueuer.domain.settings import DBSettings, Durability
from pgqueuer.domain.types import Channel

from domain.errors import DependencyUnavailable
from domain.webhooks import DEFAULT_RETRY_POLICY, EventStore, is_provably_unsent, run_event_job
from domain.webhooks.retry import NO_CPF_REASON
from infra.breaker.state import BreakerOpen
from observability.tracing import traced_from, tracer, untraced

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    import asyncpg
    from asyncpg.pool import PoolConnectionProxy
    from opentelemetry.context import Context
    from pgqueuer.models import Job

    from domain.pipeline import Enricher
    from domain.webhooks import JobOutcome, QueueStats, RetryPolicy

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_LEASE_TIMEOUT_S",
    "DEFAULT_POLL_INTERVAL_S",
    "ENQUEUE_EVENT_JOBS",
    "ENTRYPOINT",
    "JOB_DEDUPE_PREFIX",
    "QUEUE_SCHEMA",
    "EventConsumer",
    "NullQueueListener",
    "OrphanSweeper",
    "QueueListener",
    "enqueue_event_jobs",
    "job_dedupe_key",
    "provably_unsent",
    "queue_queries",
    "queue_settings",
]

log = structlog.get_logger(__name__)

ENTRYPOINT: Final = "enrich_event"
QUEUE_SCHEMA: Final = "queue"
JOB_DEDUPE_PREFIX: Final = "webhook_event:"
DEFAULT_CONCURRENCY: Final = 16  # app.config.Settings.worker_concurrency
DEFAULT_LEASE_TIMEOUT_S: Final = 30.0
# pgqueuer wakes on the NOTIFY of its insert trigger, but its statement-level trigger stays silent
# on UPDATEs, so a re-queued retry and a stale lease are only noticed by this poll (and by a
# deferred job's known ETA once it is queued). Each idle poll is four index-only queries.
DEFAULT_POLL_INTERVAL_S: Final = 2.0
_SAMPLE_INTERVAL_S: Final = 15.0
# Orphans appear when PostgreSQL drops connections mid-job (pgqueuer's own retry write fails and
# it deletes the job); tests/chaos measured them. Sweeping every 10 s for events 30 s old puts
# them back within ~40 s, inside the 120 s drain target; every sweep is one
# indexed query, and re-enqueueing is idempotent (dedupe key), so a short period costs little.
_SWEEP_INTERVAL_S: Final = 10.0
# An open event younger than this is never treated as an orphan: its job may be between states.
_ORPHAN_MIN_AGE_S: Final = 30.0
_ORPHAN_BATCH: Final = 500
# Restarts of the dequeue loop after a failure (PostgreSQL restarting): 1, 2, 4... 30 s; a run
# that lasted this long resets the backoff.
_RESTART_BASE_S: Final = 1.0
_RESTART_MAX_S: Final = 30.0
_STABLE_RUN_S: Final = 60.0


@functools.cache
def queue_settings() -> DBSettings:
    """pgqueuer's object names, pinned so the ``PGQUEUER_*`` environment cannot move them.

    They must match migration ``20251126000005_queue.sql`` (generated from these settings).
    """
    return DBSettings(
        prefix="",
        db_schema=QUEUE_SCHEMA,
        channel=Channel("ch_pgqueuer"),
        function="fn_pgqueuer_changed",
        statistics_table="pgqueuer_statistics",
        queue_status_type="pgqueuer_status",
        queue_table="pgqueuer",
        queue_table_log="pgqueuer_log",
        trigger="tg_pgqueuer_changed",
        schedules_table="pgqueuer_schedules",
        durability=Durability.durable,
    )


def queue_queries(driver: AsyncpgDriver | AsyncpgPoolDriver) -> Queries:
    """pgqueuer's query layer over ``driver``, with the pinned object names."""
    settings = queue_settings()
    return Queries(
        driver,
        qbe=QueryBuilderEnvironment(settings=settings),
        qbq=QueryQueueBuilder(settings=settings),
        qbs=QuerySchedulerBuilder(settings=settings),
    )


# One queued ``enrich_event`` job per event id, skipping events that already have a live job,
# plus pgqueuer's ``queued`` log row per new job: what pgqueuer's own ``enqueue`` writes, with the
# job's constants (entrypoint, priority 0, payload = the event id as text, dedupe key) spelt out
# in SQL so that nothing is built per call. The object names are queue_settings()'s and the
# constants ENTRYPOINT and JOB_DEDUPE_PREFIX (a test checks they agree); the arbiter restates
# the predicate of pgqueuer's partial unique index on dedupe_key. infra.db.events.INSERT_EVENTS
# carries the same two CTEs after its event insert.
# $1 uuid[]: event ids; $2 jsonb: the jobs' headers (trace context) or NULL.
# Returns the number of jobs created.
ENQUEUE_EVENT_JOBS: Final = """
WITH new_jobs AS (
    INSERT INTO queue.pgqueuer AS job (priority, entrypoint, payload, dedupe_key, headers, status)
    SELECT 0, 'enrich_event', convert_to(e.id::text, 'UTF8'), 'webhook_event:' || e.id::text,
           $2::jsonb, 'queued'
      FROM (SELECT DISTINCT unnest($1::uuid[]) AS id) AS e
    ON CONFLICT (dedupe_key) WHERE status IN ('queued', 'picked') AND dedupe_key IS NOT NULL
    DO NOTHING
    RETURNING id, entrypoint, priority
),
logged_jobs AS (
    INSERT INTO queue.pgqueuer_log (job_id, status, entrypoint, priority)
    SELECT id, 'queued', entrypoint, priority FROM new_jobs
)
SELECT count(*) FROM new_jobs
"""


def job_dedupe_key(event_id: UUID) -> str:
    """The pgqueuer ``dedupe_key`` of an event's job: one live job per event."""
    return f"{JOB_DEDUPE_PREFIX}{event_id}"


async def enqueue_event_jobs(
    conn: asyncpg.Connection | PoolConnectionProxy,
    event_ids: Sequence[UUID],
    *,
    headers: Mapping[str, str] | None = None,
) -> int:
    """Enqueue one ``enrich_event`` job per event on ``conn`` (inside the caller's transaction).

    An event that already has a live (queued or picked) job is skipped, so re-enqueueing is safe.

    Args:
        conn: The connection whose transaction also inserts the events.
        event_ids: Events to enqueue.
        headers: Trace context (W3C ``traceparent``) for the consumer's span link.

    Returns:
        How many jobs were created.
    """
    if not event_ids:
        return 0
    context = msgspec.json.encode(dict(headers)).decode() if headers else None
    created = await conn.fetchval(ENQUEUE_EVENT_JOBS, list(event_ids), context)
    return int(created or 0)


def provably_unsent(exc: BaseException) -> bool:
    """:func:`domain.webhooks.is_provably_unsent`, extended with what the adapters know.

    An open breaker rejects the call before any request is made, and a connection that could
    not be established carried nothing: neither can have posted a message.
    """
    if is_provably_unsent(exc):
        return True
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, BreakerOpen | ClientConnectorError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class QueueListener(Protocol):
    """Receives the queue's measurements (adapter:
    :class:`observability.queue.PrometheusQueueListener`)."""

    def job_started(self, age_s: float | None) -> None:
        """A job began running in this worker, ``age_s`` after it was enqueued."""
        ...

    def job_finished(self, outcome: str, duration_s: float) -> None:
        """A job ended: ``completed``, ``failed``, ``retry``, ``skipped``, ``error`` or
        ``released`` (given back at shutdown)."""
        ...

    def dead_lettered(self) -> None:
        """An event was failed after exhausting its retries."""
        ...

    def sampled(self, stats: QueueStats) -> None:
        """Periodic sample of open events by status and the oldest waiting event's age."""
        ...


class NullQueueListener:
    """Measures nothing."""

    def job_started(self, age_s: float | None) -> None:
        """Ignore."""

    def job_finished(self, outcome: str, duration_s: float) -> None:
        """Ignore."""

    def dead_lettered(self) -> None:
        """Ignore."""

    def sampled(self, stats: QueueStats) -> None:
        """Ignore."""


class OrphanSweeper(Protocol):
    """Re-enqueues open events whose job vanished (implemented by ``PgEventStore``)."""

    async def requeue_orphans(self, min_age_s: float, limit: int) -> int:
        """Enqueue a job for each open event older than ``min_age_s`` without a live job."""
        ...


class _ConsumerStore(EventStore, OrphanSweeper, Protocol):
    """What the consumer needs from the store."""


def _parse_event_id(job: Job) -> UUID | None:
    if job.payload is None:
        return None
    try:
        return UUID(job.payload.decode())
    except (UnicodeDecodeError, ValueError):
        return None


def _parent(job: Job) -> Context | None:
    """The trace context of the webhook request that accepted the event, if it was traced.

    The job's span continues that trace (same trace id), so one trace shows the delivery, the
    wait in the queue and the processing.
    """
    carrier = {k: str(v) for k, v in (job.headers or {}).items() if isinstance(v, str)}
    if not carrier:
        return None
    context = propagate.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


class EventConsumer:
    """Runs webhook-event jobs from the queue until stopped.

    Args:
        pool: asyncpg pool for pgqueuer (one connection is held for LISTEN; the rest serve
            dequeues, heartbeats and the status log).
        store: The event store (also sweeps orphans).
        enricher: The pipeline the jobs run.
        concurrency: Jobs running at once in this worker.
        lease_timeout_s: Heartbeat staleness after which another worker takes a job over.
        policy: Retry limits and backoff of transient failures.
        listener: Metrics hooks.
        rand: Jitter source.
        sample_interval_s: Period of the queue-depth sample.
        sweep_interval_s: Period of the orphan sweep.
        orphan_min_age_s: Age under which an open event without a job is left alone.
        poll_interval_s: Fallback dequeue poll (see ``DEFAULT_POLL_INTERVAL_S``).
    """

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        store: _ConsumerStore,
        enricher: Enricher,
        concurrency: int = DEFAULT_CONCURRENCY,
        lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S,
        policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        listener: QueueListener | None = None,
        rand: Callable[[], float] = random.random,
        sample_interval_s: float = _SAMPLE_INTERVAL_S,
        sweep_interval_s: float = _SWEEP_INTERVAL_S,
        orphan_min_age_s: float = _ORPHAN_MIN_AGE_S,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._store = store
        self._enricher = enricher
        self._concurrency = concurrency
        self._lease = timedelta(seconds=lease_timeout_s)
        self._policy = policy
        self._listener: QueueListener = listener or NullQueueListener()
        self._rand = rand
        self._sample_interval_s = sample_interval_s
        self._sweep_interval_s = sweep_interval_s
        self._orphan_min_age_s = orphan_min_age_s
        self._poll = timedelta(seconds=poll_interval_s)
        # Prefetch: one dequeue picks a whole batch of ``concurrency`` jobs, and this worker may
        # lease up to twice that (pgqueuer's max_concurrent_tasks, which must be at least twice
        # its batch size). The gate below still runs only ``concurrency`` at once; the others
        # wait on it with their heartbeat running (so they are not re-picked), and a slot that
        # frees up is filled at once instead of after the next dequeue round trip and status
        # flush. Jobs waiting on the gate are released at shutdown like running ones.
        self._batch_size = concurrency
        self._max_tasks = 2 * concurrency
        self._gate = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task[Any]] = set()
        self._releasing = False
        self._stopping = asyncio.Event()
        self._pool = pool
        self._qm = self._manager()

    def _manager(self) -> QueueManager:
        manager = QueueManager(queue_queries(AsyncpgPoolDriver(self._pool)))
        manager.entrypoint(ENTRYPOINT)(self.handle)
        return manager

    @property
    def in_flight(self) -> int:
        """Jobs running (or waiting on the gate) in this worker."""
        return len(self._running)

    @property
    def queue_manager(self) -> QueueManager:
        """The underlying pgqueuer manager (exposed for tests)."""
        return self._qm

    async def run(self) -> None:
        """Dequeue and run jobs until :meth:`stop`; returns once in-flight jobs have ended.

        Raises:
            RuntimeError: The queue schema is missing (the migrations were not applied).
            Exception: PostgreSQL is unreachable at start. Once started, a failure of the
                dequeue loop (PostgreSQL restarting) restarts it with backoff instead.
        """
        # Polls, heartbeats, status writes, samples and sweeps belong to no job: untraced (each
        # would be a root trace of one span, hundreds a minute). The tasks created inside
        # inherit this; each job's span starts from its own context instead (see handle).
        with untraced():
            await self._consume()

    async def _consume(self) -> None:
        await self._qm.verify_structure()
        background = [
            asyncio.create_task(self._every(self._sample_interval_s, self._sample)),
            asyncio.create_task(self._every(self._sweep_interval_s, self._sweep)),
        ]
        failures = 0
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                try:
                    await self._qm.run(
                        dequeue_timeout=self._poll,
                        batch_size=self._batch_size,
                        max_concurrent_tasks=self._max_tasks,
                        heartbeat_timeout=self._lease,
                    )
                except Exception as exc:
                    if self._stopping.is_set():
                        break
                    # Its in-flight jobs have ended (pgqueuer awaits them before raising); a job
                    # whose final status write failed is re-picked after its lease expires.
                    failures = 1 if time.monotonic() - started > _STABLE_RUN_S else failures + 1
                    delay = min(_RESTART_MAX_S, _RESTART_BASE_S * 2 ** (failures - 1))
                    log.warning(
                        "queue_consumer_restarting",
                        error_type=type(exc).__name__,
                        restart_in_s=delay,
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                    self._qm = self._manager()
                else:
                    break
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)

    def stop(self) -> None:
        """Stop dequeuing; jobs already running go on until they end or are released."""
        self._stopping.set()
        self._qm.shutdown.set()

    async def release_in_flight(self) -> int:
        """Cancel running jobs; each is re-queued at once (its lease released), not lost.

        A job cancelled in the middle of its C2S send first lets the send finish (see
        :func:`run_event_job`), so releasing never makes a send outcome unknown by itself.

        Returns:
            How many jobs were cancelled.
        """
        self._releasing = True
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        return len(tasks)

    async def handle(self, job: Job) -> None:
        """The ``enrich_event`` entrypoint: run the use case, map its outcome onto pgqueuer."""
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        started = time.monotonic()
        try:
            event_id = _parse_event_id(job)
            if event_id is None:
                log.error("queue_job_payload_invalid", job_id=int(job.id))
                return
            # The request's trace, or a new one: never the dequeue loop's untraced context,
            # so the job's queries and calls are traced under this span.
            with (
                traced_from(_parent(job)),
                tracer.start_as_current_span(
                    f"{ENTRYPOINT} process",
                    kind=trace.SpanKind.CONSUMER,
                    attributes={
                        "messaging.system": "pgqueuer",
                        "messaging.operation.type": "process",
                        "messaging.destination.name": ENTRYPOINT,
                    },
                ),
            ):
                await self._run(job, event_id, started)
        finally:
            if task is not None:
                self._running.discard(task)

    async def _run(self, job: Job, event_id: UUID, started: float) -> None:
        try:
            async with self._gate:
                if self._stopping.is_set():
                    # Prefetched, never started, and the worker is stopping: give it back at
                    # once rather than start new work during the drain.
                    log.info("queue_job_released", event_id=str(event_id), started=False)
                    raise RetryRequested(delay=timedelta(0), reason="released at shutdown")
                outcome = await self._attempt(job, event_id, started)
        except asyncio.CancelledError:
            if not self._releasing:
                raise
            # Released at shutdown (running or still waiting on the gate): turn the cancellation
            # into an immediate re-queue, so the next worker need not wait for the lease to expire.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            log.info("queue_job_released", event_id=str(event_id))
            raise RetryRequested(delay=timedelta(0), reason="released at shutdown") from None
        if outcome.kind == "retry":
            delay = outcome.retry_in_s or 0.0
            raise RetryRequested(delay=timedelta(seconds=delay), reason=outcome.reason)

    async def _attempt(self, job: Job, event_id: UUID, started: float) -> JobOutcome:
        """One run of the use case.

        Raises:
            RetryRequested: The store itself failed; the job is re-queued with backoff.
        """
        age_s = max(0.0, (datetime.now(UTC) - job.created).total_seconds())
        self._listener.job_started(age_s)
        label = "released"
        try:
            outcome = await run_event_job(
                event_id,
                events=self._store,
                enricher=self._enricher,
                policy=self._policy,
                rand=self._rand,
                provably_unsent=provably_unsent,
            )
        except Exception as exc:
            label = "error"
            # The store itself failed (nothing could be recorded): retry the whole job.
            # pgqueuer's attempt count drives the backoff; the event row is untouched.
            delay = self._policy.delay(job.attempts + 1, self._rand())
            log.warning(
                "queue_job_error",
                event_id=str(event_id),
                error_type=type(exc).__name__,
                dependency=exc.dependency if isinstance(exc, DependencyUnavailable) else None,
                retry_in_s=round(delay, 3),
            )
            raise RetryRequested(
                delay=timedelta(seconds=delay), reason=f"job error: {type(exc).__name__}"
            ) from None
        else:
            label = outcome.kind
            self._report(outcome, time.monotonic() - started)
            return outcome
        finally:
            # Exactly one "finished" per "started", whatever ended the run.
            self._listener.job_finished(label, time.monotonic() - started)

    def _report(self, outcome: JobOutcome, duration_s: float) -> None:
        if outcome.dead_letter:
            self._listener.dead_lettered()
        if outcome.kind == "completed":
            self._enricher.observer.enrichment_finished("webhook", "enriched")
        elif outcome.kind == "failed":
            found = outcome.reason != NO_CPF_REASON
            self._enricher.observer.enrichment_finished(
                "webhook", "failed" if found else "not_found"
            )
        fields = {
            "event_id": str(outcome.event_id),
            "outcome": outcome.kind,
            "attempts": outcome.attempts,
            "reason": outcome.reason,
            "sent": outcome.sent,
            "duration_ms": round(duration_s * 1000, 1),
        }
        if outcome.kind == "failed":
            log.warning("webhook_event_failed", dead_letter=outcome.dead_letter, **fields)
        elif outcome.kind == "retry":
            log.info("webhook_event_retry", retry_in_s=outcome.retry_in_s, **fields)
        else:
            log.info("webhook_event_done", **fields)

    async def _every(self, interval_s: float, action: Callable[[], Any]) -> None:
        """Run ``action`` now and then every ``interval_s`` until stopped; failures are logged."""
        while not self._stopping.is_set():
            try:
                await action()
            except Exception as exc:  # a failed sample must not stop the worker
                log.warning("queue_background_failed", error_type=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=interval_s)

    async def _sample(self) -> None:
        self._listener.sampled(await self._store.queue_stats())

    async def _sweep(self) -> None:
        requeued = await self._store.requeue_orphans(self._orphan_min_age_s, _ORPHAN_BATCH)
        if requeued:
            log.warning("webhook_orphans_requeued", count=requeued)
