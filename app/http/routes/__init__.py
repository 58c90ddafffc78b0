"""HTTP controllers of the v1 contract.

Handlers receive their collaborators by Litestar dependency injection: ``app.main`` provides
each name below from the process's one :class:`app.bootstrap.Services` (ADR 0008). They are
the process's own objects, so Litestar does not validate them (``SkipValidation``).
"""

from __future__ import annotations

from typing import TypeAlias

from litestar.di import NamedDependency
from litestar.params import SkipValidation

from app.bootstrap import Services
from app.config import Settings
from domain.admission import Prefetched
from domain.pipeline import Enricher
from domain.webhooks import WebhookIntake
from domain.work_modules import WorkModules
from infra.db.events import PgGoogleLeadClaims
from infra.flags import FlagStore

__all__ = [
    "API_KEY_SECURITY",
    "ClaimsDep",
    "EnricherDep",
    "FlagStoreDep",
    "PrefetchedDep",
    "ServicesDep",
    "SettingsDep",
    "WebhookIntakeDep",
    "WorkModulesDep",
]

# Handlers declare `enricher: EnricherDep` and so on; the parameter name is the dependency's.
EnricherDep: TypeAlias = NamedDependency[SkipValidation[Enricher]]
WorkModulesDep: TypeAlias = NamedDependency[SkipValidation[WorkModules]]
# The cache entry the rate limiter read for this request (None: nothing was read).
PrefetchedDep: TypeAlias = NamedDependency[SkipValidation[Prefetched | None]]
ServicesDep: TypeAlias = NamedDependency[SkipValidation[Services]]
SettingsDep: TypeAlias = NamedDependency[SkipValidation[Settings]]
FlagStoreDep: TypeAlias = NamedDependency[SkipValidation[FlagStore]]
WebhookIntakeDep: TypeAlias = NamedDependency[SkipValidation[WebhookIntake]]
ClaimsDep: TypeAlias = NamedDependency[SkipValidation[PgGoogleLeadClaims]]

# Either header carries the API key (see the security schemes in app.main.openapi_config).
API_KEY_SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]
