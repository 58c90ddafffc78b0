"""Every Prometheus series the service exports, in one process-wide registry.

Other modules import the metric objects or, on hot paths, the small helpers below, which cache
label children and attach ``trace_id`` exemplars. Names follow the OTel semantic conventions
translated to Prometheus (base units, ``_total`` counters, semconv buckets); every label has a
bounded value set, documented on the metric. Never put ids, paths, CPFs, phones, e-mails, keys or
IPs in a label.

Exposition: :func:`metrics_endpoint` serves ``/metrics`` with content negotiation (OpenMetrics,
which carries the exemplars, when the scraper asks for it, as Prometheus does; the classic text
format otherwise). The worker process, which has no HTTP app, calls
:func:`start_metrics_server`.

Why inline calls and not Litestar's ``PrometheusMiddleware``: measured here, an inline
prometheus_client call costs ~5 us, the generic middleware 50-70 us per request.
"""

from __future__ import annotations

import os
import platform
import re
import time
from contextlib import asynccontextmanager
from importlib import metadata
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeVar

import prometheus_client
from litestar import Request, Response, get
from opentelemetry import trace
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from observability.tracing import start_span

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from prometheus_client.registry import Collector

__all__ = [
    "AUDIT_BUFFER_RECORDS",
    "AUDIT_FLUSH_DURATION",
    "AUDIT_RECORDS_DROPPED",
    "AUDIT_RECORDS_WRITTEN",
    "BREAKER_NAMES",
    "BREAKER_STATE_CODES",
    "BULK_ERRORS",
    "BULK_ITEMS",
    "BULK_JOBS",
    "BULK_JOBS_ENDED",
    "BULK_OLDEST_JOB_AGE",
    "CACHE_NAMES",
    "CACHE_REQUESTS",
    "CALLBACK_DELIVERIES",
    "CALLBACK_OUTCOMES",
    "CALLBACK_PENDING",
    "CIRCUIT_BREAKER_REJECTIONS",
    "CIRCUIT_BREAKER_STATE",
    "CIRCUIT_BREAKER_STORAGE_DEGRADED",
    "CIRCUIT_BREAKER_TRANSITIONS",
    "DB_READS",
    "DEPENDENCY_DEGRADED",
    "DEPENDENCY_READY",
    "DOSSIER_LOCAL_CACHE_BYTES",
    "DOSSIER_LOCAL_CACHE_ENTRIES",
    "DOSSIER_LOCAL_CACHE_EVICTIONS",
    "DOSSIER_LOCAL_CACHE_INVALIDATIONS",
    "DOSSIER_LOCAL_CACHE_SERVING",
    "ENRICHMENTS",
    "ENRICHMENT_ENTRYPOINTS",
    "ENRICHMENT_OUTCOMES",
    "FEATURE_FLAG_ENABLED",
    "FEATURE_FLAG_STORAGE_DEGRADED",
    "HTTP_CLIENT_REQUEST_DURATION",
    "HTTP_SERVER_ACTIVE_REQUESTS",
    "HTTP_SERVER_REQUEST_DURATION",
    "PAID_CALLS",
    "PAID_QUOTA_USE_RATIO",
    "PIPELINE_STEP_DURATION",
    "QUEUE_DEAD_LETTERS",
    "QUEUE_DEAD_LETTERS_PENDING",
    "QUEUE_DEPTH",
    "QUEUE_JOBS",
    "QUEUE_JOB_AGE",
    "QUEUE_OLDEST_JOB_AGE",
    "QUOTA_EXCEEDED",
    "RATE_LIMIT_DECISIONS",
    "RATE_LIMIT_DEGRADED",
    "RATE_LIMIT_STORAGE_ERRORS",
    "REGISTRY",
    "RETENTION_KINDS",
    "RETENTION_LAST_RUN",
    "RETENTION_PURGED",
    "SEMCONV_DURATION_BUCKETS",
    "UNMATCHED_ROUTE",
    "UPSTREAM_RETRIES",
    "WORKER_ACTIVE_JOBS",
    "BreakerMetrics",
    "BulkMetrics",
    "PipelineObserver",
    "ReplicaMetrics",
    "current_exemplar",
    "http_method_label",
    "metric_names",
    "metrics_endpoint",
    "observe_request",
    "observe_step",
    "observe_upstream",
    "record_breaker_rejection",
    "record_breaker_transition",
    "record_cache",
    "record_degraded",
    "record_enrichment",
    "record_rate_limit",
    "record_readiness",
    "record_upstream_retry",
    "render_metrics",
    "set_breaker_state",
    "set_breaker_storage_degraded",
    "set_build_info",
    "set_feature_flag",
    "set_feature_flag_storage_degraded",
    "start_metrics_server",
    "track_pool",
]

# `_created` series double the series count of every counter and histogram and Prometheus 2.x
# ignores them; must run before the first metric is built.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY: Final = CollectorRegistry(auto_describe=True)
"""The one registry of this process; ``/metrics`` serves exactly this."""

ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

SEMCONV_DURATION_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
"""The advised buckets of ``http.server.request.duration`` (seconds). 25 ms and 50 ms are bucket
boundaries on purpose: the latency SLOs are computed from them exactly."""

UNMATCHED_ROUTE: Final = "_unmatched"
"""``http_route`` of requests no route matched (404 before routing, 405)."""

