"""The durable webhook job (:func:`run_event_job`): enrich one stored event and post its message
to the lead, at most once.

The send is bracketed by two durable marks, ``send_intent_at`` (committed before the send) and
``message_sent_at``; an intent without a sent mark means an earlier attempt died mid-send, and the
event is failed rather than resent (``docs/adr/0004-durable-webhook-jobs.md``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from typing import TYPE_CHECKING, Final, Literal
from uuid import UUID

import msgspec

from domain.audit import paid_scope
from domain.errors import InvalidInput
from domain.lead_messages import ALREADY_MESSAGED, contact_fingerprint
from domain.webhooks.parsing import decode_stored_event
from domain.webhooks.retry import (
    DEFAULT_RETRY_POLICY,
    FailureLog,
    RetryPolicy,
    Verdict,
    classify_prepare_error,
    classify_send_error,
    is_provably_unsent,
    watched,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from domain.pipeline import Enricher
    from domain.ports import EventStore
    from domain.webhooks.events import StoredEvent

__all__ = [
    "ALREADY_MESSAGED",
    "MESSAGES_DISABLED",
    "SEND_OUTCOME_UNKNOWN",
    "JobOutcome",
    "run_event_job",
]

MESSAGES_DISABLED: Final = "message not sent: the send_c2s_messages flag is off"
SEND_OUTCOME_UNKNOWN: Final = "send outcome unknown: not resent to avoid a duplicate message"
_RECORD_SENT_DELAYS_S: Final = (0.0, 0.2, 1.0)

OutcomeKind = Literal["completed", "retry", "failed", "skipped"]


class JobOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one run of the job did.

    Attributes:
        kind: ``completed`` (message sent now or before, or none needed: ``reason``
            :data:`ALREADY_MESSAGED`), ``retry`` (transient failure, retry in
            ``retry_in_s``), ``failed`` (terminal, ``reason`` recorded) or ``skipped`` (nothing
            to do: the event is missing, already terminal, or another attempt owns the send).
        attempts: The event's attempt count after this run (0 when not claimed).
        sent: This run posted the message to C2S.
        dead_letter: The event was failed after exhausting its retries.
        received_at: When the event was accepted (for the job-age metric).
    """

    kind: OutcomeKind
    event_id: UUID
    attempts: int = 0
    reason: str | None = None
    retry_in_s: float | None = None
    sent: bool = False
    dead_letter: bool = False
    received_at: dt.datetime | None = None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _outcome(
    event: StoredEvent,
    kind: OutcomeKind,
    *,
    reason: str | None = None,
    retry_in_s: float | None = None,
    sent: bool = False,
    dead_letter: bool = False,
) -> JobOutcome:
    """The outcome of a run that claimed ``event``."""
    return JobOutcome(
        kind=kind,
        event_id=event.id,
        attempts=event.attempts,
        reason=reason,
        retry_in_s=retry_in_s,
        sent=sent,
        dead_letter=dead_letter,
        received_at=event.received_at,
    )


async def _fail(
    events: EventStore, event: StoredEvent, reason: str, *, dead_letter: bool = False
) -> JobOutcome:
    """Fail the claimed ``event`` with ``reason`` and report it."""
    await events.mark_failed(event.id, reason, dead_letter=dead_letter)
    return _outcome(event, "failed", reason=reason, dead_letter=dead_letter)


async def _settle(
    events: EventStore,
    event: StoredEvent,
    verdict: Verdict,
    policy: RetryPolicy,
    rand: Callable[[], float],
    clock: Callable[[], dt.datetime] = _utcnow,
) -> JobOutcome:
    """Record a failed attempt: schedule a retry, or dead-letter the event once its retry budget
    (counted from its arrival or last redrive) is spent."""
    if not verdict.transient:
        return await _fail(events, event, verdict.reason)
    delay = policy.delay(event.attempts, rand())
    elapsed = max(0.0, (clock() - event.retry_window_start).total_seconds())
    if policy.exhausted(event.attempts, elapsed, delay):
        reason = f"gave up after {event.attempts} attempts: {verdict.reason}"
        return await _fail(events, event, reason, dead_letter=True)
    await events.record_attempt(event.id, verdict.reason)
    return _outcome(event, "retry", reason=verdict.reason, retry_in_s=delay)


async def _complete_unsent(events: EventStore, event: StoredEvent) -> JobOutcome:
    """Complete an event whose lead already has its message for these contacts."""
    await events.mark_completed_unsent(event.id, ALREADY_MESSAGED)
    return _outcome(event, "completed", reason=ALREADY_MESSAGED)


async def _record_sent(events: EventStore, event_id: UUID) -> None:
    """Record the sent message, retrying briefly: losing this write means a dead letter later."""
    last: Exception | None = None
    for pause in _RECORD_SENT_DELAYS_S:
        if pause:
            await asyncio.sleep(pause)
        try:
            await events.mark_sent_completed(event_id)
        except Exception as exc:  # any failure of the write is retried alike
            last = exc
        else:
            return
    assert last is not None  # noqa: S101 - the loop ran at least once and failed
    raise last


