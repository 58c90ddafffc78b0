"""Shared locks and marks in Redis: the in-flight lock and short replay of a lead, recent CPFs (a
dossier bought a moment ago is not bought again), and the fill locks that make a cache miss one
Work API call across processes.

Failure mode: Redis errors never fail a request; locks and marks fall back to this process's
memory, which keeps the dedup guarantee per process while Redis is away. Lead locks, replays and
recent-CPF marks belong to the tenant of the request (the tenant is part of every key name); keys
one Lua script touches together share a ``{hash tag}`` (one Redis Cluster slot). Lead replays are
encrypted (:class:`infra.sealing.AeadEnvelope`): they carry CPFs and contacts.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import structlog

from domain.models import LeadLockState
from domain.tenancy import current_tenant
from infra.cache import NullCacheListener
from infra.redisclient import REDIS_ERRORS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from infra.cache import CacheListener, KeySpace
    from infra.redisclient import RedisClient
    from infra.sealing import AeadEnvelope

__all__ = ["RedisFillLocks", "RedisLeadLocks", "RedisRecentCpfs"]

log = structlog.get_logger(__name__)

# Redis failures the adapters absorb: connection/timeouts and the breaker's open state.
_ABSORBED: tuple[type[BaseException], ...] = REDIS_ERRORS


def _tenant() -> str:
    """The tenant of the current request (``""`` outside one: CLI, worker, tests)."""
    return current_tenant.get() or ""


def _scoped(tenant: str, identifier: str) -> str:
    return f"{tenant}\x00{identifier}"


# Take the lock unless a finished answer is waiting; one round trip, atomic.
# KEYS[1] lock, KEYS[2] finished answer (one hash tag: one slot); ARGV[1] now (ms), ARGV[2] lock
# ttl (ms). Returns {1} acquired, {0, started_ms} held, {2, answer} finished.
_ACQUIRE = """
local done = redis.call('GET', KEYS[2])
if done then return {2, done} end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1} end
return {0, redis.call('GET', KEYS[1]) or ARGV[1]}
"""


# Store the finished answer and free the lock; one round trip. KEYS[1] lock, KEYS[2] finished
# answer (one hash tag: one slot); ARGV[1] the sealed answer, ARGV[2] its ttl (s).
_FINISH = """
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
return redis.call('DEL', KEYS[1])
"""


class _LocalLocks:
    """Per-process stand-in used while Redis is unreachable (keyed by tenant and lead)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.held: OrderedDict[str, float] = OrderedDict()
        self.done: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.capacity = capacity

    def acquire(self, ident: str, now: float, lock_ttl: float) -> LeadLockState:
        finished = self.done.get(ident)
        if finished is not None and finished[0] > now:
            return LeadLockState(acquired=False, finished=finished[1])
        started = self.held.get(ident)
        if started is not None and started + lock_ttl > now:
            return LeadLockState(acquired=False, started_at=started)
        self.held[ident] = now
        while len(self.held) > self.capacity:
            self.held.popitem(last=False)
        return LeadLockState(acquired=True)

    def finish(self, ident: str, until: float, answer: bytes) -> None:
        self.held.pop(ident, None)
        self.done[ident] = (until, answer)
        while len(self.done) > self.capacity:
            self.done.popitem(last=False)


