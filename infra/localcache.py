"""This process's copy of hot dossier-cache entries, kept true by an invalidation channel.

:class:`LocalDossierCache` sits in front of Redis inside :class:`infra.cache.RedisDossierCache`:
a hit answers the verified body from memory (no Redis round trip, no HMAC check), a miss reads
Redis and keeps what it read. It is an LRU bounded by bytes and by entries; an entry never
outlives its Redis TTL.

Cross-process truth (ADR 0010): every write of a dossier publishes the entry's key name (a keyed
digest, never a CPF) on one pub/sub channel; each process's listener drops that entry. The
listener also pings through its subscription every quarter of ``stale_bound_s``; Redis answers a
ping on the subscriber connection after every message published before it, so a pong proves
that every rewrite published before the ping was seen. Memory is served only while the last
acknowledged ping was sent within ``stale_bound_s``: a lost, slow or killed subscription makes
the cache fall through to Redis within that bound, and every (re)subscription empties it (what
was published while nobody listened is unknown).

A read that started before an invalidation must not put back what it read: fills carry the
:attr:`LocalDossierCache.epoch` seen before the Redis read, and any invalidation, clear or local
write in between makes the fill a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError

from infra.redisclient import REDIS_ERRORS, subscribe_command, subscriber
from observability.tracing import untraced

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from infra.redisclient import RedisClient

__all__ = ["ENTRY_OVERHEAD_BYTES", "LocalCacheListener", "LocalDossierCache"]

log = structlog.get_logger(__name__)

ENTRY_OVERHEAD_BYTES = 240
"""What one entry costs besides its body: key string, tuple, LRU node and dict slot (CPython
3.11, measured); counted against the byte bound so small bodies cannot overrun it."""

_ABSORBED: tuple[type[BaseException], ...] = REDIS_ERRORS


class LocalCacheListener(Protocol):
    """Receives the local cache's size and events (the app wires Prometheus here)."""

    def held(self, entries: int, nbytes: int) -> None:
        """The cache now holds ``entries`` entries costing ``nbytes`` bytes."""
        ...

    def evicted(self, reason: str, count: int) -> None:
        """``count`` entries left for ``reason``: ``size`` (LRU) or ``expired``."""
        ...

    def invalidated(self, reason: str, count: int) -> None:
        """``count`` entries dropped for ``reason``: ``message`` (a rewrite elsewhere) or
        ``reset`` (a (re)subscription emptied the cache)."""
        ...

    def serving(self, active: bool) -> None:
        """Whether memory may answer (the invalidation channel is confirmed live)."""
        ...


class _NullListener:
    def held(self, entries: int, nbytes: int) -> None:
        return None

    def evicted(self, reason: str, count: int) -> None:
        return None

    def invalidated(self, reason: str, count: int) -> None:
        return None

    def serving(self, active: bool) -> None:
        return None


