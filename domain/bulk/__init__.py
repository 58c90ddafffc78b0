"""Bulk enrichment jobs: many customer lookups submitted at once, run later by the worker.

``POST /api/v1/enrich/jobs`` (:meth:`BulkJobs.submit`) validates every item as a batch item is
validated (:func:`domain.customers.validate_query`) and stores the job and its items durably in
one transaction; an invalid item rejects the whole job (400 naming ``items[i].field``, nothing
stored). ``c2s-api worker`` runs the items (:class:`BulkRunner`): it claims them from the items
table (:class:`domain.ports.BulkQueue`, fair across tenants, at most
``BULK_TENANT_CONCURRENCY`` in flight per tenant across workers), runs each through
:func:`run_item` (the one call of :func:`domain.customers.lookup_customer`, under the job key's
:class:`~domain.tenancy.Caller`) and stores its result before it lets the item go, so a killed
worker loses no item and repeats no paid call for an item already done (a re-run item whose
dossier was bought finds it stored).

The job ends when every item is done, failed, not found or cancelled; the statement that ends it
also enqueues its callback (:class:`CallbackSink`) in the same transaction.
"""

from domain.bulk.jobs import (
    DEFAULT_JOBS_PAGE,
    DEFAULT_PAGE,
    MAX_JOBS_PAGE,
    MAX_PAGE,
    BulkJobs,
    decode_cursor,
    decode_jobs_cursor,
    encode_cursor,
    encode_jobs_cursor,
    results_path,
    summary_body,
    validate_items,
)
from domain.bulk.models import (
    ITEM_STATES,
    JOB_STATES,
    BulkListener,
    BulkStats,
    CallbackSink,
    CallbackView,
    ClaimedItem,
    EnrichJobView,
    InvalidItems,
    ItemError,
    ItemOutcome,
    ItemState,
    ItemView,
    JobCounts,
    JobPosition,
    JobsPage,
    JobState,
    NewJob,
    NewJobItem,
    NullBulkListener,
    ResultsPage,
)
from domain.bulk.runner import BulkRunner, run_item

__all__ = [
    "DEFAULT_JOBS_PAGE",
    "DEFAULT_PAGE",
    "ITEM_STATES",
    "JOB_STATES",
    "MAX_JOBS_PAGE",
    "MAX_PAGE",
    "BulkJobs",
    "BulkListener",
    "BulkRunner",
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
    "decode_cursor",
    "decode_jobs_cursor",
    "encode_cursor",
    "encode_jobs_cursor",
    "results_path",
    "run_item",
    "summary_body",
    "validate_items",
]
