"""Bulk enrichment jobs: ``/api/v1/enrich/jobs`` (submit, view, results, cancel).

Thin: the rules are ``domain/bulk`` (:class:`~domain.bulk.BulkJobs`); every operation is scoped
to the API key's tenant (another tenant's job is 404). The submission body may be larger than
other bodies (``BULK_MAX_BODY_BYTES``, set on this controller's router in ``app.main``).
"""

from __future__ import annotations

from typing import Annotated, Any, Final
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import ResponseHeader
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import Body, FromPath, QueryParameter

from app.http.problems import problem_responses
from app.http.routes import API_KEY_SECURITY, BulkJobsDep, may_spend
from domain.bulk import (
    DEFAULT_JOBS_PAGE,
    DEFAULT_PAGE,
    MAX_JOBS_PAGE,
    MAX_PAGE,
    EnrichJobView,
    JobsPage,
    JobState,
    ResultsPage,
)
from domain.customers import CustomerQuery
from domain.errors import Forbidden
from domain.tenancy import Caller, current_caller

__all__ = ["BulkController", "BulkItemIn", "BulkJobRequest"]

ShortText = Annotated[str, msgspec.Meta(max_length=256)]
JOBS_PATH: Final = "/api/v1/enrich/jobs"
# The largest job the schema describes; BULK_MAX_ITEMS may lower it (400 above it).
SCHEMA_MAX_ITEMS: Final = 10_000


class BulkItemIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One item: identifiers as for ``POST /api/v1/enrich`` (at least one), and the client's
    own reference, echoed in the results."""

    cpf: ShortText | None = None
    email: ShortText | None = None
    phone: ShortText | None = None
    name: ShortText | None = None
    ref: Annotated[str, msgspec.Meta(max_length=128)] | None = None


class BulkJobRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/v1/enrich/jobs``: 1..``BULK_MAX_ITEMS`` items, run later by the worker.

    ``max_age`` (seconds) and ``min_likelihood`` (0..1) are stored with the job for its lookups.
    """

    items: Annotated[list[BulkItemIn], msgspec.Meta(min_length=1, max_length=SCHEMA_MAX_ITEMS)]
    callback_url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)] | None = None
    max_age: Annotated[int, msgspec.Meta(ge=0, le=10 * 365 * 86400)] | None = None
    min_likelihood: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None


_EXAMPLE: Final = Example(
    summary="Two CRM rows",
    value={
        "items": [
            {"cpf": "529.982.247-25", "ref": "crm-1001"},
            {"email": "maria.silva@example.com", "name": "Maria Silva", "ref": "crm-1002"},
        ],
        "max_age": 86400,
    },
)


_JOBS_EXAMPLE: Final = ResponseSpec(
    data_container=JobsPage,
    description="A page of the tenant's jobs, newest first; `next_cursor` null on the last page",
    generate_examples=False,
    examples=[
        Example(
            summary="First page of ?limit=1",
            value={
                "items": [
                    {
                        "id": "0b6f7c1e-5a7d-4e0a-9a51-3c2d1e0f9a8b",
                        "state": "running",
                        "counts": {
                            "total": 10000,
                            "queued": 6200,
                            "running": 8,
                            "done": 3650,
                            "failed": 2,
                            "not_found": 140,
                            "cancelled": 0,
                        },
                        "created_at": "2026-12-07T10:00:00Z",
                        "started_at": "2026-12-07T10:00:01Z",
                        "finished_at": None,
                        "cancel_requested_at": None,
                        "max_age_s": 86400,
                        "min_likelihood": None,
                        "callback": {
                            "url": "https://crm.example.com/hooks/c2s",
                            "state": "waiting",
                        },
                    }
                ],
                "next_cursor": (
                    "WyIyMDI2LTEyLTA3VDEwOjAwOjAwWiIsIjBiNmY3YzFlLTVhN2QtNGUwYS05YTUxLTNjMmQxZTBmOWE4YiJd"
                ),
            },
        )
    ],
)


def _caller() -> Caller:
    """Who the request acts for (set by the auth middleware on every one of these routes)."""
    caller = current_caller.get()
    if caller is None:
        raise Forbidden("No API key")
    return caller


def _tenant() -> str:
    return _caller().tenant


