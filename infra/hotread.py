"""The :class:`domain.ports.HotRead` adapter: the rate limiter's local decision, then the
dossier cache's entry for an admitted request (ADR 0009)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from domain.admission import Admission, Prefetched

if TYPE_CHECKING:
    from collections.abc import Mapping

    from domain.admission import Tier
    from infra.cache import RedisDossierCache
    from infra.ratelimit import RateLimiter

__all__ = ["RedisHotRead"]


class RedisHotRead:
    """Rate-limit decision from the local view, plus the verified dossier-cache entry."""

    __slots__ = ("_cache", "_limiter")

    def __init__(self, limiter: RateLimiter, cache: RedisDossierCache) -> None:
        self._limiter = limiter
        self._cache = cache

    async def admit(
        self,
        identities: Mapping[Tier, str],
        *,
        read_ahead: str | None = None,
        costs: Mapping[Tier, int] | None = None,
    ) -> Admission:
        decision = await self._limiter.admit(identities, costs=costs)
        if not read_ahead or not decision.allowed or decision.degraded:
            # Per-process decisions read nothing: the reader looks the cache up itself (with the
            # shared store away, an unread entry must not pass for a miss).
            return Admission(decision=decision)
        body = await self._cache.get(read_ahead)
        return Admission(decision=decision, prefetched=Prefetched(key=read_ahead, body=body))
