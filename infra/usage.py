"""The usage meter (:class:`domain.ports.UsageMeter`): paid calls counted in batches, quotas in
Redis.

* **Counting.** :meth:`UsageRecorder.record` adds to an in-process accumulator keyed by (UTC
  day, tenant, key id, upstream); a background task writes it every ``USAGE_FLUSH_MS`` with ONE
  upsert (:data:`infra.db.usage.UPSERT_USAGE`), and the drain (API lifespan shutdown, worker
  stop: :meth:`UsageRecorder.running` exiting) writes what is left. A failed write keeps the
  counts for the next attempt.
* **Quotas.** One counter per key and UTC day in Redis,
  ``<prefix>quota:{<key id>}:<yyyymmdd>`` (hash-tagged on the key id), taken and checked by one
  script (``INCR``, ``EXPIREAT`` end of the day + 1 h, ``DECR`` back when over the quota): one
  round trip, only on the paid path. With Redis unreachable the process decides from its own
  count of the key's day (seeded by the last count Redis answered).
* **Metrics.** ``paid_calls_total``, ``quota_exceeded_total`` and ``paid_quota_use_ratio``, with
  the tenant label bounded by :class:`TenantLabels`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from typing import TYPE_CHECKING, Final, Protocol

import structlog

from domain.errors import DependencyUnavailable
from domain.usage import SYSTEM_TENANT, UsageCount, utc_day
from infra.redisclient import REDIS_ERRORS
from observability.metrics import PAID_CALLS, PAID_QUOTA_USE_RATIO, QUOTA_EXCEEDED
from observability.tracing import untraced

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Collection, Sequence

    from infra.redisclient import RedisClient


__all__ = ["OTHER_TENANTS", "TenantLabels", "UsageRecorder", "UsageWriter"]

log = structlog.get_logger(__name__)

OTHER_TENANTS: Final = "other"
# A day's counter outlives the day by this much (clock skew between hosts and Redis).
_EXPIRY_MARGIN_S: Final = 3600
_ABSORBED: Final[tuple[type[BaseException], ...]] = REDIS_ERRORS
_WRITE_FAILED: Final[tuple[type[BaseException], ...]] = (DependencyUnavailable, *_ABSORBED)

# KEYS[1] the key's day counter; ARGV[1] quota, ARGV[2] expiry (epoch s).
# Returns {granted 0|1, the key's paid calls of the day (including this one when granted)}.
_RESERVE: Final = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return {0, n - 1}
end
return {1, n}
"""
# KEYS[1] the key's day counter. Gives one unit back (never below 0); returns the new count.
_RELEASE: Final = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then
  return redis.call('DECR', KEYS[1])
