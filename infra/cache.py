"""Shared caches in Redis: the dossier cache and the contact -> CPF cache (the lead locks, recent
CPFs and fill locks are in :mod:`infra.locks`).

So that N workers on M machines behave as one. Every identifier in a key name is a keyed digest
(no raw CPF or e-mail sits in Redis key space). The dossier cache stores an HMAC-SHA256 envelope
with a key id; a tampered or unverifiable entry is a miss, logged and counted.

Failure mode: Redis errors never fail a request. Cache reads become misses and writes are
dropped (counted as ``error``); lead locks and recent-CPF marks fall back to this process's
memory, which keeps the dedup guarantee per process while Redis is away.

Tenancy: lead locks, lead replays and recent-CPF marks belong to the tenant of the request
(:data:`domain.tenancy.current_tenant`, set from the verified API key); the tenant is part of every
such key name, so one tenant's answer or dedup state never reaches another. Keys one Lua script
touches together share a ``{hash tag}`` (one Redis Cluster slot). Lead replays are encrypted
(:class:`infra.sealing.AeadEnvelope`): they carry CPFs and contacts.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import msgspec
import structlog

from domain.models import CpfCandidate
from infra.redisclient import REDIS_ERRORS, is_cluster, mget, publish

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from infra.localcache import LocalDossierCache
    from infra.redisclient import RedisClient

__all__ = [
    "CacheListener",
    "HmacEnvelope",
    "KeySpace",
    "NullCacheListener",
    "RedisContactCpfCache",
    "RedisDossierCache",
]

log = structlog.get_logger(__name__)

_In = TypeVar("_In")
_Out = TypeVar("_Out")

# Redis failures the adapters absorb: connection/timeouts and the breaker's open state.
_ABSORBED: tuple[type[BaseException], ...] = REDIS_ERRORS


class CacheListener(Protocol):
    """Receives cache outcomes (the app wires Prometheus counters here)."""

    def record(self, cache: str, result: str) -> None:
        """``result`` is ``hit``, ``hit_local`` (this process's memory), ``miss``,
        ``integrity_failure`` or ``error``."""
        ...


class NullCacheListener:
    """Records nothing (an adapter built without metrics)."""

    def record(self, cache: str, result: str) -> None:
        return None


class KeySpace:
    """Builds Redis key names: ``<prefix><kind>:<keyed digest of the identifier>``."""

    __slots__ = ("_prefix", "_salt")

    def __init__(self, prefix: str, salt: bytes) -> None:
        self._prefix = prefix
        self._salt = salt[:64]

    def digest(self, identifier: str) -> str:
        """The keyed digest of ``identifier`` (hex); stable across processes with one salt."""
        return hashlib.blake2b(identifier.encode(), key=self._salt, digest_size=16).hexdigest()

    def key(self, kind: str, identifier: str) -> str:
        """The key for ``identifier`` under ``kind``; stable across processes with one salt."""
        return f"{self._prefix}{kind}:{self.digest(identifier)}"

    def tagged(self, kind: str, identifier: str, suffix: str = "") -> str:
        """``<prefix><kind>:{<digest>}<suffix>``: keys built from one identifier share a slot."""
        return f"{self._prefix}{kind}:{{{self.digest(identifier)}}}{suffix}"


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


# The entry and its remaining life (ms) in one call, for the local copy's expiry.
# KEYS[1] the entry. Returns nil (no entry) or {value, pttl}.
_READ_WITH_TTL = """
local value = redis.call('GET', KEYS[1])
if not value then return false end
return {value, redis.call('PTTL', KEYS[1])}
"""


class RedisDossierCache:
    """Work API bodies (dossiers and module answers), integrity-protected.

    With ``local`` (:class:`infra.localcache.LocalDossierCache`), hot entries are answered from
    this process's memory (counted as ``hit_local``) while its invalidation channel is live; a
    miss there reads Redis (entry and remaining TTL in one call) and keeps the verified body.
    With ``channel``, every write also publishes the entry's key name there, in the same round
    trip, so other processes drop their copy (ADR 0010); a process without a local copy still
    publishes.
    """

    name = "work_api"

    def __init__(
        self,
        client: RedisClient,
        keys: KeySpace,
        envelope: HmacEnvelope,
        ttl_s: int,
        listener: CacheListener | None = None,
        *,
        channel: str | None = None,
        local: LocalDossierCache | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._envelope = envelope
        self._ttl_s = ttl_s
        self._listener = listener or NullCacheListener()
        self._channel = channel
        self._local = local
        self._origin = local.origin if local is not None else secrets.token_hex(8).encode()
        self._read_with_ttl = client.register_script(_READ_WITH_TTL)

    @property
    def origin(self) -> bytes:
        """This writer's id in invalidation messages (its own listener skips them)."""
        return self._origin

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
        local = self._local
        if local is not None:
            return await self._get_through(local, name)
        try:
            sealed = await self._client.get(name)
        except _ABSORBED:
            self._listener.record(self.name, "error")
            return None
        return self.verify(name, sealed.encode() if isinstance(sealed, str) else sealed)

    async def _get_through(self, local: LocalDossierCache, name: str) -> bytes | None:
        if local.serving():
            body = local.get(name)
            if body is not None:
                self._listener.record(self.name, "hit_local")
                return body
        epoch = local.epoch
        entry = await self._read_entry(name)
        if entry is None:
            return None
        payload = self.verify(name, entry[0])
        if payload is not None and entry[1] > 0:
            local.fill(name, payload, entry[1], epoch)
        return payload

    async def get_fresh(self, key: str, max_age_s: float) -> bytes | None:
        """The body of ``key`` if written at most ``max_age_s`` ago, else ``None``.

        Every entry is written with this cache's TTL, so its age is that TTL minus the life it
        has left (in this process's memory, or ``PTTL`` in Redis, read with the value in one
        call). An entry with more life than the TTL (written under a longer
        ``WORK_API_CACHE_TTL_S``) or none has no known age: a miss.
        """
        name = self.key(key)
        local = self._local
        if local is not None and local.serving():
            held = local.get_with_life(name)
            if held is not None and self._young(held[1], max_age_s):
                self._listener.record(self.name, "hit_local")
                return held[0]
        entry = await self._read_entry(name)
        if entry is None:
            return None
        if not self._young(entry[1], max_age_s):
            self._listener.record(self.name, "miss")
            return None
        return self.verify(name, entry[0])

    async def _read_entry(self, name: str) -> tuple[bytes, float] | None:
        """The sealed entry of ``name`` in Redis and its life left (s), read in one call;
        ``None`` when it is absent (a miss) or Redis failed (an error), both counted."""
        try:
            reply = await self._read_with_ttl(keys=[name])
        except _ABSORBED:
            self._listener.record(self.name, "error")
            return None
        if reply is None:
            self.verify(name, None)
            return None
        sealed, pttl_ms = reply
        return bytes(sealed), int(pttl_ms) / 1000

    def _young(self, life_s: float, max_age_s: float) -> bool:
        """Whether an entry with ``life_s`` seconds left is at most ``max_age_s`` old."""
        return 0 < life_s <= self._ttl_s and self._ttl_s - life_s <= max_age_s

    async def put(self, key: str, raw: bytes) -> None:
        name = self.key(key)
        if self._local is not None:
            self._local.write(name, raw, self._ttl_s)
        sealed = self._envelope.seal(name, raw)
        try:
            if self._channel is None:
                await self._client.set(name, sealed, ex=self._ttl_s)
                return
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.set(name, sealed, ex=self._ttl_s)
                message = self._origin + b" " + name.encode()
                publish(pipe, self._channel, message, cluster=is_cluster(self._client))
                await pipe.execute()
        except _ABSORBED:
            self._listener.record(self.name, "error")

    async def forget(self, key: str) -> int:
        """Drop ``key`` from Redis and from every process's memory (a subject erasure).

        This process's copy goes at once; the others drop theirs on the invalidation message,
        published in the same round trip as the delete. Returns the Redis entries removed (0
        when Redis failed: the entry then expires with its TTL).
        """
        name = self.key(key)
        if self._local is not None:
            self._local.invalidate(name)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.delete(name)
                if self._channel is not None:
                    pipe.publish(self._channel, self._origin + b" " + name.encode())
                replies = await pipe.execute()
        except _ABSORBED:
            self._listener.record(self.name, "error")
            return 0
        return int(replies[0])


_CANDIDATES = msgspec.json.Decoder(list[CpfCandidate])


_Waiting = tuple[_In, "asyncio.Future[_Out]"]


class _SameTurnBatch(Generic[_In, _Out]):
    """Commands issued in one turn of the event loop, sent together in ONE round trip.

    A lead's phone and e-mail lookups read (and later write) the contact cache at the same
    moment, and so do concurrent leads: each command joins the batch the first one opened, and
    the batch is sent when the loop next runs ready work. ``send`` answers one result per item,
    in order. A failure reaches every caller of the batch, as it would have reached each one.
    """

    __slots__ = ("_pending", "_send", "_tasks")

    def __init__(self, send: Callable[[list[_In]], Awaitable[Sequence[_Out]]]) -> None:
        self._send = send
        # The open batch and its loop (a batch left by a loop that closed is never joined).
        self._pending: tuple[asyncio.AbstractEventLoop, list[_Waiting[_In, _Out]]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, item: _In) -> _Out:
        loop = asyncio.get_running_loop()
        pending = self._pending
        if pending is None or pending[0] is not loop:
            pending = self._pending = (loop, [])
            task = loop.create_task(self._flush(pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        waiter: asyncio.Future[_Out] = loop.create_future()
        pending[1].append((item, waiter))
        return await waiter

    async def _flush(
        self, pending: tuple[asyncio.AbstractEventLoop, list[_Waiting[_In, _Out]]]
    ) -> None:
        if self._pending is pending:
            self._pending = None
        batch = pending[1]
        try:
            results = await self._send([item for item, _waiter in batch])
        except Exception as exc:
            for _item, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        except BaseException:
            for _item, waiter in batch:
                waiter.cancel()
            raise
        for (_item, waiter), result in zip(batch, results, strict=True):
            if not waiter.done():
                waiter.set_result(result)


class RedisContactCpfCache:
    """Contact -> CPF candidates; an empty answer is cached for a shorter time.

    Reads made together (a lead's phone and e-mail, concurrent leads) share one ``MGET``, and
    writes made together one pipeline.
    """

    name = "contact_cpf"

    def __init__(
        self,
        client: RedisClient,
        keys: KeySpace,
        ttl_s: int,
        negative_ttl_s: int,
        listener: CacheListener | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._listener = listener or NullCacheListener()
        self._gets: _SameTurnBatch[str, bytes | None] = _SameTurnBatch(self._mget)
        self._sets: _SameTurnBatch[tuple[str, bytes, int], object] = _SameTurnBatch(self._set_all)

    async def _mget(self, names: list[str]) -> list[bytes | None]:
        values = await mget(self._client, names)
        return [v.encode() if isinstance(v, str) else v for v in values]

    async def _set_all(self, entries: list[tuple[str, bytes, int]]) -> list[object]:
        async with self._client.pipeline(transaction=False) as pipe:
            for name, payload, ttl in entries:
                pipe.set(name, payload, ex=ttl)
            return await pipe.execute()

    async def get(self, kind: str, value: str) -> list[CpfCandidate] | None:
        try:
            raw = await self._gets.run(self._keys.key("cc", f"{kind}:{value}"))
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
            name = self._keys.key("cc", f"{kind}:{value}")
            await self._sets.run((name, msgspec.json.encode(list(candidates)), ttl))
        except _ABSORBED:
            self._listener.record(self.name, "error")
