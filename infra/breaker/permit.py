"""Permits: the right to make one call under a breaker, and the ``guard()`` context manager."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

    from infra.breaker.circuit import CircuitBreaker
    from infra.breaker.state import BreakerState

__all__ = ["Guard", "Permit"]


class Permit:
    """The right to make one call; report its outcome exactly once.

    :meth:`CircuitBreaker.guard` reports automatically; call :meth:`mark_failure` or
    :meth:`mark_success` inside the block to override the exception-based classification
    (e.g. a soft error raised as an exception that must not count as a failure).
    """

    __slots__ = ("_breaker", "_done", "_mark", "_start", "epoch", "phase", "shared")

    def __init__(
        self,
        breaker: CircuitBreaker,
        phase: BreakerState,
        epoch: int,
        shared: bool,
        start: float,
    ) -> None:
        self._breaker = breaker
        self.phase = phase
        self.epoch = epoch
        self.shared = shared
        self._start = start
        self._done = False
        self._mark: bool | None = None

    def mark_failure(self) -> None:
        """Count this call as failed whatever happens next."""
        self._mark = True

    def mark_success(self) -> None:
        """Count this call as successful (a correct answer) even if an exception follows."""
        self._mark = False

    async def success(self) -> None:
        """Report a successful call."""
        await self._finish(False)

    async def failure(self) -> None:
        """Report a failed call."""
        await self._finish(True)

    def release(self) -> None:
        """Give the permit back without an outcome (the call was cancelled)."""
        if not self._done:
            self._done = True
            self._breaker._release(self)

    async def _finish(self, failed: bool) -> None:
        if self._done:
            return
        self._done = True
        if self._mark is not None:
            failed = self._mark
        await self._breaker._record(self, failed, self._breaker._clock() - self._start)


class Guard:
    """``async with breaker.guard() as permit``: acquire, run, report."""

    __slots__ = ("_breaker", "_permit")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._permit: Permit | None = None

    async def __aenter__(self) -> Permit:
        self._permit = await self._breaker.acquire()
        return self._permit

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        permit = self._permit
        if permit is None:
            return
        if exc is None:
            await permit._finish(False)
        elif isinstance(exc, Exception):
            await permit._finish(self._breaker._is_failure(exc))
        else:
            # CancelledError, KeyboardInterrupt: the call never produced an outcome.
            permit.release()