# --- bounded label vocabularies -------------------------------------------------------------

Upstream = Literal["c2s", "diretrix", "work_api"]
CacheName = Literal[
    "work_api", "contact_cpf", "lead_lock", "recent_cpf", "idempotency", "fill_lock"
]
CacheResult = Literal["hit", "hit_local", "miss", "integrity_failure", "error"]
BreakerStateName = Literal["closed", "half_open", "open", "forced_open", "disabled"]
JobOutcome = Literal["completed", "failed", "retried"]
PipelineStep = Literal[
    "fetch_lead", "resolve_cpf", "fetch_dossier", "store", "format", "send_message"
]
StepOutcome = Literal["success", "error", "cancelled"]
EnrichmentEntrypoint = Literal["leads_process", "c2s_enrich", "webhook"]
EnrichmentOutcome = Literal["enriched", "duplicate", "not_found", "failed"]
ENRICHMENT_ENTRYPOINTS: Final[tuple[EnrichmentEntrypoint, ...]] = (
    "leads_process",
    "c2s_enrich",
    "webhook",
)
ENRICHMENT_OUTCOMES: Final[tuple[EnrichmentOutcome, ...]] = (
    "enriched",
    "duplicate",
    "not_found",
    "failed",
)
Dependency = Literal["postgres", "redis"]

CACHE_NAMES: Final[tuple[CacheName, ...]] = (
    "work_api",
    "contact_cpf",
    "lead_lock",
    "recent_cpf",
    "idempotency",
    "fill_lock",
)
CACHE_RESULTS: Final[tuple[CacheResult, ...]] = (
    "hit",
    "hit_local",
    "miss",
    "integrity_failure",
    "error",
)
BREAKER_NAMES: Final = ("c2s", "diretrix", "work_api", "postgres", "redis")
BREAKER_STATE_CODES: Final[dict[str, int]] = {
    "closed": 0,
    "half_open": 1,
    "open": 2,
    "forced_open": 3,
    "disabled": 4,
}
"""``circuit_breaker_state`` values. Ordered by severity so ``max()`` over instances and the
"open for N minutes" alert (``== 2``) read naturally; infra's resilience4j codes differ, so
callers pass the state *name* and this table does the mapping."""

_METHODS: Final = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)

# --- HTTP server --------------------------------------------------------------------------

HTTP_SERVER_REQUEST_DURATION: Final = Histogram(
    "http_server_request_duration_seconds",
    "Duration of HTTP server requests (semconv http.server.request.duration).",
    ["http_request_method", "http_route", "http_response_status_code"],
    buckets=SEMCONV_DURATION_BUCKETS,
    registry=REGISTRY,
)
"""Labels: ``http_request_method`` (``GET``..., unknown -> ``_OTHER``), ``http_route`` (the
route template without parameter types, e.g. ``/api/v1/customers/{customer_id}``;
``_unmatched`` without a route),
``http_response_status_code``. Exemplar ``trace_id`` when the request's span is sampled."""

HTTP_SERVER_ACTIVE_REQUESTS: Final = Gauge(
    "http_server_active_requests",
    "Number of HTTP server requests in flight (semconv http.server.active_requests).",
    ["http_request_method"],
    registry=REGISTRY,
)

# --- upstream HTTP clients ----------------------------------------------------------------

HTTP_CLIENT_REQUEST_DURATION: Final = Histogram(
    "http_client_request_duration_seconds",
    "Duration of HTTP client requests to the upstream APIs, one sample per attempt "
    "(semconv http.client.request.duration).",
    [
        "upstream",
        "server_address",
        "http_request_method",
        "http_response_status_code",
        "error_type",
    ],
    buckets=SEMCONV_DURATION_BUCKETS,
    registry=REGISTRY,
)
"""Labels: ``upstream`` in c2s/diretrix/work_api; ``server_address`` the configured host of that
upstream; ``http_request_method``; ``http_response_status_code`` (empty when no response came
back); ``error_type`` empty on success, else the status code (``"503"``), ``timeout``, an
aiohttp exception class name (network errors), ``soft_error`` (a Work API error inside an HTTP
200) or ``invalid_body``. Calls rejected by an open breaker are not requests: they are counted
by ``circuit_breaker_rejections_total``."""

UPSTREAM_RETRIES: Final = Counter(
    "upstream_retries",
    "Retries of upstream calls (not counting the first attempt), by the error that caused them.",
    ["upstream", "error_type"],
    registry=REGISTRY,
)

# --- circuit breakers ----------------------------------------------------------------------

CIRCUIT_BREAKER_STATE: Final = Gauge(
    "circuit_breaker_state",
    "Breaker state, re-read from the shared (Redis) state every few seconds: 0 closed, "
    "1 half-open, 2 open, 3 forced open, 4 disabled.",
    ["name"],
    registry=REGISTRY,
)
CIRCUIT_BREAKER_TRANSITIONS: Final = Counter(
    "circuit_breaker_transitions",
    "Breaker state changes seen by this process, by target state.",
    ["name", "to"],
    registry=REGISTRY,
)
CIRCUIT_BREAKER_REJECTIONS: Final = Counter(
    "circuit_breaker_rejections",
    "Calls rejected by a breaker without being tried.",
    ["name"],
    registry=REGISTRY,
)
CIRCUIT_BREAKER_STORAGE_DEGRADED: Final = Gauge(
    "circuit_breaker_storage_degraded",
    "1 while the breaker's shared state in Redis is unusable and the per-process fallback decides.",
    ["name"],
    registry=REGISTRY,
)

