"""Operator endpoints: feature flags (``/api/v1/admin/flags``), the webhook queue's jobs
(``/api/v1/admin/jobs``) and the audit trail (``/api/v1/admin/audit``), admin scope only.

A flag change is stored in Redis and applied by every worker within ``FLAG_CACHE_TTL_S`` (ADR
0007); ``c2s-api flags`` does the same from a shell. Flags are global, not per tenant: the
``admin`` scope is for the operators' keys only. The same holds for the jobs: webhook events carry
no tenant (they come from the deployment's C2S account), so an admin key sees and redrives all of
them, like ``c2s-api jobs`` (docs/security.md). The audit trail is the one exception: an admin
key reads its own tenant's records only.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import FromPath, JSONBody, PathParameter, QueryParameter

from app.http.problems import problem_responses
from app.http.routes import API_KEY_SECURITY, FlagStoreDep, JobAdminDep, ServicesDep
from domain.audit import AUDIT_PAGE_DEFAULT, AUDIT_PAGE_MAX, AccessRecord, AuditLog, encode_cursor
from domain.errors import InvalidInput
from domain.flags import Flag, spec_of
from domain.tenancy import current_tenant
from domain.webhooks.jobs import JobView, RedriveOutcome

if TYPE_CHECKING:
    from domain.flags import FlagState

__all__ = [
    "AdminController",
    "AuditList",
    "FlagList",
    "FlagUpdate",
    "FlagView",
    "JobList",
    "RedriveAll",
    "flag_view",
]

# A time in a query string, as RFC 3339 writes it. Typed as text: decoded as a datetime, the query
# string would also take a bare number as a Unix time, which the documented format is not.
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})?$"
)


def _moment(value: str | None, field: str) -> dt.datetime | None:
    """The time of a query parameter matching :data:`RFC3339_PATTERN` (a 400 naming ``field``
    when it is no real time, such as a 13th month)."""
    if value is None:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(field, f"{field} must be an RFC 3339 time") from None


FlagName = Annotated[Flag, PathParameter(description="The feature flag's name")]


class FlagUpdate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``PUT /admin/flags/{name}``."""

    enabled: bool