class BulkController(Controller):
    """Bulk enrichment jobs of the API key's tenant."""

    path = JOBS_PATH
    tags = ["bulk"]  # noqa: RUF012 - Litestar reads class attributes
    security = API_KEY_SECURITY

    @post(
        "/",
        operation_id="createEnrichJob",
        summary="Submit 1..10,000 customer lookups as a job, run in the background; 202",
        description=(
            "Every item is validated as `POST /api/v1/enrich` validates its identifiers; one "
            "invalid item rejects the job (400 naming `items[i].field`, nothing stored). The "
            "job and its items are stored in one transaction before the 202; `Location` is the "
            "job. Honours `Idempotency-Key`. Each item is looked up for this API key (usage, "
            "quota and audit are this key's), at most `BULK_TENANT_CONCURRENCY` of the tenant's "
            "items at once."
        ),
        status_code=202,
        response_headers=[
            ResponseHeader(
                name="Location",
                # A value documents the header's type (string); it is never sent as such.
                value="/api/v1/enrich/jobs/{id}",
                description="The job: `/api/v1/enrich/jobs/{id}`",
                documentation_only=True,
            )
        ],
        responses=problem_responses(400, 401, 403, 413, 415, 429, 503),
    )
    async def create_job(
        self,
        bulk_jobs: BulkJobsDep,
        request: Request[Any, Any, Any],
        data: Annotated[BulkJobRequest, Body(examples=[_EXAMPLE])],
    ) -> Response[EnrichJobView]:
        view = await bulk_jobs.submit(
            [
                (
                    item.ref,
                    CustomerQuery(cpf=item.cpf, email=item.email, phone=item.phone, name=item.name),
                )
                for item in data.items
            ],
            caller=_caller(),
            may_fetch=may_spend(request.scope),
            callback_url=data.callback_url,
            max_age_s=data.max_age,
            min_likelihood=data.min_likelihood,
        )
        return Response(view, status_code=202, headers={"Location": f"{JOBS_PATH}/{view.id}"})

    @get(
        "/",
        operation_id="listEnrichJobs",
        summary="The tenant's jobs, newest first (keyset pages, opaque cursor)",
        description=(
            "Every job of the API key's tenant, newest first, optionally of one `state`; each "
            "as `GET /api/v1/enrich/jobs/{id}` shows it (there, the callback's delivery "
            "attempts too). Pass `next_cursor` as `cursor` for the next page (`null` on the "
            "last). Jobs are kept `BULK_RETENTION_DAYS` after they end."
        ),
        responses={200: _JOBS_EXAMPLE, **problem_responses(400, 401, 403, 429, 503)},
        opt={"scope": "read"},
    )
    async def list_jobs(
        self,
        bulk_jobs: BulkJobsDep,
        # `state` is a reserved name of Litestar's handler arguments: the query key is aliased.
        job_state: Annotated[
            JobState | None,
            QueryParameter(name="state", required=False, description="only jobs in this state"),
        ] = None,
        cursor: Annotated[
            str | None,
            QueryParameter(
                required=False,
                max_length=128,
                pattern=r"^[A-Za-z0-9_-]+$",
                description="`next_cursor` of the previous page",
            ),
        ] = None,
        limit: Annotated[
            int, QueryParameter(ge=1, le=MAX_JOBS_PAGE, required=False)
        ] = DEFAULT_JOBS_PAGE,
    ) -> JobsPage:
        return await bulk_jobs.jobs(_tenant(), state=job_state, cursor=cursor, limit=limit)

    @get(
        "/{job_id:uuid}",
        operation_id="getEnrichJob",
        summary="A job: state, counts by item state, timestamps, callback",
        responses=problem_responses(400, 401, 403, 404, 429, 503),
        opt={"scope": "read"},
    )
    async def get_job(self, bulk_jobs: BulkJobsDep, job_id: FromPath[UUID]) -> EnrichJobView:
        return await bulk_jobs.view(_tenant(), job_id)

    @get(
        "/{job_id:uuid}/results",
        operation_id="getEnrichJobResults",
        summary="A job's items in order (keyset pages by seq, opaque cursor)",
        responses=problem_responses(400, 401, 403, 404, 429, 503),
        opt={"scope": "read"},
    )
    async def job_results(
        self,
        bulk_jobs: BulkJobsDep,
        job_id: FromPath[UUID],
        cursor: Annotated[
            str | None,
            QueryParameter(
                required=False,
                max_length=64,
                pattern=r"^[A-Za-z0-9_-]+$",
                description="`next_cursor` of the previous page",
            ),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, required=False)] = DEFAULT_PAGE,
    ) -> ResultsPage:
        return await bulk_jobs.results(_tenant(), job_id, cursor=cursor, limit=limit)

    @delete(
        "/{job_id:uuid}",
        operation_id="cancelEnrichJob",
        summary="Cancel the items not started (running items finish); the job after it",
        status_code=200,
        responses=problem_responses(400, 401, 403, 404, 429, 503),
    )
    async def cancel_job(self, bulk_jobs: BulkJobsDep, job_id: FromPath[UUID]) -> EnrichJobView:
        return await bulk_jobs.cancel(_tenant(), job_id)
