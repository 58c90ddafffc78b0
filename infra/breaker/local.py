"""The per-process breaker state machine: the whole breaker without Redis, and its fallback.

Sliding windows (count- or time-based) with running aggregates, the threshold test and
:class:`LocalBreakerCore`, driven by an explicit clock and doing no I/O.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import msgspec

from infra.breaker.state import FAILED, SLOW, BreakerState

if TYPE_CHECKING:
    from infra.breaker.settings import BreakerConfig

__all__ = ["Decision", "LocalBreakerCore", "exceeds"]


class _CountWindow:
    """Ring of the last N outcomes with running aggregates (O(1) add and snapshot)."""

    __slots__ = ("_count", "_pos", "_ring", "_size", "failed", "slow")

    def __init__(self, size: int) -> None:
        self._size = size
        self._ring = bytearray(size)
        self._pos = 0
        self._count = 0
        self.failed = 0
        self.slow = 0

    def add(self, code: int, now: float) -> None:
        if self._count == self._size:
            old = self._ring[self._pos]
            self.failed -= old & FAILED
            self.slow -= (old & SLOW) >> 1
        else:
            self._count += 1
        self._ring[self._pos] = code
        self._pos = (self._pos + 1) % self._size
        self.failed += code & FAILED
        self.slow += (code & SLOW) >> 1

    def snapshot(self, now: float) -> tuple[int, int, int]:
        return self._count, self.failed, self.slow

    def clear(self) -> None:
        self._pos = self._count = self.failed = self.slow = 0


class _TimeWindow:
    """N one-second buckets; a bucket is reused (reset) when its second comes round again."""

    __slots__ = ("_epochs", "_failed", "_size", "_slow", "_total")

    def __init__(self, size: int) -> None:
        self._size = size
        self._epochs = [-1] * size
        self._total = [0] * size
        self._failed = [0] * size
        self._slow = [0] * size

    def add(self, code: int, now: float) -> None:
        second = math.floor(now)
        i = second % self._size
        if self._epochs[i] != second:
            self._epochs[i] = second
            self._total[i] = self._failed[i] = self._slow[i] = 0
        self._total[i] += 1
        self._failed[i] += code & FAILED
        self._slow[i] += (code & SLOW) >> 1

    def snapshot(self, now: float) -> tuple[int, int, int]:
        oldest = math.floor(now) - self._size
        total = failed = slow = 0
        for i, epoch in enumerate(self._epochs):
            if epoch > oldest:
                total += self._total[i]
                failed += self._failed[i]
                slow += self._slow[i]
        return total, failed, slow

    def clear(self) -> None:
        self._epochs = [-1] * self._size


def exceeds(config: BreakerConfig, total: int, failed: int, slow: int, minimum: int) -> bool:
    if total == 0 or total < minimum:
        return False
    return (
        failed * 100 >= config.failure_rate_threshold * total
        or slow * 100 >= config.slow_call_rate_threshold * total
    )


class Decision(msgspec.Struct, frozen=True):
    """Whether a call may go now, in which state and epoch, and else when to retry."""

    permitted: bool
    state: BreakerState
    epoch: int
    retry_after: float


class LocalBreakerCore:
    """The breaker state machine in memory, driven by an explicit clock (no I/O).

    ``epoch`` changes on every transition that starts a new recording period (trip, close,
    operator transitions); outcomes carry the epoch of their permit, so a call permitted before a
    transition cannot pollute the window or the probes after it.
    """

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self.state = BreakerState.CLOSED
        self.epoch = 0
        self._open_until = 0.0
        self._window: _CountWindow | _TimeWindow = (
            _CountWindow(config.window_size)
            if config.window_type == "count_based"
            else _TimeWindow(config.window_size)
        )
        self._probes_granted = 0
        self._probe_total = self._probe_failed = self._probe_slow = 0
        self._probes_since = 0.0

    # -- queries ---------------------------------------------------------------------------

    def window_snapshot(self, now: float) -> tuple[int, int, int]:
        """``(calls, failed, slow)`` currently in the sliding window."""
        return self._window.snapshot(now)

    def open_remaining(self, now: float) -> float:
        """Seconds until OPEN turns half-open (0 when not OPEN)."""
        if self.state is BreakerState.OPEN:
            return max(0.0, self._open_until - now)
        return 0.0

    # -- the call path ---------------------------------------------------------------------

    def try_acquire(self, now: float) -> Decision:
        """Decide whether a call may go now (a granted half-open call takes a probe permit)."""
        state = self.state
        if state is BreakerState.CLOSED or state is BreakerState.DISABLED:
            return Decision(True, state, self.epoch, 0.0)
        if state is BreakerState.FORCED_OPEN:
            return Decision(False, state, self.epoch, self.config.wait_in_open_s)
        if state is BreakerState.OPEN:
            if now < self._open_until:
                return Decision(False, state, self.epoch, self._open_until - now)
            self._enter_half_open(now)
        # HALF_OPEN: lost probes are forgotten after the lease, like the Redis permit key.
        if now - self._probes_since >= self.config.max_wait_in_half_open_s:
            self._probes_granted = self._probe_total
            self._probes_since = now
        if self._probes_granted < self.config.permitted_calls_in_half_open:
            self._probes_granted += 1
            return Decision(True, BreakerState.HALF_OPEN, self.epoch, 0.0)
        lease_left = self.config.max_wait_in_half_open_s - (now - self._probes_since)
        return Decision(False, BreakerState.HALF_OPEN, self.epoch, min(1.0, lease_left))

    def observe(self, code: int, now: float) -> None:
        """Add an outcome to the window without evaluating it (mirror while Redis decides)."""
        if self.state is BreakerState.CLOSED:
            self._window.add(code, now)

    def record(self, code: int, phase: BreakerState, epoch: int, now: float) -> None:
        """Record the outcome of a call permitted in ``phase`` during ``epoch``."""
        if epoch != self.epoch:
            return
        if phase is BreakerState.CLOSED and self.state is BreakerState.CLOSED:
            self._window.add(code, now)
            total, failed, slow = self._window.snapshot(now)
            if exceeds(self.config, total, failed, slow, self.config.effective_minimum_calls):
                self._trip(now, self.config.wait_in_open_s)
        elif phase is BreakerState.HALF_OPEN and self.state is BreakerState.HALF_OPEN:
            self._probe_total += 1
            self._probe_failed += code & FAILED
            self._probe_slow += (code & SLOW) >> 1
            permitted = self.config.permitted_calls_in_half_open
            if self._probe_total >= permitted:
                if exceeds(
                    self.config, self._probe_total, self._probe_failed, self._probe_slow, permitted
                ):
                    self._trip(now, self.config.wait_in_open_s)
                else:
                    self._close()

    def evaluate(self, now: float) -> None:
        """Trip now if the CLOSED window already exceeds a threshold (after mirroring)."""
        if self.state is BreakerState.CLOSED:
            total, failed, slow = self._window.snapshot(now)
            if exceeds(self.config, total, failed, slow, self.config.effective_minimum_calls):
                self._trip(now, self.config.wait_in_open_s)

    def release(self, phase: BreakerState, epoch: int) -> None:
        """Give back a half-open permit whose call never ran to completion (cancelled)."""
        if (
            phase is BreakerState.HALF_OPEN
            and self.state is BreakerState.HALF_OPEN
            and epoch == self.epoch
            and self._probes_granted > self._probe_total
        ):
            self._probes_granted -= 1

    # -- transitions -----------------------------------------------------------------------

    def transition(self, target: BreakerState, now: float, open_for: float | None = None) -> None:
        """Move to ``target`` (operator action, or adopting a state seen elsewhere).

        Args:
            target: The new state.
            now: The clock.
            open_for: For OPEN, seconds until half-open (default ``wait_in_open_s``).
        """
        if target is BreakerState.OPEN:
            self._trip(now, self.config.wait_in_open_s if open_for is None else open_for)
        elif target is BreakerState.CLOSED:
            self._close()
        elif target is BreakerState.HALF_OPEN:
            self.epoch += 1
            self._enter_half_open(now)
        else:
            self.epoch += 1
            self.state = target
            self._window.clear()

    def _trip(self, now: float, wait: float) -> None:
        self.state = BreakerState.OPEN
        self.epoch += 1
        self._open_until = now + wait
        self._window.clear()

    def _close(self) -> None:
        self.state = BreakerState.CLOSED
        self.epoch += 1
        self._window.clear()

    def _enter_half_open(self, now: float) -> None:
        # Same epoch as the OPEN period it follows: OPEN permitted no call that could report.
        self.state = BreakerState.HALF_OPEN
        self._probes_granted = 0
        self._probe_total = self._probe_failed = self._probe_slow = 0
        self._probes_since = now
