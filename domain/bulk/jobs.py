"""Submitting and reading bulk jobs: validation, the tenant-scoped views, result pages."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Final
from uuid import UUID, uuid4

import msgspec

from domain.bulk.models import (
    JOB_STATES,
    InvalidItems,
    JobPosition,
    JobsPage,
    NewJob,
    NewJobItem,
    ResultsPage,
)
from domain.callbacks import validate_callback_url
from domain.cursors import decode_position, encode_position
from domain.customers import validate_query
from domain.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from collections.abc import Sequence

    from domain.bulk.models import EnrichJobView
    from domain.customers import CustomerQuery
    from domain.ports import BulkJobStore
    from domain.tenancy import Caller

__all__ = [
    "DEFAULT_JOBS_PAGE",
    "DEFAULT_PAGE",
    "MAX_JOBS_PAGE",
    "MAX_PAGE",
    "BulkJobs",
    "decode_cursor",
    "decode_jobs_cursor",
    "encode_cursor",
    "encode_jobs_cursor",
    "results_path",
    "summary_body",
    "validate_items",
]

DEFAULT_PAGE: Final = 100
MAX_PAGE: Final = 1000
# Invalid items named in a rejected job's problem (the first ones, in order).
_MAX_ITEM_ERRORS: Final = 20
_CURSOR_PREFIX: Final = "s1:"
# The listing of a tenant's jobs (GET /api/v1/enrich/jobs), newest first.
DEFAULT_JOBS_PAGE: Final = 20
MAX_JOBS_PAGE: Final = 100


def validate_items(
    items: Sequence[tuple[str | None, CustomerQuery]], *, max_items: int
) -> list[NewJobItem]:
    """Validate and normalise every item (:func:`domain.customers.validate_query`).

    Args:
        items: ``(ref, query)`` in the submitted order.
        max_items: ``BULK_MAX_ITEMS``.

    Raises:
        InvalidInput: No item, or more than ``max_items`` (field ``items``).
        InvalidItems: Some item is invalid; names the first ones as ``items[i].field``.
    """
    if not items:
        raise InvalidInput("items", "A job needs at least one item")
    if len(items) > max_items:
        raise InvalidInput("items", f"A job holds at most {max_items} items")
    valid: list[NewJobItem] = []
    errors: list[tuple[str, str]] = []
    invalid = 0
    for index, (ref, query) in enumerate(items):
        try:
            valid.append(NewJobItem(ref=ref, query=validate_query(query)))
        except InvalidInput as exc:
            invalid += 1
            if len(errors) < _MAX_ITEM_ERRORS:
                errors.append((f"items[{index}].{exc.field}", exc.detail))
    if errors:
        raise InvalidItems(errors, invalid)
    return valid


def encode_cursor(seq: int) -> str:
    """The opaque cursor of the page after item ``seq``."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The ``seq`` a cursor continues after (-1: from the start).

    Raises:
        InvalidInput: Not a cursor of this API (field ``cursor``).
    """
    if cursor is None or not cursor.strip():
        return -1
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith(_CURSOR_PREFIX):
            raise ValueError(cursor)
        seq = int(text.removeprefix(_CURSOR_PREFIX))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("cursor", "Invalid cursor") from None
    if seq < -1 or seq > 2**31:
        raise InvalidInput("cursor", "Invalid cursor")
    return seq


def encode_jobs_cursor(position: JobPosition) -> str:
    """The opaque cursor of the page of jobs older than ``position``."""
    return encode_position(position)


def decode_jobs_cursor(cursor: str | None) -> JobPosition | None:
    """The position a cursor of the job listing continues after (``None``: the newest first).

    Raises:
        InvalidInput: Not a cursor of the job listing (field ``cursor``).
    """
    if cursor is None or not cursor.strip():
        return None
    position = decode_position(cursor, JobPosition, detail="Invalid cursor")
    if position.created_at.tzinfo is None:
        raise InvalidInput("cursor", "Invalid cursor")
    return position


def summary_body(view: EnrichJobView, *, results_url: str) -> bytes:
    """The callback's body: ``{job_id, state, counts, finished_at, results_url}`` (no personal
    data)."""
    return msgspec.json.encode(
        {
            "job_id": str(view.id),
            "state": view.state,
            "counts": view.counts,
            "finished_at": view.finished_at,
            "results_url": results_url,
        }
    )


def results_path(job_id: UUID) -> str:
    """Where a job's results are paged (the callback's ``results_url``)."""
    return f"/api/v1/enrich/jobs/{job_id}/results"


class BulkJobs:
    """The HTTP side of bulk jobs: submit, view, page results, cancel (tenant-scoped).

    Args:
        store: Jobs and items.
        max_items: ``BULK_MAX_ITEMS``.
        environment: ``ENVIRONMENT`` (callback URL rules:
            :func:`domain.callbacks.validate_callback_url`).
    """

    def __init__(
        self,
        store: BulkJobStore,
        *,
        max_items: int,
        environment: str,
    ) -> None:
        self._store = store
        self._max_items = max_items
        self._environment = environment

    async def submit(
        self,
        items: Sequence[tuple[str | None, CustomerQuery]],
        *,
        caller: Caller,
        may_fetch: bool,
        callback_url: str | None = None,
        max_age_s: int | None = None,
        min_likelihood: float | None = None,
    ) -> EnrichJobView:
        """Validate the items and store the job (one transaction); answered 202.

        Raises:
            InvalidInput: An invalid item (nothing stored), or a bad ``callback_url``.
            DependencyUnavailable: PostgreSQL is down (nothing stored).
        """
        valid = validate_items(items, max_items=self._max_items)
        url = None
        if callback_url is not None:
            url = validate_callback_url(callback_url.strip(), environment=self._environment)
        job = NewJob(
            id=uuid4(),
            tenant=caller.tenant,
            key_id=caller.key_id,
            request_id=caller.request_id,
            may_fetch=may_fetch,
            paid_quota=caller.paid_quota,
            max_age_s=max_age_s,
            min_likelihood=min_likelihood,
            callback_url=url,
            items=valid,
        )
        return await self._store.create(job)

    async def view(self, tenant: str, job_id: UUID) -> EnrichJobView:
        """The job of ``tenant``.

        Raises:
            NotFound: No such job for this tenant (another tenant's job included).
        """
        view = await self._store.get(tenant, job_id)
        if view is None:
            raise _job_not_found(job_id)
        return view

    async def results(
        self, tenant: str, job_id: UUID, *, cursor: str | None, limit: int
    ) -> ResultsPage:
        """One page of the job's items by ``seq``, after ``cursor``.

        Raises:
            InvalidInput: A bad cursor or limit.
            NotFound: No such job for this tenant.
        """
        after = decode_cursor(cursor)
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput("limit", f"limit must be between 1 and {MAX_PAGE}")
        items = await self._store.results(tenant, job_id, after_seq=after, limit=limit + 1)
        if items is None:
            raise _job_not_found(job_id)
        page = items[:limit]
        more = len(items) > limit
        return ResultsPage(items=page, next_cursor=encode_cursor(page[-1].seq) if more else None)

    async def jobs(
        self, tenant: str, *, state: str | None, cursor: str | None, limit: int
    ) -> JobsPage:
        """One page of the tenant's jobs, newest first, after ``cursor``, optionally of one
        ``state``; each as :meth:`view` shows it, but for its callback's delivery (the job's
        own view has its attempts).

        Raises:
            InvalidInput: An unknown state, a bad cursor or limit (each names its field).
        """
        if state is not None and state not in JOB_STATES:
            raise InvalidInput("state", f"state must be one of {', '.join(JOB_STATES)}")
        if not 1 <= limit <= MAX_JOBS_PAGE:
            raise InvalidInput("limit", f"limit must be between 1 and {MAX_JOBS_PAGE}")
        before = decode_jobs_cursor(cursor)
        jobs = await self._store.list_jobs(tenant, state=state, before=before, limit=limit + 1)
        page = jobs[:limit]
        last = page[-1] if len(jobs) > limit else None
        return JobsPage(
            items=page,
            next_cursor=encode_jobs_cursor(JobPosition(created_at=last.created_at, job_id=last.id))
            if last is not None
            else None,
        )

    async def cancel(self, tenant: str, job_id: UUID) -> EnrichJobView:
        """Cancel the items not started; items running finish. An ended job is left as it is.

        Raises:
            NotFound: No such job for this tenant.
        """
        view = await self._store.cancel(tenant, job_id)
        if view is None:
            raise _job_not_found(job_id)
        return view


def _job_not_found(job_id: UUID) -> NotFound:
    return NotFound(f"Enrichment job {job_id} not found")
