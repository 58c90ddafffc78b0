"""Verification of API keys against their store, through a short per-process cache.

Keys are checked by their SHA-256 digest (``docs/adr/0006-api-keys.md``). The cache holds positive
and negative entries alike, keyed by the digest, with a TTL of ``API_KEY_CACHE_TTL_S`` (default
2 s, at most 5 s): a cached lookup costs no round trip, and a revocation is effective everywhere
within the TTL because every worker's entry expires by then.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

import structlog

from domain.errors import DependencyUnavailable
from domain.keys import ApiKey, key_status

if TYPE_CHECKING:
    from collections.abc import Callable
    from uuid import UUID

__all__ = [
    "DEFAULT_CACHE_TTL_S",
    "DEFAULT_MAX_CONCURRENT_LOOKUPS",
    "DEFAULT_MAX_ENTRIES",
    "MAX_CACHE_TTL_S",
    "RETRY_AFTER_S",
    "TOUCH_INTERVAL_S",
    "KeyLookup",
    "KeyVerifier",
    "LookupDeclined",
    "Principal",
]

log = structlog.get_logger(__name__)

DEFAULT_CACHE_TTL_S: Final = 2.0
# The revocation promise: a revoked key stops working within 5 s on every worker.
MAX_CACHE_TTL_S: Final = 5.0
# Bounded per kind, so a flood of random keys (negative entries) cannot evict the valid ones.
DEFAULT_MAX_ENTRIES: Final = 10_000
# Key lookups in flight per process: every random key is a cache miss, so a flood of them would
# otherwise take every pooled connection from the requests that carry data.
DEFAULT_MAX_CONCURRENT_LOOKUPS: Final = 4
TOUCH_INTERVAL_S: Final = 60.0
RETRY_AFTER_S: Final = 1


class KeyLookup(Protocol):
    """What the verifier needs from a key store (:class:`infra.db.keys.PgApiKeyStore`)."""

    async def find_by_hash(self, digest: bytes) -> ApiKey | None:
        """The key with this digest, whatever its state, or ``None``."""
        ...

    async def touch(self, key_id: UUID) -> None:
        """Record a use of the key."""
        ...


class LookupDeclined(Exception):
    """The verifier's ``admit`` check declined a store look-up (the client got blocked)."""


class _Declined:
    """Marker: a look-up declined by its ``admit`` check."""


_DECLINED: Final = _Declined()


class Principal:
    """A verified key, as the request path needs it (precomputed once per cache fill).

    Attributes:
        key_id: The key's UUID.
        key_id_text: The same as text (the rate-limit identity, ``scope["state"]["api_key_id"]``).
        tenant: The tenant the key acts for.
        scopes: Granted scopes.
        usable_until: Epoch seconds of the key's expiry (``inf`` when it has none).
        paid_quota: The key's daily paid-call quota, or ``None`` for no quota.
    """

    __slots__ = ("key_id", "key_id_text", "paid_quota", "scopes", "tenant", "usable_until")

    def __init__(self, key: ApiKey) -> None:
        self.key_id = key.id
        self.key_id_text = str(key.id)
        self.tenant = key.tenant
        self.scopes: tuple[str, ...] = key.scopes
        self.usable_until = key.expires_at.timestamp() if key.expires_at else math.inf
        self.paid_quota = key.paid_quota_daily


