"""``create_app()`` builds the Litestar application on the composition root (``app.bootstrap``).

Granian calls :func:`create_app` inside each worker (``--factory``), so everything per-process
(pools, clients, telemetry) is built here or in the lifespan, never at import time. The
lifespan opens the process's :class:`~app.bootstrap.Services` and binds them to the
:class:`~app.bootstrap.ServicesHandle` the middleware and the dependency providers were built
with (ADR 0008); ``app.state`` holds one attribute, ``services``, while they run.
"""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

import msgspec
import structlog
from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, Schema, SecurityScheme, Server
from litestar.routes import HTTPRoute

from app.bootstrap import Services, ServicesHandle, open_services
from app.config import Settings, settings_or_exit
from app.http.body import JsonRequest
from app.http.errors import exception_handlers
from app.http.middleware.auth import AuthMiddleware
from app.http.middleware.bodyguard import BodyGuardMiddleware
from app.http.middleware.deprecation import DeprecationMiddleware, DeprecationPlugin
from app.http.middleware.headers import SecurityHeadersMiddleware, StrictContentTypeMiddleware
from app.http.middleware.idempotency import IdempotencyMiddleware
from app.http.middleware.ratelimit import RateLimitMiddleware
from app.http.middleware.request_id import RequestIdMiddleware
from app.http.openapi_scopes import state_operation_scopes
from app.http.routes.admin import AdminController
from app.http.routes.bulk import BulkController
from app.http.routes.customers import CustomerController
from app.http.routes.docs import DocsController, swagger_static_router
from app.http.routes.health import HealthController
from app.http.routes.leads import LeadController
from app.http.routes.subjects import SubjectController
from app.http.routes.usage import UsageController
from app.http.routes.webhooks import WebhookController, webhook_guard
from app.http.routes.work import WorkController
from app.version import SERVICE_VERSION
from domain.bulk import BulkJobs
from domain.pipeline import Enricher
from domain.ports import FlagAdmin, JobAdmin
from domain.subjects import SubjectRights
from domain.usage import UsageReports
from domain.webhooks import GoogleAdsIntake, WebhookIntake
from domain.work_modules import WorkModules
from observability.logging import configure_logging
from observability.metrics import track_pool
from observability.middleware import install_observability
from observability.tracing import flush_tracing, freeze_gc_after_startup, tracing_plugins

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager


__all__ = ["create_app"]

log = structlog.get_logger(__name__)

API_DESCRIPTION = """\
Lead enrichment for the Contact2Sale CRM: resolves a lead's CPF from its phone and e-mail
(Diretrix), fetches the person's dossier (Work API), stores it in the party model and posts a
formatted message back to the lead in C2S.

Every error is `application/problem+json` (RFC 9457) with the legacy `error` member, plus
`request_id` and `trace_id`. Send `X-Request-ID` to correlate your own logs.
"""


def openapi_config() -> OpenAPIConfig:
    """OpenAPI 3.1 document at ``/schema/openapi.json``; the UI lives at ``/docs``."""
    return OpenAPIConfig(
        title="c2s-api",
        version=SERVICE_VERSION,
        description=API_DESCRIPTION,
        path="/schema",
        render_plugins=[JsonRenderPlugin()],
        servers=[Server(url="/")],
        components=Components(
            security_schemes={
                "ApiKey": SecurityScheme(
                    type="apiKey", name="X-API-Key", security_scheme_in="header"
                ),
                "Bearer": SecurityScheme(type="http", scheme="bearer"),
            }
        ),
        use_handler_docstrings=False,
    )


