"""Clients of the upstream layer as the upstream tests build them against the sandbox."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from infra.breaker import BreakerConfig

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from infra.upstream import RetryPolicy, UpstreamClients

__all__ = ["LENIENT", "RETRY_ATTEMPTS", "MakeClients"]

# Attempts a retried call makes in tests (stamina's testing mode: no waits between them).
RETRY_ATTEMPTS = 3
# Breakers of the route tests never trip: those tests are about wire formats, not breaking.
LENIENT = BreakerConfig(minimum_calls=1000, window_size=1000)


class MakeClients(Protocol):
    """Builds the three clients against the sandbox."""

    def __call__(
        self,
        *,
        timeout_s: float = ...,
        breaker_config: BreakerConfig = ...,
        redis: aioredis.Redis | None = ...,
        key_prefix: str = ...,
        c2s_token: str = ...,
        diretrix_pass: str = ...,
        work_api_token: str = ...,
        base_url: str | None = ...,
        retry: RetryPolicy = ...,
    ) -> UpstreamClients: ...
