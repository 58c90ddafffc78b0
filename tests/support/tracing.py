"""Tracing on, into memory: the spans a test's code exports, read after a flush."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from observability.tracing import configure_tracing, flush_tracing, shutdown_tracing

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pytest
    from opentelemetry.sdk.trace import ReadableSpan

__all__ = ["exported", "forget_exported", "in_memory_tracing", "roots"]


@contextmanager
def in_memory_tracing(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on with the libraries instrumented, exporting to memory; off again afterwards."""
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)  # set by tests/conftest.py
    memory = InMemorySpanExporter()
    assert configure_tracing(service_name="c2s-api-test", exporter=memory, schedule_delay_ms=50)
    try:
        yield memory
    finally:
        shutdown_tracing()


def exported(memory: InMemorySpanExporter) -> list[ReadableSpan]:
    """Every span ended so far (the batch processor flushed first)."""
    flush_tracing(5000)
    return list(memory.get_finished_spans())


def forget_exported(memory: InMemorySpanExporter) -> None:
    """Drop every span ended so far, those still queued in the batch processor included."""
    flush_tracing(5000)
    memory.clear()


def roots(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    """The spans that start a trace of their own."""
    return [span for span in spans if span.parent is None]
