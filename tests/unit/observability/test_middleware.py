"""The HTTP observability middleware: route-template labels, skip rules, the access log line."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
from litestar import Controller, Litestar, Response, get, post
from litestar.params import FromPath
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from app.http.middleware.request_id import RequestIdMiddleware
from observability.metrics import REGISTRY, UNMATCHED_ROUTE, metrics_endpoint
from observability.middleware import HttpObservabilityMiddleware, install_observability

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

H = "http_server_request_duration_seconds"


class CapturingLogger:
    """Records the access-log calls instead of printing them."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(("info", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))


class Items(Controller):
    path = "/v9/items"

    @get("/{item_id:uuid}", sync_to_thread=False)
    def one(self, item_id: FromPath[uuid.UUID]) -> dict[str, str]:
        return {"id": str(item_id)}

    @post("/", sync_to_thread=False)
    def create(self) -> dict[str, str]:
        return {"ok": "yes"}


_probe_status = {"value": 200}


@get("/v9/probe", opt={"skip_metrics": True}, sync_to_thread=False)
def probe() -> Response[str]:
    return Response("ok", status_code=_probe_status["value"])


@get("/v9/boom", sync_to_thread=False)
def boom() -> str:
    raise RuntimeError("boom with 12345678909")


@pytest.fixture(scope="module")
def access_log() -> CapturingLogger:
    return CapturingLogger()


@pytest.fixture(scope="module")
def app(access_log: CapturingLogger) -> Litestar:
    app = Litestar(route_handlers=[Items, probe, boom, metrics_endpoint], debug=False)
    app.asgi_handler = HttpObservabilityMiddleware(
        RequestIdMiddleware(app.asgi_handler), app, logger=access_log
    )
    return app


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=app) as client:
        yield client


def _count(method: str, route: str, status: int) -> float:
    value = REGISTRY.get_sample_value(
        f"{H}_count",
        {
            "http_request_method": method,
            "http_route": route,
            "http_response_status_code": str(status),
        },
    )
    return value or 0.0


async def test_matched_requests_are_labelled_with_the_declared_route_template(
    client: AsyncTestClient[Litestar], access_log: CapturingLogger
) -> None:
    before = _count("GET", "/v9/items/{item_id}", 200)
    item = uuid.uuid4()
    response = await client.get(f"/v9/items/{item}?cpf=12345678909")
    assert response.status_code == 200
    assert _count("GET", "/v9/items/{item_id}", 200) == before + 1
    level, event, fields = access_log.lines[-1]
    assert (level, event) == ("info", "http_request")
    assert fields["method"] == "GET"
    assert fields["route"] == "/v9/items/{item_id}"
    assert fields["status"] == 200
    assert isinstance(fields["duration_ms"], float)
    assert fields["request_id"] == response.headers["x-request-id"]
    assert str(item) not in repr(fields)
    assert "12345678909" not in repr(fields)


async def test_unrouted_requests_share_one_label(
    client: AsyncTestClient[Litestar], access_log: CapturingLogger
) -> None:
    before_404 = _count("GET", UNMATCHED_ROUTE, 404)
    before_405 = _count("DELETE", UNMATCHED_ROUTE, 405)
    assert (await client.get("/v9/nothing/12345678909")).status_code == 404
    assert (await client.get("/v9/items/not-a-uuid")).status_code == 404
    assert (await client.delete(f"/v9/items/{uuid.uuid4()}")).status_code == 405
    assert _count("GET", UNMATCHED_ROUTE, 404) == before_404 + 2
    assert _count("DELETE", UNMATCHED_ROUTE, 405) == before_405 + 1
    assert access_log.lines[-1][2]["route"] == UNMATCHED_ROUTE


async def test_unknown_methods_are_folded_into_other(client: AsyncTestClient[Litestar]) -> None:
    before = _count("_OTHER", UNMATCHED_ROUTE, 405)
    response = await client.request("BREW", f"/v9/items/{uuid.uuid4()}")
    assert response.status_code == 405
    assert _count("_OTHER", UNMATCHED_ROUTE, 405) == before + 1


async def test_errors_are_measured_with_their_status_and_logged_as_warnings(
    client: AsyncTestClient[Litestar], access_log: CapturingLogger
) -> None:
    before = _count("GET", "/v9/boom", 500)
    assert (await client.get("/v9/boom")).status_code == 500
    assert _count("GET", "/v9/boom", 500) == before + 1
    level, _event, fields = access_log.lines[-1]
    assert level == "warning"
    assert fields["status"] == 500


async def test_skip_metrics_handlers_are_not_measured_nor_logged_unless_failing(
    client: AsyncTestClient[Litestar], access_log: CapturingLogger
) -> None:
    lines = len(access_log.lines)
    _probe_status["value"] = 200
    assert (await client.get("/v9/probe")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200
    assert _count("GET", "/v9/probe", 200) == 0
    assert _count("GET", "/metrics", 200) == 0
    assert len(access_log.lines) == lines
    _probe_status["value"] = 503
    try:
        assert (await client.get("/v9/probe")).status_code == 503
    finally:
        _probe_status["value"] = 200
    assert _count("GET", "/v9/probe", 503) == 0
    level, _event, fields = access_log.lines[-1]
    assert (level, fields["route"], fields["status"]) == ("warning", "/v9/probe", 503)


async def test_in_flight_gauge_returns_to_zero(client: AsyncTestClient[Litestar]) -> None:
    await client.post("/v9/items")
    await client.get("/metrics")
    for method in ("GET", "POST"):
        assert REGISTRY.get_sample_value(
            "http_server_active_requests", {"http_request_method": method}
        ) in (0.0, None)


async def test_no_trace_header_when_tracing_is_off(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get(f"/v9/items/{uuid.uuid4()}")
    assert "x-trace-id" not in response.headers


def test_route_label_is_the_plain_template_without_parameter_types(app: Litestar) -> None:
    middleware = app.asgi_handler
    assert isinstance(middleware, HttpObservabilityMiddleware)
    route = next(r for r in app.routes if r.path == "/v9/items/{item_id:uuid}")
    assert isinstance(route, HTTPRoute)
    handler = route.route_handlers[0]
    matched: Any = {"path_template": "/v9/items/{item_id}", "route_handler": handler}
    unrouted: Any = {"path_template": "/v9/items/{item_id}"}  # partial scopes
    assert middleware.route_label(matched) == "/v9/items/{item_id}"
    assert middleware.route_label(unrouted) == UNMATCHED_ROUTE
    assert middleware.route_label({}) == UNMATCHED_ROUTE  # type: ignore[arg-type]  # an empty scope


def test_install_observability_adds_metrics_and_wraps_outermost() -> None:
    app = Litestar(route_handlers=[Items])
    inner = app.asgi_handler
    install_observability(app)
    assert isinstance(app.asgi_handler, HttpObservabilityMiddleware)
    assert app.asgi_handler.app is inner
    assert any(route.path == "/metrics" for route in app.routes)
