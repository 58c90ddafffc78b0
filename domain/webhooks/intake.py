"""The C2S webhook intake (``docs/contract.md`` §1.9): a decoded body becomes stored events.

The body is bounded (at most ``max_events`` events, nothing stored above it), split into its
events, each validated on its own, and the valid ones are stored with their jobs through the
:class:`domain.ports.EventStore` before the caller answers: an accepted body cannot be lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import msgspec

from domain.webhooks.parsing import RejectedEvent, count_webhook_events, parse_webhook_document

if TYPE_CHECKING:
    from collections.abc import Mapping

    from domain.ports import EventStore

__all__ = ["IntakeOutcome", "IntakeResult", "WebhookIntake"]

IntakeOutcome = Literal["accepted", "too_many_events", "nothing_valid"]


class IntakeResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one webhook body yielded.

    Attributes:
        outcome: ``accepted`` (the valid events are stored), ``too_many_events`` (over the
            limit: nothing parsed nor stored) or ``nothing_valid`` (every event was rejected,
            nothing stored).
        received: The events the body carries.
        processed: Events newly stored, each with its job.
        duplicates: Events stored before (same lead id and ``updated_at``).
        rejected: The invalid events, in body order (counted neither processed nor duplicate).
    """

    outcome: IntakeOutcome
    received: int
    processed: int = 0
    duplicates: int = 0
    rejected: list[RejectedEvent] = msgspec.field(default_factory=list)


class WebhookIntake:
    """Accepts C2S webhook bodies into the durable event store.

    Args:
        events: The event store (events and their jobs, stored atomically).
        max_events: Events one body may carry.
    """

    __slots__ = ("events", "max_events")

    def __init__(self, events: EventStore, *, max_events: int) -> None:
        self.events = events
        self.max_events = max_events

    async def accept(
        self, document: object, trace_context: Mapping[str, str] | None = None
    ) -> IntakeResult:
        """Bound, parse and store the events of a decoded webhook body.

        Args:
            document: The decoded JSON body.
            trace_context: Propagation headers stored with each job, if any.

        Returns:
            The counts, or why nothing was stored.

        Raises:
            InvalidInput: ``field="body"`` when the body is neither an object nor an array.
            DependencyUnavailable: The store cannot take the events now (nothing was stored).
        """
        count = count_webhook_events(document)
        if count > self.max_events:
            return IntakeResult(outcome="too_many_events", received=count)
        parsed = parse_webhook_document(document)
        if parsed.rejected and not parsed.events:
            return IntakeResult(
                outcome="nothing_valid", received=parsed.total, rejected=parsed.rejected
            )
        stored = await self.events.accept(parsed.events, trace_context)
        return IntakeResult(
            outcome="accepted",
            received=parsed.total,
            processed=stored.processed,
            duplicates=stored.duplicates,
            rejected=parsed.rejected,
        )
