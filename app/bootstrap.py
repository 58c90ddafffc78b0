"""The composition root: settings -> every adapter and service of one process, in one object.

:func:`open_services` opens the process's resources (asyncpg pool, Redis client, upstream HTTP
session and breakers, feature-flag poller) and builds every adapter and use case on them into
one frozen :class:`Services`; leaving it closes everything in reverse order (pending key-use
writes before the pool). The HTTP app (its lifespan, see ``app.main``), ``c2s-api worker`` and
the CLI commands that need adapters all go through it, so they run the same wiring.

The HTTP edge is built before the event loop runs (Litestar builds middleware at app creation)
while the resources must be opened inside it: middleware and dependency providers hold a
:class:`ServicesHandle` whose one ``services`` attribute the lifespan sets once (ADR 0008).

This module never chooses upstream credentials: it uses the configured ones. The embedded
default (the local sandbox and its credentials) is decided by ``c2s-api serve``
(``app.cli.serve``), which passes explicit settings.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
import structlog

from app.config import parse_hmac_keys, redact_url
from app.http.middleware.auth import KeyVerifier
from app.http.middleware.idempotency import IdempotencyStore
from app.http.middleware.ratelimit import AuthFailureGuard, ClientAddress
from app.listeners import AuthFailureMetrics, CacheMetrics, LocalCacheMetrics, RateLimitMetrics
from app.upstreams import Upstreams, open_upstreams
from domain.audit import Auditor, SubjectDigester
from domain.bulk import BulkJobs
from domain.pipeline import Enricher, PipelineSettings
from domain.subjects import SubjectRights
from domain.usage import MeteredDiretrix, MeteredWorkApi, PaidCalls, UsageReports
from domain.webhooks import GoogleAdsIntake, GoogleAdsSettings, WebhookIntake
from domain.work_modules import WorkModules
from infra.cache import HmacEnvelope, KeySpace, RedisContactCpfCache, RedisDossierCache
from infra.db.audit import PgAuditTrail
from infra.db.bulk import PgBulkJobs
from infra.db.callbacks import enqueue_callback, latest_delivery
from infra.db.events import PgEventStore, PgGoogleLeadClaims
from infra.db.jobs import PgJobAdmin
from infra.db.keys import PgApiKeyStore
from infra.db.lead_messages import PgLeadMessages
from infra.db.pool import create_pool
from infra.db.replica import ReadRouting, open_read_routing
from infra.db.repository import PgPartyRepository
from infra.db.subjects import PgSubjectStore
from infra.db.usage import PgUsageLedger
from infra.flags import FlagStore, defaults_from_settings
from infra.hotread import RedisHotRead
from infra.localcache import LocalDossierCache
from infra.locks import RedisFillLocks, RedisLeadLocks, RedisRecentCpfs
from infra.queue import provably_unsent
from infra.ratelimit import RateLimiter, parse_policy
from infra.redisclient import RedisClient, connect
from infra.redisclient import prepare as prepare_redis
from infra.sealing import AeadEnvelope
from infra.subject_caches import RedisSubjectCaches
from infra.usage import TenantLabels, UsageRecorder
from observability.metrics import (
    PipelineObserver,
)
from observability.tracing import untraced

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from contextlib import AbstractAsyncContextManager

    from app.config import Settings
    from domain.ports import HotRead

__all__ = [
    "Services",
    "ServicesHandle",
    "ServicesNotRunning",
    "SystemClock",
    "dossier_invalidation_channel",
    "open_pool",
    "open_redis",
    "open_services",
]

log = structlog.get_logger(__name__)


class SystemClock:
    """Wall-clock time."""

    def now(self) -> float:
        return time.time()


# --- Redis ------------------------------------------------------------------------------------


def open_redis(settings: Settings) -> RedisClient:
    """The process's Redis client, one server or a Redis Cluster by ``REDIS_URL``'s scheme
    (ADR 0014); commands are bounded by ``REDIS_TIMEOUT_S``."""
    return connect(
        settings.redis_url,
        timeout_s=settings.redis_timeout_s,
        max_connections=settings.redis_max_connections,
        cluster_retries=settings.redis_cluster_retries,
    )


# --- PostgreSQL -------------------------------------------------------------------------------


@asynccontextmanager
async def open_pool(settings: Settings, *, min_size: int = 0) -> AsyncIterator[asyncpg.Pool]:
    """The process's asyncpg pool, closed on exit (``min_size=0``: connects lazily, so a process
    starts and reports "not ready" while PostgreSQL is down)."""
    pool = await create_pool(settings, min_size=min_size)
    try:
        yield pool
    finally:
        await pool.close()


async def _warm_up(pool: asyncpg.Pool) -> None:
    """Open one connection now so the first request does not pay for it (best effort)."""
    try:
        # Start-up, part of no request: not traced.
        with untraced():
            async with pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        log.warning("postgres_unavailable_at_start", error_type=type(exc).__name__)


# --- upstreams --------------------------------------------------------------------------------


# --- the graph --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Services:
    """Every adapter and service one process shares, built once by :func:`open_services`.

    Attributes:
        settings: The configuration it was built from.
        pool: The asyncpg pool.
        redis: The Redis client.
        repository: The party model.
        upstreams: C2S, Diretrix and Work API clients and their breakers.
        enricher: The enrichment pipeline (lead flows, customer lookups, webhook jobs).
        work_modules: The Work API proxy's read-through.
        dossier_cache: The shared, integrity-checked Work API body cache (with its in-memory
            copy of hot entries, ADR 0010).
        flags: Runtime feature flags (ADR 0007).
        rate_limiter: Request quotas per client address, API key and globally.
        hot_read: Admission from the local view plus the hot path's cache read (ADR 0009).
        auth_failures: Failed authentications per client (``None``: ``AUTH_FAILURE_LIMIT`` empty).
        idempotency: ``Idempotency-Key`` records.
        key_verifier: API-key verification with its short per-process cache (ADR 0006).
        event_store: The C2S webhook inbox and its job queue.
        webhook_intake: The C2S webhook intake (events and their jobs, stored durably).
        google_ads: The Google Ads lead-form intake.
        job_admin: Listing and redriving webhook events (dead letters).
        client_address: The client's address as far as trusted proxies vouch for it.
        identity_salt: Key of the client-identity digests (no raw IP in Redis).
        usage: The paid-call meter (counts in batches, per-key daily quotas).
        usage_reports: The usage report of ``GET /api/v1/usage``.
        audit: The audit trail (buffered appends, flushed on exit; docs/security.md).
        subjects: The keyed digest naming a person (CPF) in the audit trail.
        bulk_store: Bulk enrichment jobs and their items (the worker's claim queue too).
        bulk_jobs: Submitting, reading and cancelling bulk jobs (tenant-scoped).
        subject_rights: Export and erasure of a person's data (LGPD, ``dpo`` scope).
        reads: Where lookups read: the read replica while it serves, else ``pool`` (ADR 0015).
    """

    settings: Settings
    pool: asyncpg.Pool
    redis: RedisClient
    repository: PgPartyRepository
    upstreams: Upstreams
    enricher: Enricher
    work_modules: WorkModules
    dossier_cache: RedisDossierCache
    flags: FlagStore
    rate_limiter: RateLimiter
    hot_read: HotRead
    auth_failures: AuthFailureGuard | None
    idempotency: IdempotencyStore
    key_verifier: KeyVerifier
    event_store: PgEventStore
    webhook_intake: WebhookIntake
    google_ads: GoogleAdsIntake
    job_admin: PgJobAdmin
    client_address: ClientAddress
    identity_salt: bytes
    usage: UsageRecorder
    usage_reports: UsageReports
    audit: PgAuditTrail
    subjects: SubjectDigester
    bulk_store: PgBulkJobs
    bulk_jobs: BulkJobs
    subject_rights: SubjectRights
    reads: ReadRouting

    async def check_postgres(self) -> None:
        """Raise unless PostgreSQL answers ``SELECT 1``.

        Probes are not traced (no server span): untraced, or each check is a root trace.
        """
        with untraced():
            async with self.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")

    async def check_redis(self) -> None:
        """Raise unless Redis answers ``PING`` (untraced, as :meth:`check_postgres`)."""
        with untraced():
            await self.redis.ping()


class ServicesNotRunning(RuntimeError):
    """The services were asked for outside the lifespan (before start-up or after shutdown)."""


class ServicesHandle:
    """Where the HTTP edge finds the :class:`Services`: bound once by the lifespan.

    Middleware and dependency providers are built with the application, before the event loop
    runs; they keep this handle and read :attr:`services` per request (an attribute read).
    """

    __slots__ = ("_services",)

    def __init__(self, services: Services | None = None) -> None:
        self._services = services

    @property
    def services(self) -> Services:
        """The running services.

        Raises:
            ServicesNotRunning: Outside the lifespan.
        """
        services = self._services
        if services is None:
            raise ServicesNotRunning("the services are not running (lifespan not entered)")
        return services

    def bind(self, services: Services) -> None:
        """Set the services (the lifespan, once they are open)."""
        if self._services is not None:
            raise RuntimeError("services already bound")
        self._services = services

    def unbind(self) -> None:
        """Forget the services (the lifespan, before they close)."""
        self._services = None


def _rate_limiter(settings: Settings, redis: RedisClient) -> RateLimiter:
    return RateLimiter(
        redis,
        prefix=settings.redis_key_prefix,
        policies={
            "ip": parse_policy(settings.rate_limit_ip),
            "key": parse_policy(settings.rate_limit_key),
            "global": parse_policy(settings.rate_limit_global),
        },
        listener=RateLimitMetrics(),
        sync_s=settings.rate_limit_sync_ms / 1000,
        max_entries=settings.rate_limit_local_entries,
    )


def _auth_failure_guard(
    settings: Settings, redis: RedisClient, client_address: ClientAddress, salt: bytes
) -> AuthFailureGuard | None:
    policy = parse_policy(settings.auth_failure_limit)
    if not policy:
        return None
    limiter = RateLimiter(
        redis,
        prefix=settings.redis_key_prefix,
        policies={"auth": policy},
        listener=AuthFailureMetrics(),
    )
    return AuthFailureGuard(limiter, client_address, salt)


def _usage_recorder(
    settings: Settings, redis: RedisClient, ledger: PgUsageLedger
) -> AbstractAsyncContextManager[UsageRecorder]:
    """The paid-call meter, flushing every ``USAGE_FLUSH_MS`` until the drain."""
    allow = [t.strip() for t in settings.usage_metric_tenants.split(",") if t.strip()]
    return UsageRecorder(
        ledger,
        redis,
        prefix=settings.redis_key_prefix,
        flush_s=settings.usage_flush_ms / 1000,
        labels=TenantLabels(allow, settings.usage_metric_tenants_max),
    ).running()


def dossier_invalidation_channel(settings: Settings) -> str:
    """The pub/sub channel on which every process announces a rewritten dossier (ADR 0010)."""
    return f"{settings.redis_key_prefix}wa:invalidated"


async def _local_dossier_cache(
    settings: Settings, redis: RedisClient, stack: AsyncExitStack
) -> LocalDossierCache | None:
    """The in-memory copy of hot dossiers and its invalidation listener (ADR 0010), or ``None``
    when ``DOSSIER_LOCAL_CACHE_MB`` is 0."""
    max_bytes = int(settings.dossier_local_cache_mb * 1024 * 1024)
    if max_bytes <= 0 or settings.dossier_local_cache_entries <= 0:
        return None
    local = LocalDossierCache(
        redis,
        dossier_invalidation_channel(settings),
        max_bytes=max_bytes,
        max_entries=settings.dossier_local_cache_entries,
        stale_bound_s=settings.dossier_local_cache_stale_s,
        listener=LocalCacheMetrics(),
    )
    return await stack.enter_async_context(local.running())


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Open every long-lived resource of a process and build the services on them.

    Never fails because PostgreSQL or Redis is down: the pool connects lazily and Redis
    connects on first use, so the process starts and reports "not ready" instead of
    crash-looping. On exit, in order: pending API-key use writes, the rate limiter's grants
    (what was spent is pushed, the rest given back), the dossier cache's invalidation listener,
    the flag poller, the paid-call counts not yet written (one last upsert), upstream breakers
    and HTTP session, Redis, the pool.
    the flag poller, upstream breakers and HTTP session, Redis, the audit trail's buffered
    records, the pool.
    """
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(open_pool(settings))
        redis = open_redis(settings)
        stack.push_async_callback(redis.aclose)
        await prepare_redis(redis)  # a cluster's slot map, before traffic (ADR 0014)
        salt = settings.cache_key_salt.get().encode()
        # The audit trail is written until the last moment: flushed on exit, before the pool.
        audit = PgAuditTrail.configured(pool, settings)
        await stack.enter_async_context(audit.running())
        subjects = SubjectDigester(salt)
        auditor = Auditor(audit, subjects, SystemClock())
        keys = KeySpace(settings.redis_key_prefix, salt)
        listener = CacheMetrics()
        hmac_keys = parse_hmac_keys(settings.cache_hmac_keys.get())
        acquire_timeout = settings.db_connect_timeout_s
        reads = await stack.enter_async_context(open_read_routing(settings, pool))
        repository = PgPartyRepository(pool, acquire_timeout=acquire_timeout, reads=reads)
        event_store = PgEventStore(pool, acquire_timeout=acquire_timeout)
        upstreams = await stack.enter_async_context(open_upstreams(settings, redis))
        # Paid calls: metered and quota-checked; the drain writes the last counts (pool open).
        usage_ledger = PgUsageLedger(pool, acquire_timeout=acquire_timeout)
        usage = await stack.enter_async_context(_usage_recorder(settings, redis, usage_ledger))
        paid = PaidCalls(usage, SystemClock())
        work_api = MeteredWorkApi(upstreams.work_api, paid)
        # Feature flags: overrides polled from Redis every FLAG_CACHE_TTL_S (ADR 0007).
        flags = await stack.enter_async_context(
            FlagStore(
                redis,
                prefix=settings.redis_key_prefix,
                defaults=defaults_from_settings(settings),
                ttl_s=settings.flag_cache_ttl_s,
            ).running()
        )
        dossier_cache = RedisDossierCache(
            redis,
            keys,
            HmacEnvelope(hmac_keys),
            settings.work_api_cache_ttl_s,
            listener,
            channel=dossier_invalidation_channel(settings),
            local=await _local_dossier_cache(settings, redis, stack),
        )
        # Erasure tombstones, checked before every paid fetch (domain/subjects.py).
        subject_store = PgSubjectStore(pool, subjects, acquire_timeout=acquire_timeout)
        lead_locks = RedisLeadLocks(
            redis,
            keys,
            AeadEnvelope(hmac_keys, purpose="lead_replay"),
            settings.lead_lock_ttl_s,
            settings.lead_replay_ttl_s,
            listener,
        )
        recent_cpfs = RedisRecentCpfs(redis, keys, settings.recent_cpf_ttl_s, listener)
        enricher = Enricher(
            c2s=upstreams.c2s,
            diretrix=MeteredDiretrix(upstreams.diretrix, paid),
            work_api=work_api,
            repository=repository,
            dossier_cache=dossier_cache,
            contact_cache=RedisContactCpfCache(
                redis,
                keys,
                settings.contact_cache_ttl_s,
                settings.contact_cache_negative_ttl_s,
                listener,
            ),
            lead_locks=lead_locks,
            recent_cpfs=recent_cpfs,
            observer=PipelineObserver(),
            clock=SystemClock(),
            settings=PipelineSettings(
                income_multiplier=settings.income_multiplier,
                fill_wait_s=settings.fill_wait_s,
                min_likelihood=settings.min_likelihood,
            ),
            flags=flags,
            fill_locks=RedisFillLocks(redis, keys, settings.fill_lock_ttl_s, listener),
            lead_messages=PgLeadMessages(pool, salt=settings.cache_key_salt.get().encode()),
            erasure_holds=subject_store,
            audit=auditor,
        )
        # Local admission: the limiter's view is synced in the background (ADR 0009).
        rate_limiter = await stack.enter_async_context(_rate_limiter(settings, redis).running())
        client_address = ClientAddress(settings.trusted_proxies)
        key_verifier = KeyVerifier(
            PgApiKeyStore(pool, acquire_timeout=acquire_timeout),
            ttl_s=settings.api_key_cache_ttl_s,
        )
        stack.push_async_callback(key_verifier.drain)  # last_used_at writes, before the pool
        # Bulk jobs. The callbacks area's enqueue_callback / deliveries_of plug in here
        # (callback_sink=, callback_state=); until then a job's callback is not delivered.
        bulk_store = PgBulkJobs(
            pool,
            callback_sink=enqueue_callback,
            callback_state=latest_delivery,
            acquire_timeout=acquire_timeout,
        )
        services = Services(
            settings=settings,
            pool=pool,
            redis=redis,
            repository=repository,
            upstreams=upstreams,
            enricher=enricher,
            work_modules=WorkModules(
                work_api=work_api,
                cache=dossier_cache,
                flags=flags,
                single_flight=enricher.single_flight,
                erasure_holds=subject_store,
                audit=auditor,
            ),
            dossier_cache=dossier_cache,
            flags=flags,
            rate_limiter=rate_limiter,
            hot_read=RedisHotRead(rate_limiter, dossier_cache),
            auth_failures=_auth_failure_guard(settings, redis, client_address, salt),
            idempotency=IdempotencyStore(
                redis,
                settings.redis_key_prefix,
                settings.idempotency_ttl_s,
                settings.idempotency_lock_ttl_s,
                envelope=AeadEnvelope(hmac_keys, purpose="idempotency"),
                salt=salt,
            ),
            key_verifier=key_verifier,
            event_store=event_store,
            webhook_intake=WebhookIntake(event_store, max_events=settings.webhook_max_events),
            google_ads=GoogleAdsIntake(
                claims=PgGoogleLeadClaims(pool, acquire_timeout=acquire_timeout),
                enricher=enricher,
                settings=GoogleAdsSettings(
                    description_max_length=settings.c2s_description_max_length,
                    default_seller_id=settings.c2s_default_seller_id or None,
                ),
                provably_unsent=provably_unsent,
            ),
            job_admin=PgJobAdmin(pool, acquire_timeout=acquire_timeout),
            client_address=client_address,
            identity_salt=salt,
            usage=usage,
            usage_reports=UsageReports(usage, usage_ledger, SystemClock()),
            audit=audit,
            subjects=subjects,
            bulk_store=bulk_store,
            bulk_jobs=BulkJobs(
                bulk_store,
                max_items=settings.bulk_max_items,
                environment=settings.environment,
            ),
            subject_rights=SubjectRights(
                store=subject_store,
                caches=RedisSubjectCaches(
                    redis,
                    keys,
                    settings.redis_key_prefix,
                    dossiers=dossier_cache,
                    lead_locks=lead_locks,
                    recent=recent_cpfs,
                ),
                digester=subjects,
                clock=SystemClock(),
                audit=audit,
                hold_days=settings.erasure_hold_days,
            ),
            reads=reads,
        )
        await _warm_up(pool)
        log.info(
            "services_opened",
            database=redact_url(settings.database_url),
            redis=redact_url(settings.redis_url),
        )
        yield services
    log.info("services_closed")
