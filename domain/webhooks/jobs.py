"""What an operator sees of the webhook queue: events by state, and redrive outcomes.

Value types only; the store that lists and redrives (:class:`domain.ports.JobAdmin`) is an
adapter (``infra/db/jobs.py``).
"""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal, get_args
from uuid import UUID

import msgspec

__all__ = ["JOB_STATES", "JobState", "JobView", "RedriveOutcome", "RedriveStatus"]

JobState = Literal["dead", "failed", "open", "completed", "all"]
JOB_STATES: Final[tuple[str, ...]] = get_args(JobState)

RedriveStatus = Literal["redriven", "not_found", "not_failed", "send_unknown"]


class JobView(msgspec.Struct, frozen=True, kw_only=True):
    """A webhook event as an operator sees it (no payload: it holds personal data).

    Attributes:
        id: The event id (what ``redrive`` takes).
        lead_id: The C2S lead.
        status: ``received``, ``queued``, ``processing``, ``completed`` or ``failed``.
        dead_letter: Failed after its retry budget (redrivable with ``--all-dead``).
        send_unknown: An earlier attempt may have posted the message: never redriven.
        attempts: Attempts since arrival or the last redrive.
        error: The last failure's reason (no personal data).
        received_at: Arrival.
        processed_at: When it reached its terminal state.
        dead_lettered_at: When it was dead-lettered.
        redriven_at: The last redrive.
    """

    id: UUID
    lead_id: str
    status: str
    dead_letter: bool
    send_unknown: bool
    attempts: int
    error: str | None
    received_at: dt.datetime
    processed_at: dt.datetime | None
    dead_lettered_at: dt.datetime | None
    redriven_at: dt.datetime | None


class RedriveOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a redrive of one event did: ``redriven``, or why not."""

    id: UUID
    status: RedriveStatus
