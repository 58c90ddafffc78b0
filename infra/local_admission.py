"""Local admission: each process decides its rate limits from a local view of the shared counters.

The counters stay shared in Redis (the sliding-window-counter of ``limits``, ADR 0005), but a
request no longer pays a round trip to be counted (ADR 0009). Each process holds, per limit it
has seen, a **grant**: units of that limit it may spend without asking, reserved in Redis so that
what every process may still spend plus what is counted never exceeds the quota. A background
task synchronises every active limit in ONE script call every ``RATE_LIMIT_SYNC_MS``: it pushes
the units spent since the last sync into the shared counters, drops the old grant and takes a new
one, sized by the demand of the last period (twice it, so a growing flow is not refused) and
capped by the process's fair share of the room left (the room split between the processes that
hold a grant on that limit). A request then costs a dictionary look-up and a subtraction.

A request whose limit has no fresh grant (first sight, or idle since) or whose grant is spent
while the shared view still shows room asks for a sync of those limits right away (one round
trip, shared by every request waiting for the same limits). A request the view refuses is refused
locally: a client hammering a process costs no Redis call once its quota is spent.

Bounded by design: a grant is only given out of room not yet counted nor granted to another
process, so the units admitted by all processes never exceed the quota of a window, however the
syncs interleave. A process stops spending a grant after two sync periods; Redis forgets it after
three, so a crashed process gives its grant back. Memory is bounded: limits are kept in an LRU of
``max_entries`` (the client-address tier has unbounded cardinality); an evicted limit's unpushed
units are pushed at the next sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

import msgspec
import structlog

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from infra.redisclient import RedisClient

__all__ = [
    "SYNC_SCRIPT",
    "Grant",
    "GrantStore",
    "LocalAdmission",
    "LocalState",
    "RedisGrantStore",
    "SyncItem",
]

log = structlog.get_logger(__name__)

_MAX_SYNCS_PER_REQUEST = 3

# KEYS: the base key of every limit synchronised (one hash tag, so one Cluster slot).
# ARGV[1] holder id, ARGV[2] grant lifetime (ms); per limit: quota, window (ms), units wanted,
# number of (window index, units) pairs to push, the pairs.
# Reply: server time (ms), then per limit: grant, previous window count, current window count,
# units granted to other holders.
SYNC_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me = ARGV[1]
local ttl = tonumber(ARGV[2])
local a = 3
local out = {now}
for i = 1, #KEYS do
  local base = KEYS[i]
  local limit = tonumber(ARGV[a])
  local window = tonumber(ARGV[a + 1])
  local want = tonumber(ARGV[a + 2])
  local n = tonumber(ARGV[a + 3])
  a = a + 4
  local idx = math.floor(now / window)
  for j = 1, n do
    local at = tonumber(ARGV[a])
    local units = tonumber(ARGV[a + 1])
    a = a + 2
    if at >= idx - 1 then
      local key = base .. ':' .. at
      if redis.call('INCRBY', key, units) == units then
        redis.call('PEXPIRE', key, window * 2)
      end
    end
  end
  local elapsed = now - idx * window
  local prev = tonumber(redis.call('GET', base .. ':' .. (idx - 1)) or '0')
  local cur = tonumber(redis.call('GET', base .. ':' .. idx) or '0')
  local weighted = math.floor(prev * (window - elapsed) / window) + cur
  local grants = base .. ':grants'
  local held = 0
  local holders = 1
  local flat = redis.call('HGETALL', grants)
  for k = 1, #flat, 2 do
    if flat[k] ~= me then
      local units, expiry = string.match(flat[k + 1], '(%d+):(%d+)')
      if tonumber(expiry) > now then
        held = held + tonumber(units)
        holders = holders + 1
      else
        redis.call('HDEL', grants, flat[k])
      end
    end
  end
  local room = limit - weighted
  local grant = math.min(want, room - held, math.ceil(room / holders))
  if grant > 0 then
    redis.call('HSET', grants, me, grant .. ':' .. (now + ttl))
    redis.call('PEXPIRE', grants, ttl)
  else
    grant = 0
    redis.call('HDEL', grants, me)
  end
  out[#out + 1] = grant
  out[#out + 1] = prev
  out[#out + 1] = cur
  out[#out + 1] = held
end
return out
"""


