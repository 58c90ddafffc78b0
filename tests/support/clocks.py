"""Clocks that move only when a test moves them.

* :class:`FakeClock` — wall-clock seconds (:class:`domain.ports.Clock`) for the use cases;
* :class:`VirtualClock` — monotonic seconds plus a ``sleep`` whose timers fire when the test
  advances the clock, for code that takes ``clock=`` / ``sleep=`` keyword arguments.
"""

from __future__ import annotations

import asyncio

from tests.support.polling import wait_until

__all__ = ["FakeClock", "VirtualClock"]


class FakeClock:
    """Wall-clock seconds since the epoch, set by the test."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        """The current (fake) time."""
        return self.t

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.t += seconds


class VirtualClock:
    """Monotonic time and sleeps under the test's control.

    ``clock()`` is the current time; ``await clock.sleep(s)`` returns once the test has advanced
    the clock by ``s`` (or more) since the call. Nothing ever waits on the real clock.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.requested: list[float] = []  # every sleep asked for, in order
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced by ``seconds``."""
        self.requested.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self.now + seconds, waiter)
        self._sleepers.append(entry)
        try:
            await waiter
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    @property
    def sleeping(self) -> int:
        """How many sleeps are waiting for the clock."""
        return sum(1 for _, waiter in self._sleepers if not waiter.done())

    async def until_sleeping(self, count: int = 1, timeout_s: float = 15.0) -> None:
        """Wait (on the real loop, bounded) until ``count`` sleeps are waiting for the clock."""
        await wait_until(
            lambda: self.sleeping >= count, timeout_s, what=f"{count} sleep(s) on the clock"
        )

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleep whose end has come."""
        self.now += seconds
        for wake_at, waiter in list(self._sleepers):
            if wake_at <= self.now and not waiter.done():
                waiter.set_result(None)