# --- caches --------------------------------------------------------------------------------

CACHE_REQUESTS: Final = Counter(
    "cache_requests",
    "Cache lookups by cache and result.",
    ["cache", "result"],
    registry=REGISTRY,
)
"""Labels: ``cache`` in work_api/contact_cpf/lead_lock/recent_cpf/idempotency; ``result`` in
hit/hit_local (answered from the process's memory, work_api only)/miss/integrity_failure (HMAC
mismatch)/error (Redis failed)."""

DOSSIER_LOCAL_CACHE_BYTES: Final = Gauge(
    "dossier_local_cache_bytes",
    "Bytes held by this process's in-memory copy of the Work API cache (bodies plus overhead).",
    registry=REGISTRY,
)
DOSSIER_LOCAL_CACHE_ENTRIES: Final = Gauge(
    "dossier_local_cache_entries",
    "Entries held by this process's in-memory copy of the Work API cache.",
    registry=REGISTRY,
)
DOSSIER_LOCAL_CACHE_SERVING: Final = Gauge(
    "dossier_local_cache_serving",
    "1 while this process answers Work API cache hits from memory (invalidation channel live).",
    registry=REGISTRY,
)
DOSSIER_LOCAL_CACHE_EVICTIONS: Final = Counter(
    "dossier_local_cache_evictions",
    "Entries that left the in-memory Work API cache: size (LRU, bounds reached) or expired.",
    ["reason"],
    registry=REGISTRY,
)
DOSSIER_LOCAL_CACHE_INVALIDATIONS: Final = Counter(
    "dossier_local_cache_invalidations",
    "Entries dropped from the in-memory Work API cache: message (rewritten by another "
    "process) or reset (emptied on (re)subscribing to the invalidation channel).",
    ["reason"],
    registry=REGISTRY,
)

# --- rate limiting -------------------------------------------------------------------------

RATE_LIMIT_DECISIONS: Final = Counter(
    "rate_limit_decisions",
    "Rate-limit decisions by policy and outcome (allowed/limited).",
    ["policy", "outcome"],
    registry=REGISTRY,
)
"""``policy`` is a configured policy name (``ip``, ``api_key``, ``global``...), never an
identity."""
RATE_LIMIT_DEGRADED: Final = Gauge(
    "rate_limit_degraded",
    "1 while the rate limiter cannot reach its storage and runs degraded (fail-open/local).",
    registry=REGISTRY,
)
RATE_LIMIT_STORAGE_ERRORS: Final = Counter(
    "rate_limit_storage_errors",
    "Errors talking to the rate limiter's storage.",
    registry=REGISTRY,
)

# --- queue and worker ---------------------------------------------------------------------

