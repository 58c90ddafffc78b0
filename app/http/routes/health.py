"""Liveness and readiness.

Readiness fails (503) only for what stops the process from serving: PostgreSQL. Redis holds
caches, locks, shared breaker state and rate-limit counters, and every one of them has a
per-process fallback, so a Redis failure leaves the instance ready, named in ``degraded`` and in
``dependency_degraded{dependency="redis"}``; failing readiness for it would take every instance
out of the load balancer at once while each could still serve.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import msgspec
from litestar import Controller, Request, Response, get

from app.http.errors import problem_response
from app.http.problems import problem_responses
from app.http.routes import ServicesDep
from app.version import SERVICE_VERSION
from observability.metrics import record_degraded, record_readiness

__all__ = ["SERVICE_VERSION", "HealthController", "HealthView", "ReadyView"]

# Without these the process cannot serve: readiness fails.
REQUIRED: Final = ("postgres",)
# These have per-process fallbacks: their failure is reported, never a readiness failure.
OPTIONAL: Final = ("redis",)


class HealthView(msgspec.Struct, frozen=True, kw_only=True):
    """The liveness body (docs/contract.md)."""

    status: str
    service: str
    version: str


class ReadyView(msgspec.Struct, frozen=True, kw_only=True):
    """Readiness: the required dependencies answered within the timeout.

    Attributes:
        status: ``ready``.
        checks: Each dependency's result (``ok``, ``timeout`` or ``unavailable``).
        degraded: Optional dependencies that failed: the instance serves without them.
    """

    status: str
    checks: dict[str, str]
    degraded: list[str] = msgspec.field(default_factory=list)


_HEALTH = HealthView(status="healthy", service="c2s-api", version=SERVICE_VERSION)


class HealthController(Controller):
    """Probes for load balancers and orchestrators; excluded from rate limits and tracing."""

    path = "/health"
    tags = ["health"]  # noqa: RUF012 - Litestar reads class attributes
    opt = {"exclude_from_auth": True, "exclude_from_rate_limit": True, "skip_metrics": True}  # noqa: RUF012

    @get(
        "/",
        operation_id="getHealth",
        summary="Liveness: the process is up (no I/O)",
        response_description="Always healthy while the process serves requests",
    )
    async def health(self) -> HealthView:
        return _HEALTH

    @get(
        "/ready",
        operation_id="getReadiness",
        summary="Readiness: PostgreSQL answers within a short timeout (Redis down: degraded)",
        responses=problem_responses(503),
    )
    async def ready(self, request: Request[Any, Any, Any], services: ServicesDep) -> Response[Any]:
        timeout = services.settings.ready_timeout_s
        results = await asyncio.gather(
            _check(services.check_postgres(), timeout),
            _check(services.check_redis(), timeout),
        )
        checks = dict(zip((*REQUIRED, *OPTIONAL), results, strict=True))
        record_readiness("postgres", checks["postgres"] == "ok")
        record_readiness("redis", checks["redis"] == "ok")
        degraded = [name for name in OPTIONAL if checks[name] != "ok"]
        record_degraded("redis", "redis" in degraded)
        failing = [name for name in REQUIRED if checks[name] != "ok"]
        if failing:
            detail = "Not ready: " + ", ".join(f"{n} {checks[n]}" for n in failing)
            if degraded:
                detail += "; degraded: " + ", ".join(f"{n} {checks[n]}" for n in degraded)
            return problem_response(
                request, 503, detail, dependency=",".join(failing), retry_after=1
            )
        return Response(ReadyView(status="ready", checks=checks, degraded=degraded))


async def _check(probe: Any, limit_s: float) -> str:  # Any: an awaitable probe
    try:
        await asyncio.wait_for(probe, limit_s)
    except TimeoutError:
        return "timeout"
    except Exception:  # a readiness probe reports any failure, it never raises
        return "unavailable"
    return "ok"