end
return 0
"""


class UsageWriter(Protocol):
    """Where batches of counts go (:class:`infra.db.usage.PgUsageLedger`)."""

    async def add(self, counts: Sequence[UsageCount]) -> None:
        """Add the counts (one statement); raises ``DependencyUnavailable`` on an outage."""
        ...


class TenantLabels:
    """The ``tenant`` label of the usage metrics, with a bounded set of values.

    A tenant is its own label when it is in ``allow`` (``USAGE_METRIC_TENANTS``) or, without an
    allowlist, when it is among the first ``max_tenants`` tenants this process labelled; any
    other tenant is ``other``. So a process exports at most ``max_tenants + 2`` tenant values
    (``other``, ``_system``) per metric, whatever the number of customers. First-seen order
    differs between processes, so without an allowlist one tenant may be ``other`` on one
    instance and itself on another; configure the allowlist for stable per-tenant series.
    """

    __slots__ = ("_allow", "_max", "_seen")

    def __init__(self, allow: Collection[str] = (), max_tenants: int = 20) -> None:
        self._allow = frozenset(t for t in allow if t)
        self._max = max(0, max_tenants)
        self._seen: set[str] = set()

    def of(self, tenant: str) -> str:
        """The label of ``tenant``."""
        if tenant == SYSTEM_TENANT:
            return tenant
        if self._allow:
            return tenant if tenant in self._allow else OTHER_TENANTS
        if tenant in self._seen:
            return tenant
        if len(self._seen) < self._max:
            self._seen.add(tenant)
            return tenant
        return OTHER_TENANTS


def _day_end(day: dt.date) -> int:
    midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
    return int(midnight.timestamp()) + _EXPIRY_MARGIN_S


class UsageRecorder:
    """Counts paid calls in batches and keeps each key's paid calls of the day (see module).

    Args:
        writer: The PostgreSQL ledger (batched writes).
        redis: The Redis client (per-key day counters).
        prefix: ``REDIS_KEY_PREFIX``.
        flush_s: Seconds between two writes of the accumulator.
        labels: The bounded tenant label.
        clock: Wall-clock epoch seconds (today, for the gauge).
    """

    __slots__ = (
        "_clock",
        "_flush_lock",
        "_flush_s",
        "_labels",
        "_local",
        "_pending",
        "_prefix",
        "_published",
        "_release",
        "_reserve",
        "_use",
        "_writer",
    )

    def __init__(
        self,
        writer: UsageWriter,
        redis: RedisClient,
        *,
        prefix: str,
        flush_s: float = 1.0,
        labels: TenantLabels | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._writer = writer
        self._reserve = redis.register_script(_RESERVE)
        self._release = redis.register_script(_RELEASE)
        self._prefix = prefix
        self._flush_s = max(0.01, flush_s)
        self._labels = labels or TenantLabels()
        self._clock = clock
        self._pending: dict[tuple[dt.date, str, str, str], int] = {}
        self._flush_lock = asyncio.Lock()
        # (key id, day) -> the key's paid calls that day as last known (Redis, else local).
        self._local: dict[tuple[str, dt.date], int] = {}
        # key id -> (tenant label, day, paid calls, quota): the use-ratio gauge.
        self._use: dict[str, tuple[str, dt.date, int, int]] = {}
        self._published: set[str] = set()

    def quota_key(self, key_id: str, day: dt.date) -> str:
        """The Redis counter of ``key_id``'s paid calls on ``day``."""
        return f"{self._prefix}quota:{{{key_id}}}:{day:%Y%m%d}"

    @property
    def pending(self) -> int:
        """Paid calls counted but not yet written."""
        return sum(self._pending.values())

    # --- quota ------------------------------------------------------------------------------

    async def reserve(self, tenant: str, key_id: str, day: dt.date, quota: int) -> bool:
        """Take one unit of the key's day if it is below ``quota`` (one Redis round trip)."""
        local = (key_id, day)
        try:
            granted, used = await self._reserve(
                keys=[self.quota_key(key_id, day)], args=[quota, _day_end(day)]
            )
            allowed = bool(int(granted))
            used = int(used)
        except _ABSORBED as exc:
            # Redis down: this process's own count of the key's day decides.
            log.warning("usage_quota_degraded", error_type=type(exc).__name__)
            used = self._local.get(local, 0)
            allowed = used < quota
            used += 1 if allowed else 0
        self._local[local] = used
        self._use[key_id] = (self._labels.of(tenant), day, used, quota)
        return allowed

    async def release(self, key_id: str, day: dt.date) -> None:
        """Give one unit back (a call that was not paid)."""
        local = (key_id, day)
        try:
            used = int(await self._release(keys=[self.quota_key(key_id, day)]))
        except _ABSORBED:
            used = max(0, self._local.get(local, 0) - 1)
        self._local[local] = used
        seen = self._use.get(key_id)
        if seen is not None and seen[1] == day:
            self._use[key_id] = (seen[0], day, used, seen[3])

    # --- counting ---------------------------------------------------------------------------

    def record(self, count: UsageCount) -> None:
        """Add to the accumulator (written within ``flush_s``) and to ``paid_calls_total``."""
        key = (count.day, count.tenant, count.key_id, count.upstream)
        self._pending[key] = self._pending.get(key, 0) + count.calls
        PAID_CALLS.labels(self._labels.of(count.tenant), count.upstream).inc(count.calls)

    def refused(self, tenant: str, upstream: str) -> None:
        """Count a call refused for the quota."""
        QUOTA_EXCEEDED.labels(self._labels.of(tenant), upstream).inc()

    async def flush(self) -> None:
        """Write the accumulator in one statement; on failure keep it for the next flush."""
        async with self._flush_lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            counts = [UsageCount(*key, calls) for key, calls in batch.items()]
            try:
                with untraced():
                    await self._writer.add(counts)
            except _WRITE_FAILED as exc:
                for key, calls in batch.items():
                    self._pending[key] = self._pending.get(key, 0) + calls
                log.warning(
                    "usage_flush_failed", error_type=type(exc).__name__, pending=self.pending
                )

    def publish(self) -> None:
        """Refresh ``paid_quota_use_ratio`` (today's keys only) and forget past days."""
        today = utc_day(self._clock())
        ratios: dict[str, float] = {}
        for key_id, (label, day, used, quota) in list(self._use.items()):
            if day != today:
                del self._use[key_id]
                continue
            ratio = used / quota if quota > 0 else 1.0
            ratios[label] = max(ratios.get(label, 0.0), ratio)
        for label in self._published - ratios.keys():
            PAID_QUOTA_USE_RATIO.labels(label).set(0)
        for label, ratio in ratios.items():
            PAID_QUOTA_USE_RATIO.labels(label).set(ratio)
        self._published |= ratios.keys()
        for local in [k for k in self._local if k[1] < today]:
            del self._local[local]

    # --- lifecycle --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[UsageRecorder]:
        """Flush every ``flush_s`` in the background; on exit, flush what is left (the drain).

        The background task is stopped between two flushes, never cancelled in the middle of
        one (a write cut short could neither be kept nor be known to be lost).
        """
        stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._loop(stop))
        try:
            yield self
        finally:
            stop.set()
            await task
            await self.flush()
            if self._pending:
                log.error("usage_lost_at_exit", calls=self.pending)

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._flush_s)
            try:
                await self.flush()
                self.publish()
            except Exception as exc:  # a bug must not stop the flushes for good
                log.error("usage_flush_loop_failed", error_type=type(exc).__name__)
