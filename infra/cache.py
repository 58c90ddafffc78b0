"""Shared state in Redis: dossier cache, contact -> CPF cache, lead locks, recent CPFs.

So that N workers on M machines behave as one. Every identifier in a key name is a keyed digest
(no raw CPF or e-mail sits in Redis key space). The dossier cache stores an HMAC-SHA256 envelope
with a key id; a tampered or unverifiable entry is a miss, logged and counted.

Failure mode: Redis errors never fail a request. Cache reads become misses and writes are
dropped (counted as ``error``); lead locks and recent-CPF marks fall back to this process's
memory, which keeps the dedup guarantee per process while Redis is away.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from domain.models import CpfCandidate, LeadLockState

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "CacheListener",
    "HmacEnvelope",
    "KeySpace",
    "RedisContactCpfCache",
    "RedisDossierCache",
    "RedisLeadLocks",
    "RedisRecentCpfs",
]

log = structlog.get_logger(__name__)

# Redis failures the adapters absorb: connection/timeouts and the breaker's open state.
_ABSORBED: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


class CacheListener(Protocol):
    """Receives cache outcomes (the app wires Prometheus counters here)."""

    def record(self, cache: str, result: str) -> None:
        """``result`` is ``hit``, ``miss``, ``integrity_failure`` or ``error``."""
        ...


class _NullListener:
    def record(self, cache: str, result: str) -> None:
        return None


class KeySpace:
    """Builds Redis key names: ``<prefix><kind>:<keyed digest of the identifier>``."""

    __slots__ = ("_prefix", "_salt")

    def __init__(self, prefix: str, salt: bytes) -> None:
        self._prefix = prefix
        self._salt = salt[:64]

    def key(self, kind: str, identifier: str) -> str:
        """The key for ``identifier`` under ``kind``; stable across processes with one salt."""
        digest = hashlib.blake2b(identifier.encode(), key=self._salt, digest_size=16).hexdigest()
        return f"{self._prefix}{kind}:{digest}"


class HmacEnvelope:
    """``<kid>.<hex hmac>.<payload>`` with HMAC-SHA256 over the Redis key and the payload.

    Binding the key name into the MAC stops a valid entry being copied under another key. The
    first key signs; every key verifies, so a rotation is: add the new key second, deploy,
    swap the order, deploy, remove the old one.
    """

    __slots__ = ("_current", "_keys")

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("at least one HMAC key is required")
        self._keys = {kid.encode(): secret for kid, secret in keys}
        self._current = keys[0][0].encode()

    def _mac(self, secret: bytes, name: str, payload: bytes) -> bytes:
        mac = hmac.new(secret, name.encode(), hashlib.sha256)
        mac.update(b"\x00")
        mac.update(payload)
        return mac.hexdigest().encode()

    def seal(self, name: str, payload: bytes) -> bytes:
        """Wrap ``payload`` for storage under ``name``."""
        mac = self._mac(self._keys[self._current], name, payload)
        return b"".join((self._current, b".", mac, b".", payload))

    def open(self, name: str, sealed: bytes) -> bytes | None:
        """Return the payload if the envelope verifies under any known key, else ``None``."""
        kid, sep1, rest = sealed.partition(b".")
        mac, sep2, payload = rest.partition(b".")
        secret = self._keys.get(kid)
        if not sep1 or not sep2 or secret is None:
            return None
        if not hmac.compare_digest(mac, self._mac(secret, name, payload)):
            return None
        return payload


class RedisDossierCache:
    """Work API bodies (dossiers and module answers), integrity-protected."""

    name = "work_api"

    def __init__(
        self,
        client: aioredis.Redis,
        keys: KeySpace,
        envelope: HmacEnvelope,
        ttl_s: int,
        listener: CacheListener | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._envelope = envelope
        self._ttl_s = ttl_s
        self._listener = listener or _NullListener()

    def key(self, key: str) -> str:
        """The Redis key name for a cache key (exposed for the one-round-trip hot path)."""
        return self._keys.key("wa", key)

    def verify(self, name: str, sealed: bytes | None) -> bytes | None:
        """Open a sealed entry read elsewhere (e.g. in a pipeline), counting the outcome."""
        if sealed is None:
            self._listener.record(self.name, "miss")
            return None
        payload = self._envelope.open(name, sealed)
        if payload is None:
            self._listener.record(self.name, "integrity_failure")
            log.warning("cache_integrity_failure", cache=self.name)
            return None
        self._listener.record(self.name, "hit")
        return payload

    async def get(self, key: str) -> bytes | None:
        name = self.key(key)
        try:
            sealed = await self._client.get(name)
        except _ABSORBED:
            self._listener.record(self.name, "error")
            return None
        return self.verify(name, sealed.encode() if isinstance(sealed, str) else sealed)

    async def put(self, key: str, raw: bytes) -> None:
        name = self.key(key)
        try:
            await self._client.set(name, self._envelope.seal(name, raw), ex=self._ttl_s)
        except _ABSORBED:
            self._listener.record(self.name, "error")


_CANDIDATES = msgspec.json.Decoder(list[CpfCandidate])


class RedisContactCpfCache:
    """Contact -> CPF candidates; an empty answer is cached for a shorter time."""

    name = "contact_cpf"

    def __init__(
        self,
        client: aioredis.Redis,
        keys: KeySpace,
        ttl_s: int,
        negative_ttl_s: int,
        listener: CacheListener | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._listener = listener or _NullListener()

    async def get(self, kind: str, value: str) -> list[CpfCandidate] | None:
        try:
            raw = await self._client.get(self._keys.key("cc", f"{kind}:{value}"))
        except _ABSORBED:
            self._listener.record(self.name, "error")
            return None
        if raw is None:
            self._listener.record(self.name, "miss")
            return None
        try:
            found = _CANDIDATES.decode(raw)
        except msgspec.DecodeError:
            self._listener.record(self.name, "integrity_failure")
            return None
        self._listener.record(self.name, "hit")
        return found

    async def put(self, kind: str, value: str, candidates: Sequence[CpfCandidate]) -> None:
        ttl = self._ttl_s if candidates else self._negative_ttl_s
        try:
            await self._client.set(
                self._keys.key("cc", f"{kind}:{value}"),
                msgspec.json.encode(list(candidates)),
                ex=ttl,
            )
        except _ABSORBED:
            self._listener.record(self.name, "error")


# Take the lock unless a finished answer is waiting; one round trip, atomic.
# KEYS[1] lock, KEYS[2] finished answer; ARGV[1] now (ms), ARGV[2] lock ttl (ms).
# Returns {1} acquired, {0, started_ms} held, {2, answer} finished.
_ACQUIRE = """
local done = redis.call('GET', KEYS[2])
if done then return {2, done} end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1} end
return {0, redis.call('GET', KEYS[1]) or ARGV[1]}
"""


class _LocalLocks:
    """Per-process stand-in used while Redis is unreachable."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.held: OrderedDict[str, float] = OrderedDict()
        self.done: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.capacity = capacity

    def acquire(self, lead_id: str, now: float, lock_ttl: float) -> LeadLockState:
        finished = self.done.get(lead_id)
        if finished is not None and finished[0] > now:
            return LeadLockState(acquired=False, finished=finished[1])
        started = self.held.get(lead_id)
        if started is not None and started + lock_ttl > now:
            return LeadLockState(acquired=False, started_at=started)
        self.held[lead_id] = now
        while len(self.held) > self.capacity:
            self.held.popitem(last=False)
        return LeadLockState(acquired=True)

    def finish(self, lead_id: str, until: float, answer: bytes) -> None:
        self.held.pop(lead_id, None)
        self.done[lead_id] = (until, answer)
        while len(self.done) > self.capacity:
            self.done.popitem(last=False)


