"""HTTP metrics, the access log line and server-span naming, as one raw ASGI middleware.

Raw ASGI on purpose: it runs on every request of the hot path, and the measured cost of an inline
prometheus_client call is ~5 us against 50-70 us for Litestar's ``PrometheusMiddleware``
(measured on the production machine type). Per request it allocates one ``send`` closure and,
only when tracing is on and the span is recorded, one header list.

It wraps ``app.asgi_handler`` (outside Litestar's router, like the request-id middleware), so it
also sees responses produced before routing (404, 405) and reads the matched route from the scope
after the router has run: Litestar 2.x stores the handler in ``scope["route_handler"]`` and the
template in ``scope["path_template"]`` (verified on 2.25: the template there has its parameter
types stripped, ``/customers/{id}``; the label uses the declared form, ``/customers/{id:uuid}``,
looked up once per template from ``app.routes``).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, Final

import structlog
from litestar.enums import ScopeType
from opentelemetry import trace

from observability import tracing
from observability.metrics import (
    HTTP_SERVER_ACTIVE_REQUESTS,
    UNMATCHED_ROUTE,
    http_method_label,
    metrics_endpoint,
    observe_request,
)

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import ASGIApp, Message, Receive, Scope, Send
    from prometheus_client import Gauge

__all__ = ["SKIP_METRICS_OPT", "HttpObservabilityMiddleware", "install_observability"]

SKIP_METRICS_OPT: Final = "skip_metrics"
"""Route ``opt`` key: no request metrics and no access log line (probes, scrapes, docs)."""

_TRACE_HEADER: Final = tracing.TRACE_ID_HEADER.encode()

access_log = structlog.get_logger("http.access")


_TYPED_PARAMETER = re.compile(r"\{(\w+):[^}]*\}")


def plain_template(path: str) -> str:
    """A route template without parameter types: ``/customers/{customer_id:uuid}`` becomes
    ``/customers/{customer_id}`` (the ``http_route`` label, span names and access logs)."""
    return _TYPED_PARAMETER.sub(r"{\1}", path)


class HttpObservabilityMiddleware:
    """Request histogram + in-flight gauge + one ``http_request`` log line per request.

    Also, when the request's server span is recorded: renames it to ``"{method} {route}"``,
    sets ``http.route`` and answers the trace id in ``X-Trace-Id``.

    Handlers with ``opt["skip_metrics"]`` are neither measured nor logged, except that a
    5xx answer of such a handler (a failing readiness probe) is still logged.
    """

    __slots__ = ("_active", "_app", "_logger", "_routes", "_schema_prefix", "_skip_paths", "app")

    def __init__(self, app: ASGIApp, litestar_app: Litestar, logger: Any = None) -> None:
        """Wrap ``app``.

        Args:
            app: The ASGI callable to wrap (``litestar_app.asgi_handler``).
            litestar_app: The application, for its route table.
            logger: A structlog logger for the access line (tests pass a capturing one).
        """
        self.app = app
        self._app = litestar_app
        self._logger = logger if logger is not None else access_log
        self._routes: dict[str, str] = {}
        self._skip_paths = frozenset(_skipped_static_paths(litestar_app))
        # Litestar's own OpenAPI handlers (/schema/*) cannot carry the skip_metrics opt: like
        # /docs they are documents, in no SLI.
        openapi = litestar_app.openapi_config
        path = openapi.path if openapi is not None else None
        self._schema_prefix = path.rstrip("/") if path else ""
        self._active: dict[str, Gauge] = {}

    def route_label(self, scope: Scope) -> str:
        """The ``http_route`` of a routed scope: the declared template, or ``_unmatched``."""
        template = scope.get("path_template")
        if not template or scope.get("route_handler") is None:
            return UNMATCHED_ROUTE
        label = self._routes.get(template)
        if label is None:
            # Once per template: routes registered after start-up are picked up here.
            for route in self._app.routes:
                self._routes.setdefault(route.path_format, plain_template(route.path))
            label = self._routes.setdefault(template, plain_template(template))
        return label

    def _skipped(self, scope: Scope) -> bool:
        handler: Any = scope.get("route_handler")  # Any: absent before routing
        if handler is None:
            return False
        if handler.opt.get(SKIP_METRICS_OPT):
            return True
        prefix = self._schema_prefix
        template: str = scope.get("path_template") or ""
        return bool(prefix) and (template == prefix or template.startswith(f"{prefix}/"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        method = http_method_label(scope["method"])
        # The in-flight gauge is decided before routing, so skipped handlers are known by path.
        active = None if scope["path"] in self._skip_paths else self._active_gauge(method)
        if active is not None:
            active.inc()
        status = 500  # what the client gets if the app dies before starting a response
        trace_id: str | None = None
        span_id: str | None = None
        traced = tracing.tracing_enabled()

        async def send_observed(message: Message) -> None:
            nonlocal status, trace_id, span_id
            if message["type"] == "http.response.start":
                status = message["status"]
                if traced:
                    span = trace.get_current_span()
                    if span.is_recording():
                        ctx = span.get_span_context()
                        trace_id = format(ctx.trace_id, "032x")
                        span_id = format(ctx.span_id, "016x")
                        route = self.route_label(scope)
                        if route != UNMATCHED_ROUTE:
                            span.update_name(f"{method} {route}")
                            span.set_attribute("http.route", route)
                        headers = list(message.get("headers", ()))
                        headers.append((_TRACE_HEADER, trace_id.encode()))
                        message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            seconds = time.perf_counter() - start
            if active is not None:
                active.dec()
            skipped = self._skipped(scope)
            if not skipped or status >= 500:
                route = self.route_label(scope)
                if not skipped:
                    observe_request(method, route, status, seconds, trace_id)
                self._log(method, route, status, seconds, scope, trace_id, span_id)

    def _active_gauge(self, method: str) -> Gauge:
        gauge = self._active.get(method)
        if gauge is None:
            gauge = self._active[method] = HTTP_SERVER_ACTIVE_REQUESTS.labels(method)
        return gauge

    def _log(
        self,
        method: str,
        route: str,
        status: int,
        seconds: float,
        scope: Scope,
        trace_id: str | None,
        span_id: str | None,
    ) -> None:
        # Route template only: never the raw path, the query string, headers or bodies.
        # The request id is the one app.middleware.RequestIdMiddleware stored in the scope.
        state = scope.get("state")
        request_id = state.get("request_id") if state else None
        emit = self._logger.warning if status >= 500 else self._logger.info
        emit(
            "http_request",
            method=method,
            route=route,
            status=status,
            duration_ms=round(seconds * 1000, 3),
            request_id=request_id,
            trace_id=trace_id,
            span_id=span_id,
        )


def _skipped_static_paths(app: Litestar) -> set[str]:
    """Concrete paths whose every handler opts out of metrics (no path parameters)."""
    paths: set[str] = set()
    for route in app.routes:
        if route.path_parameters:
            continue
        handlers = getattr(route, "route_handlers", None) or [getattr(route, "route_handler", None)]
        # Litestar adds an OPTIONS handler per path that does not inherit a bare handler's opt.
        own = [
            h
            for h in handlers
            if h is not None and set(getattr(h, "http_methods", ())) != {"OPTIONS"}
        ]
        if own and all(h.opt.get(SKIP_METRICS_OPT) for h in own):
            paths.add(route.path)
    return paths


def install_observability(app: Litestar) -> None:
    """Add ``/metrics`` and wrap the app's ASGI handler with :class:`HttpObservabilityMiddleware`.

    Call last in the app factory, after every route is registered and after any other wrapping
    of ``app.asgi_handler``, so that the measured time covers everything.
    """
    app.register(metrics_endpoint)
    app.asgi_handler = HttpObservabilityMiddleware(app.asgi_handler, app)
