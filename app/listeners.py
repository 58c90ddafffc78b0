"""The metric listeners the composition root hands the adapters: each feeds one adapter's
events (cache outcomes, the in-memory dossier cache, limiter decisions, failed
authentications) to Prometheus (``observability/metrics.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.http.middleware.ratelimit import AUTH_FAILURE_POLICY
from observability.metrics import (
    DOSSIER_LOCAL_CACHE_BYTES,
    DOSSIER_LOCAL_CACHE_ENTRIES,
    DOSSIER_LOCAL_CACHE_EVICTIONS,
    DOSSIER_LOCAL_CACHE_INVALIDATIONS,
    DOSSIER_LOCAL_CACHE_SERVING,
    RATE_LIMIT_DEGRADED,
    record_cache,
    record_rate_limit,
)

if TYPE_CHECKING:
    from domain.admission import Tier

__all__ = ["AuthFailureMetrics", "CacheMetrics", "LocalCacheMetrics", "RateLimitMetrics"]


class CacheMetrics:
    """Feeds cache outcomes to ``cache_requests_total``."""

    def record(self, cache: str, result: str) -> None:
        record_cache(cache, result)  # type: ignore[arg-type]  # adapters use the bounded names


class LocalCacheMetrics:
    """Feeds the in-memory dossier cache's size and events to Prometheus."""

    def held(self, entries: int, nbytes: int) -> None:
        DOSSIER_LOCAL_CACHE_ENTRIES.set(entries)
        DOSSIER_LOCAL_CACHE_BYTES.set(nbytes)

    def evicted(self, reason: str, count: int) -> None:
        DOSSIER_LOCAL_CACHE_EVICTIONS.labels(reason).inc(count)

    def invalidated(self, reason: str, count: int) -> None:
        DOSSIER_LOCAL_CACHE_INVALIDATIONS.labels(reason).inc(count)

    def serving(self, active: bool) -> None:
        DOSSIER_LOCAL_CACHE_SERVING.set(1 if active else 0)


class RateLimitMetrics:
    """Feeds limiter decisions and the degraded flag to Prometheus."""

    def decided(self, tier: Tier | None, allowed: bool) -> None:
        record_rate_limit(tier or "all", allowed=allowed)

    def degraded(self, active: bool) -> None:
        RATE_LIMIT_DEGRADED.set(1 if active else 0)


class AuthFailureMetrics:
    """Feeds failed-authentication decisions to Prometheus (policy ``auth_failure``).

    The degraded flag is left to the request limiter: both share one Redis.
    """

    def decided(self, tier: Tier | None, allowed: bool) -> None:
        record_rate_limit(AUTH_FAILURE_POLICY, allowed=allowed)

    def degraded(self, active: bool) -> None:
        return None
