"""The Work API proxy use case (``docs/contract.md`` §1.8): a module's body, verbatim, cached.

Soft errors are never answered as data nor cached: a "not found" is :class:`NotFound`, an unknown
module :class:`InvalidInput`, anything else (an exhausted or expired account) propagates as the
:class:`~domain.errors.UpstreamSoftError` it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from domain.errors import InvalidInput, NotFound, UpstreamSoftError
from domain.flags import Flag

if TYPE_CHECKING:
    from domain.pipeline import Enricher

__all__ = ["NOT_CACHED", "fetch_work_module", "work_module_key"]

# A miss for a key without the ``enrich`` scope (docs/security.md): a cached body is free, a
# Work API call is not.
NOT_CACHED: Final = (
    "Not in the cache; a key with the 'enrich' scope would fetch it from the Work API"
)


def work_module_key(module: str, query: str) -> str:
    """The cache key of a module's body: ``cpf:<cpf>`` for dossiers, ``module:<m>:<q>`` else."""
    return f"cpf:{query}" if module == "cpf" else f"module:{module}:{query}"


async def fetch_work_module(
    enricher: Enricher,
    module: str,
    query: str,
    *,
    prefetched: bytes | None = None,
    cache_read: bool = False,
    may_fetch: bool = True,
) -> bytes:
    """The Work API body of ``modulo=module&consulta=query``, from the shared cache when it may.

    With the ``use_dossier_cache`` flag on, a cached body is answered without any upstream call,
    and concurrent misses of one key share one Work API call (which fills the cache); with it off,
    the Work API is asked every time.

    Args:
        enricher: The pipeline (its cache, Work API port and single-flight).
        module: The Work API module (``cpf``, ``cep``...).
        query: The document, normalised by the caller.
        prefetched: The verified cached body, when the caller already read the cache.
        cache_read: The caller already read the cache (``prefetched`` ``None`` then is a miss).
        may_fetch: Whether a miss may call the Work API (a paid call: the ``enrich`` scope).
            Without it a cached body is still answered (not paid for), a miss is
            :class:`NotFound` with :data:`NOT_CACHED`.

    Raises:
        NotFound: The Work API has no data for the document.
        InvalidInput: ``field="module"``: the Work API has no such module.
        UpstreamError: Any other upstream failure, soft errors included.
        DependencyUnavailable: The Work API is down.
    """
    key = work_module_key(module, query)
    use_cache = enricher.flags.enabled(Flag.USE_DOSSIER_CACHE)
    if use_cache:
        cached = prefetched
        if cached is None and not cache_read:
            cached = await enricher.dossier_cache.get(key)
        if cached is not None:
            return cached
    if not may_fetch:
        raise NotFound(NOT_CACHED)

    async def fetch() -> bytes:
        return await enricher.work_api.fetch_module(module, query)

    try:
        return await enricher.single_flight.load(key, fetch) if use_cache else await fetch()
    except UpstreamSoftError as exc:
        if exc.kind == "not_found":
            raise NotFound("No data for this document") from None
        if exc.kind == "unknown_module":
            raise InvalidInput("module", "The Work API has no such module") from None
        raise