class RedisLeadLocks:
    """In-flight lock per tenant and lead with a short, encrypted replay of the finished answer.

    Keys: ``<prefix>lead:{<digest of tenant and lead>}`` (the lock) and ``...:done`` (the replay),
    one hash tag so the acquire and finish scripts touch one slot.
    """

    name = "lead_lock"

    def __init__(
        self,
        client: RedisClient,
        keys: KeySpace,
        envelope: AeadEnvelope,
        lock_ttl_s: int,
        replay_ttl_s: int,
        listener: CacheListener | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._envelope = envelope
        self._lock_ttl_s = lock_ttl_s
        self._replay_ttl_s = replay_ttl_s
        self._listener = listener or NullCacheListener()
        self._script = client.register_script(_ACQUIRE)
        self._finish = client.register_script(_FINISH)
        self._local = _LocalLocks()

    def names(self, tenant: str, lead_id: str) -> tuple[str, str]:
        """The lock and replay key names of ``lead_id`` for ``tenant``."""
        ident = _scoped(tenant, lead_id)
        return self._keys.tagged("lead", ident), self._keys.tagged("lead", ident, ":done")

    async def acquire(self, lead_id: str) -> LeadLockState:
        tenant = _tenant()
        lock, done = self.names(tenant, lead_id)
        now_ms = int(time.time() * 1000)
        for _ in range(2):
            try:
                reply = await self._script(
                    keys=[lock, done], args=[now_ms, self._lock_ttl_s * 1000]
                )
            except _ABSORBED:
                self._listener.record(self.name, "error")
                return self._local.acquire(
                    _scoped(tenant, lead_id), now_ms / 1000, self._lock_ttl_s
                )
            code = int(reply[0])
            if code == 1:
                self._listener.record(self.name, "miss")
                return LeadLockState(acquired=True)
            if code == 0:
                self._listener.record(self.name, "hit")
                return LeadLockState(acquired=False, started_at=int(reply[1]) / 1000)
            answer = self._envelope.open(done, bytes(reply[1]))
            if answer is not None:
                self._listener.record(self.name, "hit")
                return LeadLockState(acquired=False, finished=answer)
            # Tampered, or sealed under a retired key: no replay; forget it and try again.
            self._listener.record(self.name, "integrity_failure")
            log.warning("cache_integrity_failure", cache=self.name)
            try:
                await self._client.delete(done)
            except _ABSORBED:
                self._listener.record(self.name, "error")
        return LeadLockState(acquired=False, started_at=now_ms / 1000)

    async def finish(self, lead_id: str, result: bytes) -> None:
        tenant = _tenant()
        lock, done = self.names(tenant, lead_id)
        self._local.finish(_scoped(tenant, lead_id), time.time() + self._replay_ttl_s, result)
        try:
            await self._finish(
                keys=[lock, done], args=[self._envelope.seal(done, result), self._replay_ttl_s]
            )
        except _ABSORBED:
            self._listener.record(self.name, "error")

    async def abandon(self, lead_id: str) -> None:
        tenant = _tenant()
        lock, _done = self.names(tenant, lead_id)
        self._local.held.pop(_scoped(tenant, lead_id), None)
        try:
            await self._client.delete(lock)
        except _ABSORBED:
            self._listener.record(self.name, "error")


# Mark CPFs as recent; one round trip for any number. KEYS the marks (one tenant's: one slot);
# ARGV[1] their ttl (s).
_MARK = """
for _, key in ipairs(KEYS) do redis.call('SET', key, '1', 'EX', ARGV[1]) end
return #KEYS
"""


class RedisRecentCpfs:
    """CPFs a tenant processed within the last window (default 60 s).

    Keys: ``<prefix>recent:{<digest of tenant>}:<digest of tenant and CPF>``; one tenant's marks
    share a slot, so the ``MGET`` and the marking script of a lead's CPFs stay single-slot.
    """

    name = "recent_cpf"

    def __init__(
        self,
        client: RedisClient,
        keys: KeySpace,
        ttl_s: int,
        listener: CacheListener | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._ttl_s = ttl_s
        self._listener = listener or NullCacheListener()
        self._local: OrderedDict[str, float] = OrderedDict()
        self._mark = client.register_script(_MARK)

    def name_of(self, tenant: str, cpf: str) -> str:
        """The key name of ``cpf``'s mark for ``tenant``."""
        suffix = ":" + self._keys.digest(_scoped(tenant, cpf))
        return self._keys.tagged("recent", tenant, suffix)

    async def recent(self, cpfs: Sequence[str]) -> set[str]:
        if not cpfs:
            return set()
        tenant = _tenant()
        try:
            values = await self._client.mget([self.name_of(tenant, c) for c in cpfs])
        except _ABSORBED:
            self._listener.record(self.name, "error")
            now = time.time()
            return {c for c in cpfs if self._local.get(_scoped(tenant, c), 0.0) > now}
        found = {cpf for cpf, value in zip(cpfs, values, strict=True) if value is not None}
        for cpf in cpfs:
            self._listener.record(self.name, "hit" if cpf in found else "miss")
        return found

    async def mark(self, cpfs: Sequence[str]) -> None:
        tenant = _tenant()
        until = time.time() + self._ttl_s
        for cpf in cpfs:
            ident = _scoped(tenant, cpf)
            self._local[ident] = until
            self._local.move_to_end(ident)
        while len(self._local) > 10_000:
            self._local.popitem(last=False)
        if not cpfs:
            return
        try:
            await self._mark(keys=[self.name_of(tenant, c) for c in cpfs], args=[self._ttl_s])
        except _ABSORBED:
            self._listener.record(self.name, "error")


# Delete the lock only if it is still ours. KEYS[1] lock; ARGV[1] our token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisFillLocks:
    """Short cross-process locks on filling one cache key (single-flight across processes).

    ``<prefix>fill:{<digest of the cache key>}`` holds a random token for ``ttl_s``: long enough
    for a live holder's upstream call, short enough that a dead holder's lock frees itself. A
    Redis failure grants the lock (the caller then calls the upstream itself, as without it).
    """

    name = "fill_lock"

    def __init__(
        self,
        client: RedisClient,
        keys: KeySpace,
        ttl_s: float,
        listener: CacheListener | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._listener = listener or NullCacheListener()
        self._release = client.register_script(_RELEASE)
        self._tokens: dict[str, bytes] = {}

    def name_of(self, key: str) -> str:
        """The lock's key name for cache key ``key``."""
        return self._keys.tagged("fill", key)

    async def acquire(self, key: str) -> bool:
        token = secrets.token_hex(16).encode()
        try:
            taken = await self._client.set(self.name_of(key), token, nx=True, px=self._ttl_ms)
        except _ABSORBED:
            self._listener.record(self.name, "error")
            return True
        if not taken:
            self._listener.record(self.name, "hit")
            return False
        self._listener.record(self.name, "miss")
        self._tokens[key] = token
        return True

    async def release(self, key: str) -> None:
        token = self._tokens.pop(key, None)
        if token is None:
            return
        try:
            await self._release(keys=[self.name_of(key)], args=[token])
        except _ABSORBED:
            self._listener.record(self.name, "error")
