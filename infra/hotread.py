"""The :class:`domain.ports.HotRead` adapter: the Redis rate limiter's Lua script reads the
dossier-cache entry in the same call (ADR 0005)."""

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
    """Rate-limit decision plus one verified dossier-cache read, in one Redis round trip."""

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
        name = self._cache.key(read_ahead) if read_ahead else ""
        decision = await self._limiter.check(identities, extra_key=name, costs=costs)
        if not read_ahead or not decision.allowed or decision.degraded:
            # Per-process decisions read nothing: the reader looks the cache up itself (else a
            # hit would become a paid upstream call).
            return Admission(decision=decision)
        body = self._cache.verify(name, decision.extra)
        return Admission(decision=decision, prefetched=Prefetched(key=read_ahead, body=body))