class RedisLeadLocks:
    """In-flight lock per lead with a short replay of the finished answer."""

    name = "lead_lock"

    def __init__(
        self,
        client: aioredis.Redis,
        keys: KeySpace,
        lock_ttl_s: int,
        replay_ttl_s: int,
        listener: CacheListener | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._lock_ttl_s = lock_ttl_s
        self._replay_ttl_s = replay_ttl_s
        self._listener = listener or _NullListener()
        self._script = client.register_script(_ACQUIRE)
        self._local = _LocalLocks()

    def _names(self, lead_id: str) -> tuple[str, str]:
        return self._keys.key("lead", lead_id), self._keys.key("leaddone", lead_id)

    async def acquire(self, lead_id: str) -> LeadLockState:
        lock, done = self._names(lead_id)
        now_ms = int(time.time() * 1000)
        try:
            reply = await self._script(keys=[lock, done], args=[now_ms, self._lock_ttl_s * 1000])
        except _ABSORBED:
            self._listener.record(self.name, "error")
            return self._local.acquire(lead_id, now_ms / 1000, self._lock_ttl_s)
        code = int(reply[0])
        if code == 1:
            self._listener.record(self.name, "miss")
            return LeadLockState(acquired=True)
        self._listener.record(self.name, "hit")
        if code == 2:
            return LeadLockState(acquired=False, finished=bytes(reply[1]))
        return LeadLockState(acquired=False, started_at=int(reply[1]) / 1000)

    async def finish(self, lead_id: str, result: bytes) -> None:
        lock, done = self._names(lead_id)
        self._local.finish(lead_id, time.time() + self._replay_ttl_s, result)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(done, result, ex=self._replay_ttl_s)
                pipe.delete(lock)
                await pipe.execute()
        except _ABSORBED:
            self._listener.record(self.name, "error")

    async def abandon(self, lead_id: str) -> None:
        lock, _done = self._names(lead_id)
        self._local.held.pop(lead_id, None)
        try:
            await self._client.delete(lock)
        except _ABSORBED:
            self._listener.record(self.name, "error")


class RedisRecentCpfs:
    """CPFs processed within the last window (default 60 s)."""

    name = "recent_cpf"

    def __init__(
        self,
        client: aioredis.Redis,
        keys: KeySpace,
        ttl_s: int,
        listener: CacheListener | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._ttl_s = ttl_s
        self._listener = listener or _NullListener()
        self._local: OrderedDict[str, float] = OrderedDict()

    async def recent(self, cpfs: Sequence[str]) -> set[str]:
        if not cpfs:
            return set()
        try:
            values = await self._client.mget([self._keys.key("recent", c) for c in cpfs])
        except _ABSORBED:
            self._listener.record(self.name, "error")
            now = time.time()
            return {c for c in cpfs if self._local.get(c, 0.0) > now}
        found = {cpf for cpf, value in zip(cpfs, values, strict=True) if value is not None}
        for cpf in cpfs:
            self._listener.record(self.name, "hit" if cpf in found else "miss")
        return found

    async def mark(self, cpfs: Sequence[str]) -> None:
        until = time.time() + self._ttl_s
        for cpf in cpfs:
            self._local[cpf] = until
            self._local.move_to_end(cpf)
        while len(self._local) > 10_000:
            self._local.popitem(last=False)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for cpf in cpfs:
                    pipe.set(self._keys.key("recent", cpf), b"1", ex=self._ttl_s)
                await pipe.execute()
        except _ABSORBED:
            self._listener.record(self.name, "error")
