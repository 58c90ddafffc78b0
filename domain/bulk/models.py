"""The values of bulk enrichment jobs: what is stored, shown, claimed and reported."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol
from uuid import UUID

import msgspec

from domain.customers import CustomerQuery, UnifiedCustomer
from domain.errors import InvalidInput

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "ITEM_STATES",
    "JOB_STATES",
    "BulkListener",
    "BulkStats",
    "CallbackSink",
    "CallbackView",
    "ClaimedItem",
    "EnrichJobView",
    "InvalidItems",
    "ItemError",
    "ItemOutcome",
    "ItemState",
    "ItemView",
    "JobCounts",
    "JobPosition",
    "JobState",
    "JobsPage",
    "NewJob",
    "NewJobItem",
    "NullBulkListener",
    "ResultsPage",
]

JobState = Literal["queued", "running", "done", "cancelled"]
ItemState = Literal["queued", "running", "done", "failed", "not_found", "cancelled"]
JOB_STATES: Final = ("queued", "running", "done", "cancelled")
ITEM_STATES: Final = ("queued", "running", "done", "failed", "not_found", "cancelled")


# --- what is stored and shown --------------------------------------------------------------------


class NewJobItem(msgspec.Struct, frozen=True, kw_only=True):
    """One validated item: its client reference and its normalised identifiers."""

    ref: str | None
    query: CustomerQuery


class NewJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job to store: who it acts for, its options and its items in order.

    Attributes:
        id: The job's id.
        tenant: The tenant of the key that submitted it.
        key_id: That key's id (its usage and quota are charged for the items).
        request_id: The submitting request's id (audit correlation).
        may_fetch: Whether its lookups may make paid upstream calls (the key's ``enrich`` scope).
        paid_quota: The key's daily paid-call quota at submission, if any.
        max_age_s: Oldest stored dossier acceptable without a refetch (``None``: any).
        min_likelihood: Lowest match likelihood accepted (``None``: any).
        callback_url: Called with the job's summary when it ends.
        items: The items, ``seq`` = position.
    """

    id: UUID
    tenant: str
    key_id: str | None
    request_id: str | None
    may_fetch: bool
    paid_quota: int | None = None
    max_age_s: int | None = None
    min_likelihood: float | None = None
    callback_url: str | None = None
    items: list[NewJobItem]


class JobCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Items of a job by state."""

    total: int
    queued: int
    running: int
    done: int
    failed: int
    not_found: int
    cancelled: int


class CallbackView(msgspec.Struct, frozen=True, kw_only=True):
    """The job's callback: its URL and where its delivery stands.

    ``state``: ``waiting`` (the job has not ended), ``enqueued`` (the summary was handed to the
    delivery queue), or the delivery's own state (``pending``, ``delivered``, ``failed``:
    ``docs/callbacks.md``) with its attempts so far.
    """

    url: str
    state: str
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None
    next_attempt_at: dt.datetime | None = None
    delivered_at: dt.datetime | None = None


class EnrichJobView(msgspec.Struct, frozen=True, kw_only=True):
    """A job as its owner sees it (``GET /api/v1/enrich/jobs/{id}``)."""

    id: UUID
    state: JobState
    counts: JobCounts
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    cancel_requested_at: dt.datetime | None = None
    max_age_s: int | None = None
    min_likelihood: float | None = None
    callback: CallbackView | None = None


class JobPosition(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Where a page of jobs ended: the last job's creation time and id (older jobs come next;
    an array in its cursor, ``domain.cursors``)."""

    created_at: dt.datetime
    job_id: UUID


class JobsPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of the tenant's jobs, newest first; ``next_cursor`` is ``None`` on the last."""

    items: list[EnrichJobView]
    next_cursor: str | None = None


class ItemError(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Why an item has no customer: the status and text a request would have been answered."""

    status: int
    detail: str
    field: str | None = None


class ItemView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One item's result (``GET /api/v1/enrich/jobs/{id}/results``)."""

    seq: int
    state: ItemState
    ref: str | None = None
    customer: UnifiedCustomer | None = None
    error: ItemError | None = None


class ResultsPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of results by ``seq``; ``next_cursor`` is ``None`` on the last page."""

    items: list[ItemView]
    next_cursor: str | None = None


class BulkStats(msgspec.Struct, frozen=True, kw_only=True):
    """Jobs by state (queued, running) and the age of the oldest job not ended."""

    jobs: dict[str, int]
    oldest_open_age_s: float | None = None


class InvalidItems(InvalidInput):
    """Items of a job break the lookup rules: the whole job is rejected (400, nothing stored).

    Attributes:
        errors: ``(field, message)`` of the first invalid items, ``items[i].field``.
    """

    def __init__(self, errors: Sequence[tuple[str, str]], invalid: int) -> None:
        first_field, first_message = errors[0]
        more = f" ({invalid} invalid items)" if invalid > 1 else ""
        super().__init__(first_field, f"{first_field}: {first_message}{more}")
        self.errors = tuple(errors)


class ClaimedItem(msgspec.Struct, frozen=True, kw_only=True):
    """An item leased to a worker, with what it needs to run it for the job's key."""

    job_id: UUID
    seq: int
    query: CustomerQuery
    attempts: int
    tenant: str
    key_id: str | None = None
    request_id: str | None = None
    paid_quota: int | None = None
    may_fetch: bool = True
    max_age_s: int | None = None
    min_likelihood: float | None = None


class ItemOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """How an item's run ended.

    Attributes:
        state: ``done``, ``failed``, ``not_found``, or ``retry`` (transient: run it again later).
        result: The stored result (JSON): the customer, or the :class:`ItemError`.
        subject_cpf: The CPF of the customer found (subject erasure finds the row by it).
        retry_after_s: For ``retry``: when it may run again.
    """

    state: Literal["done", "failed", "not_found", "retry"]
    result: bytes | None = None
    subject_cpf: str | None = None
    retry_after_s: float = 0.0


class CallbackSink(Protocol):
    """Enqueues a job's callback on the connection (and transaction) that ends the job.

    The callbacks area's ``infra.db.callbacks.enqueue_callback`` has this shape; the composition
    root hands it to the store.
    """

    async def __call__(
        self, conn: Any, *, job_id: UUID, tenant: str, key_id: str, url: str, body: bytes
    ) -> None:  # Any: the adapter's connection
        """Insert the delivery in the caller's transaction."""
        ...


class BulkListener(Protocol):
    """Receives the runner's measurements (adapter: ``observability.metrics.BulkMetrics``)."""

    def item_finished(self, outcome: str) -> None:
        """An item ended its run: ``done``, ``failed``, ``not_found`` or ``retry``."""
        ...

    def job_ended(self, state: str) -> None:
        """A job ended (``done`` or ``cancelled``) in this process."""
        ...

    def sampled(self, stats: BulkStats) -> None:
        """Periodic sample of jobs by state."""
        ...

    def error(self, event: str, error_type: str) -> None:
        """A claim, lease renewal, finish or run failed unexpectedly (``bulk_claim_failed``,
        ``bulk_finish_failed``, ``bulk_maintenance_failed``, ``bulk_item_error``)."""
        ...


class NullBulkListener:
    """Measures nothing."""

    def item_finished(self, outcome: str) -> None:
        """Ignore."""

    def job_ended(self, state: str) -> None:
        """Ignore."""

    def sampled(self, stats: BulkStats) -> None:
        """Ignore."""

    def error(self, event: str, error_type: str) -> None:
        """Ignore."""