QUEUE_DEPTH: Final = Gauge(
    "queue_depth",
    "Jobs in the PostgreSQL-backed queue by status (polled).",
    ["status"],
    registry=REGISTRY,
)
"""``status`` is one of the queue's fixed job statuses (e.g. queued, running, failed, dead)."""
QUEUE_JOB_AGE: Final = Histogram(
    "queue_job_age_seconds",
    "Age of a job (since it was enqueued) when a worker picks it up.",
    buckets=(0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
    registry=REGISTRY,
)
QUEUE_OLDEST_JOB_AGE: Final = Gauge(
    "queue_oldest_job_age_seconds",
    "Age of the oldest job still waiting to be picked up (polled with queue_depth; 0 when empty).",
    registry=REGISTRY,
)
QUEUE_JOBS: Final = Counter(
    "queue_jobs",
    "Jobs finished by a worker, by outcome (completed/failed/retried).",
    ["outcome"],
    registry=REGISTRY,
)
QUEUE_DEAD_LETTERS: Final = Counter(
    "queue_dead_letters",
    "Jobs moved to the dead-letter state after their last retry.",
    registry=REGISTRY,
)
QUEUE_DEAD_LETTERS_PENDING: Final = Gauge(
    "queue_dead_letters_pending",
    "Dead letters waiting for an operator (failed after their retry budget, not redriven); "
    "sampled from PostgreSQL by every worker.",
    registry=REGISTRY,
)
WORKER_ACTIVE_JOBS: Final = Gauge(
    "worker_active_jobs",
    "Jobs this worker process is running now.",
    registry=REGISTRY,
)

# --- enrichment pipeline -------------------------------------------------------------------

PIPELINE_STEP_DURATION: Final = Histogram(
    "pipeline_step_duration_seconds",
    "Duration of one enrichment pipeline step, by step and outcome.",
    ["step", "outcome"],
    buckets=SEMCONV_DURATION_BUCKETS,
    registry=REGISTRY,
)
ENRICHMENTS: Final = Counter(
    "enrichments",
    "Enrichments finished, by entrypoint and outcome.",
    ["entrypoint", "outcome"],
    registry=REGISTRY,
)
"""``entrypoint`` in :data:`ENRICHMENT_ENTRYPOINTS` (``leads_process``: ``/leads/process``;
``c2s_enrich``: ``/c2s/enrich/{lead_id}``; ``webhook``: a webhook job's terminal run);
``outcome`` in :data:`ENRICHMENT_OUTCOMES`: ``enriched`` (data found and the lead handled),
``duplicate`` (a repeated request answered from the first one), ``not_found`` (no lead, or no
CPF for its contacts: a correct answer), ``failed`` (an upstream or dependency failure: the
enrichment SLO's bad events)."""

# --- readiness -----------------------------------------------------------------------------

DEPENDENCY_READY: Final = Gauge(
    "dependency_ready",
    "Result of the last readiness check of a dependency (1 ok, 0 failing).",
    ["dependency"],
    registry=REGISTRY,
)
DEPENDENCY_DEGRADED: Final = Gauge(
    "dependency_degraded",
    "1 while an optional dependency failed its last readiness check and the instance serves "
    "without it (ready, degraded).",
    ["dependency"],
    registry=REGISTRY,
)
"""``dependency`` is ``redis``: its failure leaves readiness passing (per-process fallbacks)."""

# --- feature flags --------------------------------------------------------------------------

FEATURE_FLAG_ENABLED: Final = Gauge(
    "feature_flag_enabled",
    "Feature flag value as this process applies it (1 on, 0 off).",
    ["flag"],
    registry=REGISTRY,
)
"""``flag`` is a name from ``domain.flags.Flag`` (a fixed set). Per process, so a fleet that
disagrees for longer than the flag cache TTL shows up as ``min by (flag) != max by (flag)``."""
FEATURE_FLAG_STORAGE_DEGRADED: Final = Gauge(
    "feature_flag_storage_degraded",
    "1 while the flag overrides cannot be read from Redis (last known values, else defaults).",
    registry=REGISTRY,
)


# --- bulk-job callbacks ----------------------------------------------------------------------

CallbackOutcome = Literal["delivered", "retried", "failed"]
CALLBACK_OUTCOMES: Final[tuple[CallbackOutcome, ...]] = ("delivered", "retried", "failed")
CALLBACK_DELIVERIES: Final = Counter(
    "callback_deliveries",
    "Callback delivery attempts of bulk jobs by outcome: delivered (2xx), retried (failed, "
    "another attempt scheduled), failed (given up: retry window over or URL refused).",
    ["outcome"],
    registry=REGISTRY,
)
"""``outcome`` in :data:`CALLBACK_OUTCOMES`."""
CALLBACK_PENDING: Final = Gauge(
    "callback_pending",
    "Callback deliveries not yet delivered nor given up (sampled from PostgreSQL by every worker).",
    registry=REGISTRY,
)
# --- usage and paid-call quotas ------------------------------------------------------------

PAID_CALLS: Final = Counter(
    "paid_calls",
    "Paid upstream calls (a Work API call not served from a cache, a Diretrix resolution), "
    "by tenant and upstream.",
    ["tenant", "upstream"],
    registry=REGISTRY,
)
"""``tenant`` is bounded by ``infra.usage.TenantLabels``: the configured allowlist
(``USAGE_METRIC_TENANTS``) or the first ``USAGE_METRIC_TENANTS_MAX`` tenants this process saw,
every other tenant ``other``; ``_system`` is work done for no key (webhook jobs). ``upstream``:
``work_api``, ``diretrix``. Exact per-key counts are in ``core.usage_daily`` (``/api/v1/usage``)."""
QUOTA_EXCEEDED: Final = Counter(
    "quota_exceeded",
    "Paid calls refused because the API key reached its daily paid-call quota (HTTP 429).",
    ["tenant", "upstream"],
    registry=REGISTRY,
)
"""Labels as :data:`PAID_CALLS`."""
PAID_QUOTA_USE_RATIO: Final = Gauge(
    "paid_quota_use_ratio",
    "Today's (UTC) paid calls over the daily quota of the most used quota-bound key of the "
    "tenant that this process served today (shared count; 1 = at quota).",
    ["tenant"],
    registry=REGISTRY,
)
"""Labels as :data:`PAID_CALLS`; a fleet-wide view is ``max by (tenant)``. Reset at 00:00 UTC."""


def set_feature_flag(flag: str, enabled: bool) -> None:
    """Set ``feature_flag_enabled{flag}`` to 1 or 0."""
    FEATURE_FLAG_ENABLED.labels(flag).set(1 if enabled else 0)


def set_feature_flag_storage_degraded(degraded: bool) -> None:
    """Set ``feature_flag_storage_degraded`` to 1 or 0."""
    FEATURE_FLAG_STORAGE_DEGRADED.set(1 if degraded else 0)


# --- audit trail ----------------------------------------------------------------------------

AUDIT_RECORDS_WRITTEN: Final = Counter(
    "audit_records_written",
    "Audit trail records written to PostgreSQL by this process.",
    registry=REGISTRY,
)
AUDIT_RECORDS_DROPPED: Final = Counter(
    "audit_records_dropped",
    "Audit trail records dropped (oldest first) because the in-memory buffer was full while "
    "PostgreSQL could not take them (AUDIT_BUFFER_MAX).",
    registry=REGISTRY,
)
AUDIT_FLUSH_DURATION: Final = Histogram(
    "audit_flush_seconds",
    "Duration of one write of buffered audit records (one statement), successful or not.",
    buckets=SEMCONV_DURATION_BUCKETS,
    registry=REGISTRY,
)
AUDIT_BUFFER_RECORDS: Final = Gauge(
    "audit_buffer_records",
    "Audit trail records waiting in this process's buffer.",
    registry=REGISTRY,
)


# --- build ----------------------------------------------------------------------------------

BUILD_INFO: Final = Gauge(
    "c2s_api_build_info",
    "Always 1; the labels say which build runs.",
    ["version", "python", "commit"],
    registry=REGISTRY,
)


def set_build_info(version: str | None = None, commit: str | None = None) -> None:
    """Set ``c2s_api_build_info`` (done at import from package metadata and ``BUILD_COMMIT``).

    Args:
        version: Package version; the installed ``c2s-api`` distribution's by default.
        commit: Git commit; env ``BUILD_COMMIT`` (set by the image build) or ``unknown``.
    """
    if version is None:
        try:
            version = metadata.version("c2s-api")
        except metadata.PackageNotFoundError:
            version = "unknown"
    BUILD_INFO.clear()
    BUILD_INFO.labels(
        version, platform.python_version(), commit or os.environ.get("BUILD_COMMIT") or "unknown"
    ).set(1)


set_build_info()

# --- retention (LGPD) ---------------------------------------------------------------------

RETENTION_KINDS: Final = (
    "parties",
    "raw_payloads",
    "enrichment_history",
    "audit_partitions",
    "bulk_jobs",
)
RETENTION_PURGED: Final = Counter(
    "retention_purged",
    "Rows (audit: partitions) purged by the retention job, by kind.",
    ["kind"],
    registry=REGISTRY,
)
"""``kind``: parties (not refreshed for RETENTION_DAYS, removed completely), raw_payloads
(current enrichments' raw payloads older than RAW_RETENTION_DAYS), enrichment_history (history
rows older than RAW_RETENTION_DAYS), audit_partitions (older than AUDIT_RETENTION_MONTHS),
bulk_jobs (ended more than BULK_RETENTION_DAYS ago, with their items)."""
RETENTION_LAST_RUN: Final = Gauge(
    "retention_last_run_timestamp_seconds",
    "When the retention job last finished a run (Unix time; 0 before the first).",
    registry=REGISTRY,
)
for _kind in RETENTION_KINDS:
    RETENTION_PURGED.labels(_kind)

# Pre-create the series of known label sets, so rate() and absent-free dashboards see zeros
# from the first scrape instead of no data.
for _cache in CACHE_NAMES:
    for _result in CACHE_RESULTS:
        CACHE_REQUESTS.labels(_cache, _result)
for _name in BREAKER_NAMES:
    CIRCUIT_BREAKER_REJECTIONS.labels(_name)
    for _state in BREAKER_STATE_CODES:
        CIRCUIT_BREAKER_TRANSITIONS.labels(_name, _state)
for _reason in ("size", "expired"):
    DOSSIER_LOCAL_CACHE_EVICTIONS.labels(_reason)
for _reason in ("message", "reset"):
    DOSSIER_LOCAL_CACHE_INVALIDATIONS.labels(_reason)
for _outcome in ("completed", "failed", "retried"):
    QUEUE_JOBS.labels(_outcome)
for _entrypoint in ENRICHMENT_ENTRYPOINTS:
    for _enrichment in ENRICHMENT_OUTCOMES:
        ENRICHMENTS.labels(_entrypoint, _enrichment)
DEPENDENCY_DEGRADED.labels("redis")
for _callback_outcome in CALLBACK_OUTCOMES:
    CALLBACK_DELIVERIES.labels(_callback_outcome)


# --- hot-path helpers -----------------------------------------------------------------------


def current_exemplar() -> dict[str, str] | None:
    """``{"trace_id": ...}`` of the current span when it is sampled, else ``None``."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.trace_flags.sampled:
        return {"trace_id": format(ctx.trace_id, "032x")}
    return None


def http_method_label(method: str) -> str:
    """The semconv method label: the method when standard, ``_OTHER`` otherwise."""
    return method if method in _METHODS else "_OTHER"


_Metric = TypeVar("_Metric", Counter, Gauge, Histogram)

# Children cached by (metric, labels): `labels()` takes a lock and validates on every call, the
# dict lookup does not. The key space is bounded because every label of these metrics is.
_children: dict[tuple[object, tuple[str, ...]], Any] = {}


def _child(metric: _Metric, *labels: str) -> _Metric:
    """``metric.labels(*labels)``, kept after the first call (for the per-request paths)."""
    key = (metric, labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def observe_request(
    method: str, route: str, status: int, seconds: float, trace_id: str | None = None
) -> None:
    """Record one HTTP server request.

    Args:
        method: A method label (pass it through :func:`http_method_label`).
        route: The route template or :data:`UNMATCHED_ROUTE`.
        status: The response status code.
        seconds: Wall time from the first byte in to the last byte out.
        trace_id: The request span's trace id when sampled; stored as the exemplar.
    """
    _child(HTTP_SERVER_REQUEST_DURATION, method, route, str(status)).observe(
        seconds, {"trace_id": trace_id} if trace_id else None
    )


def observe_upstream(
    upstream: Upstream | str,
    server_address: str,
    method: str,
    status: int | None,
    error_type: str,
    seconds: float,
) -> None:
    """Record one upstream HTTP request (one attempt), with the current trace as exemplar.

    Args:
        upstream: ``c2s``, ``diretrix`` or ``work_api``.
        server_address: The upstream's configured host.
        method: The HTTP method (through :func:`http_method_label`).
        status: The response status, ``None`` when no response came back.
        error_type: ``""`` on success, else a bounded error name (see the metric).
        seconds: Duration of the attempt.
    """
    HTTP_CLIENT_REQUEST_DURATION.labels(
        upstream,
        server_address,
        http_method_label(method),
        "" if status is None else str(status),
        error_type,
    ).observe(seconds, current_exemplar())


def record_upstream_retry(upstream: Upstream | str, error_type: str) -> None:
    """Count one retry of an upstream call, caused by ``error_type``."""
    UPSTREAM_RETRIES.labels(upstream, error_type).inc()


def record_enrichment(entrypoint: EnrichmentEntrypoint | str, outcome: EnrichmentOutcome) -> None:
    """Count one finished enrichment."""
    ENRICHMENTS.labels(entrypoint, outcome).inc()


def record_cache(cache: CacheName, result: CacheResult) -> None:
    """Count one cache lookup (children cached: a memory hit costs about a microsecond)."""
    _child(CACHE_REQUESTS, cache, result).inc()


def record_rate_limit(policy: str, *, allowed: bool) -> None:
    """Count one rate-limit decision for a configured ``policy`` name."""
    _child(RATE_LIMIT_DECISIONS, policy, "allowed" if allowed else "limited").inc()


def set_breaker_state(name: str, state: BreakerStateName | str) -> None:
    """Set ``circuit_breaker_state{name}`` from a state name (see :data:`BREAKER_STATE_CODES`).

    Raises:
        KeyError: for an unknown state name (a programming error).
    """
    CIRCUIT_BREAKER_STATE.labels(name).set(BREAKER_STATE_CODES[state])


def record_breaker_transition(name: str, to: BreakerStateName | str) -> None:
    """Count a transition of breaker ``name`` and set its state gauge."""
    CIRCUIT_BREAKER_TRANSITIONS.labels(name, to).inc()
    set_breaker_state(name, to)


def record_breaker_rejection(name: str) -> None:
    """Count a call rejected by breaker ``name``."""
    CIRCUIT_BREAKER_REJECTIONS.labels(name).inc()


def set_breaker_storage_degraded(name: str, degraded: bool) -> None:
    """Set ``circuit_breaker_storage_degraded{name}`` to 1 or 0."""
    CIRCUIT_BREAKER_STORAGE_DEGRADED.labels(name).set(1 if degraded else 0)


def record_readiness(dependency: Dependency, ok: bool) -> None:
    """Set ``dependency_ready{dependency}`` from a readiness check's result."""
    DEPENDENCY_READY.labels(dependency).set(1 if ok else 0)


def record_degraded(dependency: Dependency, degraded: bool) -> None:
    """Set ``dependency_degraded{dependency}`` from a readiness check's result."""
    DEPENDENCY_DEGRADED.labels(dependency).set(1 if degraded else 0)


def observe_step(step: PipelineStep | str, outcome: StepOutcome, seconds: float) -> None:
    """Record one pipeline step, with the current trace as exemplar."""
    PIPELINE_STEP_DURATION.labels(step, outcome).observe(seconds, current_exemplar())


class _HasValue(Protocol):
    @property
    def value(self) -> Any: ...  # Any: an enum's value (infra.breaker.BreakerState -> str)


def _state_name(state: _HasValue | str) -> str:
    return state if isinstance(state, str) else str(state.value)


class BreakerMetrics:
    """A breaker listener (``infra.breaker.BreakerListener``) feeding the breaker series.

    Pass one instance to every breaker; it is stateless. States may be enum members whose
    ``value`` is the state name (``"half_open"``...) or the names themselves.
    """

    __slots__ = ()

    def on_state_change(self, name: str, old: _HasValue | str, new: _HasValue | str) -> None:
        """Count the transition and move the state gauge."""
        record_breaker_transition(name, _state_name(new))

    def on_rejected(self, name: str, state: _HasValue | str) -> None:
        """Count the rejection."""
        record_breaker_rejection(name)

    def on_call(self, name: str, *, failed: bool, slow: bool, duration_s: float) -> None:
        """Nothing: call outcomes are already measured by the upstream/DB series."""

    def on_storage_degraded(self, name: str, degraded: bool) -> None:
        """Move the storage-degraded gauge."""
        set_breaker_storage_degraded(name, degraded)

    def publish(self, name: str, state: _HasValue | str, degraded: bool) -> None:
        """Set both gauges from a state read now (``BreakerRegistry.start_sync``): the shared
        state, even when this process has not called the dependency since it changed."""
        set_breaker_state(name, _state_name(state))
        set_breaker_storage_degraded(name, degraded)


class PipelineObserver:
    """``domain.ports.StepObserver``: one span and one histogram sample per pipeline step,
    one ``enrichments_total`` sample per finished enrichment.

    The step outcome is ``error`` when the step raises, ``cancelled`` when it is cancelled.
    """

    __slots__ = ()

    def enrichment_finished(self, entrypoint: str, outcome: str) -> None:
        """Count a finished enrichment (unknown outcomes are counted as ``failed``)."""
        known: EnrichmentOutcome = "failed"
        for candidate in ENRICHMENT_OUTCOMES:
            if candidate == outcome:
                known = candidate
        record_enrichment(entrypoint, known)

    @asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[None]:
        """Trace and time the step ``name``."""
        start = time.perf_counter()
        outcome: StepOutcome = "success"
        with start_span(f"pipeline {name}", {"c2s.pipeline.step": name}):
            try:
                yield
            except BaseException as exc:
                # CancelledError is a BaseException: a cancelled step is not a failed one.
                outcome = "error" if isinstance(exc, Exception) else "cancelled"
                raise
            finally:
                observe_step(name, outcome, time.perf_counter() - start)


# --- DB pool (read at scrape time) --------------------------------------------------------


class _Pool(Protocol):
    def get_size(self) -> int: ...
    def get_idle_size(self) -> int: ...
    def get_max_size(self) -> int: ...


class _PoolCollector:
    """``db_client_connections_usage{state}`` and ``db_client_connections_max`` from live pools.

    Read at scrape time (no bookkeeping per query). Summed over the tracked pools: a worker
    has one; tests may have several.

    The names are semconv's ``db.client.connections.usage``/``.max`` (the generation that had
    the ``state`` attribute): the current ``db.client.connection.count`` translates to a gauge
    ending in ``_count``, which ``promtool check metrics`` rejects as a histogram-only suffix.
    """

    def __init__(self) -> None:
        self._pools: list[_Pool] = []

    def track(self, pool: _Pool) -> Callable[[], None]:
        self._pools.append(pool)

        def untrack() -> None:
            if pool in self._pools:
                self._pools.remove(pool)

        return untrack

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        count = GaugeMetricFamily(
            "db_client_connections_usage",
            "Connections in the asyncpg pool by state, idle or used "
            "(semconv db.client.connections.usage).",
            labels=["state"],
        )
        maximum = GaugeMetricFamily(
            "db_client_connections_max",
            "Maximum connections the asyncpg pool may open (semconv db.client.connections.max).",
        )
        return count, maximum

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return self._families()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        used = idle = most = 0
        for pool in list(self._pools):
            size, free = pool.get_size(), pool.get_idle_size()
            used += size - free
            idle += free
            most += pool.get_max_size()
        count, maximum = self._families()
        count.add_metric(["idle"], idle)
        count.add_metric(["used"], used)
        maximum.add_metric([], most)
        return count, maximum


_POOLS: Final = _PoolCollector()
REGISTRY.register(_POOLS)


def track_pool(pool: _Pool) -> Callable[[], None]:
    """Export ``pool``'s connection counts until the returned function is called.

    Args:
        pool: An ``asyncpg.Pool`` (anything with ``get_size``/``get_idle_size``/``get_max_size``).

    Returns:
        A function that stops tracking the pool (call it before closing the pool).
    """
    return _POOLS.track(pool)


# --- PostgreSQL read replica (ADR 0015) ------------------------------------------------------

DB_READS: Final = Counter(
    "db_reads",
    "Party reads (lookups, name search, get_party) by the server that answered them.",
    ["target"],
    registry=REGISTRY,
)
"""``target`` in replica/primary: the primary answers every read without ``DATABASE_READ_URL``,
after this request wrote, while the replica is not serving, and a read that failed on it."""


class _ReplicaCollector:
    """``db_replica_up``, ``db_replica_serving`` and ``db_replica_lag_seconds``: the last check's
    result, exported only once a process with a replica reported one (no replica, no series, so
    the alerts do not fire where none is configured)."""

    def __init__(self) -> None:
        self.reported = False
        self.up = False
        self.serving = False
        self.lag_s: float | None = None

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "db_replica_up", "1 while the last check reached the PostgreSQL read replica."
        )
        serving = GaugeMetricFamily(
            "db_replica_serving",
            "1 while reads go to the PostgreSQL read replica (reachable and within "
            "REPLICA_MAX_LAG_S); 0 while they fall back to the primary.",
        )
        lag = GaugeMetricFamily(
            "db_replica_lag_seconds",
            "How far the read replica's replay is behind the primary at the last check "
            "(0 when it replayed everything it received; absent while unreachable).",
        )
        return up, serving, lag

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return self._families()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        up, serving, lag = self._families()
        if not self.reported:  # the families without samples: HELP and TYPE only
            return up, serving, lag
        up.add_metric([], 1 if self.up else 0)
        serving.add_metric([], 1 if self.serving else 0)
        if self.lag_s is not None:
            lag.add_metric([], self.lag_s)
        return up, serving, lag


