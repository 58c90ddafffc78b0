"""``c2s-api worker``: process the durable webhook jobs until told to stop.

:func:`run_worker` builds the process's services with :func:`app.bootstrap.open_services`
(the same composition root as the HTTP app), runs an :class:`infra.queue.EventConsumer` and handles
SIGTERM/SIGINT:

1. stop dequeuing; jobs already running go on (drain), for ``0.75 * grace_s``;
2. cancel the jobs still running: each is re-queued at once, its lease released (a job in the
   middle of its C2S send first finishes the send, see ``domain.webhooks.run_event_job``);
3. exit 0 by ``grace_s`` (default 20 s), plus at most 2 s of cleanup. A second signal skips the
   drain. Jobs that could not be given back in time stay leased and are taken over by another
   worker when their heartbeat is ``lease_timeout_s`` old.

A worker killed outright (SIGKILL, OOM, lost VM) loses nothing either: its jobs' heartbeats stop
and another worker re-picks them after ``lease_timeout_s``.

The worker also runs the retention purge on pgqueuer's scheduler (``RETENTION_CRON``, daily;
:mod:`infra.db.retention`, docs/security.md "LGPD"): one worker runs each schedule.

Beside the consumer, the worker posts the callbacks of finished bulk jobs
(:class:`infra.callbacks.CallbackDispatcher`, ``docs/callbacks.md``). On a signal it stops
claiming; attempts in flight may end (each is bounded by ``CALLBACK_TIMEOUT_S``) for at most
``min(CALLBACK_TIMEOUT_S, 0.75 * grace_s)`` after the consumer stopped, then are interrupted and
given back (due again at once, for any worker).
Next to the consumer, a :class:`domain.bulk.BulkRunner` runs the items of bulk enrichment jobs
(``BULK_CONCURRENCY`` slots of its own, so webhook jobs keep theirs; ``0`` turns it off). It stops
with the consumer: items running finish within the drain, the rest are cancelled and run again
by another worker once their lease (``BULK_LEASE_S``) expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING, Final

import structlog

from app.config import parse_hmac_keys
from app.version import SERVICE_VERSION
from domain.bulk import BulkRunner
from domain.webhooks import DEFAULT_RETRY_POLICY, RetryPolicy
from infra.callbacks import CallbackDispatcher, PrometheusCallbackListener
from infra.db.callback_secrets import SEALING_PURPOSE, PgCallbackSecrets
from infra.db.callbacks import PgCallbackDeliveries
from infra.db.events import PgEventStore
from infra.queue import (
    DEFAULT_CONCURRENCY,
    DEFAULT_LEASE_TIMEOUT_S,
    EventConsumer,
    QueueListener,
)
from infra.sealing import AeadEnvelope
from observability.logging import configure_logging
from observability.metrics import BulkMetrics, track_pool
from observability.queue import PrometheusQueueListener
from observability.tracing import configure_tracing, flush_tracing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    import asyncpg

    from app.bootstrap import Services
    from app.config import Settings
    from domain.audit import SubjectDigester
    from domain.pipeline import Enricher
    from domain.ports import AuditTrail

__all__ = [
    "DEFAULT_GRACE_S",
    "DEFAULT_METRICS_PORT",
    "callback_dispatcher",
    "consume_until",
    "run_worker",
]

log = structlog.get_logger(__name__)

DEFAULT_GRACE_S: Final = 20.0
DEFAULT_METRICS_PORT: Final = 9464  # observability/prometheus/prometheus.yml scrapes worker:9464
# Share of the grace period given to draining; the rest is for releasing leases and closing.
_DRAIN_SHARE: Final = 0.75
_CLEANUP_S: Final = 2.0


def _option(value: float | None, settings: Settings, name: str, default: float) -> float:
    """An explicit argument, else a ``Settings`` field if the configuration has one, else a
    default: the worker's knobs are not (yet) settings, and this keeps both paths working."""
    if value is not None:
        return value
    configured = getattr(settings, name, None)
    return float(configured) if configured is not None else default


