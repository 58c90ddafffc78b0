"""Work API proxy: ``/work/modules/all`` (the cached hot path) and ``/work/modules/{module}``.

The upstream body is answered verbatim (stored bytes are served without decoding and
re-encoding); the read-through itself is :class:`domain.work_modules.WorkModules`. On ``/all``
the admission reads the cached dossier once the request is admitted (route
``opt["read_ahead"]``, ADR 0009); the handler takes it from the request scope
(``prefetched_of``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated
from urllib.parse import parse_qs

from litestar import Controller, Response, get
from litestar.params import PathParameter, QueryParameter
from litestar.types import Scope

from app.http.middleware.ratelimit import prefetched_of
from app.http.problems import problem_responses
from app.http.routes import (
    API_KEY_SECURITY,
    READ_OR_ENRICH,
    WorkModulesDep,
    may_spend,
)

if TYPE_CHECKING:
    from app.bootstrap import Services

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


def _read_ahead_dossier(scope: Scope, services: Services) -> str | None:
    """The dossier-cache key ``/all`` will read, fetched by the admission."""
    values = parse_qs(scope["query_string"].decode("latin-1")).get("documento")
    return services.work_modules.read_ahead(values[0]) if values else None


class WorkController(Controller):
    """Proxy to the Work API data broker, with the shared integrity-checked cache."""

    path = "/api/v1/work/modules"
    tags = ["work-api"]  # noqa: RUF012 - Litestar reads class attributes
    security = API_KEY_SECURITY

    @get(
        "/all",
        operation_id="getWorkModulesAll",
        summary="The full Work API dossier (modulo=cpf) for a CPF, cached for an hour",
        responses=problem_responses(400, 401, 403, 404, 429, 451, 502, 503),
        # A cached dossier is not paid for: `read` is answered from the cache, a miss needs
        # `enrich` (docs/security.md, "Scopes per operation").
        opt={"scope": "read", "scope_note": READ_OR_ENRICH, "read_ahead": _read_ahead_dossier},
        response_description="The Work API body, verbatim",
    )
    async def all_modules(
        self,
        work_modules: WorkModulesDep,
        scope: Scope,
        documento: Documento,
    ) -> Response[bytes]:
        # The prefetched entry is read from the scope, not injected: a handler with two
        # dependencies makes Litestar resolve them in an anyio task group on every request
        # (~100 us of CPU on this path); one dependency is awaited directly.
        prefetched = prefetched_of(scope)
        raw = await work_modules.all_modules(documento, prefetched, may_fetch=may_spend(scope))
        return Response(raw, media_type="application/json")

    @get(
        "/{module:str}",
        operation_id="getWorkModule",
        summary="One Work API module (cep, cnpj, ...) for a document, cached for an hour",
        responses=problem_responses(400, 401, 403, 404, 429, 451, 502, 503),
        opt={"scope": "read", "scope_note": READ_OR_ENRICH},
        response_description="The Work API body, verbatim",
    )
    async def module(
        self,
        work_modules: WorkModulesDep,
        scope: Scope,
        module: Module,
        documento: Documento,
    ) -> Response[bytes]:
        raw = await work_modules.module(module, documento, may_fetch=may_spend(scope))
        return Response(raw, media_type="application/json")