def _dependencies(handle: ServicesHandle) -> dict[str, Provide]:
    """What handlers may declare, each taken from the running services (no per-request
    construction)."""

    def services() -> Services:
        return handle.services

    def settings() -> Settings:
        return handle.services.settings

    def enricher() -> Enricher:
        return handle.services.enricher

    def work_modules() -> WorkModules:
        return handle.services.work_modules

    def flag_store() -> FlagAdmin:
        return handle.services.flags

    def intake() -> WebhookIntake:
        return handle.services.webhook_intake

    def google_ads() -> GoogleAdsIntake:
        return handle.services.google_ads

    def job_admin() -> JobAdmin:
        return handle.services.job_admin

    def subject_rights() -> SubjectRights:
        return handle.services.subject_rights

    def usage_reports() -> UsageReports:
        return handle.services.usage_reports

    def bulk_jobs() -> BulkJobs:
        return handle.services.bulk_jobs

    providers: list[Callable[..., object]] = [
        services,
        settings,
        enricher,
        work_modules,
        flag_store,
        intake,
        google_ads,
        job_admin,
        subject_rights,
        usage_reports,
        bulk_jobs,
    ]
    return {p.__name__: Provide(p, sync_to_thread=False) for p in providers}


def _lifespan(
    settings: Settings, handle: ServicesHandle
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """Open the services on start-up and bind them; close them on shutdown, then flush spans."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            services = await stack.enter_async_context(open_services(settings))
            handle.bind(services)
            stack.callback(handle.unbind)
            app.state.services = services
            stack.callback(app.state.pop, "services", None)
            stack.callback(track_pool(services.pool))  # pool gauges read at scrape time
            stack.callback(freeze_gc_after_startup())  # start-up objects out of later GC scans
            try:
                yield
            finally:
                log.info("shutting_down")
        flush_tracing()  # export the spans still queued
        log.info("resources_closed")

    return lifespan


def _closed_input_schemas(app: Litestar) -> None:
    """Mark request Structs that reject unknown fields ``additionalProperties: false``.

    Litestar's schema generation does not carry msgspec's ``forbid_unknown_fields``; without
    this, clients (and schemathesis) read extra fields as allowed while the API answers 400.
    """
    schemas = app.openapi_schema.components.schemas or {}
    for struct in _struct_classes():
        if struct.__struct_config__.forbid_unknown_fields and struct.__name__ in schemas:
            schema = schemas[struct.__name__]
            if isinstance(schema, Schema):
                schema.additional_properties = False


def _allow_every_method(app: Litestar) -> None:
    """Make each automatic ``OPTIONS`` answer list every method of its path.

    Litestar 2.25 builds a path's ``OPTIONS`` handler with the route of the first handler
    registered on the path and keeps that handler when later ones join it, so ``Allow`` named
    only some methods (``GET`` and ``DELETE`` of ``/api/v1/enrich/jobs/{id}`` answered
    ``Allow: DELETE, OPTIONS``). Point each such handler at its path's final route.
    """
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "OPTIONS" not in route.route_handler_map:
            continue
        handler = route.route_handler_map["OPTIONS"][0].fn
        if getattr(handler, "__name__", "") != "options_handler":
            continue
        for cell in getattr(handler, "__closure__", None) or ():
            if isinstance(cell.cell_contents, HTTPRoute):
                cell.cell_contents = route


def _struct_classes() -> list[type[msgspec.Struct]]:
    found: list[type[msgspec.Struct]] = []
    pending: list[type[msgspec.Struct]] = [msgspec.Struct]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            found.append(sub)
            pending.append(sub)
    return found


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the application.

    Args:
        settings: Configuration; read from the environment when omitted (the Granian path).
    """
    settings = settings or settings_or_exit()
    handle = ServicesHandle()
    configure_logging(settings.log_level, settings.log_format)
    if not settings.webhook_secret.get().strip():
        # Production refuses to start without it (app.config); elsewhere say it loudly.
        log.warning(
            "webhook_unauthenticated",
            detail="WEBHOOK_SECRET is not set: POST /api/v1/webhooks/c2s accepts any request",
            environment=settings.environment,
        )
    app = Litestar(
        route_handlers=[
            HealthController,
            DocsController,
            swagger_static_router(),
            LeadController,
            CustomerController,
            WorkController,
            # Webhook bodies get their own, smaller limit (413 above it, before reading it all).
            Router(
                path="/",
                route_handlers=[WebhookController],
                request_max_body_size=settings.webhook_max_body_bytes,
                guards=[webhook_guard(settings)],
            ),
            AdminController,
            SubjectController,
            UsageController,
            # Bulk jobs take up to BULK_MAX_BODY_BYTES (10,000 items), this route alone.
            Router(
                path="/",
                route_handlers=[BulkController],
                request_max_body_size=settings.bulk_max_body_bytes,
            ),
        ],
        dependencies=_dependencies(handle),
        # Handlers annotate with these under TYPE_CHECKING; Litestar resolves them here.
        signature_namespace={
            "Enricher": Enricher,
            "FlagAdmin": FlagAdmin,
            "GoogleAdsIntake": GoogleAdsIntake,
            "JobAdmin": JobAdmin,
            "BulkJobs": BulkJobs,
            "Services": Services,
            "Settings": Settings,
            "SubjectRights": SubjectRights,
            "WebhookIntake": WebhookIntake,
            "WorkModules": WorkModules,
            "UsageReports": UsageReports,
        },
        lifespan=[_lifespan(settings, handle)],
        exception_handlers=exception_handlers(),
        openapi_config=openapi_config(),
        cors_config=CORSConfig(
            allow_origins=list(settings.cors_allow_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[
                "Authorization",
                "X-API-Key",
                "Content-Type",
                "X-Request-ID",
                "Idempotency-Key",
            ],
            expose_headers=[
                "X-Request-ID",
                "X-Trace-Id",
                "Deprecation",
                "Sunset",
                "Link",
                "Idempotent-Replayed",
                "RateLimit",
                "RateLimit-Policy",
                "Retry-After",
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
            ],
        )
        if settings.cors_allow_origins
        else None,
        request_max_body_size=settings.max_body_bytes,
        # Bodies are decoded strictly into the handler's type; malformed ones are 400.
        request_class=JsonRequest,
        # Route level, outermost first: API keys (unauthenticated requests learn nothing more),
        # then Content-Type; a rate limiter goes after AuthMiddleware (it reads the key id).
        middleware=[
            DeprecationMiddleware,
            DefineMiddleware(AuthMiddleware, services=handle),
            DefineMiddleware(RateLimitMiddleware, services=handle),
            StrictContentTypeMiddleware,
            DefineMiddleware(IdempotencyMiddleware, services=handle),
        ],
        debug=False,
        # observability: OTel server spans when OTEL_EXPORTER_OTLP_*ENDPOINT is set (else none);
        # logging is owned by observability.logging (Litestar's default would replace it).
        plugins=[
            *tracing_plugins(settings.service_name, settings.environment, SERVICE_VERSION),
            DeprecationPlugin(),
        ],
        logging_config=None,
    )
    _closed_input_schemas(app)
    _allow_every_method(app)
    state_operation_scopes(app)
    # Slow bodies: a receive deadline and a cap on unauthenticated ones, before any routing or
    # authentication work (innermost wrapper, so its answers carry the request id and headers).
    app.asgi_handler = BodyGuardMiddleware(
        app.asgi_handler,
        timeout_s=settings.body_read_timeout_s,
        max_pending=settings.max_pending_bodies,
    )
    # Wrap the whole ASGI handler, not the route middleware stack, so that responses Litestar
    # produces before routing (unknown path, wrong method) also carry the request id.
    app.asgi_handler = RequestIdMiddleware(app.asgi_handler)
    # Security headers on every response, 404/405 and middleware answers included.
    app.asgi_handler = SecurityHeadersMiddleware(
        app.asgi_handler, production=settings.environment == "production"
    )
    # observability: /metrics + request metrics/access log; keep it the outermost wrapper.
    install_observability(app)
    return app
