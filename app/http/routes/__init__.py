"""HTTP controllers of the v1 contract."""

from __future__ import annotations

from typing import Any, TypeAlias

from litestar import Request
from litestar.di import NamedDependency

from domain.keys import grants
from domain.pipeline import Enricher

__all__ = ["API_KEY_SECURITY", "READ_OR_ENRICH", "EnricherDep", "may_spend"]

# Handlers declare `enricher: EnricherDep`; the app provides it (app.main.provide_enricher).
EnricherDep: TypeAlias = NamedDependency[Enricher]

# Either header carries the API key (see the security schemes in app.main.openapi_config).
API_KEY_SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]


# The scope note of reads that are answered from stored data for `read` and may fetch (a paid
# upstream call) for `enrich` (docs/security.md, "Scopes per operation").
READ_OR_ENRICH = (
    "With only the `read` scope the answer comes from stored data (no paid upstream call, no "
    "write; 404 when nothing is stored, saying the `enrich` scope would fetch it); with `enrich` "
    "a miss is fetched from the upstream and stored."
)


def may_spend(request: Request[Any, Any, Any]) -> bool:
    """Whether the request's API key may make paid upstream calls (the ``enrich`` scope)."""
    scopes = request.scope.get("state", {}).get("scopes") or ()
    return grants(scopes, "enrich")
