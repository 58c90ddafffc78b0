"""Work API proxy: ``/work/modules/all`` (the cached hot path) and ``/work/modules/{module}``.

The upstream body is answered verbatim (stored bytes are served without decoding and
re-encoding). Soft errors are never answered as data nor cached: a "not found" is a 404, an
exhausted/expired account a 502.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs

from litestar import Controller, Request, Response, get
from litestar.params import PathParameter, QueryParameter

from app.http.problems import problem_responses
from app.http.routes import API_KEY_SECURITY, READ_OR_ENRICH, EnricherDep, may_spend
from domain.documents import normalize_cpf
from domain.errors import InvalidInput
from domain.work_modules import fetch_work_module, work_module_key

if TYPE_CHECKING:
    from litestar.types import Scope

    from infra.cache import RedisDossierCache

__all__ = ["WorkController"]

_MODULE = re.compile(r"^[a-z]{2,20}$")
_DOCUMENT = re.compile(r"^[A-Za-z0-9@._+-][A-Za-z0-9@._+ -]{0,119}$")
Documento = Annotated[
    str,
    QueryParameter(
        pattern=_DOCUMENT.pattern, max_length=120, description="CPF, CEP or the module's key"
    ),
]
Module = Annotated[
    str, PathParameter(pattern=_MODULE.pattern, description="Work API module (cep, cnpj...)")
]


def _documento(raw: str) -> str:
    if not raw.strip():
        raise InvalidInput("documento", "Missing 'documento' parameter")
    return raw.strip()


def _prefetch_dossier(scope: Scope) -> str:
    """The Redis key of ``/all``'s cached dossier, read in the rate limiter's round trip.

    Returns ``""`` (nothing to prefetch) when the query has no valid CPF: the handler then
    answers the 400 itself.
    """
    values = parse_qs(scope["query_string"].decode("latin-1")).get("documento")
    if not values:
        return ""
    try:
        cpf = normalize_cpf(values[0])
    except InvalidInput:
        return ""
    cache: RedisDossierCache = scope["app"].state.dossier_cache
    return cache.key(f"cpf:{cpf}")


def _from_prefetch(request: Request[Any, Any, Any], key: str) -> bytes | None:
    """The verified cached body if the middleware already read it, else ``None``."""
    prefetched = request.scope.get("state", {}).get("prefetched")
    if prefetched is None:
        return None
    cache: RedisDossierCache = request.app.state.dossier_cache
    name, sealed = prefetched
    if name != cache.key(key):
        return None
    return cache.verify(name, sealed)


class WorkController(Controller):
    """Proxy to the Work API data broker, with the shared integrity-checked cache."""

    path = "/api/v1/work/modules"
    tags = ["work-api"]  # noqa: RUF012 - Litestar reads class attributes
    security = API_KEY_SECURITY

    @get(
        "/all",
        operation_id="getWorkModulesAll",
        summary="The full Work API dossier (modulo=cpf) for a CPF, cached for an hour",
        responses=problem_responses(400, 401, 403, 404, 429, 502, 503),
        # A cached dossier is not paid for: `read` is answered from the cache, a miss needs
        # `enrich` (docs/security.md, "Scopes per operation").
        opt={"scope": "read", "scope_note": READ_OR_ENRICH, "cache_prefetch": _prefetch_dossier},
        response_description="The Work API body, verbatim",
    )
    async def all_modules(
        self, enricher: EnricherDep, request: Request[Any, Any, Any], documento: Documento
    ) -> Response[bytes]:
        cpf = normalize_cpf(_documento(documento))
        raw = await fetch_work_module(
            enricher,
            "cpf",
            cpf,
            prefetched=_from_prefetch(request, work_module_key("cpf", cpf)),
            cache_read="prefetched" in request.scope.get("state", {}),
            may_fetch=may_spend(request),
        )
        return Response(raw, media_type="application/json")

    @get(
        "/{module:str}",
        operation_id="getWorkModule",
        summary="One Work API module (cep, cnpj, ...) for a document, cached for an hour",
        responses=problem_responses(400, 401, 403, 404, 429, 502, 503),
        opt={"scope": "read", "scope_note": READ_OR_ENRICH},
        response_description="The Work API body, verbatim",
    )
    async def module(
        self,
        enricher: EnricherDep,
        request: Request[Any, Any, Any],
        module: Module,
        documento: Documento,
    ) -> Response[bytes]:
        query = _documento(documento)
        if module == "cpf":
            query = normalize_cpf(query)
        raw = await fetch_work_module(enricher, module, query, may_fetch=may_spend(request))
        return Response(raw, media_type="application/json")
