"""HTTP controllers of the v1 contract.

Handlers receive their collaborators by Litestar dependency injection: ``app.main`` provides
each name below from the process's one :class:`app.bootstrap.Services` (ADR 0008). They are
the process's own objects, so Litestar does not validate them (``SkipValidation``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from litestar.di import NamedDependency
from litestar.params import SkipValidation

from app.bootstrap import Services
from app.config import Settings
from domain.bulk import BulkJobs
from domain.keys import grants
from domain.pipeline import Enricher
from domain.ports import FlagAdmin, JobAdmin
from domain.subjects import SubjectRights
from domain.usage import UsageReports
from domain.webhooks import GoogleAdsIntake, WebhookIntake
from domain.work_modules import WorkModules

if TYPE_CHECKING:
    from litestar.types import Scope

__all__ = [
    "API_KEY_SECURITY",
    "READ_OR_ENRICH",
    "BulkJobsDep",
    "EnricherDep",
    "FlagStoreDep",
    "GoogleAdsDep",
    "JobAdminDep",
    "ServicesDep",
    "SettingsDep",
    "SubjectRightsDep",
    "UsageReportsDep",
    "WebhookIntakeDep",
    "WorkModulesDep",
    "may_spend",
]

# Handlers declare `enricher: EnricherDep` and so on; the parameter name is the dependency's.
EnricherDep: TypeAlias = NamedDependency[SkipValidation[Enricher]]
WorkModulesDep: TypeAlias = NamedDependency[SkipValidation[WorkModules]]
# The cache entry the rate limiter read for this request (None: nothing was read).
ServicesDep: TypeAlias = NamedDependency[SkipValidation[Services]]
SettingsDep: TypeAlias = NamedDependency[SkipValidation[Settings]]
FlagStoreDep: TypeAlias = NamedDependency[SkipValidation[FlagAdmin]]
WebhookIntakeDep: TypeAlias = NamedDependency[SkipValidation[WebhookIntake]]
JobAdminDep: TypeAlias = NamedDependency[SkipValidation[JobAdmin]]
GoogleAdsDep: TypeAlias = NamedDependency[SkipValidation[GoogleAdsIntake]]
SubjectRightsDep: TypeAlias = NamedDependency[SkipValidation[SubjectRights]]
UsageReportsDep: TypeAlias = NamedDependency[SkipValidation[UsageReports]]
BulkJobsDep: TypeAlias = NamedDependency[SkipValidation[BulkJobs]]

# Either header carries the API key (see the security schemes in app.main.openapi_config).
API_KEY_SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]


# The scope note of reads that are answered from stored data for `read` and may fetch (a paid
# upstream call) for `enrich` (docs/security.md, "Scopes per operation").
READ_OR_ENRICH = (
    "With only the `read` scope the answer comes from stored data (no paid upstream call, no "
    "write; 404 when nothing is stored, saying the `enrich` scope would fetch it); with `enrich` "
    "a miss is fetched from the upstream and stored."
)


def may_spend(scope: Scope) -> bool:
    """Whether the request's API key may make paid upstream calls (the ``enrich`` scope)."""
    scopes = scope.get("state", {}).get("scopes") or ()
    return grants(scopes, "enrich")
