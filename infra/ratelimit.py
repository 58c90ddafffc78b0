"""Multi-tier rate limiting shared through Redis: decided locally, or in ONE round trip.

Limits are data (``limits`` rate strings such as ``"20/2second"``, parsed by ``limits``) per tier:
client IP, API key, and a global ceiling, counted with the sliding-window-counter algorithm of
``limits`` in counters shared through Redis.

Two ways to decide a request:

* :meth:`RateLimiter.admit` (the request path): from the process's local view of the shared
  counters, synchronised in one batched script call every ``sync_s`` by a background task
  (:mod:`infra.local_admission`, ADR 0009). No round trip per request in steady state.
* :meth:`RateLimiter.check`: one Lua script per request that checks and counts every tier at once
  (ADR 0005); exact, used where each call matters more than its cost (failed authentications),
  and by :meth:`~RateLimiter.admit` when local admission is off (``sync_s`` = 0).

Every script touches keys of one Redis Cluster hash slot: the counters are named
``<prefix>{rl}:<tier>:<identity>:<quota>/<window ms>``.

With Redis unreachable the limiter degrades to per-process limits with the same quotas, using
``limits``' in-memory sliding window counter, never answers an error, and reports the degradation
to a listener (the ``rate_limit_degraded`` gauge) and every failed Redis call to
``rate_limit_storage_errors_total``. It retries Redis after a short back-off rather than paying a
socket timeout on every request; with local admission the background sync notices the failure.

A request may cost more than one unit in a tier (``costs``: a batch of N lookups costs N of the
per-key quota). A limit never charges more than its whole quota, so an oversized request is served
alone in an otherwise empty window instead of being refused for ever.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import TYPE_CHECKING, Protocol

import limits
import structlog
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from domain.admission import Decision, LimitState, Tier
from infra.local_admission import LocalAdmission, RedisGrantStore
from infra.redisclient import REDIS_ERRORS
from observability.metrics import RATE_LIMIT_STORAGE_ERRORS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence

    from infra.redisclient import RedisClient

__all__ = [
    "Decision",
    "LimitState",
    "RateLimitListener",
    "RateLimiter",
    "Tier",
    "parse_policy",
]

log = structlog.get_logger(__name__)

# KEYS: the base key of every limit (one hash tag). ARGV: per limit (limit, window ms, cost).
# Checks every limit first and counts the request (``cost`` units) in all of them only if all
# allow it, so a request refused by one tier does not consume the others. Uses the server's clock
# (TIME) so that several app machines with skewed clocks share one window.
CHECK_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local allowed = 1
local rows = {}
for i = 1, #KEYS do
  local base = KEYS[i]
  local limit = tonumber(ARGV[i * 3 - 2])
  local window = tonumber(ARGV[i * 3 - 1])
  local cost = tonumber(ARGV[i * 3])
  local idx = math.floor(now / window)
  local elapsed = now - idx * window
  local cur_key = base .. ':' .. idx
  local prev = tonumber(redis.call('GET', base .. ':' .. (idx - 1)) or '0')
  local cur = tonumber(redis.call('GET', cur_key) or '0')
  local weighted = math.floor(prev * (window - elapsed) / window) + cur
  if weighted + cost > limit then allowed = 0 end
  rows[i] = {cur_key, weighted, limit, window - elapsed, window, cost}
end
local out = {allowed}
for i = 1, #KEYS do
  local row = rows[i]
  local used = row[2]
  if allowed == 1 then
    if redis.call('INCRBY', row[1], row[6]) == row[6] then
      redis.call('PEXPIRE', row[1], row[5] * 2)
    end
    used = used + row[6]
  end
  out[#out + 1] = row[3] - used
  out[#out + 1] = row[4]
end
return out
"""


class RateLimitListener(Protocol):
    """Receives decisions (the app wires Prometheus counters here)."""

    def decided(self, tier: Tier | None, allowed: bool) -> None:
        """One request was allowed, or refused by ``tier``."""
        ...

    def degraded(self, active: bool) -> None:
        """The limiter entered (True) or left (False) per-process mode."""
        ...


class _NullListener:
    def decided(self, tier: Tier | None, allowed: bool) -> None:
        return None

    def degraded(self, active: bool) -> None:
        return None