class LocalDossierCache:
    """A bytes- and entry-bounded LRU of verified bodies, served only while invalidations flow.

    Args:
        client: The Redis client (the listener takes one connection of its pool).
        channel: The invalidation channel (shared by every process of one key prefix).
        max_bytes: Bodies plus :data:`ENTRY_OVERHEAD_BYTES` per entry, at most.
        max_entries: Entries, at most.
        stale_bound_s: How long after a rewrite elsewhere this process may still answer the old
            body, at most.
        listener: Metrics.
        clock: Monotonic seconds (tests pass a fake).
    """

    __slots__ = (
        "_bytes",
        "_channel",
        "_client",
        "_clock",
        "_confirmed_at",
        "_entries",
        "_listener",
        "_message_type",
        "_serving",
        "_stopping",
        "_task",
        "epoch",
        "max_bytes",
        "max_entries",
        "origin",
        "stale_bound_s",
    )

    def __init__(
        self,
        client: RedisClient,
        channel: str,
        *,
        max_bytes: int,
        max_entries: int,
        stale_bound_s: float,
        listener: LocalCacheListener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._channel = channel
        self.origin = secrets.token_hex(8).encode()
        """This process's writer id in invalidation messages; its own are skipped."""
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.stale_bound_s = stale_bound_s
        self._listener: LocalCacheListener = listener or _NullListener()
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0
        self.epoch = 0
        # Monotonic time of the last acknowledged ping's sending; -inf: not confirmed yet.
        self._confirmed_at = float("-inf")
        self._serving = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._message_type = "message"

    # --- the store ---------------------------------------------------------------------------

    @property
    def nbytes(self) -> int:
        """Bytes held (bodies plus per-entry overhead)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def serving(self) -> bool:
        """Whether memory may answer now: the channel was confirmed within the stale bound."""
        return self._clock() - self._confirmed_at <= self.stale_bound_s

    def get(self, name: str) -> bytes | None:
        """The body held under key name ``name`` if fresh (whether or not :meth:`serving`)."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        body, expires_at = entry
        if expires_at <= self._clock():
            self._remove(name)
            self._listener.evicted("expired", 1)
            self._publish_size()
            return None
        self._entries.move_to_end(name)
        return body

    def get_with_life(self, name: str) -> tuple[bytes, float] | None:
        """:meth:`get`, with the seconds the entry has left (its age is the TTL it was written
        with minus that)."""
        body = self.get(name)
        if body is None:
            return None
        return body, self._entries[name][1] - self._clock()

    def fill(self, name: str, body: bytes, ttl_s: float, epoch: int) -> bool:
        """Keep ``body`` read from Redis (``ttl_s`` left there) unless anything was invalidated
        since ``epoch`` was read; ``True`` if kept."""
        if epoch != self.epoch or ttl_s <= 0:
            return False
        return self._store(name, body, self._clock() + ttl_s)

    def write(self, name: str, body: bytes, ttl_s: float) -> None:
        """This process rewrote ``name``: hold the new body; reads in flight keep nothing."""
        self.epoch += 1
        self._store(name, body, self._clock() + ttl_s)

    def invalidate(self, name: str) -> bool:
        """Drop ``name`` (rewritten elsewhere); reads in flight keep nothing."""
        self.epoch += 1
        if name not in self._entries:
            return False
        self._remove(name)
        self._publish_size()
        return True

    def clear(self) -> int:
        """Drop everything; reads in flight keep nothing. Returns how many entries went."""
        self.epoch += 1
        count = len(self._entries)
        self._entries.clear()
        self._bytes = 0
        self._publish_size()
        return count

    def _store(self, name: str, body: bytes, expires_at: float) -> bool:
        size = len(body) + ENTRY_OVERHEAD_BYTES
        if name in self._entries:
            self._remove(name)
        if size > self.max_bytes or self.max_entries <= 0:
            self._publish_size()
            return False
        self._entries[name] = (body, expires_at)
        self._bytes += size
        evicted = 0
        while self._bytes > self.max_bytes or len(self._entries) > self.max_entries:
            _, (old, _expiry) = self._entries.popitem(last=False)
            self._bytes -= len(old) + ENTRY_OVERHEAD_BYTES
            evicted += 1
        if evicted:
            self._listener.evicted("size", evicted)
        self._publish_size()
        return True

    def _remove(self, name: str) -> None:
        body, _ = self._entries.pop(name)
        self._bytes -= len(body) + ENTRY_OVERHEAD_BYTES

    def _publish_size(self) -> None:
        self._listener.held(len(self._entries), self._bytes)

    # --- the invalidation channel -----------------------------------------------------------

    def _on_message(self, data: bytes) -> None:
        origin, _, name = data.partition(b" ")
        if origin == self.origin:
            return  # our own write: memory already holds the new body
        if self.invalidate(name.decode()):
            self._listener.invalidated("message", 1)

    def _on_subscribed(self) -> None:
        # Whatever was published while nobody listened is unknown: start empty.
        dropped = self.clear()
        if dropped:
            self._listener.invalidated("reset", dropped)

    def _set_serving(self, active: bool) -> None:
        if active != self._serving:
            self._serving = active
            self._listener.serving(active)
            log.info("dossier_local_cache_serving", active=active)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LocalDossierCache]:
        """Listen for invalidations in a background task until exit."""
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._listen())
        try:
            yield self
        finally:
            task, self._task = self._task, None
            # The flag as well as the cancellation: redis-py may turn a cancelled read into a
            # timeout, which the listener would take for a lost channel and retry.
            self._stopping = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._confirmed_at = float("-inf")
            self._set_serving(False)
            self.clear()

    async def _listen(self) -> None:
        backoff = 0.05
        # In a Redis Cluster the channel is sharded: the listener subscribes on the master of
        # the channel's slot, where every SPUBLISH of it is served (infra.redisclient).
        subscribe, self._message_type = subscribe_command(self._client)
        lost = False
        while not self._stopping:
            client: Any = None
            pubsub: Any = None  # Any: redis-py's PubSub is partly untyped
            try:
                # A background task of no request: not traced (a root trace per ping otherwise).
                with untraced():
                    client = await subscriber(self._client, self._channel, refresh=lost)
                    pubsub = client.pubsub()
                    await getattr(pubsub, subscribe)(self._channel)
                    backoff = 0.05
                    await self._pump(pubsub)
            except _ABSORBED as exc:
                log.warning("dossier_local_cache_channel_lost", error_type=type(exc).__name__)
            except Exception as exc:  # a bug must not leave memory serving without a listener
                log.error("dossier_local_cache_listener_failed", error_type=type(exc).__name__)
            finally:
                lost = True
                self._confirmed_at = float("-inf")
                self._set_serving(False)
                with contextlib.suppress(*_ABSORBED, RuntimeError):
                    if pubsub is not None:
                        await pubsub.aclose()
                    if client is not None and client is not self._client:
                        await client.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max(self.stale_bound_s, 1.0))

    async def _pump(self, pubsub: Any) -> None:  # Any: redis-py's PubSub is untyped
        interval = self.stale_bound_s / 4
        pending: dict[bytes, float] = {}  # ping token -> monotonic time it was sent
        sequence = 0
        next_ping = self._clock()
        while not self._stopping:
            now = self._clock()
            if now >= next_ping:
                if pending and now - min(pending.values()) > 3 * self.stale_bound_s:
                    raise TimeoutError("invalidation channel: no pong")
                sequence += 1
                token = b"dcache-%d" % sequence
                pending[token] = now
                await pubsub.ping(token)
                next_ping = now + interval
            message = await pubsub.get_message(timeout=max(0.0, next_ping - self._clock()))
            if message is None:
                self._set_serving(self.serving())
                continue
            kind = message["type"]
            if kind == self._message_type:
                self._on_message(message["data"])
            elif kind == "pong":
                sent = pending.pop(message["data"], None)
                if sent is not None:
                    self._confirmed_at = max(self._confirmed_at, sent)
                    for token in [t for t, at in pending.items() if at < sent]:
                        del pending[token]  # lost with a dropped connection
                self._set_serving(self.serving())
            elif kind == "sunsubscribe":
                # The cluster moved the channel's slot (a failover): subscribe again there.
                raise RedisConnectionError("invalidation channel: slot moved")
            elif kind in ("subscribe", "ssubscribe"):
                # First subscription, or redis-py reconnected and subscribed again by itself.
                self._on_subscribed()