class SyncItem(msgspec.Struct, frozen=True):
    """One limit in a sync: what was spent since the last one, and what is wanted next."""

    key: str
    quota: int
    window_ms: int
    want: int
    spent: list[tuple[int, int]]  # (window index, units)


class Grant(msgspec.Struct, frozen=True):
    """The shared store's answer for one limit."""

    grant: int
    prev: int
    cur: int
    held: int  # units granted to other holders, still live


class GrantStore(Protocol):
    """Where the shared counters and grants live (Redis; an in-memory fake in unit tests)."""

    async def sync(
        self, holder: str, ttl_ms: int, items: Sequence[SyncItem]
    ) -> tuple[int, list[Grant]]:
        """Push, re-grant and read every item at once: (server time in ms, one grant each)."""
        ...


class RedisGrantStore:
    """:class:`GrantStore` on Redis: :data:`SYNC_SCRIPT`, one call per sync."""

    __slots__ = ("_script",)

    def __init__(self, client: RedisClient) -> None:
        self._script = client.register_script(SYNC_SCRIPT)

    async def sync(
        self, holder: str, ttl_ms: int, items: Sequence[SyncItem]
    ) -> tuple[int, list[Grant]]:
        args: list[str | int] = [holder, ttl_ms]
        for item in items:
            args += [item.quota, item.window_ms, item.want, len(item.spent)]
            for at, units in item.spent:
                args += [at, units]
        reply = await self._script(keys=[item.key for item in items], args=args)
        grants = [
            Grant(int(reply[i]), int(reply[i + 1]), int(reply[i + 2]), int(reply[i + 3]))
            for i in range(1, len(reply), 4)
        ]
        return int(reply[0]), grants


class LocalState(msgspec.Struct, frozen=True):
    """A limit as the local view sees it for one request."""

    remaining: int
    reset_s: float
    refused: bool


class _Entry:
    """One limit (tier, identity, quota) in the local view."""

    __slots__ = (
        "cur_at_sync",
        "demand",
        "grant",
        "held",
        "key",
        "pending",
        "prev",
        "quota",
        "server_at",
        "spent",
        "synced_at",
        "syncing",
        "used_at",
        "wanted",
        "window_ms",
    )

    def __init__(self, key: str, quota: int, window_ms: int) -> None:
        self.key = key
        self.quota = quota
        self.window_ms = window_ms
        self.grant = 0  # units this process may spend since the last sync
        self.spent = 0  # of them, spent
        self.pending: dict[int, int] = {}  # window index -> units not yet pushed
        self.demand = 0  # units asked for since the last sync (served or not)
        self.wanted = 0  # the largest single request since the last sync
        self.prev = 0  # shared counts at the last sync (ours included)
        self.cur_at_sync = 0
        self.held = 0  # granted to other processes at the last sync
        self.server_at = 0  # server time (ms) of the last sync
        self.synced_at = -math.inf  # local monotonic time (s) of the last sync
        self.used_at = 0.0
        self.syncing: asyncio.Future[bool] | None = None

    def free(self, server_now: int) -> int:
        """Room not counted nor granted to anyone, as of the last sync, aged to ``server_now``."""
        window = self.window_ms
        idx = server_now // window
        synced_idx = self.server_at // window
        if idx == synced_idx:
            prev, cur = self.prev, self.cur_at_sync
        elif idx == synced_idx + 1:
            prev, cur = self.cur_at_sync, 0
        else:
            prev, cur = 0, 0
        weighted = prev * (window - (server_now - idx * window)) // window + cur
        return self.quota - weighted - self.held - self.grant


def _fits(entry: _Entry, cost: int, server_now: int) -> bool:
    """Whether this process may spend ``cost`` units of ``entry`` now.

    From its grant first. A grant already spent by the requests that shared its syncs (a busy
    event loop can let several syncs' grants go to others) does not make a false 429 while the
    shared view still shows room nobody holds: the request borrows from that room, counted as
    spent and pushed at the next sync. Never more than the room (less what was borrowed
    already), so a spent quota is still refused locally.
    """
    left = entry.grant - entry.spent
    if left >= cost:
        return True
    borrowed = max(0, -left)
    return entry.free(server_now) - borrowed >= cost