class FlagView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A flag as the answering worker applies it.

    Attributes:
        name: The flag.
        enabled: Its effective value.
        default: Its value without an override (this deployment's ``FLAG_*`` setting).
        overridden: Whether a runtime override is in force.
        description: What it controls.
        when_off: What clients observe while it is off.
        changed_at: When the override was set (RFC 3339, UTC); absent without one.
        changed_by: Who set it (``api-key:<key id>`` or ``cli``); absent without one.
    """

    name: str
    enabled: bool
    default: bool
    overridden: bool
    description: str
    when_off: str
    changed_at: str | None = None
    changed_by: str | None = None


class FlagList(msgspec.Struct, frozen=True, kw_only=True):
    """Every flag.

    Attributes:
        flags: The flags, in a fixed order.
        degraded: ``true`` when Redis could not be read: the values are this worker's last known
            ones (or the defaults) and may not be what other workers apply.
        cache_ttl_s: How long a change takes, at most, to reach every worker.
    """

    flags: list[FlagView]
    degraded: bool
    cache_ttl_s: float


def flag_view(state: FlagState) -> FlagView:
    """The API view of a flag's state."""
    spec = spec_of(state.name)
    override = state.override
    return FlagView(
        name=state.name,
        enabled=state.enabled,
        default=state.default,
        overridden=override is not None,
        description=spec.description if spec is not None else "",
        when_off=spec.when_off if spec is not None else "",
        changed_at=(
            dt.datetime.fromtimestamp(override.changed_at, dt.UTC).isoformat()
            if override is not None
            else None
        ),
        changed_by=override.changed_by if override is not None else None,
    )


class JobList(msgspec.Struct, frozen=True, kw_only=True):
    """Webhook events in one state, most recently changed first."""

    state: str
    jobs: list[JobView]


class RedriveAll(msgspec.Struct, frozen=True, kw_only=True):
    """The dead letters put back in the queue."""

    redriven: int
    ids: list[UUID]


JobStateParam = Annotated[
    Literal["dead", "failed", "open", "completed", "all"],
    QueryParameter(
        name="state",
        description="dead (retry budget spent, redrivable), failed, open, completed or all",
    ),
]
JobLimit = Annotated[int, QueryParameter(ge=1, le=1000, description="At most this many")]


class AuditList(msgspec.Struct, frozen=True, kw_only=True):
    """A page of the caller's tenant's audit records, newest first.

    Attributes:
        records: The records (``subject`` is the keyed digest of the person's CPF).
        next_cursor: Pass it as ``cursor`` for the next page; ``null`` on the last page.
    """

    records: list[AccessRecord]
    next_cursor: str | None


AuditLimit = Annotated[
    int,
    QueryParameter(ge=1, le=AUDIT_PAGE_MAX, description=f"At most this many (1-{AUDIT_PAGE_MAX})"),
]


def _actor(request: Request[Any, Any, Any]) -> str:
    # The key's id, never the key: it ends up in Redis and in the logs.
    key_id = request.scope.get("state", {}).get("api_key_id")
    return f"api-key:{key_id}" if key_id else "api-key:unknown"


class AdminController(Controller):
    """Runtime switches for operators, without a deploy."""

    path = "/api/v1/admin"
    tags = ["admin"]  # noqa: RUF012 - Litestar reads class attributes
    security = API_KEY_SECURITY
    opt = {"scope": "admin"}  # noqa: RUF012 - Litestar reads class attributes

    @get(
        "/flags",
        operation_id="listFeatureFlags",
        summary="Every feature flag: effective value, default, override and who set it",
        responses=problem_responses(401, 403, 429, 503),
    )
    async def list_flags(self, flag_store: FlagStoreDep) -> FlagList:
        store = flag_store
        # An operator asks for the truth, not for this worker's cache (which may be a TTL old).
        await store.refresh()
        return FlagList(
            flags=[flag_view(state) for state in store.states()],
            degraded=store.degraded,
            cache_ttl_s=store.ttl_s,
        )

    @put(
        "/flags/{name:str}",
        operation_id="setFeatureFlag",
        summary="Turn a feature flag on or off for every worker (applied within the cache TTL)",
        status_code=200,
        responses=problem_responses(400, 401, 403, 413, 415, 429, 503),
    )
    async def set_flag(
        self,
        request: Request[Any, Any, Any],
        flag_store: FlagStoreDep,
        name: FlagName,
        data: JSONBody[FlagUpdate],
    ) -> FlagView:
        state = await flag_store.set(name.value, data.enabled, actor=_actor(request))
        return flag_view(state)

    # Its own path: Litestar 2.25 answers OPTIONS on a path with PUT and DELETE handlers with
    # an `Allow` header that lists only one of them (tests/api/test_fuzz.py); the override is a
    # sub-resource of the flag anyway.
    @delete(
        "/flags/{name:str}/override",
        operation_id="resetFeatureFlag",
        summary="Remove a flag's runtime override: every worker goes back to the default",
        status_code=200,
        responses=problem_responses(400, 401, 403, 429, 503),
    )
    async def reset_flag(
        self,
        request: Request[Any, Any, Any],
        flag_store: FlagStoreDep,
        name: FlagName,
    ) -> FlagView:
        state = await flag_store.unset(name.value, actor=_actor(request))
        return flag_view(state)

    # --- the webhook queue (docs/runbooks/QueueDeadLetters.md) ------------------------------

    @get(
        "/jobs",
        operation_id="listJobs",
        summary="Webhook events by state (dead letters with ?state=dead), newest first",
        responses=problem_responses(400, 401, 403, 429, 503),
    )
    async def list_jobs(
        self,
        job_admin: JobAdminDep,
        job_state: JobStateParam = "all",
        limit: JobLimit = 50,
    ) -> JobList:
        # `state` on the wire; the handler's name differs because Litestar reserves `state`.
        return JobList(state=job_state, jobs=await job_admin.list_jobs(job_state, limit))

    @post(
        "/jobs/{event_id:uuid}/redrive",
        operation_id="redriveJob",
        summary="Put one failed webhook event back in the queue (attempts reset)",
        status_code=200,
        responses=problem_responses(400, 401, 403, 404, 409, 429, 503),
    )
    async def redrive_job(self, job_admin: JobAdminDep, event_id: FromPath[UUID]) -> RedriveOutcome:
        outcome = await job_admin.redrive(event_id)
        if outcome.status == "not_found":
            raise NotFoundException(f"No webhook event with id {event_id}")
        if outcome.status == "not_failed":
            raise HTTPException(
                status_code=409, detail="Only failed webhook events can be redriven"
            )
        if outcome.status == "send_unknown":
            raise HTTPException(
                status_code=409,
                detail=(
                    "The event may already have posted its message (send outcome unknown): "
                    "not redriven; check the lead in C2S first"
                ),
            )
        return outcome

    @post(
        "/jobs/redrive-dead",
        operation_id="redriveDeadJobs",
        summary="Put every dead letter back in the queue (attempts reset)",
        status_code=200,
        responses=problem_responses(401, 403, 429, 503),
    )
    async def redrive_dead(self, job_admin: JobAdminDep) -> RedriveAll:
        ids = await job_admin.redrive_dead()
        return RedriveAll(redriven=len(ids), ids=ids)

    # --- the audit trail (docs/security.md, "Audit trail") -----------------------------------

    @get(
        "/audit",
        operation_id="listAuditRecords",
        summary="Who read or fetched whose data: this tenant's audit records, newest first",
        responses=problem_responses(400, 401, 403, 429, 503),
    )
    async def list_audit(
        self,
        services: ServicesDep,
        subject_cpf: Annotated[
            str | None,
            QueryParameter(description="Only the records of this person (CPF; never echoed)"),
        ] = None,
        key_id: Annotated[
            str | None, QueryParameter(description="Only the records of this API key id")
        ] = None,
        since: Annotated[
            str | None,
            QueryParameter(
                name="from",
                pattern=RFC3339_PATTERN,
                description="At or after this time (RFC 3339; without an offset: UTC)",
            ),
        ] = None,
        until: Annotated[
            str | None,
            QueryParameter(
                name="to",
                pattern=RFC3339_PATTERN,
                description="Before this time (RFC 3339; without an offset: UTC)",
            ),
        ] = None,
        cursor: Annotated[
            str | None, QueryParameter(description="`next_cursor` of the previous page")
        ] = None,
        limit: AuditLimit = AUDIT_PAGE_DEFAULT,
    ) -> AuditList:
        # The caller's own tenant, always: an admin key never reads another tenant's trail.
        page = await AuditLog(services.audit, services.subjects).search(
            current_tenant.get() or "",
            subject_cpf=subject_cpf,
            key_id=key_id,
            since=_moment(since, "from"),
            until=_moment(until, "to"),
            cursor=cursor,
            limit=limit,
        )
        next_cursor = encode_cursor(page.next) if page.next is not None else None
        return AuditList(records=page.records, next_cursor=next_cursor)
