"""The worker side of bulk jobs: run one item (:func:`run_item`), claim and run many
(:class:`BulkRunner`)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from typing import TYPE_CHECKING, Final, Literal
from uuid import uuid4

import msgspec

from domain.bulk.models import ItemError, ItemOutcome, NullBulkListener
from domain.customers import lookup_customer
from domain.errors import DomainError, error_outcome
from domain.tenancy import Caller, caller_scope

if TYPE_CHECKING:
    from collections.abc import Callable

    from domain.bulk.models import BulkListener, ClaimedItem
    from domain.pipeline import Enricher
    from domain.ports import BulkQueue

__all__ = ["BulkRunner", "run_item"]

# Backoff of an item's transient failure: 2, 4, 8... s (full jitter), at most a minute.
_RETRY_BASE_S: Final = 2.0
_RETRY_MAX_S: Final = 60.0


def _retry_delay(attempts: int, rand: Callable[[], float]) -> float:
    cap: float = min(_RETRY_MAX_S, _RETRY_BASE_S * 2.0 ** max(0, attempts - 1))
    return cap * rand()


def _failure(
    outcome_status: int, detail: str, field: str | None, *, retry: bool, delay: float
) -> ItemOutcome:
    if retry:
        return ItemOutcome(state="retry", retry_after_s=delay)
    error = ItemError(status=outcome_status, detail=detail, field=field)
    state: Literal["failed", "not_found"] = "not_found" if outcome_status == 404 else "failed"
    return ItemOutcome(state=state, result=msgspec.json.encode(error))


async def run_item(
    enricher: Enricher,
    item: ClaimedItem,
    *,
    now: dt.datetime,
    max_attempts: int,
    rand: Callable[[], float] = random.random,
) -> ItemOutcome:
    """Run one item: the lookup of ``POST /api/v1/enrich`` for the job's key.

    The lookup runs under the job key's :class:`~domain.tenancy.Caller`, so the audit trail,
    usage meter and quota account it to that key. A server-side failure (the upstream down) is
    retried later while the item has attempts left; then it is the item's outcome.

    Args:
        enricher: The pipeline.
        item: The claimed item (its ``attempts`` count this run).
        now: The view's timestamp.
        max_attempts: ``BULK_ITEM_ATTEMPTS``.
        rand: Jitter source.
    """
    caller = Caller(
        tenant=item.tenant,
        key_id=item.key_id,
        request_id=item.request_id,
        paid_quota=item.paid_quota,
    )
    retry = item.attempts < max_attempts
    delay = _retry_delay(item.attempts, rand)
    try:
        with caller_scope(caller):
            customer = await lookup_customer(
                enricher,
                item.query,
                now=now,
                may_fetch=item.may_fetch,
                max_age_s=item.max_age_s,
                min_likelihood=item.min_likelihood,
                operation="bulk",
            )
    except DomainError as exc:
        outcome = error_outcome(exc)
        return _failure(
            outcome.status,
            outcome.detail,
            outcome.field,
            retry=retry and outcome.status >= 500,
            delay=delay,
        )
    return ItemOutcome(
        state="done",
        result=msgspec.json.encode(customer),
        subject_cpf=customer.personal_info.cpf,
    )


class BulkRunner:
    """Claims bulk items and runs them, ``concurrency`` at once, until stopped.

    Fairness and the per-tenant bound are the queue's (each claim takes the tenants' next items
    in turn, never more than ``tenant_concurrency`` in flight per tenant across workers). Claimed
    items hold a lease this runner renews; a killed runner's items are claimed again after it.

    Args:
        queue: The items table.
        enricher: The pipeline.
        concurrency: Items in flight in this process.
        tenant_concurrency: Items in flight per tenant across workers.
        lease_s: Lease of a claimed item.
        poll_interval_s: How often an idle runner looks for items.
        max_attempts: Runs of an item before a transient failure is final.
        listener: Metrics hooks.
        clock: The views' timestamp.
        sample_interval_s: Period of the jobs-by-state sample.
    """

    def __init__(
        self,
        queue: BulkQueue,
        enricher: Enricher,
        *,
        concurrency: int,
        tenant_concurrency: int,
        lease_s: float,
        poll_interval_s: float,
        max_attempts: int,
        listener: BulkListener | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        sample_interval_s: float = 15.0,
    ) -> None:
        self.worker_id = uuid4()
        self._queue = queue
        self._enricher = enricher
        self._concurrency = max(1, concurrency)
        self._tenant_concurrency = tenant_concurrency
        self._lease_s = lease_s
        self._poll_s = poll_interval_s
        self._max_attempts = max_attempts
        self._listener = listener or NullBulkListener()
        self._clock = clock
        self._sample_s = sample_interval_s
        # Ended items worth one more claim (claims are batched, not one per ended item).
        self._batch = max(1, min(self._concurrency, tenant_concurrency) // 4)
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False

    @property
    def in_flight(self) -> int:
        """Items running in this process."""
        return len(self._tasks)

    def stop(self) -> None:
        """Claim nothing more; items running finish (:meth:`run` returns after them)."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Claim and run items until :meth:`stop`; then wait for the items in flight."""
        due = {"renew": 0.0, "reap": 0.0, "sample": 0.0}
        while not self._stopping:
            self._wake.clear()
            await self._maintain(due)
            free = self._concurrency - len(self._tasks)
            claimed = await self._claim(free) if free > 0 else []
            for item in claimed:
                task = asyncio.create_task(self._one(item), name=f"bulk-item-{item.seq}")
                self._tasks.add(task)
                task.add_done_callback(self._done)
            if claimed and len(claimed) == free:
                # Busy: wait for half the slots to free up, so claims stay batched.
                await self._wait_slots(max(1, self._concurrency // 2), self._lease_s / 3)
            elif self._tasks:
                # Nothing more for us now (the tenants are at their bound, or the queue is
                # empty): claim again when a few items have ended, or at the poll.
                now_free = self._concurrency - len(self._tasks)
                await self._wait_slots(min(self._concurrency, now_free + self._batch), self._poll_s)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_s)
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    async def release(self) -> None:
        """Cancel the items still running (their leases expire; another worker runs them)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()

    async def _wait_slots(self, need: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self._concurrency - len(self._tasks) < need and not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)

    async def _claim(self, free: int) -> list[ClaimedItem]:
        try:
            return await self._queue.claim(
                self.worker_id,
                limit=free,
                tenant_limit=self._tenant_concurrency,
                lease_s=self._lease_s,
            )
        except Exception as exc:
            self._listener.error("bulk_claim_failed", type(exc).__name__)
            return []

    async def _maintain(self, due: dict[str, float]) -> None:
        now = time.monotonic()
        try:
            if now >= due["renew"]:
                due["renew"] = now + self._lease_s / 3
                if self._tasks:
                    await self._queue.renew(self.worker_id, lease_s=self._lease_s)
            if now >= due["reap"]:
                due["reap"] = now + self._lease_s / 2
                await self._queue.reap()
            if now >= due["sample"]:
                due["sample"] = now + self._sample_s
                self._listener.sampled(await self._queue.sample())
        except Exception as exc:
            self._listener.error("bulk_maintenance_failed", type(exc).__name__)

    async def _one(self, item: ClaimedItem) -> None:
        try:
            outcome = await run_item(
                self._enricher, item, now=self._clock(), max_attempts=self._max_attempts
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._listener.error("bulk_item_error", type(exc).__name__)
            retry = item.attempts < self._max_attempts
            delay = _retry_delay(item.attempts, random.random)
            outcome = _failure(500, "Internal server error", None, retry=retry, delay=delay)
        try:
            ended = await self._queue.finish(self.worker_id, item, outcome)
        except Exception as exc:
            self._listener.error("bulk_finish_failed", type(exc).__name__)
            return
        self._listener.item_finished(outcome.state)
        if ended is not None:
            self._listener.job_ended(ended)
