"""OpenTelemetry helpers shared by the app and the adapters."""

from __future__ import annotations

from opentelemetry import trace

__all__ = ["current_trace_id", "tracer"]

tracer = trace.get_tracer("c2s-api")


def current_trace_id() -> str | None:
    """Return the hex trace id of the active span, or ``None`` when nothing is traced."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x")
