"""Circuit breakers with resilience4j semantics, shared across workers and instances via Redis.

Semantics (``reliability.md`` A1, resilience4j):

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

Sharing (the design anchor of ``reliability.md`` A1): with a Redis client, the state lives in a
few keys under ``{prefix}cb:{name}``; every read-modify-write is ONE Lua script, so concurrent
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
errors never leak out of this module.

Usage::

    breaker = CircuitBreaker("work_api", BreakerConfig(wait_in_open_s=10), redis=client,
                             key_prefix="c2s:", is_failure=is_upstream_failure)
    async with breaker.guard():          # raises BreakerOpen (a DependencyUnavailable)
        await do_the_call()

Which exceptions count as failures is the ``is_failure`` predicate's decision (default: every
``Exception``); a ``CancelledError`` returns the permit without recording anything.
"""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, Protocol, TypeVar

import msgspec
import structlog
from redis.exceptions import RedisError

from domain.errors import DependencyUnavailable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping
    from types import TracebackType

    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

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

log = structlog.get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


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
_STATES_BY_CODE = {code: state for state, code in _STATE_CODES.items()}

# Outcome codes: bit 0 = failed, bit 1 = slow. Redis receives them as the digits "0".."3".
_FAILED = 1
_SLOW = 2


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
# "degraded" before it means "timed out"; waits start at the reference's 10 s.
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


# --------------------------------------------------------------------------------------------
# Local (per-process) state machine: the whole breaker without Redis, and the fallback with it.
# --------------------------------------------------------------------------------------------


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
            self.failed -= old & _FAILED
            self.slow -= (old & _SLOW) >> 1
        else:
            self._count += 1
        self._ring[self._pos] = code
        self._pos = (self._pos + 1) % self._size
        self.failed += code & _FAILED
        self.slow += (code & _SLOW) >> 1

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
        self._failed[i] += code & _FAILED
        self._slow[i] += (code & _SLOW) >> 1

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


def _exceeds(config: BreakerConfig, total: int, failed: int, slow: int, minimum: int) -> bool:
    if total == 0 or total < minimum:
        return False
    return (
        failed * 100 >= config.failure_rate_threshold * total
        or slow * 100 >= config.slow_call_rate_threshold * total
    )


class _Decision(msgspec.Struct, frozen=True):
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

    def try_acquire(self, now: float) -> _Decision:
        """Decide whether a call may go now (a granted half-open call takes a probe permit)."""
        state = self.state
        if state is BreakerState.CLOSED or state is BreakerState.DISABLED:
            return _Decision(True, state, self.epoch, 0.0)
        if state is BreakerState.FORCED_OPEN:
            return _Decision(False, state, self.epoch, self.config.wait_in_open_s)
        if state is BreakerState.OPEN:
            if now < self._open_until:
                return _Decision(False, state, self.epoch, self._open_until - now)
            self._enter_half_open(now)
        # HALF_OPEN: lost probes are forgotten after the lease, like the Redis permit key.
        if now - self._probes_since >= self.config.max_wait_in_half_open_s:
            self._probes_granted = self._probe_total
            self._probes_since = now
        if self._probes_granted < self.config.permitted_calls_in_half_open:
            self._probes_granted += 1
            return _Decision(True, BreakerState.HALF_OPEN, self.epoch, 0.0)
        lease_left = self.config.max_wait_in_half_open_s - (now - self._probes_since)
        return _Decision(False, BreakerState.HALF_OPEN, self.epoch, min(1.0, lease_left))

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
            if _exceeds(self.config, total, failed, slow, self.config.effective_minimum_calls):
                self._trip(now, self.config.wait_in_open_s)
        elif phase is BreakerState.HALF_OPEN and self.state is BreakerState.HALF_OPEN:
            self._probe_total += 1
            self._probe_failed += code & _FAILED
            self._probe_slow += (code & _SLOW) >> 1
            permitted = self.config.permitted_calls_in_half_open
            if self._probe_total >= permitted:
                if _exceeds(
                    self.config, self._probe_total, self._probe_failed, self._probe_slow, permitted
                ):
                    self._trip(now, self.config.wait_in_open_s)
                else:
                    self._close()

    def evaluate(self, now: float) -> None:
        """Trip now if the CLOSED window already exceeds a threshold (after mirroring)."""
        if self.state is BreakerState.CLOSED:
            total, failed, slow = self._window.snapshot(now)
            if _exceeds(self.config, total, failed, slow, self.config.effective_minimum_calls):
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


