"""The registry, the hot-path helpers, the breaker listener, the pool collector, exposition."""

from __future__ import annotations

import enum

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from observability import metrics
from observability.metrics import (
    REGISTRY,
    BreakerMetrics,
    PipelineObserver,
    current_exemplar,
    metric_names,
    observe_request,
    render_metrics,
    track_pool,
)

OPENMETRICS = "application/openmetrics-text; version=1.0.0"

# Every series the brief asks for, under its exported sample names.
EXPECTED = {
    "http_server_request_duration_seconds_bucket",
    "http_server_active_requests",
    "http_client_request_duration_seconds_bucket",
    "upstream_retries_total",
    "circuit_breaker_state",
    "circuit_breaker_transitions_total",
    "circuit_breaker_rejections_total",
    "circuit_breaker_storage_degraded",
    "cache_requests_total",
    "rate_limit_decisions_total",
    "rate_limit_degraded",
    "rate_limit_storage_errors_total",
    "queue_depth",
    "queue_job_age_seconds_bucket",
    "queue_oldest_job_age_seconds",
    "queue_jobs_total",
    "queue_dead_letters_total",
    "queue_dead_letters_pending",
    "worker_active_jobs",
    "callback_deliveries_total",
    "callback_pending",
    "pipeline_step_duration_seconds_bucket",
    "enrichments_total",
    "db_client_connections_usage",
    "db_client_connections_max",
    "dependency_ready",
    "dependency_degraded",
    "c2s_api_build_info",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "python_gc_collections_total",
    "python_info",
}


def _value(metric: str, /, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def test_registry_exports_every_series_of_the_contract() -> None:
    assert metric_names() >= EXPECTED


def test_no_created_series_are_exported() -> None:
    body, _ = render_metrics()
    assert b"_created" not in body


def test_exemplar_needs_a_sampled_span() -> None:
    assert current_exemplar() is None
    sampled = SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1))
    with trace.use_span(NonRecordingSpan(sampled)):
        assert current_exemplar() == {"trace_id": format(0xABC, "032x")}
    unsampled = SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(0))
    with trace.use_span(NonRecordingSpan(unsampled)):
        assert current_exemplar() is None


