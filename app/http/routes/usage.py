"""``GET /api/v1/usage``: a tenant's paid upstream calls per day, key and upstream.

Any key of the tenant with the ``read`` scope (or ``admin``) sees its own tenant's usage, every
key of it, and never another tenant's: the tenant is the authenticated key's
(:data:`domain.tenancy.current_tenant`), not a parameter (docs/security.md, "Usage and quotas").
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from litestar import Controller, get
from litestar.params import QueryParameter

from app.http.problems import problem_responses
from app.http.routes import API_KEY_SECURITY, UsageReportsDep
from domain.errors import Unauthorized
from domain.tenancy import current_tenant
from domain.usage import UsageReport

__all__ = ["UsageController"]

FromDay = Annotated[
    dt.date | None,
    QueryParameter(
        name="from",
        description="First UTC day (YYYY-MM-DD), default the first day of the current month",
    ),
]
ToDay = Annotated[
    dt.date | None,
    QueryParameter(description="Last UTC day (YYYY-MM-DD, included), default today"),
]


class UsageController(Controller):
    """Usage reports of the key's own tenant."""

    path = "/api/v1/usage"
    tags = ["usage"]  # noqa: RUF012 - Litestar reads class attributes
    security = API_KEY_SECURITY

    @get(
        operation_id="getUsage",
        summary="Paid upstream calls of the key's tenant per UTC day, key and upstream, totals",
        responses=problem_responses(400, 401, 403, 429, 503),
        opt={"scope": "read"},
    )
    async def usage(
        self, usage_reports: UsageReportsDep, from_: FromDay = None, to: ToDay = None
    ) -> UsageReport:
        tenant = current_tenant.get()
        if tenant is None:  # pragma: no cover - the auth middleware always sets it
            raise Unauthorized("No API key")
        return await usage_reports.report(tenant, from_, to)