def parse_policy(spec: str) -> list[limits.RateLimitItem]:
    """Parse ``"20/2second;1000/minute"`` (``limits`` syntax); empty means no limit.

    Raises:
        ValueError: the string is not valid ``limits`` syntax.
    """
    if not spec.strip():
        return []
    return list(limits.parse_many(spec))


def _window_ms(item: limits.RateLimitItem) -> int:
    return int(item.get_expiry() * 1000)


def _charge(item: limits.RateLimitItem, cost: int) -> int:
    """Units a request of ``cost`` takes in ``item``: at least 1, at most the whole quota."""
    return max(1, min(cost, item.amount))


# (tier, identity, limit, units this request takes in it)
_Limit = tuple[Tier, str, limits.RateLimitItem, int]


class RateLimiter:
    """Checks every tier of a request against its quotas.

    Args:
        client: The shared store.
        prefix: Key prefix of every counter.
        policies: The quotas per tier.
        listener: Told of every decision and of the degraded mode.
        retry_redis_after_s: Back-off after a failed Redis call.
        sync_s: Period of the local view's sync (:meth:`admit`); 0 turns local admission off
            (every :meth:`admit` is a :meth:`check`).
        max_entries: Limits the local view keeps at most.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str,
        policies: Mapping[Tier, Sequence[limits.RateLimitItem]],
        listener: RateLimitListener | None = None,
        retry_redis_after_s: float = 1.0,
        sync_s: float = 0.0,
        max_entries: int = 10_000,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._policies = {tier: list(items) for tier, items in policies.items() if items}
        self._listener = listener or _NullListener()
        self._script = client.register_script(CHECK_SCRIPT)
        self._memory = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._retry_after = retry_redis_after_s
        self._down_until = 0.0
        self._degraded = False
        self._local = (
            LocalAdmission(
                RedisGrantStore(client),
                sync_s=sync_s,
                max_entries=max_entries,
                on_failure=self._storage_failed,
                on_success=self._storage_ok,
            )
            if sync_s > 0
            else None
        )

    @property
    def degraded(self) -> bool:
        """True while decisions are per-process."""
        return self._degraded

    def policies(self) -> dict[Tier, list[limits.RateLimitItem]]:
        """The configured quotas per tier (for the ``RateLimit-Policy`` header)."""
        return {tier: list(items) for tier, items in self._policies.items()}

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RateLimiter]:
        """Keep the local view in sync while open (a no-op without local admission)."""
        if self._local is None:
            yield self
            return
        async with self._local.running(self._redis_available):
            yield self

    def _redis_available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _storage_failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self._retry_after
        RATE_LIMIT_STORAGE_ERRORS.inc()
        log.warning("rate_limit_storage_error", error_type=type(exc).__name__)
        if not self._degraded:
            self._degraded = True
            self._listener.degraded(True)

    def _storage_ok(self) -> None:
        if self._degraded:
            self._degraded = False
            self._listener.degraded(False)
            log.info("rate_limit_storage_recovered")

    def _key(self, tier: Tier, ident: str, item: limits.RateLimitItem) -> str:
        return f"{self._prefix}{{rl}}:{tier}:{ident}:{item.amount}/{_window_ms(item)}"

    def _applicable(
        self, identities: Mapping[Tier, str], costs: Mapping[Tier, int] | None
    ) -> list[_Limit]:
        if not costs:  # every request but a costed one: one unit everywhere
            return [
                (tier, identities[tier], item, 1)
                for tier, items in self._policies.items()
                if tier in identities
                for item in items
            ]
        return [
            (tier, identities[tier], item, _charge(item, costs.get(tier, 1)))
            for tier, items in self._policies.items()
            if tier in identities
            for item in items
        ]

    async def admit(
        self, identities: Mapping[Tier, str], *, costs: Mapping[Tier, int] | None = None
    ) -> Decision:
        """Count one request for ``identities`` from the local view (no round trip in steady
        state); like :meth:`check` when local admission is off.

        Never raises for a storage failure: it falls back to per-process limits.
        """
        if self._local is None:
            return await self.check(identities, costs=costs)
        applicable = self._applicable(identities, costs)
        if self._redis_available():
            local = await self._local.admit(
                [
                    (self._key(tier, ident, item), item.amount, _window_ms(item), cost)
                    for tier, ident, item, cost in applicable
                ]
            )
            if local is not None:
                allowed = not any(s.refused for s in local)
                states = [
                    LimitState(
                        tier=tier,
                        quota=item.amount,
                        window_s=item.get_expiry(),
                        remaining=state.remaining,
                        reset_s=state.reset_s,
                        refused=state.refused,
                    )
                    for (tier, _, item, _), state in zip(applicable, local, strict=True)
                ]
                decision = self._decide(allowed, states, degraded=False)
                self._report(decision)
                return decision
        return await self._degraded_check(applicable)

    async def check(
        self, identities: Mapping[Tier, str], *, costs: Mapping[Tier, int] | None = None
    ) -> Decision:
        """Count one request for ``identities`` (tier -> hashed identity) in one round trip.

        Args:
            identities: The tiers that apply, each with its (hashed) identity.
            costs: Units the request takes per tier (default 1); each limit charges at most its
                quota.

        Never raises for a storage failure: it falls back to per-process limits.
        """
        applicable = self._applicable(identities, costs)
        if self._redis_available():
            try:
                decision = await self._check_redis(applicable)
            except REDIS_ERRORS as exc:
                self._storage_failed(exc)
            else:
                self._storage_ok()
                self._report(decision)
                return decision
        return await self._degraded_check(applicable)

    async def _degraded_check(self, applicable: list[_Limit]) -> Decision:
        if not self._degraded:
            self._degraded = True
            self._listener.degraded(True)
        decision = await self._check_memory(applicable)
        self._report(decision)
        return decision

    def _report(self, decision: Decision) -> None:
        if decision.allowed:
            self._listener.decided(None, True)
            return
        refused = next((s for s in decision.states if s.refused), decision.tightest)
        self._listener.decided(refused.tier if refused else None, False)

    async def _check_redis(self, applicable: list[_Limit]) -> Decision:
        keys: list[str] = []
        args: list[int] = []
        for tier, ident, item, cost in applicable:
            keys.append(self._key(tier, ident, item))
            args += [item.amount, _window_ms(item), cost]
        reply = await self._script(keys=keys, args=args)
        allowed = int(reply[0]) == 1
        states: list[LimitState] = []
        for i, (tier, _ident, item, cost) in enumerate(applicable):
            remaining = int(reply[1 + 2 * i])
            reset_ms = int(reply[2 + 2 * i])
            # When refused, the script reports room before counting: less room than the request
            # needs marks a refusing tier.
            refused = not allowed and remaining < cost
            states.append(
                LimitState(
                    tier=tier,
                    quota=item.amount,
                    window_s=item.get_expiry(),
                    remaining=max(0, remaining),
                    reset_s=reset_ms / 1000,
                    refused=refused,
                )
            )
        return self._decide(allowed, states, degraded=False)

    async def _check_memory(self, applicable: list[_Limit]) -> Decision:
        refusing = [
            not await self._memory.test(item, tier, ident, cost=cost)
            for tier, ident, item, cost in applicable
        ]
        allowed = not any(refusing)
        states: list[LimitState] = []
        for (tier, ident, item, cost), refused in zip(applicable, refusing, strict=True):
            if allowed:
                await self._memory.hit(item, tier, ident, cost=cost)
            stats = await self._memory.get_window_stats(item, tier, ident)
            states.append(
                LimitState(
                    tier=tier,
                    quota=item.amount,
                    window_s=item.get_expiry(),
                    remaining=max(0, stats.remaining),
                    reset_s=max(0.0, stats.reset_time - time.time()),
                    refused=refused,
                )
            )
        return self._decide(allowed, states, degraded=True)

    def _decide(self, allowed: bool, states: list[LimitState], *, degraded: bool) -> Decision:
        tightest = (
            min(states, key=lambda s: (not s.refused, s.remaining, -s.reset_s)) if states else None
        )
        retry = 0
        if not allowed:
            refused = [s for s in states if s.refused] or states
            retry = max(1, math.ceil(max(s.reset_s for s in refused)))
        return Decision(
            allowed=allowed,
            states=states,
            tightest=tightest,
            retry_after_s=retry,
            degraded=degraded,
        )
