"""The breaker state shared through Redis: the Lua scripts and the adapter that runs them.

Each breaker owns six keys under ``{prefix}cb:{<name>}:``. The braces are a Redis Cluster hash
tag, so every key one script touches hashes to the same slot:

1. ``state``: hash ``{mode, epoch}``;
2. ``open``: marker whose TTL is the open wait (its expiry turns OPEN into HALF_OPEN);
3. ``window``: the sliding window (a list for count windows, a hash of buckets for time windows);
4. ``agg``: running aggregates ``{f, s}`` of a count window;
5. ``permits``: half-open permit counter (TTL = the probe lease);
6. ``probes``: half-open probe results ``{t, f, s}``.

Every read-modify-write is one script, so concurrent workers never lose increments. Replies are
integer arrays ``{state code, epoch, milliseconds, flag}``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from infra.redisclient import REDIS_ERRORS as _REDIS_ERRORS

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from infra.breaker.settings import BreakerConfig
    from infra.breaker.state import BreakerState
    from infra.redisclient import RedisClient

__all__ = ["REDIS_ERRORS", "SharedState", "SharedView", "breaker_keys"]

# Redis trouble that degrades the breaker; anything else is a bug and propagates.
REDIS_ERRORS = _REDIS_ERRORS

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


def breaker_keys(key_prefix: str, name: str) -> list[str]:
    """The six Redis keys of breaker ``name``, hash-tagged into one cluster slot."""
    base = f"{key_prefix}cb:{{{name}}}:"
    return [base + s for s in ("state", "open", "window", "agg", "permits", "probes")]


class SharedView:
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


class SharedState:
    """Runs the breaker scripts against one breaker's keys; replies come back as integers.

    Redis errors propagate: the caller bounds each call with its timeout and degrades on them.

    Args:
        redis: A ``redis.asyncio`` client (not owned).
        key_prefix: Prefix of every Redis key.
        name: The breaker's name (the hash tag of its keys).
        config: The breaker's thresholds and timings, sent as script arguments.
    """

    def __init__(
        self, redis: RedisClient, key_prefix: str, name: str, config: BreakerConfig
    ) -> None:
        self.keys = breaker_keys(key_prefix, name)
        self._config = config
        self._read = redis.register_script(_LUA_READ)
        self._acquire = redis.register_script(_LUA_ACQUIRE)
        self._release = redis.register_script(_LUA_RELEASE)
        self._record = redis.register_script(_LUA_RECORD)
        self._transition = redis.register_script(_LUA_TRANSITION)

    async def _call(self, script: AsyncScript, args: list[int | float | str]) -> list[int]:
        reply = await script(keys=self.keys, args=args)
        return [int(x) for x in reply]

    async def read(self) -> list[int]:
        """The shared state; the flag is the number of half-open permits in use."""
        return await self._call(self._read, [])

    async def acquire(self) -> list[int]:
        """Ask for a call; the flag is 1 when it may go (ms = lease left on rejection)."""
        cfg = self._config
        lease_ms = int(cfg.max_wait_in_half_open_s * 1000)
        return await self._call(self._acquire, [cfg.permitted_calls_in_half_open, lease_ms])

    async def release(self, epoch: int) -> list[int]:
        """Give back the half-open permit of a cancelled probe taken during ``epoch``."""
        return await self._call(self._release, [epoch])

    async def record(self, phase: str, epoch: int, digits: str, now_s: float) -> list[int]:
        """Add outcome digits of ``phase`` (``c`` closed, ``h`` half-open) and evaluate.

        Args:
            phase: ``c`` for CLOSED-window outcomes, ``h`` for half-open probe outcomes.
            epoch: The epoch the outcomes' permits were taken in (others are ignored).
            digits: One outcome code per call, ``"0"``..``"3"``.
            now_s: Wall-clock seconds (buckets of a time-based window).
        """
        cfg = self._config
        args: list[int | float | str] = [
            phase,
            epoch,
            digits,
            math.floor(now_s),
            "c" if cfg.window_type == "count_based" else "t",
            cfg.window_size,
            cfg.effective_minimum_calls,
            cfg.failure_rate_threshold,
            cfg.slow_call_rate_threshold,
            int(cfg.wait_in_open_s * 1000),
            cfg.permitted_calls_in_half_open,
            int(cfg.key_ttl_s * 1000),
        ]
        return await self._call(self._record, args)

    async def transition(self, target: str, wait_ms: int | None = None) -> list[int]:
        """Move to ``target`` (``closed``, ``open``, ``open_if_closed``, ``forced_open``,
        ``disabled`` or ``half_open``); OPEN lasts ``wait_ms`` (default: the configured wait)."""
        cfg = self._config
        if wait_ms is None:
            wait_ms = int(cfg.wait_in_open_s * 1000)
        return await self._call(self._transition, [target, wait_ms, int(cfg.key_ttl_s * 1000)])
