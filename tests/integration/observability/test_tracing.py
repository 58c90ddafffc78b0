"""End to end: a request through the real app exports one trace over OTLP/HTTP.

An OTLP/HTTP receiver runs in the test (``http.server`` on 127.0.0.1, decoding the protobuf
``ExportTraceServiceRequest``), and so does a tiny "upstream" (aiohttp) that records the headers
it gets. The request arrives with a W3C ``traceparent``; the trace must continue it through the
server span, a Redis span, a PostgreSQL span and an aiohttp client span, whose ``traceparent``
reaches the upstream.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from litestar import Request, get
from litestar.params import FromPath
from litestar.testing import AsyncTestClient
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from app.http.routes import ServicesDep
from app.main import create_app
from observability.tracing import configure_tracing, shutdown_tracing
from tests.support.http_servers import Receiver, Upstream, serving
from tests.support.polling import wait_until_sync

if TYPE_CHECKING:
    from collections.abc import Iterator

    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    from app.config import Settings

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
CPF = "52998224725"
ROUTE = "/api/v1/observability-trace/{lead_id:str}"
# What spans, labels and logs carry: the template without the parameter's type.
PLAIN_ROUTE = "/api/v1/observability-trace/{lead_id}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving(Receiver()) as server:
        yield server


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with serving(Upstream()) as server:
        yield server


@pytest.fixture
def tracing_to(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """Tracing on, exporting to ``receiver`` with a short batch delay; off again afterwards."""
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)  # set by tests/conftest.py
    configure_tracing(
        service_name="c2s-api-test",
        exporter=OTLPSpanExporter(endpoint=receiver.endpoint, timeout=5),
        schedule_delay_ms=50,
    )
    try:
        yield receiver
    finally:
        shutdown_tracing()


@get(ROUTE, opt={"exclude_from_auth": True, "exclude_from_rate_limit": True})
async def touch_everything(
    request: Request[Any, Any, Any], services: ServicesDep, lead_id: FromPath[str]
) -> dict[str, str]:
    """Redis, PostgreSQL and an upstream call, like one enrichment step each."""
    await services.redis.ping()
    async with services.pool.acquire() as conn:
        await conn.fetchval("SELECT 1")
    upstream_url = request.route_handler.opt["upstream_url"]
    url = f"{upstream_url}/api?token=s3cr3t&modulo=cpf&consulta={lead_id}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        await response.read()
    return {"lead": "done"}


def _attributes(span: PbSpan) -> dict[str, Any]:
    def value(v: AnyValue) -> Any:  # Any: the protobuf oneof
        kind = v.WhichOneof("value")
        return getattr(v, kind) if kind else None

    return {kv.key: value(kv.value) for kv in span.attributes}


def _wait_for(receiver: Receiver, predicate: Any, timeout: float = 10.0) -> list[PbSpan]:
    def arrived() -> tuple[list[PbSpan]] | None:
        with receiver.lock:
            spans = list(receiver.spans)
        return (spans,) if predicate(spans) else None

    found = wait_until_sync(arrived, timeout, what="the spans")
    assert found is not None
    return found[0]


async def test_one_trace_spans_server_redis_postgres_and_upstream(
    settings: Settings, tracing_to: Receiver, upstream: Upstream
) -> None:
    app = create_app(settings)
    touch_everything.opt["upstream_url"] = upstream.url
    app.register(touch_everything)
    traceparent = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"
    async with AsyncTestClient(app=app) as client:
        response = await client.get(
            f"/api/v1/observability-trace/{CPF}?email=ana@exemplo.com",
            headers={"traceparent": traceparent},
        )
        assert (await client.get("/health/ready")).status_code == 200  # not traced
        scrape = await client.get(
            "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert response.status_code == 200
    # the caller's trace is continued and its id is answered
    assert response.headers["x-trace-id"] == TRACE_ID

    def complete(spans: list[PbSpan]) -> bool:
        return sum(s.trace_id.hex() == TRACE_ID for s in spans) >= 4

    spans = [s for s in _wait_for(tracing_to, complete) if s.trace_id.hex() == TRACE_ID]
    by_id = {s.span_id.hex(): s for s in spans}
    server = next(s for s in spans if s.kind == PbSpan.SPAN_KIND_SERVER)
    assert server.name == f"GET {PLAIN_ROUTE}"
    assert server.parent_span_id.hex() == CALLER_SPAN_ID
    assert _attributes(server)["http.route"] == PLAIN_ROUTE

    def under_server(span: PbSpan) -> bool:
        parent = span.parent_span_id.hex()
        while parent in by_id:
            if parent == server.span_id.hex():
                return True
            parent = by_id[parent].parent_span_id.hex()
        return False

    clients = [s for s in spans if s.kind == PbSpan.SPAN_KIND_CLIENT]
    systems = {
        _attributes(s).get("db.system") or _attributes(s).get("db.system.name") for s in clients
    }
    assert {"redis", "postgresql"} <= systems
    http_client = [
        s
        for s in clients
        if not _attributes(s).get("db.system") and not _attributes(s).get("db.system.name")
    ]
    assert len(http_client) == 1
    assert all(under_server(s) for s in clients)

    # W3C trace context reached the upstream, continuing the same trace from the client span
    (seen,) = upstream.headers_seen
    assert seen["traceparent"].split("-")[1] == TRACE_ID
    assert seen["traceparent"].split("-")[2] == http_client[0].span_id.hex()

    # nothing exported names the CPF, the e-mail or the upstream token
    exported = repr([(s.name, _attributes(s)) for s in spans])
    for raw in (CPF, "ana@exemplo.com", "s3cr3t"):
        assert raw not in exported

    # no span for the excluded readiness probe
    assert not any(s.name.startswith("GET /health") for s in tracing_to.spans)

    # the request histogram carries this trace as exemplar (OpenMetrics)
    exemplars = {
        sample.exemplar.labels["trace_id"]
        for family in text_string_to_metric_families(scrape.text)  # type: ignore[no-untyped-call]
        if family.name == "http_server_request_duration_seconds"
        for sample in family.samples
        if sample.exemplar is not None and sample.labels.get("http_route") == PLAIN_ROUTE
    }
    assert TRACE_ID in exemplars


async def test_an_absent_collector_neither_delays_nor_breaks_requests(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    try:
        started = time.monotonic()
        app = create_app(settings)  # tracing from the environment, as under Granian
        assert time.monotonic() - started < 2
        async with AsyncTestClient(app=app) as client:
            # traced (not a probe, a scrape or a document), answered by the router itself
            started = time.monotonic()
            response = await client.get("/no-such-route")
            assert time.monotonic() - started < 1
        assert response.status_code == 404
        assert len(response.headers["x-trace-id"]) == 32
    finally:
        shutdown_tracing()
