"""The Work API proxy's use case: read-through of Work API bodies, verbatim.

``/work/modules/all`` (the full dossier of a CPF, the hot path) and ``/work/modules/{module}``:
the shared, integrity-checked cache first (unless the ``use_dossier_cache`` flag is off, ADR
0007), else one Work API call shared by concurrent misses, which fills the cache. Soft errors are
never answered as data nor cached: "not found" is :class:`~domain.errors.NotFound`, an unknown
module :class:`~domain.errors.InvalidInput`, anything else propagates (502).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from domain.audit import Auditor
from domain.documents import normalize_cpf
from domain.errors import InvalidInput, NotFound, UpstreamSoftError
from domain.flags import Flag
from domain.subjects import refuse_erased

if TYPE_CHECKING:
    from domain.admission import Prefetched
    from domain.ports import DossierCache, ErasureHolds, Flags, WorkApiPort
    from domain.singleflight import SingleFlight

__all__ = ["NOT_CACHED", "WorkModules"]

# A miss for a key without the ``enrich`` scope (docs/security.md): a cached body is free, a
# Work API call is not.
NOT_CACHED: Final = (
    "Not in the cache; a key with the 'enrich' scope would fetch it from the Work API"
)


def _documento(raw: str) -> str:
    text = raw.strip()
    if not text:
        raise InvalidInput("documento", "Missing 'documento' parameter")
    return text


class WorkModules:
    """Work API bodies through the shared cache.

    Args:
        work_api: The Work API.
        cache: The shared dossier cache.
        flags: Runtime flags (``use_dossier_cache``).
        single_flight: Shared with the pipeline, so that a proxy miss and a pipeline miss of one
            CPF cost one Work API call.
        erasure_holds: Erasure tombstones: a miss of a CPF erased on request is refused (451)
            during the hold, before any Work API call (a cache hit never asks).
        audit: Records each CPF answered (``work_module``; in memory, no await: the cached
            read is the hot path). ``None``: nothing recorded.
    """

    __slots__ = ("_audit", "_cache", "_flags", "_holds", "_single_flight", "_work_api")

    def __init__(
        self,
        *,
        work_api: WorkApiPort,
        cache: DossierCache,
        flags: Flags,
        single_flight: SingleFlight,
        erasure_holds: ErasureHolds | None = None,
        audit: Auditor | None = None,
    ) -> None:
        self._audit = audit if audit is not None else Auditor.disabled()
        self._work_api = work_api
        self._cache = cache
        self._flags = flags
        self._single_flight = single_flight
        self._holds = erasure_holds

    def read_ahead(self, documento: str) -> str | None:
        """The cache key ``all_modules(documento)`` will read, to prefetch during admission
        (:class:`domain.ports.HotRead`); ``None`` when nothing should be read (no valid CPF: the
        call answers the error itself; cache flag off)."""
        if not self._flags.enabled(Flag.USE_DOSSIER_CACHE):
            return None
        try:
            return f"cpf:{normalize_cpf(documento)}"
        except InvalidInput:
            return None

    async def all_modules(
        self, documento: str, prefetched: Prefetched | None = None, *, may_fetch: bool = True
    ) -> bytes:
        """The full Work API dossier (``modulo=cpf``) of a CPF, as the Work API answered it.

        Args:
            documento: The CPF, as the client sent it.
            prefetched: The cache entry read during admission, if any.
            may_fetch: Whether a miss may call the Work API (a paid call: the ``enrich`` scope).
                Without it a cached body is still answered (not paid for), a miss is
                :class:`NotFound` with :data:`NOT_CACHED`.

        Raises:
            InvalidInput: Not a CPF.
            NotFound: The Work API has no data for it (or a miss without ``may_fetch``).
        """
        cpf = normalize_cpf(_documento(documento))
        return await self._read_through(f"cpf:{cpf}", "cpf", cpf, prefetched, may_fetch)

    async def module(self, module: str, documento: str, *, may_fetch: bool = True) -> bytes:
        """One Work API module (``cep``, ``cnpj``...) for a document, verbatim.

        Raises:
            InvalidInput: Empty document, an invalid CPF for ``cpf``, or an unknown module.
            NotFound: The Work API has no data for it (or a miss without ``may_fetch``).
        """
        query = _documento(documento)
        if module == "cpf":
            query = normalize_cpf(query)
            key = f"cpf:{query}"
        else:
            key = f"module:{module}:{query}"
        return await self._read_through(key, module, query, None, may_fetch)

    async def _read_through(
        self,
        key: str,
        module: str,
        query: str,
        prefetched: Prefetched | None,
        may_fetch: bool,
    ) -> bytes:
        use_cache = self._flags.enabled(Flag.USE_DOSSIER_CACHE)
        # A person's data is read only through the ``cpf`` module: each answer is audited.
        cpf = query if module == "cpf" else None
        if use_cache:
            if prefetched is not None and prefetched.key == key:
                cached = prefetched.body  # already read: a miss is not read twice
            else:
                cached = await self._cache.get(key)
            if cached is not None:
                if cpf is not None:
                    self._audit.record("work_module", cpf)
                return cached
        if not may_fetch:
            raise NotFound(NOT_CACHED)
        if cpf is not None:
            await refuse_erased(self._holds, cpf)
        fetched: list[bool] = []

        async def fetch() -> bytes:
            body = await self._work_api.fetch_module(module, query)
            fetched.append(True)
            return body

        try:
            # A miss: concurrent misses of one key share one Work API call (and fill the cache).
            body = await self._single_flight.load(key, fetch) if use_cache else await fetch()
        except UpstreamSoftError as exc:
            if exc.kind == "not_found":
                raise NotFound("No data for this document") from None
            if exc.kind == "unknown_module":
                raise InvalidInput("module", "The Work API has no such module") from None
            raise
        if cpf is not None:
            # Paid only for the caller whose fetch ran (the others shared its answer).
            self._audit.record("work_module", cpf, upstreams=("work_api",) if fetched else ())
        return body
