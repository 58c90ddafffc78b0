"""The breakers of one process, by name."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import structlog

from infra.breaker.circuit import CircuitBreaker
from observability.tracing import untraced

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from infra.breaker.settings import BreakerConfig
    from infra.breaker.state import BreakerListener, BreakerState
    from infra.redisclient import RedisClient

    StatePublisher = Callable[[str, BreakerState, bool], None]

__all__ = ["BreakerRegistry"]

log = structlog.get_logger(__name__)


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
        redis: RedisClient | None = None,
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
        self._sync_task: asyncio.Task[None] | None = None

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

    async def sync(self, publish: StatePublisher) -> None:
        """Re-read every breaker's shared state and ``publish(name, state, degraded)`` it."""
        for breaker in self:
            state = await breaker.sync()
            publish(breaker.name, state, breaker.degraded)

    def start_sync(self, interval_s: float, publish: StatePublisher) -> None:
        """Publish every breaker's state now and then every ``interval_s`` until closed.

        The state gauges then show the shared state even in a process that does not call the
        dependency (one ``read`` script per breaker and period).
        """
        if self._sync_task is None or self._sync_task.done():
            # A timer, part of no request: its Redis scripts are not traced (the task copies
            # this context).
            with untraced():
                self._sync_task = asyncio.ensure_future(self._sync_loop(interval_s, publish))

    async def _sync_loop(self, interval_s: float, publish: StatePublisher) -> None:
        while True:
            try:
                await self.sync(publish)
            except Exception as exc:  # a failed export must not stop the next ones
                log.warning("circuit_breaker_sync_failed", error_type=type(exc).__name__)
            await asyncio.sleep(interval_s)

    async def aclose(self) -> None:
        """Close every breaker (flush outcomes, stop background tasks)."""
        task, self._sync_task = self._sync_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for breaker in list(self._breakers.values()):
            await breaker.aclose()