async def consume_until(
    stop: asyncio.Event,
    *,
    pool: asyncpg.Pool,
    enricher: Enricher,
    concurrency: int = DEFAULT_CONCURRENCY,
    lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S,
    grace_s: float = DEFAULT_GRACE_S,
    urgent: asyncio.Event | None = None,
    listener: QueueListener | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    store: PgEventStore | None = None,
) -> int:
    """Run a consumer until ``stop`` is set, then shut it down within ``grace_s``.

    Args:
        stop: Set to begin the shutdown.
        pool: asyncpg pool (the queue and the event store).
        enricher: The pipeline the jobs run.
        concurrency: Jobs at once.
        lease_timeout_s: Heartbeat staleness after which another worker takes a job over.
        grace_s: Bound of the shutdown.
        urgent: Set to skip the drain (a second signal).
        listener: Queue metrics hooks.
        policy: Retry policy (default: the domain's).
        sleep: Times the drain (``asyncio.sleep``; injectable so tests control time).
        store: The event store (default: one on ``pool``).

    Returns:
        0 after a clean shutdown, 1 when the consumer failed on its own (e.g. the queue schema
        is missing or PostgreSQL is unreachable at start).
    """
    consumer = EventConsumer(
        pool=pool,
        store=store if store is not None else PgEventStore(pool),
        enricher=enricher,
        concurrency=concurrency,
        lease_timeout_s=lease_timeout_s,
        listener=listener,
        policy=policy or DEFAULT_RETRY_POLICY,
    )
    running = asyncio.create_task(consumer.run(), name="event-consumer")
    stopping = asyncio.create_task(stop.wait(), name="worker-stop")
    done, _ = await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if running in done:
        stopping.cancel()
        exc = running.exception()
        log.error("worker_failed", error_type=type(exc).__name__ if exc else None)
        return 1
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    log.info("worker_stopping", in_flight=consumer.in_flight, grace_s=grace_s)
    consumer.stop()
    hurry = asyncio.create_task((urgent or asyncio.Event()).wait(), name="worker-urgent")
    drained = asyncio.ensure_future(sleep(max(0.0, grace_s * _DRAIN_SHARE)))
    try:
        await asyncio.wait({running, hurry, drained}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hurry.cancel()
        drained.cancel()
    if not running.done():
        released = await consumer.release_in_flight()
        log.info("worker_releasing", jobs=released)
        await asyncio.wait({running}, timeout=max(0.0, deadline - loop.time()))
    if not running.done():
        # Past the grace: leave the rest to lease expiry rather than overrun the orchestrator.
        running.cancel()
        await asyncio.wait({running}, timeout=_CLEANUP_S)
        log.warning("worker_grace_exceeded", in_flight=consumer.in_flight)
    elif not running.cancelled() and (exc := running.exception()) is not None:
        log.error("worker_failed_during_shutdown", error_type=type(exc).__name__)
    log.info("worker_stopped")
    return 0


def callback_dispatcher(settings: Settings, pool: asyncpg.Pool) -> CallbackDispatcher:
    """The bulk-job callback delivery loop of this worker, configured from ``settings``."""
    envelope = AeadEnvelope(
        parse_hmac_keys(settings.cache_hmac_keys.get()), purpose=SEALING_PURPOSE
    )
    acquire_timeout = settings.db_connect_timeout_s
    return CallbackDispatcher(
        deliveries=PgCallbackDeliveries(pool, acquire_timeout=acquire_timeout),
        secrets=PgCallbackSecrets(pool, envelope, acquire_timeout=acquire_timeout),
        environment=settings.environment,
        timeout_s=settings.callback_timeout_s,
        retry_base_s=settings.callback_retry_base_s,
        concurrency=settings.callback_concurrency,
        poll_s=settings.callback_poll_s,
        listener=PrometheusCallbackListener(),
    )


async def _stop_callbacks(
    stop: asyncio.Event, delivering: asyncio.Task[None], bound_s: float
) -> None:
    """End the callback loop: attempts in flight get ``bound_s``, then are given back."""
    stop.set()
    await asyncio.wait({delivering}, timeout=bound_s)
    if not delivering.done():
        delivering.cancel()
        await asyncio.wait({delivering}, timeout=_CLEANUP_S)
    elif not delivering.cancelled() and (exc := delivering.exception()) is not None:
        log.error("callbacks_failed", error_type=type(exc).__name__)


async def _serve(
    settings: Settings,
    *,
    concurrency: int,
    lease_timeout_s: float,
    grace_s: float,
    metrics_port: int,
) -> int:
    from app.bootstrap import open_services

    stop = asyncio.Event()
    urgent = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            urgent.set()
        log.info("worker_signal", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    if metrics_port:
        from observability.metrics import start_metrics_server

        start_metrics_server(metrics_port, addr=settings.host)
    # Spans only when OTEL_EXPORTER_OTLP_*ENDPOINT is set, as for the HTTP app; the job spans
    # link to the request that accepted the event (its W3C context travels in the job).
    configure_tracing(
        service_name=settings.service_name,
        environment=settings.environment,
        version=SERVICE_VERSION,
    )
    async with (
        open_services(settings) as services,
        _scheduled_retention(
            settings, services.pool, audit=services.audit, digester=services.subjects
        ),
    ):
        # db_client_connections_* of this process are its own pool's (read at scrape time).
        untrack_pool = track_pool(services.pool)
        log.info(
            "worker_started",
            concurrency=concurrency,
            lease_timeout_s=lease_timeout_s,
            grace_s=grace_s,
        )
        callbacks = callback_dispatcher(settings, services.pool)
        delivering = asyncio.create_task(callbacks.run(stop), name="callback-deliveries")
        bulk = _start_bulk(settings, services, stop, grace_s=grace_s)
        code = await consume_until(
            stop,
            pool=services.pool,
            enricher=services.enricher,
            store=services.event_store,
            concurrency=concurrency,
            lease_timeout_s=lease_timeout_s,
            grace_s=grace_s,
            urgent=urgent,
            listener=PrometheusQueueListener(),
            # Retries ride out upstream outages up to the budget, then dead-letter (redrivable).
            policy=RetryPolicy(
                budget_s=settings.worker_retry_budget_s,
                base_delay_s=settings.worker_retry_base_s,
                max_delay_s=settings.worker_retry_max_s,
            ),
        )
        # Attempts in flight started before the signal: they end within CALLBACK_TIMEOUT_S of
        # their start, and never get more than the drain share of the grace from here.
        await _stop_callbacks(
            stop, delivering, min(settings.callback_timeout_s, grace_s * _DRAIN_SHARE)
        )
        if bulk is not None:
            await _stop_bulk(*bulk)
        untrack_pool()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, RuntimeError):
            loop.remove_signal_handler(signum)
    flush_tracing()
    return code


class _LoggedBulkMetrics(BulkMetrics):
    """The bulk runner's metrics, with its unexpected failures logged (type only)."""

    def error(self, event: str, error_type: str) -> None:
        super().error(event, error_type)
        log.warning(event, error_type=error_type)


def _start_bulk(
    settings: Settings, services: Services, stop: asyncio.Event, *, grace_s: float
) -> tuple[BulkRunner, asyncio.Task[None], asyncio.Task[None]] | None:
    """Run bulk job items next to the webhook consumer (BULK_CONCURRENCY slots of their own,
    so the webhook jobs keep their WORKER_CONCURRENCY).

    On the stop signal it drains alongside the consumer: no more claims, the items running get
    the same drain share of the grace, the rest are cancelled (never stored, so another worker
    runs them once their lease expires).
    """
    if settings.bulk_concurrency <= 0:
        return None
    runner = BulkRunner(
        services.bulk_store,
        services.enricher,
        concurrency=settings.bulk_concurrency,
        tenant_concurrency=settings.bulk_tenant_concurrency,
        lease_s=settings.bulk_lease_s,
        poll_interval_s=settings.bulk_poll_interval_s,
        max_attempts=settings.bulk_item_attempts,
        listener=_LoggedBulkMetrics(),
    )
    running = asyncio.create_task(runner.run(), name="bulk-runner")

    async def drain_on_stop() -> None:
        await stop.wait()
        runner.stop()
        await asyncio.wait({running}, timeout=max(0.0, grace_s * _DRAIN_SHARE))
        if not running.done():
            await runner.release()

    watcher = asyncio.create_task(drain_on_stop(), name="bulk-stop")
    log.info(
        "bulk_runner_started",
        concurrency=settings.bulk_concurrency,
        tenant_concurrency=settings.bulk_tenant_concurrency,
    )
    return runner, running, watcher


async def _stop_bulk(
    runner: BulkRunner, running: asyncio.Task[None], watcher: asyncio.Task[None]
) -> None:
    """After the consumer: the bulk drain has had its time (or the consumer failed on its own:
    stop now); whatever still runs is cancelled."""
    runner.stop()
    await asyncio.wait({running, watcher}, timeout=_CLEANUP_S)
    if not running.done():
        await runner.release()
        await asyncio.wait({running}, timeout=_CLEANUP_S)
    watcher.cancel()
    log.info("bulk_runner_stopped", in_flight=runner.in_flight)


@contextlib.asynccontextmanager
async def _scheduled_retention(
    settings: Settings,
    pool: asyncpg.Pool,
    *,
    audit: AuditTrail | None = None,
    digester: SubjectDigester | None = None,
) -> AsyncIterator[None]:
    """The retention purge on pgqueuer's scheduler (``RETENTION_CRON``) for the block's life;
    each purged person gets a ``retention`` audit record (with ``audit`` and ``digester``)."""
    from app.cli.retention import RetentionMetrics, retention_policy
    from infra.db.retention import PgRetention, retention_scheduler

    retention = PgRetention(
        pool,
        retention_policy(settings),
        acquire_timeout=settings.db_connect_timeout_s,
        listener=RetentionMetrics(),
        audit=audit,
        digester=digester,
    )
    scheduler = retention_scheduler(pool, retention, settings.retention_cron)
    task = asyncio.create_task(_run_scheduler(scheduler.run), name="retention-scheduler")
    try:
        yield
    finally:
        scheduler.shutdown.set()
        await asyncio.wait({task}, timeout=_CLEANUP_S)
        if not task.done():
            task.cancel()


async def _run_scheduler(run: Callable[[], Awaitable[None]]) -> None:
    """Run the scheduler; a failure (schema missing, PostgreSQL down) is logged, never fatal to
    the webhook jobs: the next worker start schedules again."""
    try:
        await run()
    except Exception as exc:
        log.error("retention_scheduler_failed", error_type=type(exc).__name__)


def run_worker(
    settings: Settings,
    *,
    concurrency: int | None = None,
    grace_s: float | None = None,
    lease_timeout_s: float | None = None,
    metrics_port: int | None = None,
) -> int:
    """Process webhook jobs until SIGTERM/SIGINT; the ``c2s-api worker`` command.

    Args:
        settings: Configuration (database, Redis, upstreams).
        concurrency: Jobs at once (default: ``Settings.worker_concurrency`` if configured,
            else 16).
        grace_s: Shutdown bound in seconds (default 20, below Fly's and Granian's kill timeouts).
        lease_timeout_s: Seconds without a heartbeat after which another worker takes a job
            over (default 30).
        metrics_port: Port of the Prometheus endpoint on ``Settings.host`` (default 9464; 0
            disables it).

    Returns:
        The process exit status: 0 after a clean shutdown, 1 when the worker could not run.
    """
    configure_logging(settings.log_level, settings.log_format)
    workers = int(_option(concurrency, settings, "worker_concurrency", DEFAULT_CONCURRENCY))
    lease = _option(lease_timeout_s, settings, "worker_lease_timeout_s", DEFAULT_LEASE_TIMEOUT_S)
    grace = _option(grace_s, settings, "worker_grace_s", DEFAULT_GRACE_S)
    port = int(_option(metrics_port, settings, "worker_metrics_port", DEFAULT_METRICS_PORT))
    if workers < 1 or lease <= 0 or grace < 0:
        log.error("worker_invalid_options", concurrency=workers, lease_timeout_s=lease)
        return 2
    serving = _serve(
        settings, concurrency=workers, lease_timeout_s=lease, grace_s=grace, metrics_port=port
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; Windows has none
        return asyncio.run(serving)
    return uvloop.run(serving)