# --------------------------------------------------------------------------------------------
# Redis scripts. KEYS: 1 state hash {mode, epoch}, 2 open marker (TTL = wait), 3 window,
# 4 window aggregates {f, s}, 5 half-open permit counter (TTL = lease), 6 probe results {t,f,s}.
# Replies are integer arrays {state code, epoch, milliseconds, flag}.
# --------------------------------------------------------------------------------------------

_LUA_PRELUDE = """
local function load()
  local st = redis.call('HMGET', KEYS[1], 'mode', 'epoch')
  local mode = st[1]
  if not mode then mode = 'closed' end
  return mode, tonumber(st[2]) or 0
end
local function effective(mode)
  if mode == 'forced_open' then return 4, 0 end
  if mode == 'disabled' then return 3, 0 end
  local pttl = redis.call('PTTL', KEYS[2])
  if pttl > 0 then return 1, pttl end
  if mode == 'half_open' then return 2, 0 end
  return 0, 0
end
local function set_mode(mode, epoch, ttl)
  redis.call('HSET', KEYS[1], 'mode', mode, 'epoch', epoch)
  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) else redis.call('PERSIST', KEYS[1]) end
end
local function clear_counts()
  redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6])
end
local function trip(epoch, wait, ttl)
  set_mode('half_open', epoch + 1, ttl)
  redis.call('SET', KEYS[2], '1', 'PX', wait)
  clear_counts()
  return {1, epoch + 1, wait, 1}
end
local function close(epoch, ttl)
  set_mode('closed', epoch + 1, ttl)
  redis.call('DEL', KEYS[2])
  clear_counts()
  return {0, epoch + 1, 0, 1}
end
local function exceeds(total, failed, slow, minimum, fail_thr, slow_thr)
  if total == 0 or total < minimum then return false end
  return failed * 100 >= fail_thr * total or slow * 100 >= slow_thr * total
end
"""

# ARGV: none. Reply flag: half-open permits in use.
_LUA_READ = (
    _LUA_PRELUDE
    + """
local mode, epoch = load()
local code, pttl = effective(mode)
local used = 0
if code == 2 then used = tonumber(redis.call('GET', KEYS[5]) or '0') end
return {code, epoch, pttl, used}
"""
)

# ARGV: permitted, lease_ms. Reply flag: 1 when the call may go (ms = lease left on rejection).
_LUA_ACQUIRE = (
    _LUA_PRELUDE
    + """
local mode, epoch = load()
local code, pttl = effective(mode)
if code ~= 2 then
  local granted = 0
  if code == 0 or code == 3 then granted = 1 end
  return {code, epoch, pttl, granted}
end
local n = redis.call('INCR', KEYS[5])
if n == 1 then redis.call('PEXPIRE', KEYS[5], ARGV[2]) end
if n <= tonumber(ARGV[1]) then return {2, epoch, 0, 1} end
redis.call('DECR', KEYS[5])
local left = redis.call('PTTL', KEYS[5])
if left < 0 then left = 0 end
return {2, epoch, left, 0}
"""
)

# ARGV: epoch. Gives back a half-open permit of a cancelled probe.
_LUA_RELEASE = (
    _LUA_PRELUDE
    + """
local mode, epoch = load()
if mode ~= 'half_open' or epoch ~= tonumber(ARGV[1]) then return 0 end
if tonumber(redis.call('GET', KEYS[5]) or '0') > 0 then redis.call('DECR', KEYS[5]) end
return 1
"""
)

