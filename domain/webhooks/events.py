"""What the durable inbox of webhook events stores and answers (its port is
:class:`domain.ports.EventStore`)."""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal
from uuid import UUID

import msgspec

__all__ = ["TERMINAL_STATUSES", "AcceptResult", "EventStatus", "QueueStats", "StoredEvent"]

EventStatus = Literal["received", "queued", "processing", "completed", "failed"]
TERMINAL_STATUSES: Final = frozenset({"completed", "failed"})


class AcceptResult(msgspec.Struct, frozen=True, kw_only=True):
    """What :meth:`domain.ports.EventStore.accept` did.

    Attributes:
        received: Events handed in.
        processed: Events newly stored (each with its job enqueued in the same transaction).
        duplicates: Events already stored before (same source, lead id and ``updated_at``).
        ids: The ids of the newly stored events, in input order.
    """

    received: int
    processed: int
    duplicates: int
    ids: list[UUID]


class StoredEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A row of ``core.webhook_events`` as the job needs it."""

    id: UUID
    source: str
    lead_id: str
    updated_at: dt.datetime
    payload: bytes
    status: EventStatus
    attempts: int
    received_at: dt.datetime
    hook_action: str | None = None
    send_intent_at: dt.datetime | None = None
    message_sent_at: dt.datetime | None = None
    error_message: str | None = None
    redriven_at: dt.datetime | None = None

    @property
    def retry_window_start(self) -> dt.datetime:
        """Where the retry budget counts from: the last redrive, else the arrival."""
        return self.redriven_at or self.received_at


class QueueStats(msgspec.Struct, frozen=True, kw_only=True):
    """Events by status, the age of the oldest event still open, and the dead letters waiting for
    an operator (failed with ``dead_lettered_at`` set; ``None`` when not measured)."""

    counts: dict[str, int]
    oldest_open_age_s: float | None = None
    dead_letters: int | None = None
