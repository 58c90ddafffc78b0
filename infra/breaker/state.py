"""Breaker states, the rejection error and the listener hooks shared by every breaker module."""

from __future__ import annotations

import enum
from typing import Protocol

import msgspec

from domain.errors import DependencyUnavailable

__all__ = [
    "FAILED",
    "SLOW",
    "STATES_BY_CODE",
    "BreakerListener",
    "BreakerOpen",
    "BreakerSnapshot",
    "BreakerState",
    "NullListener",
]


class BreakerState(enum.Enum):
    """Breaker states; ``code`` is resilience4j's numeric state (for a gauge)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    DISABLED = "disabled"
    FORCED_OPEN = "forced_open"

    @property
    def code(self) -> int:
        """0 closed, 1 open, 2 half-open, 3 disabled, 4 forced open (resilience4j's order)."""
        return _STATE_CODES[self]


_STATE_CODES = {
    BreakerState.CLOSED: 0,
    BreakerState.OPEN: 1,
    BreakerState.HALF_OPEN: 2,
    BreakerState.DISABLED: 3,
    BreakerState.FORCED_OPEN: 4,
}
STATES_BY_CODE = {code: state for state, code in _STATE_CODES.items()}

# Outcome codes: bit 0 = failed, bit 1 = slow. Redis receives them as the digits "0".."3".
FAILED = 1
SLOW = 2


class BreakerOpen(DependencyUnavailable):
    """The breaker rejected the call without trying it (HTTP 503 with ``Retry-After``).

    Attributes:
        state: The state that rejected the call.
    """

    def __init__(self, dependency: str, retry_after: float, state: BreakerState) -> None:
        super().__init__(dependency, "circuit breaker open", retry_after=retry_after)
        self.state = state


class BreakerSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """A point-in-time view of one breaker, for metrics and readiness.

    Rates are over this process's recent outcomes (the shared window lives in Redis).
    """

    name: str
    state: BreakerState
    degraded: bool
    calls: int
    failure_rate: float
    slow_call_rate: float


class BreakerListener(Protocol):
    """Hooks for metrics and tracing. Called inline: keep them cheap and non-blocking.

    Exceptions raised by a listener are logged and swallowed; they never break a call.
    """

    def on_state_change(self, name: str, old: BreakerState, new: BreakerState) -> None:
        """The state this process sees changed (each process reports its own view)."""

    def on_rejected(self, name: str, state: BreakerState) -> None:
        """A call was rejected without being tried."""

    def on_call(self, name: str, *, failed: bool, slow: bool, duration_s: float) -> None:
        """A permitted call finished with this outcome."""

    def on_storage_degraded(self, name: str, degraded: bool) -> None:
        """Redis became unusable (True) or usable again (False) for this breaker."""


class NullListener:
    """A listener that does nothing; subclass it to implement only some hooks."""

    def on_state_change(self, name: str, old: BreakerState, new: BreakerState) -> None:
        """Ignore."""

    def on_rejected(self, name: str, state: BreakerState) -> None:
        """Ignore."""

    def on_call(self, name: str, *, failed: bool, slow: bool, duration_s: float) -> None:
        """Ignore."""

    def on_storage_degraded(self, name: str, degraded: bool) -> None:
        """Ignore."""