# ARGV: 1 phase c|h, 2 epoch, 3 outcome digits, 4 now (whole seconds), 5 window type c|t,
# 6 window size, 7 minimum calls, 8 failure threshold, 9 slow threshold, 10 wait ms,
# 11 permitted half-open calls, 12 key ttl ms. Reply flag: 1 when this call changed the state.
_LUA_RECORD = (
    _LUA_PRELUDE
    + """
local mode, epoch = load()
local code, pttl = effective(mode)
if tonumber(ARGV[2]) ~= epoch then return {code, epoch, pttl, 0} end
local outcomes = ARGV[3]
local n = #outcomes
local bf, bs = 0, 0
for i = 1, n do
  local o = string.byte(outcomes, i) - 48
  if o % 2 == 1 then bf = bf + 1 end
  if o >= 2 then bs = bs + 1 end
end
local ttl = tonumber(ARGV[12])
local wait = tonumber(ARGV[10])
if ARGV[1] == 'c' and code == 0 then
  local size = tonumber(ARGV[6])
  local total, failed, slow
  if ARGV[5] == 'c' then
    for i = 1, n do redis.call('RPUSH', KEYS[3], string.sub(outcomes, i, i)) end
    total = redis.call('LLEN', KEYS[3])
    if total > size then
      local old = redis.call('LPOP', KEYS[3], total - size)
      for _, v in ipairs(old) do
        local o = tonumber(v)
        if o % 2 == 1 then bf = bf - 1 end
        if o >= 2 then bs = bs - 1 end
      end
      total = size
    end
    -- Only non-zero deltas: Lua renders a negative zero as "-0", which HINCRBY rejects.
    if bf ~= 0 then redis.call('HINCRBY', KEYS[4], 'f', bf) end
    if bs ~= 0 then redis.call('HINCRBY', KEYS[4], 's', bs) end
    local agg = redis.call('HMGET', KEYS[4], 'f', 's')
    failed = tonumber(agg[1]) or 0
    slow = tonumber(agg[2]) or 0
    redis.call('PEXPIRE', KEYS[3], ttl)
    redis.call('PEXPIRE', KEYS[4], ttl)
  else
    local now = tonumber(ARGV[4])
    local idx = now % size
    local seen = tonumber(redis.call('HGET', KEYS[3], 'e' .. idx) or '-1')
    if seen ~= now then
      redis.call('HSET', KEYS[3], 'e' .. idx, now, 't' .. idx, 0, 'f' .. idx, 0, 's' .. idx, 0)
    end
    redis.call('HINCRBY', KEYS[3], 't' .. idx, n)
    redis.call('HINCRBY', KEYS[3], 'f' .. idx, bf)
    redis.call('HINCRBY', KEYS[3], 's' .. idx, bs)
    redis.call('PEXPIRE', KEYS[3], ttl)
    local flat = redis.call('HGETALL', KEYS[3])
    local h = {}
    for i = 1, #flat, 2 do h[flat[i]] = tonumber(flat[i + 1]) end
    total, failed, slow = 0, 0, 0
    for j = 0, size - 1 do
      local e = h['e' .. j]
      if e and e > now - size and e <= now then
        total = total + (h['t' .. j] or 0)
        failed = failed + (h['f' .. j] or 0)
        slow = slow + (h['s' .. j] or 0)
      end
    end
  end
  if exceeds(total, failed, slow, tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])) then
    return trip(epoch, wait, ttl)
  end
  return {0, epoch, 0, 0}
end
if ARGV[1] == 'h' and code == 2 then
  local t = redis.call('HINCRBY', KEYS[6], 't', n)
  local f = redis.call('HINCRBY', KEYS[6], 'f', bf)
  local s = redis.call('HINCRBY', KEYS[6], 's', bs)
  redis.call('PEXPIRE', KEYS[6], ttl)
  local permitted = tonumber(ARGV[11])
  if t >= permitted then
    if exceeds(t, f, s, permitted, tonumber(ARGV[8]), tonumber(ARGV[9])) then
      return trip(epoch, wait, ttl)
    end
    return close(epoch, ttl)
  end
  return {2, epoch, 0, 0}
end
return {code, epoch, pttl, 0}
"""
)

