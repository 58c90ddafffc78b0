"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Controller, Request, Response, get

from app.http.errors import problem_response
from app.http.problems import problem_responses
from app.version import SERVICE_VERSION
from observability.metrics import record_readiness

if TYPE_CHECKING:
    from app.state import Resources

__all__ = ["SERVICE_VERSION", "HealthController", "HealthView", "ReadyView"]


class HealthView(msgspec.Struct, frozen=True, kw_only=True):
    """The reference service's liveness body."""

    status: str
    service: str
    version: str


class ReadyView(msgspec.Struct, frozen=True, kw_only=True):
    """Readiness: every dependency answered within the timeout."""

    status: str
    checks: dict[str, str]


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
        summary="Readiness: PostgreSQL and Redis answer within a short timeout",
        responses=problem_responses(503),
    )
    async def ready(self, request: Request[Any, Any, Any]) -> Response[Any]:
        resources: Resources = request.app.state.resources
        timeout = resources.settings.ready_timeout_s
        names = ("postgres", "redis")
        results = await asyncio.gather(
            _check(resources.check_postgres(), timeout),
            _check(resources.check_redis(), timeout),
        )
        checks = dict(zip(names, results, strict=True))
        record_readiness("postgres", checks["postgres"] == "ok")
        record_readiness("redis", checks["redis"] == "ok")
        failing = [name for name, result in checks.items() if result != "ok"]
        if failing:
            return problem_response(
                request,
                503,
                "Not ready: " + ", ".join(f"{n} {checks[n]}" for n in failing),
                dependency=",".join(failing),
                retry_after=1,
            )
        return Response(ReadyView(status="ready", checks=checks))


async def _check(probe: Any, limit_s: float) -> str:  # Any: an awaitable probe
    try:
        await asyncio.wait_for(probe, limit_s)
    except TimeoutError:
        return "timeout"
    except Exception:  # a readiness probe reports any failure, it never raises
        return "unavailable"
    return "ok"
