"""HTTP controllers of the v1 contract."""

from __future__ import annotations

from typing import TypeAlias

from litestar.di import NamedDependency

from domain.pipeline import Enricher

__all__ = ["API_KEY_SECURITY", "EnricherDep"]

# Handlers declare `enricher: EnricherDep`; the app provides it (app.main.provide_enricher).
EnricherDep: TypeAlias = NamedDependency[Enricher]

# Either header carries the API key (see the security schemes in app.main.openapi_config).
API_KEY_SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]
