"""What a trace holds: upstream calls named by their upstream, no connection-reset spans, no
root traces for work that belongs to no request (probes, start-up, pollers).

Tracing exports into memory here (``tests.support.tracing``); the OTLP path itself is covered
by ``test_tracing.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from litestar import get
from litestar.testing import AsyncTestClient
from opentelemetry.trace import SpanKind

from app.http.routes import ServicesDep
from app.main import create_app
from infra.breaker import CircuitBreaker
from infra.upstream.http import UpstreamTransport, client_timeout, create_session
from tests.support.http_servers import Upstream, serving
from tests.support.tracing import exported, in_memory_tracing, roots

if TYPE_CHECKING:
    from collections.abc import Iterator

    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from app.config import Settings

pytestmark = pytest.mark.integration

# What asyncpg's default reset on release sends (Connection.get_reset_query()).
RESET_MARKERS = ("pg_advisory_unlock_all", "RESET ALL", "UNLISTEN", "CLOSE ALL")


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    with in_memory_tracing(monkeypatch) as exporter:
        yield exporter


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with serving(Upstream()) as server:
        yield server


def _attr(span: ReadableSpan, *keys: str) -> Any:  # Any: an attribute value
    attributes = span.attributes or {}
    return next((attributes[key] for key in keys if key in attributes), None)


def _statement(span: ReadableSpan) -> str | None:
    value = _attr(span, "db.statement", "db.query.text")
    return str(value) if value is not None else None


@pytest.mark.parametrize(
    ("method", "upstream_name"), [("GET", "diretrix"), ("GET", "work_api"), ("POST", "c2s")]
)
async def test_an_upstream_call_span_is_named_by_its_upstream(
    memory: InMemorySpanExporter, upstream: Upstream, method: str, upstream_name: str
) -> None:
    session = create_session()  # after configure_tracing: the session is instrumented
    transport = UpstreamTransport(
        upstream_name,
        session,
        upstream.url,
        timeout=client_timeout(5.0, 2.0),
        breaker=CircuitBreaker(upstream_name),
    )
    try:
        # The test server has no do_POST: it answers 501, accepted here as an answer.
        await transport.request(
            method,
            "/api/v1/thing",
            route=f"{method} /api/v1/thing",
            body=b"{}" if method == "POST" else None,
            idempotent=method == "GET",
            accept=(501,),
        )
    finally:
        await session.close()

    # The HTTP client spans only: tracing is process-wide, and a background task of an earlier
    # test's app (a Redis poll, a pool's query) may end a client span of its own meanwhile.
    (span,) = [
        s
        for s in exported(memory)
        if s.kind is SpanKind.CLIENT and _attr(s, "http.request.method", "http.method")
    ]
    assert span.name == f"{method} {upstream_name}"
    assert _attr(span, "peer.service") == upstream_name
    # the host attributes are kept (semconv names, old or new)
    assert _attr(span, "server.address", "net.peer.name") == "127.0.0.1" or "127.0.0.1" in str(
        _attr(span, "url.full", "http.url")
    )
    assert _attr(span, "http.request.method", "http.method") == method


@get(
    "/api/v1/observability-pool",
    opt={"exclude_from_auth": True, "exclude_from_rate_limit": True},
)
async def two_queries(services: ServicesDep) -> dict[str, str]:
    """Two pooled connections, acquired and released, one query each."""
    for _ in range(2):
        async with services.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
    return {"ok": "yes"}


async def test_a_request_trace_has_its_queries_and_no_connection_resets(
    settings: Settings, memory: InMemorySpanExporter
) -> None:
    app = create_app(settings)
    app.register(two_queries)
    async with AsyncTestClient(app=app) as client:
        response = await client.get("/api/v1/observability-pool")
        assert (await client.get("/health/ready")).status_code == 200
    assert response.status_code == 200
    trace_id = int(response.headers["x-trace-id"], 16)

    spans = exported(memory)
    statements = [s for s in (_statement(span) for span in spans) if s is not None]
    leaked = [s for s in statements if any(marker in s for marker in RESET_MARKERS)]
    assert leaked == [], "the pool's reset on release is traced"
    in_request = [s for s in spans if s.context is not None and s.context.trace_id == trace_id]
    assert [_statement(s) for s in in_request if _statement(s) == "SELECT 1"] == ["SELECT 1"] * 2
    # Start-up (pool warm-up, first flag read, breaker sync), the readiness probe and the
    # pollers make no traces of their own: the request's is the only one.
    assert [s.name for s in roots(spans) if s.context.trace_id != trace_id] == []