class LocalAdmission:
    """The local view of every limit of one process, and its synchronisation.

    Args:
        store: The shared counters.
        sync_s: Period of the background sync.
        max_entries: Limits kept at most (least recently used forgotten first).
        clock: Monotonic time in seconds.
        on_failure: Called with the exception when the store cannot be reached.
        on_success: Called after every successful sync.
    """

    def __init__(
        self,
        store: GrantStore,
        *,
        sync_s: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
        on_failure: Callable[[BaseException], None],
        on_success: Callable[[], None],
    ) -> None:
        self._store = store
        self._sync_s = sync_s
        self._valid_s = 2 * sync_s
        self._ttl_ms = max(1, math.ceil(3 * sync_s * 1000))
        self._max_entries = max(1, max_entries)
        self._clock = clock
        self._on_failure = on_failure
        self._on_success = on_success
        self._holder = uuid.uuid4().hex
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._evicted: list[_Entry] = []
        self._offset_ms = 0.0  # server ms - local monotonic ms

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, key: str, quota: int, window_ms: int, now: float) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry(key, quota, window_ms)
            self._entries[key] = entry
            if len(self._entries) > self._max_entries:
                _, old = self._entries.popitem(last=False)
                if old.pending or old.grant:
                    self._evicted.append(old)  # pushed (and released) at the next sync
        else:
            self._entries.move_to_end(key)
        entry.used_at = now
        return entry

    def _server_now(self, now: float) -> int:
        return int(now * 1000 + self._offset_ms)

    async def admit(self, limits: Sequence[tuple[str, int, int, int]]) -> list[LocalState] | None:
        """Decide a request from the local view: ``limits`` are (key, quota, window ms, units).

        Returns one state per limit (all refused or all counted), or ``None`` when the shared
        store could not be reached (the caller falls back to per-process limits).
        """
        now = self._clock()
        entries = [self._entry(key, quota, window, now) for key, quota, window, _ in limits]
        costs = [cost for _, _, _, cost in limits]
        for entry, cost in zip(entries, costs, strict=True):
            entry.demand += cost
            entry.wanted = max(entry.wanted, cost)
        # A request that arrived while its limits were being synced was not in that sync's
        # demand: it may need one more (bounded: each sync grants at least what was waiting).
        for _ in range(_MAX_SYNCS_PER_REQUEST):
            stale = self._needs_sync(entries, costs, now)
            if not stale:
                break
            for entry, cost in zip(entries, costs, strict=True):
                entry.wanted = max(entry.wanted, cost)  # a waiting request is always asked for
            if not await self._sync_now(stale):
                return None
            now = self._clock()
        server_now = self._server_now(now)
        # Freshness was settled above (a stale limit was synced): under a loaded event loop the
        # grant just received may be a little older than the validity by now, not spent.
        fits = [_fits(entry, cost, server_now) for entry, cost in zip(entries, costs, strict=True)]
        allowed = all(fits)
        states: list[LocalState] = []
        for entry, cost, fit in zip(entries, costs, fits, strict=True):
            left = entry.grant - entry.spent
            refused = not fit
            if allowed:
                entry.spent += cost
                idx = server_now // entry.window_ms
                entry.pending[idx] = entry.pending.get(idx, 0) + cost
                left -= cost
            remaining = max(0, left + max(0, entry.free(server_now)))  # left < 0: borrowed
            reset_ms = entry.window_ms - server_now % entry.window_ms
            states.append(LocalState(min(remaining, entry.quota), reset_ms / 1000, refused))
        return states

    def _needs_sync(self, entries: list[_Entry], costs: list[int], now: float) -> list[_Entry]:
        """The limits this request cannot be decided on without asking the store."""
        server_now = self._server_now(now)
        stale: list[_Entry] = []
        for entry, cost in zip(entries, costs, strict=True):
            if entry.syncing is not None or now - entry.synced_at > self._valid_s:
                stale.append(entry)
            elif entry.grant - entry.spent < cost and entry.free(server_now) > 0:
                stale.append(entry)  # spent its grant, and the view still shows room: top up
        return stale

    async def _sync_now(self, entries: list[_Entry]) -> bool:
        """Sync ``entries`` now, joining a sync already in flight for any of them."""
        waits: list[asyncio.Future[bool]] = [e.syncing for e in entries if e.syncing is not None]
        fresh = [e for e in entries if e.syncing is None]
        if fresh:
            # Marked as syncing before the call is scheduled: a request arriving meanwhile joins it.
            waits.append(asyncio.ensure_future(self._sync(fresh, self._mark(fresh))))
        results = await asyncio.gather(*waits)
        return all(results)

    @staticmethod
    def _mark(entries: list[_Entry]) -> asyncio.Future[bool]:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        for entry in entries:
            entry.syncing = future
        return future

    async def _sync(
        self, entries: list[_Entry], future: asyncio.Future[bool] | None = None
    ) -> bool:
        """One round trip for ``entries``: push their spent units, renew their grants."""
        if future is None:
            future = self._mark(entries)
        items: list[SyncItem] = []
        asked: list[int] = []
        for entry in entries:
            asked.append(entry.demand)
            want = max(2 * entry.demand, entry.wanted)
            items.append(
                SyncItem(
                    entry.key, entry.quota, entry.window_ms, want, sorted(entry.pending.items())
                )
            )
        ok = False
        try:
            server_now, grants = await self._store.sync(self._holder, self._ttl_ms, items)
        except Exception as exc:
            self._on_failure(exc)
            for entry in entries:
                entry.grant = entry.spent = 0
                entry.synced_at = -math.inf
        else:
            now = self._clock()
            self._offset_ms = server_now - now * 1000
            for entry, grant, demand in zip(entries, grants, asked, strict=True):
                entry.pending.clear()
                entry.grant, entry.spent = grant.grant, 0
                entry.prev, entry.cur_at_sync, entry.held = grant.prev, grant.cur, grant.held
                entry.server_at, entry.synced_at = server_now, now
                entry.demand = max(0, entry.demand - demand)  # arrivals during the call count next
                entry.wanted = 0
            ok = True
            self._on_success()
        finally:
            for entry in entries:
                entry.syncing = None
            future.set_result(ok)
        return ok

    def due(self) -> list[_Entry]:
        """The limits the periodic sync must carry: used or holding a grant since the last one,
        and those evicted with units to push. Forgets limits idle for two windows."""
        now = self._clock()
        due, self._evicted = self._evicted, []
        idle: list[str] = []
        for key, entry in self._entries.items():
            if entry.syncing is not None:
                continue
            if entry.demand or entry.pending or entry.grant:
                due.append(entry)
            elif now - entry.used_at > 2 * entry.window_ms / 1000:
                idle.append(key)
        for key in idle:
            del self._entries[key]
        return due

    async def sync_once(self) -> None:
        """One periodic sync (a no-op when nothing is due)."""
        due = self.due()
        if due:
            await self._sync(due)

    @contextlib.asynccontextmanager
    async def running(
        self, available: Callable[[], bool] = lambda: True
    ) -> AsyncIterator[LocalAdmission]:
        """Run the periodic sync in the background while the context is open; on exit, push
        what was spent and give the grants back."""

        stop = asyncio.Event()

        async def loop() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._sync_s)
                if not stop.is_set() and available():
                    await self.sync_once()

        # Stopped by the event, not cancelled: a cancellation inside the Redis client's call
        # can be absorbed by it, and a sync cut short would lose what it was pushing.
        task = asyncio.create_task(loop(), name="rate-limit-sync")
        try:
            yield self
        finally:
            stop.set()
            try:
                await asyncio.wait_for(task, timeout=max(1.0, 20 * self._sync_s))
            except TimeoutError:
                log.warning("rate_limit_sync_stop_timeout")
            await self.release()

    async def release(self) -> None:
        """Push what was spent and give every grant back (process shutdown)."""
        due = [e for e in self._entries.values() if e.pending or e.grant] + self._evicted
        self._evicted = []
        for entry in due:
            entry.demand = entry.wanted = 0
        if due:
            with contextlib.suppress(Exception):
                await self._sync(due)