_REPLICA: Final = _ReplicaCollector()
REGISTRY.register(_REPLICA)


class ReplicaMetrics:
    """The read routing's listener (``infra.db.replica.ReplicaListener``): ``db_reads_total``
    per read, the replica gauges per check."""

    def __init__(self) -> None:
        self._replica = DB_READS.labels("replica")
        self._primary = DB_READS.labels("primary")

    def read(self, target: Literal["replica", "primary"]) -> None:
        (self._replica if target == "replica" else self._primary).inc()

    def health(self, *, up: bool, lag_s: float | None, serving: bool) -> None:
        _REPLICA.reported = True
        _REPLICA.up, _REPLICA.serving, _REPLICA.lag_s = up, serving, lag_s


# --- exposition -----------------------------------------------------------------------------


def render_metrics(accept: str = "") -> tuple[bytes, str]:
    """Encode :data:`REGISTRY` for an ``Accept`` header.

    Returns:
        The body and its content type (OpenMetrics when asked for, with exemplars; the classic
        text format otherwise).
    """
    encoder, content_type = choose_encoder(accept)
    return encoder(REGISTRY), content_type


@get(
    "/metrics",
    operation_id="getMetrics",
    summary="Prometheus metrics (OpenMetrics with exemplars when negotiated)",
    name="metrics",
    include_in_schema=False,
    sync_to_thread=False,
    opt={"exclude_from_auth": True, "exclude_from_rate_limit": True, "skip_metrics": True},
)
def metrics_endpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Serve the registry (excluded from auth, rate limits, tracing and request metrics)."""
    body, content_type = render_metrics(request.headers.get("accept", ""))
    # Litestar appends the response charset to text/* media types: pass it without one, or the
    # header says "charset=utf-8; charset=utf-8".
    media_type = re.sub(r";\s*charset=[^;]*", "", content_type, flags=re.IGNORECASE)
    return Response(body, media_type=media_type)


def start_metrics_server(port: int, addr: str = "127.0.0.1") -> None:
    """Serve :data:`REGISTRY` on ``http://addr:port/metrics`` from a daemon thread.

    For processes without the HTTP app (``c2s-api worker``). Bind ``0.0.0.0`` only inside a
    container network.
    """
    prometheus_client.start_http_server(port, addr=addr, registry=REGISTRY)


def metric_names(registry: Collector = REGISTRY) -> frozenset[str]:
    """Every sample name ``registry`` can export, with the type suffixes.

    Counters give ``name_total``, histograms ``name_bucket``/``name_count``/``name_sum``,
    gauges ``name``. Derived from the metric families, so labelled metrics that have no
    sample yet count too. Used by the tests that check dashboards and rules.
    """
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "summary": ("", "_count", "_sum"),
        "info": ("_info",),
        "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    }
    names: set[str] = set()
    for family in registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
        names.update(sample.name for sample in family.samples)
    return frozenset(names)


# --- bulk enrichment jobs (c2s-api worker) ---------------------------------------------------

BULK_JOBS: Final = Gauge(
    "bulk_jobs",
    "Bulk enrichment jobs not ended, by state (queued/running); sampled from PostgreSQL by "
    "every worker.",
    ["state"],
    registry=REGISTRY,
)
BULK_OLDEST_JOB_AGE: Final = Gauge(
    "bulk_oldest_job_age_seconds",
    "Age of the oldest bulk job not ended (sampled with bulk_jobs; 0 when none).",
    registry=REGISTRY,
)
BULK_ITEMS: Final = Counter(
    "bulk_items",
    "Bulk job items run by this worker, by outcome (done/failed/not_found/retry); "
    "rate() is the items per second.",
    ["outcome"],
    registry=REGISTRY,
)
BULK_JOBS_ENDED: Final = Counter(
    "bulk_jobs_ended",
    "Bulk jobs ended by this worker, by final state (done/cancelled).",
    ["state"],
    registry=REGISTRY,
)
BULK_ERRORS: Final = Counter(
    "bulk_errors",
    "Unexpected failures of the bulk runner (claim, finish, maintenance, item), by event.",
    ["event"],
    registry=REGISTRY,
)
_BULK_OUTCOMES: Final = frozenset({"done", "failed", "not_found", "retry"})
_BULK_EVENTS: Final = frozenset(
    {"bulk_claim_failed", "bulk_finish_failed", "bulk_maintenance_failed", "bulk_item_error"}
)
# Zero series of every known outcome and event: the panels and the stuck-job alert have a line
# before the first item runs.
for _event in sorted(_BULK_EVENTS):
    BULK_ERRORS.labels(_event)
for _outcome in sorted(_BULK_OUTCOMES):
    BULK_ITEMS.labels(_outcome)


class BulkMetrics:
    """Feeds ``bulk_jobs``, ``bulk_oldest_job_age_seconds``, ``bulk_items_total``,
    ``bulk_jobs_ended_total`` and ``bulk_errors_total`` (a ``domain.bulk.BulkListener``)."""

    def item_finished(self, outcome: str) -> None:
        """Count an item's run by outcome."""
        BULK_ITEMS.labels(outcome if outcome in _BULK_OUTCOMES else "failed").inc()

    def job_ended(self, state: str) -> None:
        """Count a job that ended here."""
        BULK_JOBS_ENDED.labels("cancelled" if state == "cancelled" else "done").inc()

    def sampled(self, stats: Any) -> None:  # Any: domain.bulk.BulkStats (duck-typed)
        """Publish open jobs by state and the oldest one's age."""
        for state in ("queued", "running"):
            BULK_JOBS.labels(state).set(stats.jobs.get(state, 0))
        BULK_OLDEST_JOB_AGE.set(stats.oldest_open_age_s or 0.0)

    def error(self, event: str, error_type: str) -> None:
        """Count an unexpected failure (the error type is for the log, not a label)."""
        BULK_ERRORS.labels(event if event in _BULK_EVENTS else "bulk_item_error").inc()
