"""The breakers of one process, by name."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from infra.breaker.circuit import CircuitBreaker

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from redis.asyncio import Redis

    from infra.breaker.settings import BreakerConfig
    from infra.breaker.state import BreakerListener

__all__ = ["BreakerRegistry"]


class BreakerRegistry:
    """The breakers of one process, by name, sharing one Redis client and key prefix.

    Args:
        redis: A ``redis.asyncio`` client (not owned), or None for per-process breakers.
        key_prefix: Prefix of every Redis key.
        configs: Per-name configs; names not listed use :func:`default_breaker_config`.
        listener: Hooks shared by every breaker.
        clock: Monotonic clock (injectable).
        wall_clock: Epoch clock for shared time windows.
    """

    def __init__(
        self,
        redis: Redis | None = None,
        *,
        key_prefix: str = "",
        configs: Mapping[str, BreakerConfig] | None = None,
        listener: BreakerListener | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._key_prefix = key_prefix
        self._configs = dict(configs or {})
        self._listener = listener
        self._clock = clock
        self._wall_clock = wall_clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(
        self, name: str, *, is_failure: Callable[[BaseException], bool] | None = None
    ) -> CircuitBreaker:
        """The breaker called ``name``, created on first use.

        Args:
            name: Dependency name.
            is_failure: Failure predicate, used only when the breaker is created.
        """
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = CircuitBreaker(
                name,
                self._configs.get(name),
                redis=self._redis,
                key_prefix=self._key_prefix,
                listener=self._listener,
                is_failure=is_failure,
                clock=self._clock,
                wall_clock=self._wall_clock,
            )
            self._breakers[name] = breaker
        return breaker

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    async def aclose(self) -> None:
        """Close every breaker (flush outcomes, stop background tasks)."""
        for breaker in list(self._breakers.values()):
            await breaker.aclose()
