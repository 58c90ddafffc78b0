"""Breaker configuration: thresholds and timings, and the per-dependency presets."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["BreakerConfig", "default_breaker_config"]


class BreakerConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Thresholds and timings of one breaker (resilience4j names in ``snake_case``).

    Attributes:
        window_type: ``count_based`` (last N calls) or ``time_based`` (last N seconds).
        window_size: N calls or N seconds.
        minimum_calls: Outcomes needed in the window before the rates are evaluated.
        failure_rate_threshold: Percent of failed calls that trips the breaker.
        slow_call_rate_threshold: Percent of slow calls that trips the breaker (100 = only when
            every call is slow).
        slow_call_duration_s: A call longer than this is slow.
        wait_in_open_s: How long OPEN rejects before half-open probing.
        permitted_calls_in_half_open: Probe calls allowed in HALF_OPEN.
        max_wait_in_half_open_s: Lease of a half-open permit: probes that never report are
            forgotten after this long, so a crashed worker cannot wedge the breaker.
        cache_ttl_s: How long a process trusts its cached copy of the shared state.
        redis_timeout_s: Bound on every Redis script call; beyond it the breaker degrades.
        redis_retry_interval_s: While degraded, how often Redis is probed again.
        key_ttl_s: Idle TTL of the Redis keys (an unused breaker's keys vanish).
        max_buffered: Outcomes kept for the next flush at most (the oldest are dropped when
            Redis is slow, bounding memory).
    """

    window_type: Literal["count_based", "time_based"] = "count_based"
    window_size: int = 20
    minimum_calls: int = 10
    failure_rate_threshold: float = 50.0
    slow_call_rate_threshold: float = 100.0
    slow_call_duration_s: float = 5.0
    wait_in_open_s: float = 10.0
    permitted_calls_in_half_open: int = 3
    max_wait_in_half_open_s: float = 30.0
    cache_ttl_s: float = 0.2
    redis_timeout_s: float = 0.25
    redis_retry_interval_s: float = 1.0
    key_ttl_s: float = 86_400.0
    max_buffered: int = 10_000

    def __post_init__(self) -> None:
        # Constructed in code (not decoded), so msgspec.Meta constraints would not run.
        if self.window_type not in ("count_based", "time_based"):
            raise ValueError("window_type must be count_based or time_based")
        if not 1 <= self.window_size <= 10_000:
            raise ValueError("window_size must be within 1..10000")
        if self.minimum_calls < 1 or self.permitted_calls_in_half_open < 1:
            raise ValueError("minimum_calls and permitted_calls_in_half_open must be >= 1")
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            value = getattr(self, name)
            if not 0 < value <= 100:
                raise ValueError(f"{name} must be within (0, 100]")
        for name in (
            "slow_call_duration_s",
            "wait_in_open_s",
            "max_wait_in_half_open_s",
            "cache_ttl_s",
            "redis_timeout_s",
            "redis_retry_interval_s",
            "key_ttl_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.key_ttl_s <= self.wait_in_open_s:
            raise ValueError("key_ttl_s must exceed wait_in_open_s")
        if self.max_buffered < 1:
            raise ValueError("max_buffered must be >= 1")

    @property
    def effective_minimum_calls(self) -> int:
        """Minimum calls as resilience4j applies them (capped by a count window's size)."""
        if self.window_type == "count_based":
            return min(self.minimum_calls, self.window_size)
        return self.minimum_calls


# Per-dependency presets: slow-call bounds sit below the client timeouts, so "slow" means
# "degraded" before it means "timed out"; waits start at 10 s.
_PRESETS: dict[str, BreakerConfig] = {
    "c2s": BreakerConfig(slow_call_duration_s=5.0),
    "diretrix": BreakerConfig(slow_call_duration_s=4.0),
    "work_api": BreakerConfig(slow_call_duration_s=8.0),
    "postgres": BreakerConfig(
        window_size=50, minimum_calls=20, slow_call_duration_s=1.0, wait_in_open_s=5.0
    ),
    "redis": BreakerConfig(
        window_size=50, minimum_calls=20, slow_call_duration_s=0.25, wait_in_open_s=5.0
    ),
}


def default_breaker_config(name: str) -> BreakerConfig:
    """The preset for a known dependency name, else the generic defaults.

    Args:
        name: ``c2s``, ``diretrix``, ``work_api``, ``postgres``, ``redis`` or any other name.

    Returns:
        A config.
    """
    return _PRESETS.get(name, BreakerConfig())