class KeyVerifier:
    """Checks key digests against a store through a short per-process cache.

    Args:
        store: Where keys are looked up (and their use recorded).
        ttl_s: Lifetime of a cache entry; clamped to (0, 5] seconds.
        max_entries: Capacity of the positive and of the negative cache, each.
        max_concurrent_lookups: Store lookups in flight at most (the rest wait their turn).
    """

    __slots__ = (
        "_inflight",
        "_lookups",
        "_max_entries",
        "_negative",
        "_positive",
        "_tasks",
        "_touched",
        "store",
        "ttl_s",
    )

    def __init__(
        self,
        store: KeyLookup,
        *,
        ttl_s: float = DEFAULT_CACHE_TTL_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_concurrent_lookups: int = DEFAULT_MAX_CONCURRENT_LOOKUPS,
    ) -> None:
        self.store = store
        self._lookups = asyncio.Semaphore(max(1, max_concurrent_lookups))
        self.ttl_s = min(max(ttl_s, 0.001), MAX_CACHE_TTL_S)
        self._max_entries = max(1, max_entries)
        # digest -> (monotonic deadline, principal); insertion order = age, oldest evicted first.
        self._positive: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()
        self._negative: OrderedDict[bytes, float] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Task[Principal | _Declined | None]] = {}
        self._touched: dict[UUID, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def cached_entries(self) -> int:
        """How many digests are cached (positive and negative)."""
        return len(self._positive) + len(self._negative)

    def cached(self, digest: bytes) -> Principal | None:
        """The principal of a usable key found in the positive cache, else ``None`` (no I/O)."""
        hit = self._positive.get(digest)
        if hit is None or hit[0] <= time.monotonic():
            return None
        principal = hit[1]
        return principal if time.time() < principal.usable_until else None

    async def verify(
        self, digest: bytes, admit: Callable[[], bool] | None = None
    ) -> Principal | None:
        """Return the principal of a usable key, or ``None`` (unknown, revoked or expired).

        Args:
            digest: SHA-256 of the presented key.
            admit: Asked when a store look-up gets its turn (look-ups queue, a few at a time);
                false declines it. Requests of a client that got blocked while they queued then
                cost no look-up.

        Raises:
            DependencyUnavailable: The key is not cached and the store cannot answer.
            LookupDeclined: ``admit`` declined the look-up.
        """
        now = time.monotonic()
        hit = self._positive.get(digest)
        if hit is not None and hit[0] > now:
            cached = hit[1]
            # Expiry is checked on every use, so a cached key stops at its expires_at exactly.
            return cached if time.time() < cached.usable_until else None
        deadline = self._negative.get(digest)
        if deadline is not None and deadline > now:
            return None
        task = self._inflight.get(digest)
        if task is None:
            # One lookup per digest at a time: a burst of requests with a key that just left
            # the cache costs one round trip, not one each.
            task = asyncio.get_running_loop().create_task(self._load(digest, admit))
            self._inflight[digest] = task
            task.add_done_callback(lambda _t: self._inflight.pop(digest, None))
        result = await asyncio.shield(task)
        if isinstance(result, _Declined):
            if admit is not None and not admit():
                raise LookupDeclined
            # Declined for another request sharing the look-up: look it up for this one.
            result = await self._load(digest, admit)
            if isinstance(result, _Declined):
                raise LookupDeclined
        if result is not None and time.time() >= result.usable_until:
            return None
        return result

    async def _load(
        self, digest: bytes, admit: Callable[[], bool] | None = None
    ) -> Principal | _Declined | None:
        try:
            async with self._lookups:
                if admit is not None and not admit():
                    return _DECLINED
                key = await self.store.find_by_hash(digest)
        except DependencyUnavailable:
            raise
        except Exception as exc:  # auth fails closed: any store failure is "cannot verify now"
            log.error("api_key_lookup_failed", error_type=type(exc).__name__)
            raise DependencyUnavailable(
                "postgres", "API key store unavailable", retry_after=RETRY_AFTER_S
            ) from exc
        deadline = time.monotonic() + self.ttl_s
        if key is None or key_status(key, datetime.now(UTC)) != "active":
            _put(self._negative, digest, deadline, self._max_entries)
            self._positive.pop(digest, None)
            return None
        principal = Principal(key)
        _put(self._positive, digest, (deadline, principal), self._max_entries)
        self._negative.pop(digest, None)
        return principal

    def forget(self) -> None:
        """Drop every cached entry (tests, or an operator forcing an immediate revocation)."""
        self._positive.clear()
        self._negative.clear()

    def record_use(self, principal: Principal) -> None:
        """Update the key's ``last_used_at`` off the request path, at most once a minute.

        Fire-and-forget: the write runs in a background task whose errors are swallowed, so a
        slow or failing database never delays or fails a request for bookkeeping.
        """
        now = time.monotonic()
        last = self._touched.get(principal.key_id)
        if last is not None and now - last < TOUCH_INTERVAL_S:
            return
        if len(self._touched) >= self._max_entries:
            self._touched.clear()  # worst case one extra (throttled in SQL too) write per key
        self._touched[principal.key_id] = now
        task = asyncio.get_running_loop().create_task(self._touch(principal.key_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _touch(self, key_id: UUID) -> None:
        try:
            await self.store.touch(key_id)
        except Exception as exc:  # bookkeeping only: never surfaces
            log.debug("api_key_touch_failed", error_type=type(exc).__name__)

    async def drain(self) -> None:
        """Wait for pending ``last_used_at`` writes (call before closing the pool)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _put(
    cache: OrderedDict[bytes, Any], digest: bytes, value: Any, limit: int
) -> None:  # Any: either cache's value type
    cache[digest] = value
    cache.move_to_end(digest)
    while len(cache) > limit:
        cache.popitem(last=False)