# ARGV: target (closed|open|open_if_closed|forced_open|disabled|half_open), wait ms, ttl ms.
_LUA_TRANSITION = (
    _LUA_PRELUDE
    + """
local mode, epoch = load()
local code, pttl = effective(mode)
local target = ARGV[1]
local wait = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
if target == 'open_if_closed' then
  if code ~= 0 then return {code, epoch, pttl, 0} end
  return trip(epoch, wait, ttl)
end
if target == 'open' then return trip(epoch, wait, ttl) end
if target == 'closed' then return close(epoch, ttl) end
if target == 'half_open' then
  set_mode('half_open', epoch + 1, ttl)
  redis.call('DEL', KEYS[2])
  clear_counts()
  return {2, epoch + 1, 0, 1}
end
if target == 'forced_open' or target == 'disabled' then
  set_mode(target, epoch + 1, 0)
  redis.call('DEL', KEYS[2])
  clear_counts()
  if target == 'forced_open' then return {4, epoch + 1, 0, 1} end
  return {3, epoch + 1, 0, 1}
end
return redis.error_reply('unknown target')
"""
)

# Outcomes per RECORD call: keeps each script short so it never blocks Redis noticeably.
_FLUSH_CHUNK = 500
# Redis trouble that degrades the breaker; anything else is a bug and propagates.
_REDIS_ERRORS = (RedisError, OSError, TimeoutError)


class _View:
    """This process's cached copy of the shared state."""

    __slots__ = ("epoch", "fetched_at", "open_until", "probes_full_until", "state")

    def __init__(
        self,
        state: BreakerState,
        epoch: int,
        open_until: float,
        fetched_at: float,
        probes_full_until: float = 0.0,
    ) -> None:
        self.state = state
        self.epoch = epoch
        self.open_until = open_until
        self.fetched_at = fetched_at
        self.probes_full_until = probes_full_until


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


class _Guard:
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


def _always_failure(exc: BaseException) -> bool:
    return True


