"""Redis side of a subject erasure: :class:`domain.ports.SubjectCaches` (``domain/subjects.py``).

What Redis may hold about a person, and how each is found (key names are keyed digests, so an
entry is found by rebuilding its name, never by its content, except the contact cache's scan):

* the dossier cache entry ``cpf:<cpf>`` (the Work API body, in clear behind its HMAC), and each
  process's in-memory copy of it (:meth:`infra.cache.RedisDossierCache.forget` publishes the
  invalidation, ADR 0010);
* contact -> CPF answers (candidates in clear): those of the person's stored e-mails and phones
  by name, then a ``SCAN`` of the contact cache for any other entry naming the CPF (a contact
  of a lead that resolved to the person); one pass over that cache per erasure;
* recent-CPF marks (no personal data in them, but they make the pipeline reuse a dossier), per
  tenant;
* lead replays (AES-GCM sealed answers naming the CPF) of the leads enriched for the person, per
  tenant.

``Idempotency-Key`` records (AES-GCM sealed responses, at most ``IDEMPOTENCY_TTL_S``) are keyed by
tenant and client key, not findable by person: they expire on their own. A Redis failure leaves
an entry to its TTL (at most ``CONTACT_CACHE_TTL_S``); it is logged, never an error: the
PostgreSQL erasure, the durable one, is already committed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import structlog

from infra.redisclient import REDIS_ERRORS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from domain.subjects import ErasedData
    from infra.cache import KeySpace, RedisDossierCache
    from infra.locks import RedisLeadLocks, RedisRecentCpfs
    from infra.redisclient import RedisClient

__all__ = ["SCAN_COUNT", "RedisSubjectCaches"]

log = structlog.get_logger(__name__)

SCAN_COUNT: Final = 1000
_ABSORBED: tuple[type[BaseException], ...] = REDIS_ERRORS


class RedisSubjectCaches:
    """Forget a person in Redis.

    Args:
        client: The Redis client.
        keys: The key space of the caches (prefix and salt).
        prefix: ``REDIS_KEY_PREFIX`` (the contact cache is scanned under it).
        dossiers: The dossier cache (and its in-memory copies).
        lead_locks: Lead locks and replays (their key names).
        recent: Recent-CPF marks (their key names).
    """

    def __init__(
        self,
        client: RedisClient,
        keys: KeySpace,
        prefix: str,
        *,
        dossiers: RedisDossierCache,
        lead_locks: RedisLeadLocks,
        recent: RedisRecentCpfs,
    ) -> None:
        self._client = client
        self._keys = keys
        self._prefix = prefix
        self._dossiers = dossiers
        self._lead_locks = lead_locks
        self._recent = recent

    def names(self, cpf: str, erased: ErasedData) -> list[str]:
        """The key names that may hold the person's data (besides the dossier entry)."""
        names = [self._keys.key("cc", f"email:{email}") for email in erased.emails]
        names += [self._keys.key("cc", f"phone:{phone}") for phone in erased.phones]
        for tenant in erased.tenants:
            names.append(self._recent.name_of(tenant, cpf))
            names += [self._lead_locks.names(tenant, lead)[1] for lead in erased.lead_ids]
        return names

    async def forget(self, cpf: str, erased: ErasedData) -> int:
        removed = await self._dossiers.forget(f"cpf:{cpf}")
        try:
            removed += await self._delete(self.names(cpf, erased))
            removed += await self._scan_contacts(cpf)
        except _ABSORBED as exc:
            log.warning("subject_cache_forget_failed", error_type=type(exc).__name__)
        return removed

    async def _delete(self, names: Sequence[str | bytes]) -> int:
        if not names:
            return 0
        # One DEL per key in one pipeline: the names live in different cluster slots.
        async with self._client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.delete(name)
            replies = await pipe.execute()
        return sum(int(reply) for reply in replies)

    async def _scan_contacts(self, cpf: str) -> int:
        """Delete every contact -> CPF answer whose candidates name ``cpf`` (every node of a
        cluster is scanned: ``scan_iter`` walks each master in turn)."""
        removed = 0
        batch: list[bytes] = []
        async for name in self._client.scan_iter(match=f"{self._prefix}cc:*", count=SCAN_COUNT):
            batch.append(name)
            if len(batch) >= SCAN_COUNT:
                removed += await self._forget_naming(cpf, batch)
                batch = []
        if batch:
            removed += await self._forget_naming(cpf, batch)
        return removed

    async def _forget_naming(self, cpf: str, names: list[bytes]) -> int:
        """Delete those of ``names`` whose value names ``cpf``."""
        needle = cpf.encode()
        async with self._client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.get(name)
            values = await pipe.execute()
        naming = [
            name for name, value in zip(names, values, strict=True) if value and needle in value
        ]
        return await self._delete(naming)