def test_request_histogram_carries_trace_id_exemplars_in_openmetrics_only() -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    observe_request("GET", "/exemplar/{id:int}", 200, 0.003, trace_id)
    om, content_type = render_metrics(OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    assert f'# {{trace_id="{trace_id}"}} 0.003'.encode() in om
    assert om.rstrip().endswith(b"# EOF")
    text, content_type = render_metrics("text/plain")
    assert content_type.startswith("text/plain")
    assert trace_id.encode() not in text


def test_breaker_listener_maps_state_names_to_the_documented_codes() -> None:
    class State(enum.Enum):  # the shape of infra.breaker.BreakerState
        CLOSED = "closed"
        OPEN = "open"
        HALF_OPEN = "half_open"
        FORCED_OPEN = "forced_open"
        DISABLED = "disabled"

    listener = BreakerMetrics()
    before = _value("circuit_breaker_transitions_total", name="diretrix", to="open")
    expected = {
        State.CLOSED: 0,
        State.HALF_OPEN: 1,
        State.OPEN: 2,
        State.FORCED_OPEN: 3,
        State.DISABLED: 4,
    }
    for state, code in expected.items():
        listener.on_state_change("diretrix", State.CLOSED, state)
        assert _value("circuit_breaker_state", name="diretrix") == code
    assert _value("circuit_breaker_transitions_total", name="diretrix", to="open") == before + 1
    rejected = _value("circuit_breaker_rejections_total", name="diretrix")
    listener.on_rejected("diretrix", State.OPEN)
    assert _value("circuit_breaker_rejections_total", name="diretrix") == rejected + 1
    listener.on_storage_degraded("diretrix", True)
    assert _value("circuit_breaker_storage_degraded", name="diretrix") == 1
    listener.on_storage_degraded("diretrix", False)
    assert _value("circuit_breaker_storage_degraded", name="diretrix") == 0
    listener.on_call("diretrix", failed=True, slow=False, duration_s=0.1)


class FakePool:
    def __init__(self, size: int, idle: int, most: int) -> None:
        self.size, self.idle, self.most = size, idle, most

    def get_size(self) -> int:
        return self.size

    def get_idle_size(self) -> int:
        return self.idle

    def get_max_size(self) -> int:
        return self.most


def test_pool_gauges_are_read_at_scrape_time_until_untracked() -> None:
    base_used = _value("db_client_connections_usage", state="used")
    base_max = _value("db_client_connections_max")
    pool = FakePool(size=5, idle=2, most=10)
    untrack = track_pool(pool)
    try:
        assert _value("db_client_connections_usage", state="used") == base_used + 3
        pool.idle = 5
        assert _value("db_client_connections_usage", state="used") == base_used
        assert _value("db_client_connections_max") == base_max + 10
    finally:
        untrack()
    assert _value("db_client_connections_max") == base_max
    untrack()  # idempotent


async def test_pipeline_observer_times_steps_by_outcome() -> None:
    observer = PipelineObserver()
    ok = _value("pipeline_step_duration_seconds_count", step="store", outcome="success")
    failed = _value("pipeline_step_duration_seconds_count", step="store", outcome="error")
    async with observer.step("store"):
        pass
    with pytest.raises(LookupError):
        async with observer.step("store"):
            raise LookupError
    assert _value("pipeline_step_duration_seconds_count", step="store", outcome="success") == ok + 1
    assert (
        _value("pipeline_step_duration_seconds_count", step="store", outcome="error") == failed + 1
    )


def test_small_helpers_move_their_series() -> None:
    hits = _value("cache_requests_total", cache="work_api", result="hit")
    metrics.record_cache("work_api", "hit")
    assert _value("cache_requests_total", cache="work_api", result="hit") == hits + 1
    limited = _value("rate_limit_decisions_total", policy="ip", outcome="limited")
    metrics.record_rate_limit("ip", allowed=False)
    assert _value("rate_limit_decisions_total", policy="ip", outcome="limited") == limited + 1
    labels = {
        "upstream": "work_api",
        "server_address": "work.example",
        "http_request_method": "GET",
        "http_response_status_code": "200",
        "error_type": "soft_error",
    }
    calls = _value("http_client_request_duration_seconds_count", **labels)
    metrics.observe_upstream("work_api", "work.example", "GET", 200, "soft_error", 0.2)
    assert _value("http_client_request_duration_seconds_count", **labels) == calls + 1
    retries = _value("upstream_retries_total", upstream="c2s", error_type="503")
    metrics.record_upstream_retry("c2s", "503")
    assert _value("upstream_retries_total", upstream="c2s", error_type="503") == retries + 1
    failed = _value("enrichments_total", entrypoint="webhook", outcome="failed")
    metrics.PipelineObserver().enrichment_finished("webhook", "something-unbounded")
    assert _value("enrichments_total", entrypoint="webhook", outcome="failed") == failed + 1
    metrics.record_readiness("redis", False)
    assert _value("dependency_ready", dependency="redis") == 0
    metrics.record_readiness("redis", True)
    assert _value("dependency_ready", dependency="redis") == 1


def test_build_info_names_version_python_and_commit() -> None:
    metrics.set_build_info(version="9.9.9", commit="abc123")
    try:
        samples = [
            s for f in REGISTRY.collect() if f.name == "c2s_api_build_info" for s in f.samples
        ]
        assert len(samples) == 1
        assert samples[0].labels["version"] == "9.9.9"
        assert samples[0].labels["commit"] == "abc123"
        assert samples[0].value == 1
    finally:
        metrics.set_build_info()


async def test_metrics_endpoint_negotiates_the_format() -> None:
    app = Litestar(route_handlers=[metrics.metrics_endpoint])
    async with AsyncTestClient(app=app) as client:
        plain = await client.get("/metrics")
        om = await client.get("/metrics", headers={"accept": OPENMETRICS})
    assert plain.status_code == om.status_code == 200
    assert plain.headers["content-type"].startswith("text/plain")
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")
    assert "/metrics" not in app.openapi_schema.paths  # type: ignore[operator]  # paths is set
