"""Tracing set-up, span helpers, context propagation and export-time scrubbing."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from observability import tracing
from observability.tracing import (
    configure_tracing,
    current_span_ids,
    current_trace_id,
    extract_context,
    flush_tracing,
    inject_context,
    litestar_plugins,
    shutdown_tracing,
    start_span,
    tracing_enabled,
    tracing_requested,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory; off again afterwards (tests/conftest.py disables the SDK)."""
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    memory = InMemorySpanExporter()
    assert configure_tracing(service_name="c2s-api-test", exporter=memory, instrument=False)
    yield memory
    shutdown_tracing()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": "false"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_tracing_is_off_unless_an_endpoint_is_configured(
    env: dict[str, str], expected: bool
) -> None:
    assert tracing_requested(env) is expected


def test_without_configuration_everything_is_a_cheap_no_op() -> None:
    assert not tracing_enabled()
    assert litestar_plugins() == []
    assert configure_tracing() is False  # OTEL_SDK_DISABLED=true in the test session
    with start_span("noop", step="x") as span:
        assert not span.is_recording()
    assert current_trace_id() is None
    assert current_span_ids() is None
    assert inject_context() == {}


def test_spans_are_exported_with_attributes(exporter: InMemorySpanExporter) -> None:
    with start_span("pipeline store", {"c2s.pipeline.step": "store"}, attempt=2) as span:
        assert span.is_recording()
        ids = current_span_ids()
        assert ids is not None
        assert current_trace_id() == ids[0]
    flush_tracing()
    (finished,) = exporter.get_finished_spans()
    assert finished.name == "pipeline store"
    assert finished.attributes == {"c2s.pipeline.step": "store", "attempt": 2}
    assert finished.resource.attributes["service.name"] == "c2s-api-test"


def test_a_queued_job_continues_the_trace_of_its_request(exporter: InMemorySpanExporter) -> None:
    with start_span("POST /api/v1/webhooks/c2s", kind=SpanKind.SERVER) as request_span:
        carrier = inject_context()
    assert set(carrier) >= {"traceparent"}
    # later, in the worker, with no active span
    with start_span("queue process", parent=carrier, kind=SpanKind.CONSUMER) as job_span:
        pass
    job_ctx = job_span.get_span_context()
    request_ctx = request_span.get_span_context()
    assert job_ctx.trace_id == request_ctx.trace_id
    flush_tracing()
    job = next(s for s in exporter.get_finished_spans() if s.name == "queue process")
    assert job.parent is not None
    assert job.parent.span_id == request_ctx.span_id
    assert job.kind is SpanKind.CONSUMER
    # a Context works as a parent too
    with start_span("child", parent=extract_context(carrier)) as child:
        assert child.get_span_context().trace_id == request_ctx.trace_id


def test_exported_spans_hold_no_query_strings_or_personal_data(
    exporter: InMemorySpanExporter,
) -> None:
    with pytest.raises(ValueError, match="dossier"):  # noqa: SIM117 - the span must record it
        with start_span(
            "GET",
            {
                "url.full": "http://work/api?token=s3cr3t&modulo=cpf&consulta=12345678909",
                "http.url": "http://127.0.0.1/api/v1/leads/process?id=42&email=ana@ex.com",
                "http.target": "/api/v1/contributor/customer?cpf=12345678909",
                "url.query": "cpf=12345678909",
                "url.path": "/api/v1/cpf/123.456.789-09",
                "c2s.contact": "ana.souza@exemplo.com.br",
                "c2s.phones": ("+55 11 98765-4321", "ok"),
                "http.response.status_code": 500,
            },
        ):
            raise ValueError("no dossier for 12345678909 (ana.souza@exemplo.com.br)")
    flush_tracing()
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["url.full"] == "http://work/api"
    assert attributes["http.url"] == "http://127.0.0.1/api/v1/leads/process"
    assert attributes["http.target"] == "/api/v1/contributor/customer"
    assert "url.query" not in attributes
    assert attributes["url.path"] == "/api/v1/cpf/***.***.***-09"
    assert attributes["c2s.contact"] == "a***@e***.br"
    assert attributes["c2s.phones"] == ("***********21", "ok")
    assert attributes["http.response.status_code"] == 500
    text = repr(attributes) + repr([e.attributes for e in span.events]) + repr(span.status)
    for raw in ("12345678909", "s3cr3t", "ana.souza@", "98765-4321"):
        assert raw not in text
    assert span.status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in span.events)


def test_configuration_is_reentrant_and_reversible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    held = tracing.tracer  # tracers handed out earlier follow the configuration
    try:
        assert configure_tracing(exporter=first, instrument=False)
        assert configure_tracing(exporter=second, instrument=False)  # no-op: first one wins
        assert len(litestar_plugins()) == 1
        with held.start_as_current_span("one"):
            pass
        shutdown_tracing()
        assert not tracing_enabled()
        with held.start_as_current_span("dropped") as span:
            assert not span.is_recording()
        assert configure_tracing(exporter=second, instrument=False)
        with held.start_as_current_span("two"):
            pass
        flush_tracing()
    finally:
        shutdown_tracing()
    assert [s.name for s in first.get_finished_spans()] == ["one"]
    assert [s.name for s in second.get_finished_spans()] == ["two"]
    assert trace.get_tracer_provider() is tracing.tracer_provider()


def test_litestar_plugin_names_spans_by_method_until_routed() -> None:
    scope: Any = {"type": "http", "method": "GET", "path": "/x/123"}  # a partial scope
    span_name, attributes = tracing._span_details(scope)
    assert (span_name, attributes) == ("GET", {})


def test_gc_freeze_after_startup_is_undone_on_shutdown() -> None:
    undo = tracing.freeze_gc_after_startup()
    try:
        assert gc.get_freeze_count() > 0
    finally:
        undo()
    assert gc.get_freeze_count() == 0


def test_the_logged_service_name_is_the_one_the_spans_carry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The worker logged service_name=c2s-api while its resource said c2s-api-worker.
    logged: list[tuple[str, dict[str, Any]]] = []

    class Recorder:
        def info(self, event: str, **fields: Any) -> None:
            logged.append((event, fields))

    monkeypatch.setattr(tracing, "log", Recorder())
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "c2s-api-worker")
    memory = InMemorySpanExporter()
    try:
        assert configure_tracing(service_name="c2s-api", exporter=memory, instrument=False)
        with tracing.start_span("probe"):
            pass
        flush_tracing()
    finally:
        shutdown_tracing()
    [fields] = [fields for event, fields in logged if event == "tracing_configured"]
    [span] = memory.get_finished_spans()
    assert span.resource.attributes["service.name"] == "c2s-api-worker"
    assert fields["service_name"] == "c2s-api-worker"
