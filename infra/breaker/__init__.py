"""Circuit breakers with resilience4j semantics, shared across workers and instances via Redis.

Semantics (resilience4j's):

* States CLOSED, OPEN, HALF_OPEN plus the operator states FORCED_OPEN and DISABLED.
* While CLOSED, outcomes go into a sliding window: COUNT_BASED (the last ``window_size`` calls)
  or TIME_BASED (one-second buckets over the last ``window_size`` seconds). Once the window holds
  at least ``minimum_calls`` outcomes (capped at ``window_size`` for count windows, as in
  resilience4j), the breaker trips to OPEN when the failure rate or the slow-call rate reaches
  its threshold (percent, ``>=``). A call is slow when it lasts longer than
  ``slow_call_duration_s``; slow calls count even when they succeed.
* OPEN rejects every call for ``wait_in_open_s``, then the breaker is HALF_OPEN: exactly
  ``permitted_calls_in_half_open`` probe calls are let through, further calls are rejected. When
  all probes have reported, their failure/slow rates decide between CLOSED (window cleared) and
  OPEN again. Probes that never report (a crashed worker) are forgotten after
  ``max_wait_in_half_open_s`` so new probes can go.
* FORCED_OPEN rejects everything; DISABLED lets everything through and records nothing.

Sharing: with a Redis client, the state lives in a few keys under ``{prefix}cb:{<name>}:`` (one
cluster hash slot); every read-modify-write is ONE Lua script, so concurrent
workers never lose increments. OPEN is a key whose TTL is the open wait: when it expires the
breaker is half-open, without any process having to be awake. Half-open permits are an INCR on a
key with a lease TTL. Each process caches the state for ``cache_ttl_s`` (200 ms), so a CLOSED
breaker costs no Redis round trip on the call path: outcomes are buffered and flushed by one
background task (at most one script in flight per breaker and process, so under load many
outcomes share one round trip). Rejections while OPEN are decided from the cache, in
microseconds.

When Redis fails (error or ``redis_timeout_s``), the breaker degrades to a per-process breaker
with the same thresholds, seeded with the last shared state it saw and the outcomes this process
recorded recently: protection never silently disappears (unlike aiobreaker's fail-open default).
Every ``redis_retry_interval_s`` a background probe checks Redis; on success the shared state is
authoritative again (a local OPEN is pushed to Redis if the shared state is still CLOSED). Redis
errors never leak out of this package.

Usage::

    breaker = CircuitBreaker("work_api", BreakerConfig(wait_in_open_s=10), redis=client,
                             key_prefix="c2s:", is_failure=is_upstream_failure)
    async with breaker.guard():          # raises BreakerOpen (a DependencyUnavailable)
        await do_the_call()

Which exceptions count as failures is the ``is_failure`` predicate's decision (default: every
``Exception``); a ``CancelledError`` returns the permit without recording anything.

Modules: :mod:`~infra.breaker.settings` (configuration and presets), :mod:`~infra.breaker.state`
(states, :class:`BreakerOpen`, listener hooks), :mod:`~infra.breaker.local` (the per-process
state machine), :mod:`~infra.breaker.shared` (the Lua scripts and their Redis adapter),
:mod:`~infra.breaker.circuit` and :mod:`~infra.breaker.permit` (the breaker and its permits),
:mod:`~infra.breaker.registry` (the breakers of a process).
"""

from __future__ import annotations

from infra.breaker.circuit import CircuitBreaker
from infra.breaker.local import LocalBreakerCore
from infra.breaker.permit import Permit
from infra.breaker.registry import BreakerRegistry
from infra.breaker.settings import BreakerConfig, default_breaker_config
from infra.breaker.state import (
    BreakerListener,
    BreakerOpen,
    BreakerSnapshot,
    BreakerState,
    NullListener,
)

__all__ = [
    "BreakerConfig",
    "BreakerListener",
    "BreakerOpen",
    "BreakerRegistry",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "LocalBreakerCore",
    "NullListener",
    "Permit",
    "default_breaker_config",
]