async def _deliver(
    event: StoredEvent,
    lead_id: str,
    message: str,
    *,
    events: EventStore,
    enricher: Enricher,
    policy: RetryPolicy,
    rand: Callable[[], float],
    provably_unsent: Callable[[BaseException], bool],
    release: Callable[[], Awaitable[None]],
    clock: Callable[[], dt.datetime] = _utcnow,
) -> JobOutcome:
    """Send the message (the intent and the lead's claim are committed) and record the outcome.

    ``release`` drops the lead's message claim when nothing reached C2S.
    """
    try:
        sent = await enricher.send(lead_id, message)
    except Exception as exc:
        if provably_unsent(exc):
            await release()
            await events.clear_send_intent(event.id)
            return await _settle(events, event, classify_send_error(exc), policy, rand, clock)
        return await _fail(events, event, SEND_OUTCOME_UNKNOWN)
    if not sent:
        # The send_c2s_messages flag is off: nothing reached C2S. The event is not "completed"
        # (that promises exactly one message); it is parked with a reason, to be re-run later.
        await release()
        await events.clear_send_intent(event.id)
        return await _fail(events, event, MESSAGES_DISABLED)
    await _record_sent(events, event.id)
    return _outcome(event, "completed", sent=True)


async def run_event_job(
    event_id: UUID,
    *,
    events: EventStore,
    enricher: Enricher,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    rand: Callable[[], float] = random.random,
    provably_unsent: Callable[[BaseException], bool] = is_provably_unsent,
    clock: Callable[[], dt.datetime] = _utcnow,
) -> JobOutcome:
    """Process one stored webhook event: enrich the lead and post the message, at most once.

    Steps: claim the event (``processing``, one more attempt); if its message was already sent,
    complete it; if an earlier attempt recorded a send intent but no sent mark, fail it without
    resending (the message may or may not have reached C2S); if the lead was already messaged for
    the event's contacts, complete it without a message; otherwise resolve, fetch, store and
    format (:meth:`Enricher.prepare_event`), commit the send intent, claim the lead's message
    (another event of the lead may have won it: complete without a message), send, and record
    the message as sent. Transient failures are recorded and returned as ``retry`` with a
    backoff delay until the retry budget (``policy.budget_s`` from the event's arrival or last
    redrive) or ``policy.max_attempts`` is spent, then the event is failed as a dead letter
    (``dead_lettered_at``, redrivable); permanent ones fail it at once.

    Args:
        event_id: The ``core.webhook_events`` id (the job's payload).
        events: The event store.
        enricher: The pipeline.
        policy: Retry limits and backoff.
        rand: Source of jitter in [0, 1).
        provably_unsent: Tells whether a send error proves that nothing reached C2S (only then
            is the send retried).
        clock: The current time (UTC), for the retry budget.

    Returns:
        What the run did; the caller re-schedules ``retry`` outcomes after ``retry_in_s``.

    Raises:
        DependencyUnavailable: The store itself is unreachable (nothing could be recorded; the
            caller retries the job as a whole).
    """
    event = await events.mark_processing(event_id)
    if event is None:
        stored = await events.load(event_id)
        reason = "event not found" if stored is None else f"event already {stored.status}"
        return JobOutcome(kind="skipped", event_id=event_id, reason=reason)
    if event.message_sent_at is not None:
        await events.mark_sent_completed(event_id)
        return _outcome(event, "completed")
    if event.send_intent_at is not None:
        return await _fail(events, event, SEND_OUTCOME_UNKNOWN)
    if event.attempts > policy.max_attempts:
        # Only reachable when runs die mid-job (each claim counts): a poison event that crashes
        # its worker must not crash the next one forever.
        reason = f"gave up after {event.attempts} attempts: the job was interrupted repeatedly"
        return await _fail(events, event, reason, dead_letter=True)
    try:
        lead = decode_stored_event(event.payload).to_lead()
    except InvalidInput as exc:
        return await _settle(
            events, event, Verdict(False, f"stored payload is invalid: {exc.field}"), policy, rand
        )
    # One message per lead and contacts (docs/contract.md §2): an event for contacts the lead was
    # already messaged for (a status change, or C2S echoing our own message) needs nothing.
    contact = contact_fingerprint(lead.customer)
    if await enricher.lead_messages.messaged(lead.id, contact):
        return await _complete_unsent(events, event)
    log = FailureLog()
    try:
        # One audit record per person used; the Work API calls it made count as paid.
        with paid_scope():
            result, _resolution = await watched(enricher, log).prepare_event(lead)
    except Exception as exc:  # every failure is classified and recorded
        return await _settle(events, event, classify_prepare_error(exc, log), policy, rand, clock)
    if not await events.mark_send_intent(event_id):
        # A concurrent run (this job's lease expired while it was alive) got there first.
        return _outcome(event, "skipped", reason="another attempt owns the send")
    if not await enricher.lead_messages.claim(lead.id, contact, result.cpfs):
        # Another event of this lead (another run, maybe another worker) messaged it meanwhile.
        await events.clear_send_intent(event_id)
        return await _complete_unsent(events, event)

    async def release() -> None:
        await enricher.lead_messages.release(lead.id, contact)

    delivery = asyncio.ensure_future(
        _deliver(
            event,
            lead.id,
            result.message,
            events=events,
            enricher=enricher,
            policy=policy,
            rand=rand,
            provably_unsent=provably_unsent,
            release=release,
            clock=clock,
        )
    )
    try:
        return await asyncio.shield(delivery)
    except asyncio.CancelledError:
        # Cancelled (worker shutdown) while the message is in flight: let the send and its record
        # finish first, bounded by the C2S client's timeout. Abandoning them here is exactly what
        # would leave the outcome unknown and dead-letter the event.
        await asyncio.wait({delivery})
        if not delivery.cancelled():
            delivery.exception()  # retrieved: the outcome is already recorded in the store
        raise