class CircuitBreaker:
    """A named breaker; shared through Redis when given a client, else per process.

    Args:
        name: Bounded dependency name (``c2s``, ``diretrix``, ``work_api``, ``postgres``...);
            it names the Redis keys, the ``DependencyUnavailable`` and the metrics.
        config: Thresholds and timings (default: :func:`default_breaker_config` of ``name``).
        redis: A ``redis.asyncio`` client (not owned: the caller closes it). None = local only.
        key_prefix: Prefix of every Redis key (the app's ``REDIS_KEY_PREFIX``).
        listener: Metric/tracing hooks.
        is_failure: Decides whether an exception raised inside :meth:`guard` counts as a
            failure (default: all of them).
        clock: Monotonic seconds, for durations, waits and the local window (injectable).
        wall_clock: Epoch seconds, for the shared time-based window buckets.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        redis: Redis | None = None,
        key_prefix: str = "",
        listener: BreakerListener | None = None,
        is_failure: Callable[[BaseException], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.config = config if config is not None else default_breaker_config(name)
        self._redis = redis
        self._listener: BreakerListener = listener if listener is not None else NullListener()
        self._is_failure = is_failure if is_failure is not None else _always_failure
        self._clock = clock
        self._wall_clock = wall_clock
        self._local = LocalBreakerCore(self.config)
        self._last_state = BreakerState.CLOSED
        base = f"{key_prefix}cb:{{{name}}}:"  # hash tag: one cluster slot per breaker
        self._keys = [base + s for s in ("state", "open", "window", "agg", "permits", "probes")]
        self._view: _View | None = None
        self._buffer: deque[tuple[int, int]] = deque(maxlen=self.config.max_buffered)
        self._flush_task: asyncio.Task[None] | None = None
        self._refresh_task: asyncio.Task[_View | None] | None = None
        self._recover_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._degraded = False
        self._retry_redis_at = 0.0
        self._closed = False
        self._scripts: dict[str, AsyncScript] = {}
        if redis is not None:
            for key, lua in (
                ("read", _LUA_READ),
                ("acquire", _LUA_ACQUIRE),
                ("release", _LUA_RELEASE),
                ("record", _LUA_RECORD),
                ("transition", _LUA_TRANSITION),
            ):
                self._scripts[key] = redis.register_script(lua)

    # -- public API ------------------------------------------------------------------------

    @property
    def shared(self) -> bool:
        """True when Redis backs this breaker (even if currently degraded)."""
        return self._redis is not None

    @property
    def degraded(self) -> bool:
        """True while Redis is unusable and the per-process fallback decides."""
        return self._degraded

    @property
    def state(self) -> BreakerState:
        """The state as this process currently sees it (cached copy when shared)."""
        if self._uses_redis() and self._view is not None:
            view = self._view
            if view.state is BreakerState.OPEN and self._clock() >= view.open_until:
                return BreakerState.HALF_OPEN
            return view.state
        state = self._local.state
        if state is BreakerState.OPEN and self._local.open_remaining(self._clock()) == 0.0:
            return BreakerState.HALF_OPEN
        return state

    def snapshot(self) -> BreakerSnapshot:
        """State and this process's recent rates, for gauges."""
        total, failed, slow = self._local.window_snapshot(self._clock())
        return BreakerSnapshot(
            name=self.name,
            state=self.state,
            degraded=self._degraded,
            calls=total,
            failure_rate=100.0 * failed / total if total else 0.0,
            slow_call_rate=100.0 * slow / total if total else 0.0,
        )

    def guard(self) -> _Guard:
        """Async context manager protecting one call.

        Raises:
            BreakerOpen: On entry, when the call is rejected.
        """
        return _Guard(self)

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``await fn(*args, **kwargs)`` under the breaker.

        Raises:
            BreakerOpen: When the call is rejected (``fn`` is not called).
        """
        async with self.guard():
            return await fn(*args, **kwargs)

    async def acquire(self) -> Permit:
        """Take a permit for one call (low level: report with the permit's methods).

        Raises:
            BreakerOpen: When the breaker rejects the call.
        """
        now = self._clock()
        if not self._uses_redis():
            return self._acquire_local(now)
        view = self._view
        if view is None or now - view.fetched_at >= self.config.cache_ttl_s:
            view = await self._refresh()
            now = self._clock()
            if view is None:
                return self._acquire_local(now)
        state = view.state
        if state is BreakerState.CLOSED or state is BreakerState.DISABLED:
            return Permit(self, state, view.epoch, True, now)
        if state is BreakerState.FORCED_OPEN:
            raise self._reject(state, self.config.wait_in_open_s)
        if state is BreakerState.OPEN and now < view.open_until:
            raise self._reject(state, view.open_until - now)
        if view.probes_full_until > now:
            raise self._reject(BreakerState.HALF_OPEN, view.probes_full_until - now)
        return await self._acquire_shared_probe()

    async def flush(self) -> None:
        """Wait until buffered outcomes reached Redis (tests, shutdown)."""
        while self._uses_redis() and (self._buffer or self._busy(self._flush_task)):
            if not self._busy(self._flush_task):
                self._schedule_flush()
            task = self._flush_task
            if task is not None:
                await asyncio.shield(task)

    async def force_open(self) -> None:
        """Operator action: reject everything until :meth:`reset`."""
        await self._transition(BreakerState.FORCED_OPEN, "forced_open")

    async def disable(self) -> None:
        """Operator action: let everything through, record nothing, until :meth:`reset`."""
        await self._transition(BreakerState.DISABLED, "disabled")

    async def reset(self) -> None:
        """Back to CLOSED with an empty window (ends FORCED_OPEN / DISABLED too)."""
        await self._transition(BreakerState.CLOSED, "closed")

    async def trip(self) -> None:
        """Open now, for the normal wait (e.g. a health check found the dependency dead)."""
        await self._transition(BreakerState.OPEN, "open")

    async def aclose(self) -> None:
        """Flush what is buffered (bounded by the Redis timeout) and stop background tasks."""
        if self._closed:
            return
        if self._uses_redis() and (self._buffer or self._busy(self._flush_task)):
            try:
                async with asyncio.timeout(self.config.redis_timeout_s * 4):
                    await self.flush()
            except TimeoutError:
                log.warning("circuit_breaker_flush_abandoned", breaker=self.name)
        self._closed = True
        tasks = [
            t
            for t in (self._flush_task, self._refresh_task, self._recover_task, *self._background)
            if t is not None and not t.done()
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                if (current := asyncio.current_task()) is not None and current.cancelling():
                    raise
            except Exception:  # shutting down: the error was logged where it happened
                log.debug("circuit_breaker_task_error_at_close", breaker=self.name)

    # -- local path ------------------------------------------------------------------------

    def _uses_redis(self) -> bool:
        return self._redis is not None and not self._degraded and not self._closed

    def _acquire_local(self, now: float) -> Permit:
        if self._degraded and now >= self._retry_redis_at and not self._closed:
            self._start_recovery(now)
        decision = self._local.try_acquire(now)
        self._notify(self._local.state)
        if not decision.permitted:
            raise self._reject(decision.state, decision.retry_after)
        return Permit(self, decision.state, decision.epoch, False, now)

    def _reject(self, state: BreakerState, retry_after: float) -> BreakerOpen:
        try:
            self._listener.on_rejected(self.name, state)
        except Exception:
            log.exception("circuit_breaker_listener_failed", breaker=self.name, hook="rejected")
        return BreakerOpen(self.name, max(0.0, retry_after), state)

    async def _record(self, permit: Permit, failed: bool, duration: float) -> None:
        slow = duration > self.config.slow_call_duration_s
        try:
            self._listener.on_call(self.name, failed=failed, slow=slow, duration_s=duration)
        except Exception:
            log.exception("circuit_breaker_listener_failed", breaker=self.name, hook="call")
        if permit.phase is BreakerState.DISABLED:
            return
        code = (_FAILED if failed else 0) | (_SLOW if slow else 0)
        now = self._clock()
        if not self._uses_redis():
            if permit.shared:
                # Permitted by the shared state before Redis went away: still evidence for
                # the local window (a half-open shared probe proves nothing locally).
                if permit.phase is BreakerState.CLOSED:
                    self._local.record(code, BreakerState.CLOSED, self._local.epoch, now)
            else:
                self._local.record(code, permit.phase, permit.epoch, now)
            self._notify(self._local.state)
            return
        view = self._view
        if permit.shared:
            epoch = permit.epoch
        elif permit.phase is BreakerState.CLOSED and view is not None:
            epoch = view.epoch  # permitted locally while degraded: counts for the current window
        else:
            return
        if permit.phase is BreakerState.CLOSED:
            self._local.observe(code, now)
            self._buffer.append((epoch, code))
            self._schedule_flush()
        else:
            await self._send_outcomes("h", epoch, str(code))

    def _release(self, permit: Permit) -> None:
        if permit.phase is not BreakerState.HALF_OPEN:
            return
        if not permit.shared:
            self._local.release(permit.phase, permit.epoch)
        elif self._uses_redis():
            # Fire and forget: we may be inside a cancellation, where awaiting is unwelcome.
            self._spawn(self._run("release", [permit.epoch]))

    # -- shared path -----------------------------------------------------------------------

    @staticmethod
    def _busy(task: asyncio.Task[Any] | None) -> bool:
        return task is not None and not task.done()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run(self, script: str, args: list[int | float | str]) -> list[int] | None:
        """Run one script with the Redis timeout; on Redis trouble degrade and return None."""
        if self._redis is None:
            return None
        try:
            async with asyncio.timeout(self.config.redis_timeout_s):
                reply = await self._scripts[script](keys=self._keys, args=args)
        except _REDIS_ERRORS as exc:
            self._enter_degraded(exc)
            return None
        return [int(x) for x in reply]

    def _apply(self, reply: list[int], now: float, permits_used: int | None = None) -> _View:
        code, epoch, millis, _flag = reply
        state = _STATES_BY_CODE[code]
        open_until = now + millis / 1000.0 if state is BreakerState.OPEN else 0.0
        view = _View(state, epoch, open_until, now)
        if (
            state is BreakerState.HALF_OPEN
            and permits_used is not None
            and permits_used >= self.config.permitted_calls_in_half_open
        ):
            view.probes_full_until = now + self.config.cache_ttl_s
        self._set_view(view, now)
        return view

    def _set_view(self, view: _View, now: float) -> None:
        self._view = view
        if not self._degraded and self._local.state is not view.state:
            # Keep the local machine in step with the shared one: its window is the fallback
            # if Redis goes away, and it must restart where the shared window restarted.
            open_for = view.open_until - now if view.state is BreakerState.OPEN else None
            self._local.transition(view.state, now, open_for=open_for)
        self._notify(view.state)

    async def _refresh(self) -> _View | None:
        # One refresh in flight per breaker: a burst after the cache expired costs one script.
        task = self._refresh_task
        if task is None or task.done():
            task = asyncio.ensure_future(self._do_refresh())
            self._refresh_task = task
        return await asyncio.shield(task)

    async def _do_refresh(self) -> _View | None:
        reply = await self._run("read", [])
        if reply is None:
            return None
        return self._apply(reply, self._clock(), permits_used=reply[3])

    async def _acquire_shared_probe(self) -> Permit:
        lease_ms = int(self.config.max_wait_in_half_open_s * 1000)
        reply = await self._run("acquire", [self.config.permitted_calls_in_half_open, lease_ms])
        now = self._clock()
        if reply is None:
            return self._acquire_local(now)
        code, epoch, millis, granted = reply
        state = _STATES_BY_CODE[code]
        view = _View(
            state, epoch, now + millis / 1000.0 if state is BreakerState.OPEN else 0.0, now
        )
        if state is BreakerState.HALF_OPEN and not granted:
            # Every probe is out: reject locally for a while instead of asking Redis per call.
            view.probes_full_until = now + min(self.config.cache_ttl_s, max(millis / 1000.0, 0.001))
        self._set_view(view, now)
        if granted:
            return Permit(self, state, epoch, True, now)
        if state is BreakerState.OPEN:
            raise self._reject(state, millis / 1000.0)
        if state is BreakerState.FORCED_OPEN:
            raise self._reject(state, self.config.wait_in_open_s)
        raise self._reject(state, view.probes_full_until - now)

    def _schedule_flush(self) -> None:
        if not self._busy(self._flush_task):
            self._flush_task = asyncio.ensure_future(self._flush_loop())

    async def _flush_loop(self) -> None:
        while self._buffer and self._uses_redis():
            batch = list(self._buffer)
            self._buffer.clear()
            start = 0
            while start < len(batch):
                epoch = batch[start][0]
                end = start
                digits: list[str] = []
                while end < len(batch) and batch[end][0] == epoch and len(digits) < _FLUSH_CHUNK:
                    digits.append(str(batch[end][1]))
                    end += 1
                if not await self._send_outcomes("c", epoch, "".join(digits)):
                    return  # degraded: the local window already holds these outcomes
                start = end

    async def _send_outcomes(self, phase: str, epoch: int, digits: str) -> bool:
        cfg = self.config
        reply = await self._run(
            "record",
            [
                phase,
                epoch,
                digits,
                math.floor(self._wall_clock()),
                "c" if cfg.window_type == "count_based" else "t",
                cfg.window_size,
                cfg.effective_minimum_calls,
                cfg.failure_rate_threshold,
                cfg.slow_call_rate_threshold,
                int(cfg.wait_in_open_s * 1000),
                cfg.permitted_calls_in_half_open,
                int(cfg.key_ttl_s * 1000),
            ],
        )
        if reply is None:
            return False
        self._apply(reply, self._clock())
        return True

    async def _transition(self, target: BreakerState, lua_target: str) -> None:
        now = self._clock()
        if self._uses_redis():
            reply = await self._run(
                "transition",
                [
                    lua_target,
                    int(self.config.wait_in_open_s * 1000),
                    int(self.config.key_ttl_s * 1000),
                ],
            )
            if reply is not None:
                self._buffer.clear()
                self._apply(reply, self._clock())
                return
        self._local.transition(target, now)
        self._notify(self._local.state)

    # -- degradation and recovery ----------------------------------------------------------

    def _enter_degraded(self, exc: BaseException) -> None:
        now = self._clock()
        self._retry_redis_at = now + self.config.redis_retry_interval_s
        if self._degraded:
            return
        self._degraded = True
        self._buffer.clear()
        view = self._view
        if view is not None and view.state is not self._local.state:
            # Seed the local machine with the last shared state we saw.
            remaining = max(0.0, view.open_until - now) if view.state is BreakerState.OPEN else None
            self._local.transition(view.state, now, open_for=remaining)
        # Outcomes mirrored while Redis decided may already warrant a trip on their own.
        self._local.evaluate(now)
        self._notify(self._local.state)
        log.warning("circuit_breaker_storage_degraded", breaker=self.name, error=type(exc).__name__)
        try:
            self._listener.on_storage_degraded(self.name, True)
        except Exception:
            log.exception("circuit_breaker_listener_failed", breaker=self.name, hook="degraded")
        # Probe in the background, not only when a call comes: a breaker that no call reaches
        # (found by tests/chaos/test_redis_outage.py) stayed degraded, its gauge at 1, for as
        # long as its dependency was not called after Redis returned.
        self._start_recovery(now)

    def _start_recovery(self, now: float) -> None:
        self._retry_redis_at = now + self.config.redis_retry_interval_s
        if not self._busy(self._recover_task):
            self._recover_task = asyncio.ensure_future(self._recover())

    async def _recover(self) -> None:
        """Probe Redis every ``redis_retry_interval_s`` until it answers or the breaker closes."""
        while self._degraded and not self._closed:
            await asyncio.sleep(max(0.0, self._retry_redis_at - self._clock()))
            if self._degraded and not self._closed and await self._probe_redis():
                return

    async def _probe_redis(self) -> bool:
        """One recovery attempt: True when the shared state decides again."""
        if self._redis is None:
            return True
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.redis_timeout_s):
                reply = await self._scripts["read"](keys=self._keys, args=[])
                reply = [int(x) for x in reply]
                now = self._clock()
                local_state = self._local.state
                if reply[0] == BreakerState.CLOSED.code and local_state is BreakerState.OPEN:
                    # The dependency failed while Redis was away: tell the other workers.
                    wait_ms = max(1, int(self._local.open_remaining(now) * 1000))
                    reply = await self._scripts["transition"](
                        keys=self._keys, args=["open_if_closed", wait_ms, int(cfg.key_ttl_s * 1000)]
                    )
                    reply = [int(x) for x in reply]
        except _REDIS_ERRORS:
            self._retry_redis_at = self._clock() + cfg.redis_retry_interval_s
            return False
        self._degraded = False
        # The shared state decides again (the local machine falls in step in _set_view).
        self._apply(reply, self._clock())
        log.info("circuit_breaker_storage_recovered", breaker=self.name)
        try:
            self._listener.on_storage_degraded(self.name, False)
        except Exception:
            log.exception("circuit_breaker_listener_failed", breaker=self.name, hook="degraded")
        return True

    def _notify(self, state: BreakerState) -> None:
        old = self._last_state
        if state is old:
            return
        self._last_state = state
        log.info("circuit_breaker_state_changed", breaker=self.name, old=old.value, new=state.value)
        try:
            self._listener.on_state_change(self.name, old, state)
        except Exception:
            log.exception("circuit_breaker_listener_failed", breaker=self.name, hook="state")


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
