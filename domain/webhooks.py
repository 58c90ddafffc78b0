"""Webhook intake and the durable webhook job (``behaviour.md`` 1.11, 1.12, 2.3, 8).

Three parts, all free of I/O (the ports do it):

* **Parsing** the C2S webhook body tolerantly into :class:`WebhookEvent` values. Three shapes are
  accepted, because which one C2S really sends is an open question of the reference (its open
  question 4): a single event ``{id, hook_action?, attributes:{...}}``, an array of those, and the
  TypeScript port's envelope ``{hook_action, lead:{id, internal_id?, attributes:{...}}}``. Each
  event is validated on its own: one with a missing/invalid ``id`` or ``updated_at``, or an unknown
  ``hook_action``, is rejected and counted neither processed nor duplicate, as in the reference.
* **The job** (:func:`run_event_job`): enrich one stored event and post its message to the lead,
  at most once. The send is bracketed by two durable marks, ``send_intent_at`` (committed before
  the send) and ``message_sent_at``; an intent without a sent mark means an earlier attempt died
  mid-send, and the event is failed rather than resent (ADR 0004).
* **The Google Ads lead intake** (:func:`intake_google_lead`): dedup on Google's lead id, contact
  validation, best-effort enrichment, and the creation of the lead in C2S (never retried).

Failure texts recorded for operators (``error_message``) never contain personal data: they name
dependencies, fields, HTTP statuses and exception classes only.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import random
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Protocol
from uuid import UUID

import msgspec

from domain.emails import parse_email
from domain.errors import (
    DependencyUnavailable,
    DomainError,
    InvalidInput,
    NotFound,
    UpstreamError,
    UpstreamSoftError,
)
from domain.models import Lead, LeadCustomer, NewLead
from domain.phones import parse_br_phone

if TYPE_CHECKING:
    from domain.dossier import Dossier
    from domain.models import CpfCandidate
    from domain.pipeline import Enricher
    from domain.ports import DiretrixPort, WorkApiPort

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "HOOK_ACTIONS",
    "MESSAGES_DISABLED",
    "SEND_OUTCOME_UNKNOWN",
    "AcceptResult",
    "EventStatus",
    "EventStore",
    "GoogleAdsColumn",
    "GoogleAdsLead",
    "GoogleAdsResult",
    "GoogleAdsSettings",
    "GoogleLeadClaim",
    "GoogleLeadClaims",
    "JobOutcome",
    "ParsedWebhook",
    "QueueStats",
    "RejectedEvent",
    "RetryPolicy",
    "StoredEvent",
    "WebhookEvent",
    "count_webhook_events",
    "decode_stored_event",
    "intake_google_lead",
    "is_provably_unsent",
    "parse_updated_at",
    "parse_webhook_body",
    "parse_webhook_document",
    "run_event_job",
    "truncate_text",
]

HOOK_ACTIONS: Final = frozenset({"on_create_lead", "on_update_lead", "on_close_lead"})
EventStatus = Literal["received", "queued", "processing", "completed", "failed"]
TERMINAL_STATUSES: Final = frozenset({"completed", "failed"})

MESSAGES_DISABLED: Final = "message not sent: the send_c2s_messages flag is off"
SEND_OUTCOME_UNKNOWN: Final = "send outcome unknown: not resent to avoid a duplicate message"
CREATE_OUTCOME_UNKNOWN: Final = "create outcome unknown: not retried to avoid a duplicate lead"

# Lead ids end up in the C2S URL path (/integration/leads/{id}/create_message); anything that could
# change the path is refused at the door. Real ids are 32 hex characters.
_LEAD_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# --- updated_at --------------------------------------------------------------------------------

_DATE_TIME = r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})"
_CLOCK = r"(?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})(?:\.(?P<f>\d{1,12}))?"
# RFC 3339 (its section 5.6 allows a space for the "T"; lower-case t/z are legal too).
_RFC3339: Final = re.compile(
    rf"^{_DATE_TIME}[Tt ]{_CLOCK}(?P<tz>[Zz]|(?P<sign>[+-])(?P<oh>\d{{2}}):(?P<om>\d{{2}}))$"
)
# The reference's second format, ``%Y-%m-%d %H:%M:%S%.f %z`` (chrono's %z also takes +hh:mm).
_SPACED_OFFSET: Final = re.compile(
    rf"^{_DATE_TIME} {_CLOCK} (?P<sign>[+-])(?P<oh>\d{{2}}):?(?P<om>\d{{2}})$"
)
# Naive ``%Y-%m-%d %H:%M:%S%.f``: taken as UTC, as the reference does.
_NAIVE: Final = re.compile(rf"^{_DATE_TIME}[Tt ]{_CLOCK}$")
_MAX_TIMESTAMP_LENGTH: Final = 64


def _build_datetime(match: re.Match[str]) -> dt.datetime:
    groups = match.groupdict()
    fraction = (groups.get("f") or "").ljust(6, "0")[:6]  # beyond microseconds is truncated
    second = int(groups["s"])
    microsecond = int(fraction)
    if second == 60:  # a leap second (RFC 3339 allows it): clamp into the minute
        second, microsecond = 59, 999_999
    offset = dt.timedelta(0)
    if groups.get("sign"):
        offset = dt.timedelta(hours=int(groups["oh"]), minutes=int(groups["om"]))
        if groups["sign"] == "-":
            offset = -offset
    value = dt.datetime(
        int(groups["y"]),
        int(groups["mo"]),
        int(groups["d"]),
        int(groups["h"]),
        int(groups["mi"]),
        second,
        microsecond,
        tzinfo=dt.timezone(offset),
    )
    return value.astimezone(dt.UTC)


def parse_updated_at(value: object) -> dt.datetime:
    """Parse an event's ``updated_at`` into an aware UTC datetime.

    Accepted forms: RFC 3339 (``2025-11-26T10:00:00.123Z``, ``...-03:00``), the reference's
    ``YYYY-MM-DD HH:MM:SS.fff +zzzz`` and naive ``YYYY-MM-DD HH:MM:SS.fff`` (taken as UTC).
    Fractions beyond microseconds are truncated, which is also PostgreSQL's precision, so the
    idempotency key is the same in Python and in the database.

    Args:
        value: The JSON value found in the payload.

    Returns:
        The instant, in UTC.

    Raises:
        InvalidInput: ``field="updated_at"`` for anything else (wrong type, format, or a date
            that does not exist).
    """
    if not isinstance(value, str):
        raise InvalidInput("updated_at", "updated_at must be a timestamp string")
    text = value.strip()
    if len(text) > _MAX_TIMESTAMP_LENGTH:
        raise InvalidInput("updated_at", "updated_at is too long")
    match = _RFC3339.match(text) or _SPACED_OFFSET.match(text) or _NAIVE.match(text)
    if match is None:
        raise InvalidInput(
            "updated_at",
            "updated_at must be RFC 3339, 'YYYY-MM-DD HH:MM:SS.fff +zzzz' or "
            "'YYYY-MM-DD HH:MM:SS.fff'",
        )
    try:
        return _build_datetime(match)
    except (ValueError, OverflowError):
        raise InvalidInput("updated_at", "updated_at is not a valid date and time") from None


# --- envelope parsing --------------------------------------------------------------------------


class WebhookEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One C2S lead event, normalised from any of the accepted envelopes.

    Attributes:
        lead_id: The C2S lead id.
        updated_at: The lead's ``updated_at`` (UTC); with the source and the lead id it is the
            idempotency key of the event.
        hook_action: ``on_create_lead``, ``on_update_lead`` or ``on_close_lead`` when sent.
        customer: The lead's customer block (missing fields are ``None``).
        raw: The event's JSON as received (the whole TS envelope for that shape), stored as is.
    """

    lead_id: str
    updated_at: dt.datetime
    customer: LeadCustomer
    raw: bytes
    hook_action: str | None = None
    internal_id: str | None = None
    description: str | None = None
    product_description: str | None = None
    product_ref: str | None = None
    status: str | None = None
    seller_name: str | None = None
    source: str | None = None
    created_at: str | None = None

    def to_lead(self) -> Lead:
        """The lead as the pipeline needs it (the webhook carries it: no C2S fetch)."""
        return Lead(
            id=self.lead_id,
            customer=self.customer,
            description=self.description,
            product_ref=self.product_ref,
            product_description=self.product_description,
            status=self.status,
            seller_name=self.seller_name,
            source=self.source,
            created_at=self.created_at,
            updated_at=self.updated_at.isoformat(),
        )


class RejectedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event of the body that was not accepted.

    Attributes:
        index: Its position in the body (0 for a single object).
        field: The offending field as the client spelled it (``lead.attributes.updated_at``).
        reason: Why, without echoing the value.
    """

    index: int
    field: str
    reason: str


class ParsedWebhook(msgspec.Struct, frozen=True, kw_only=True):
    """Every event of one webhook body: the valid ones and the rejected ones."""

    events: list[WebhookEvent]
    rejected: list[RejectedEvent]

    @property
    def total(self) -> int:
        """How many events the body carried."""
        return len(self.events) + len(self.rejected)


def _text(value: object) -> str | None:
    """A tolerant string: numbers become text, blanks and other types become ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, int | float):
        return str(value)
    return None


def _obj(value: object) -> dict[str, Any]:  # Any: arbitrary JSON
    return value if isinstance(value, dict) else {}


def _customer(attributes: Mapping[str, Any]) -> LeadCustomer:  # Any: arbitrary JSON
    block = _obj(attributes.get("customer"))
    return LeadCustomer(
        id=_text(block.get("id")),
        name=_text(block.get("name")),
        email=_text(block.get("email")),
        phone=_text(block.get("phone")) or _text(block.get("phone_global")),
        phone2=_text(block.get("phone2")),
    )


def _event_from(obj: Mapping[str, Any], raw: bytes, prefix: str) -> WebhookEvent:  # Any: JSON
    """Normalise one event object; ``prefix`` names fields in errors (``[2].``)."""
    hook_action_value = obj.get("hook_action")
    lead = obj.get("lead")
    if isinstance(lead, dict):  # the TS envelope: {hook_action, lead: {id, attributes}}
        body: Mapping[str, Any] = lead
        where = prefix + "lead."
    else:
        body = obj
        where = prefix
    if hook_action_value is not None and (
        not isinstance(hook_action_value, str) or hook_action_value not in HOOK_ACTIONS
    ):
        raise InvalidInput(
            prefix + "hook_action",
            "hook_action must be on_create_lead, on_update_lead or on_close_lead",
        )
    lead_id = _text(body.get("id"))
    if lead_id is None:
        raise InvalidInput(where + "id", "id (the lead id) is required")
    lead_id = lead_id.strip()
    if not _LEAD_ID.match(lead_id):
        raise InvalidInput(where + "id", "id must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")
    attributes = _obj(body.get("attributes"))
    if "updated_at" not in attributes or attributes["updated_at"] is None:
        raise InvalidInput(where + "attributes.updated_at", "updated_at is required")
    try:
        updated_at = parse_updated_at(attributes["updated_at"])
    except InvalidInput as exc:
        raise InvalidInput(where + "attributes.updated_at", exc.detail) from None
    product = _obj(attributes.get("product"))
    lead_status = _obj(attributes.get("lead_status"))
    return WebhookEvent(
        lead_id=lead_id,
        updated_at=updated_at,
        hook_action=hook_action_value,
        internal_id=_text(body.get("internal_id")),
        customer=_customer(attributes),
        description=_text(attributes.get("description")),
        product_description=_text(product.get("description")),
        product_ref=_text(product.get("prop_ref")),
        status=_text(lead_status.get("alias")) or _text(lead_status.get("name")),
        seller_name=_text(_obj(attributes.get("seller")).get("name")),
        source=_text(_obj(attributes.get("lead_source")).get("name")),
        created_at=_text(attributes.get("created_at")),
        raw=raw,
    )


def parse_webhook_body(body: bytes) -> ParsedWebhook:
    """Parse a raw C2S webhook body into its events (see :func:`parse_webhook_document`).

    Raises:
        InvalidInput: ``field="body"`` when the body is not JSON (or not UTF-8).
    """
    try:
        document = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise InvalidInput("body", "the body is not valid JSON") from None
    return parse_webhook_document(document)


def count_webhook_events(document: object) -> int:
    """How many events a decoded webhook body carries, without validating them.

    One for an object, the length of an array, zero for anything else.
    """
    if isinstance(document, dict):
        return 1
    if isinstance(document, list):
        return len(document)
    return 0


def parse_webhook_document(document: object) -> ParsedWebhook:
    """Split a decoded C2S webhook body into its events, validating each event on its own.

    Args:
        document: The decoded JSON body.

    Returns:
        The valid events (in body order) and the rejected ones with the field at fault.

    Raises:
        InvalidInput: ``field="body"`` when the body is neither an object nor an array (nothing
            in it can be an event).
    """
    if isinstance(document, dict):
        items: list[object] = [document]
        prefixes = [""]
    elif isinstance(document, list):
        items = document
        prefixes = [f"[{i}]." for i in range(len(items))]
    else:
        raise InvalidInput("body", "the body must be an event object or an array of events")
    events: list[WebhookEvent] = []
    rejected: list[RejectedEvent] = []
    for index, (item, prefix) in enumerate(zip(items, prefixes, strict=True)):
        if not isinstance(item, dict):
            field = prefix.rstrip(".") or "body"
            rejected.append(RejectedEvent(index=index, field=field, reason="not an object"))
            continue
        try:
            events.append(_event_from(item, msgspec.json.encode(item), prefix))
        except InvalidInput as exc:
            rejected.append(RejectedEvent(index=index, field=exc.field, reason=exc.detail))
    return ParsedWebhook(events=events, rejected=rejected)


def decode_stored_event(raw: bytes) -> WebhookEvent:
    """Re-read an event stored by the intake (its ``payload_raw``).

    Raises:
        InvalidInput: The stored document is not a valid event (never happens for rows the
            intake wrote; guards rows written by hand).
    """
    try:
        document = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise InvalidInput("payload_raw", "the stored payload is not valid JSON") from None
    if not isinstance(document, dict):
        raise InvalidInput("payload_raw", "the stored payload is not an event object")
    return _event_from(document, raw, "")


# --- the event store port ----------------------------------------------------------------------


class AcceptResult(msgspec.Struct, frozen=True, kw_only=True):
    """What :meth:`EventStore.accept` did.

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


class QueueStats(msgspec.Struct, frozen=True, kw_only=True):
    """Events by status, and the age of the oldest event still open (for the queue metrics)."""

    counts: dict[str, int]
    oldest_open_age_s: float | None = None


class EventStore(Protocol):
    """The durable inbox of webhook events (PostgreSQL) and its job queue.

    Every state change is committed before the method returns; methods may raise
    :class:`DependencyUnavailable` (``postgres``).
    """

    async def accept(
        self, events: Sequence[WebhookEvent], trace_context: Mapping[str, str] | None = None
    ) -> AcceptResult:
        """Store each event idempotently and enqueue a job for each new one, atomically."""
        ...

    async def load(self, event_id: UUID) -> StoredEvent | None:
        """The event, or ``None`` if it does not exist."""
        ...

    async def mark_processing(self, event_id: UUID) -> StoredEvent | None:
        """Claim an open event for one attempt: status ``processing``, ``attempts + 1``.

        Returns:
            The event after the update, or ``None`` when it is missing or already terminal.
        """
        ...

    async def mark_send_intent(self, event_id: UUID) -> bool:
        """Record that the message is about to be sent; ``False`` if an intent already exists."""
        ...

    async def clear_send_intent(self, event_id: UUID) -> None:
        """Forget the intent of a send that provably did not reach C2S."""
        ...

    async def mark_sent_completed(self, event_id: UUID) -> None:
        """Record the message as sent (``message_sent_at``) and the event ``completed``."""
        ...

    async def mark_failed(self, event_id: UUID, reason: str) -> None:
        """Dead-letter the event: status ``failed`` with ``reason`` (never over ``completed``)."""
        ...

    async def record_attempt(self, event_id: UUID, reason: str) -> None:
        """Record a transient failure: back to ``queued`` with ``reason``, awaiting a retry."""
        ...

    async def queue_stats(self) -> QueueStats:
        """Counts by status and the oldest open event's age."""
        ...


# --- the job -----------------------------------------------------------------------------------


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Retries of transient failures: exponential backoff with jitter, then the dead letter.

    Attributes:
        max_attempts: Attempts before an event is failed (dead-lettered) with its last reason.
        base_delay_s: Delay after the first failed attempt, before jitter.
        max_delay_s: Cap of the delay, before jitter.
    """

    max_attempts: Annotated[int, msgspec.Meta(ge=1)] = 5
    base_delay_s: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    max_delay_s: Annotated[float, msgspec.Meta(ge=0)] = 300.0

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        "Equal jitter": half the exponential delay is fixed, half is random, so retries of
        events that failed together (an upstream outage) spread out without any retry coming
        back immediately.

        Args:
            attempt: The attempt that just failed, from 1.
            rand: A number in [0, 1).
        """
        exponent = min(max(attempt - 1, 0), 30)
        capped = min(self.max_delay_s, self.base_delay_s * (2.0**exponent))
        return capped / 2 + capped / 2 * min(max(rand, 0.0), 1.0)


DEFAULT_RETRY_POLICY: Final = RetryPolicy()

OutcomeKind = Literal["completed", "retry", "failed", "skipped"]


class JobOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one run of the job did.

    Attributes:
        kind: ``completed`` (message sent now or before), ``retry`` (transient failure, retry in
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


class _Verdict(msgspec.Struct, frozen=True):
    transient: bool
    reason: str


# Work API soft errors that a retry cannot fix (an operator must act, or the CPF is unknown).
_PERMANENT_SOFT_KINDS: Final = frozenset(
    {"not_found", "unknown_module", "expired_token", "no_credits"}
)
# HTTP statuses of a rejected send that a later retry may see accepted.
_RETRYABLE_STATUSES: Final = frozenset({408, 425, 429})
_RECORD_SENT_DELAYS_S: Final = (0.0, 0.2, 1.0)


def is_provably_unsent(exc: BaseException) -> bool:
    """Tell whether a failed send certainly did not post the message.

    True when C2S answered with an HTTP error (4xx/5xx, including 404 for the lead): the message
    was refused. Timeouts, dropped connections and anything else may have reached C2S, so they
    are not provable; adapters that know more (a breaker that rejected the call before any
    request) extend this predicate.

    Args:
        exc: What the send raised.
    """
    if isinstance(exc, NotFound):
        return True
    if isinstance(exc, UpstreamError) and not isinstance(exc, UpstreamSoftError):
        return exc.status is not None and exc.status >= 400
    return False


class _FailureLog:
    """The upstream failures one run met, which ``prepare_event`` folds into generic errors."""

    def __init__(self) -> None:
        self.diretrix_failed = False
        self.work_api_errors: list[DomainError] = []


class _WatchedDiretrix:
    """Diretrix as the pipeline sees it, noting whether any lookup failed.

    The pipeline treats a failed lookup as "no CPF" (so one failing contact does not sink the
    other); the job must still tell "nobody found" (permanent) from "Diretrix down" (retry).
    """

    def __init__(self, inner: DiretrixPort, log: _FailureLog) -> None:
        self._inner = inner
        self._log = log

    async def search_by_phone(self, national_phone: str) -> list[CpfCandidate]:
        try:
            return await self._inner.search_by_phone(national_phone)
        except (DependencyUnavailable, UpstreamError):
            self._log.diretrix_failed = True
            raise

    async def search_by_email(self, email: str) -> list[CpfCandidate]:
        try:
            return await self._inner.search_by_email(email)
        except (DependencyUnavailable, UpstreamError):
            self._log.diretrix_failed = True
            raise


class _WatchedWorkApi:
    """The Work API, noting why dossier fetches failed (soft errors may be permanent)."""

    def __init__(self, inner: WorkApiPort, log: _FailureLog) -> None:
        self._inner = inner
        self._log = log

    async def fetch_module(self, module: str, query: str) -> bytes:
        return await self._inner.fetch_module(module, query)

    async def fetch_dossier(self, cpf: str) -> tuple[Dossier, bytes]:
        try:
            return await self._inner.fetch_dossier(cpf)
        except DomainError as exc:
            self._log.work_api_errors.append(exc)
            raise


def _watched(enricher: Enricher, log: _FailureLog) -> Enricher:
    """A per-run copy of the enricher whose Diretrix and Work API ports report failures."""
    clone = copy.copy(enricher)
    clone.diretrix = _WatchedDiretrix(enricher.diretrix, log)
    clone.work_api = _WatchedWorkApi(enricher.work_api, log)
    return clone


def _transient_reason(exc: BaseException) -> str:
    if isinstance(exc, DependencyUnavailable):
        return f"{exc.dependency} unavailable"
    if isinstance(exc, UpstreamSoftError):
        return f"{exc.upstream} soft error: {exc.kind}"
    if isinstance(exc, UpstreamError):
        status = f" (HTTP {exc.status})" if exc.status is not None else ""
        return f"{exc.upstream} error{status}"
    return f"unexpected {type(exc).__name__}"


def _classify_prepare_error(exc: Exception, log: _FailureLog) -> _Verdict:
    """Decide whether a failure before the send is worth a retry."""
    if isinstance(exc, NotFound):
        if log.diretrix_failed:
            return _Verdict(True, "diretrix unavailable")
        return _Verdict(False, "no CPF found for the lead's phone or e-mail")
    if isinstance(exc, DependencyUnavailable):
        return _Verdict(True, _transient_reason(exc))
    if isinstance(exc, UpstreamError) and exc.upstream == "work_api" and log.work_api_errors:
        errors = log.work_api_errors
        if all(
            isinstance(e, UpstreamSoftError) and e.kind in _PERMANENT_SOFT_KINDS for e in errors
        ):
            first = errors[0]
            kind = first.kind if isinstance(first, UpstreamSoftError) else "other"
            return _Verdict(False, f"work_api soft error: {kind}")
        retryable = next(
            e
            for e in errors
            if not (isinstance(e, UpstreamSoftError) and e.kind in _PERMANENT_SOFT_KINDS)
        )
        return _Verdict(True, _transient_reason(retryable))
    if isinstance(exc, UpstreamError):
        return _Verdict(True, _transient_reason(exc))
    if isinstance(exc, InvalidInput):
        return _Verdict(False, f"invalid {exc.field}")
    if isinstance(exc, DomainError):
        return _Verdict(False, type(exc).__name__)
    # An unknown exception may be a driver hiccup as well as a bug: retry, bounded.
    return _Verdict(True, _transient_reason(exc))


def _classify_send_error(exc: BaseException) -> _Verdict:
    """For a send that provably did not reach C2S: retry or give up."""
    if isinstance(exc, NotFound):
        return _Verdict(False, "lead not found in C2S")
    if (
        isinstance(exc, UpstreamError)
        and exc.status is not None
        and 400 <= exc.status < 500  # client errors
        and exc.status not in _RETRYABLE_STATUSES
    ):
        return _Verdict(False, f"{exc.upstream} rejected the message (HTTP {exc.status})")
    return _Verdict(True, _transient_reason(exc))


async def _settle(
    events: EventStore,
    event: StoredEvent,
    verdict: _Verdict,
    policy: RetryPolicy,
    rand: Callable[[], float],
) -> JobOutcome:
    """Record a failed attempt: schedule a retry, or dead-letter the event."""
    if not verdict.transient:
        await events.mark_failed(event.id, verdict.reason)
        return JobOutcome(
            kind="failed",
            event_id=event.id,
            attempts=event.attempts,
            reason=verdict.reason,
            received_at=event.received_at,
        )
    if event.attempts >= policy.max_attempts:
        reason = f"gave up after {event.attempts} attempts: {verdict.reason}"
        await events.mark_failed(event.id, reason)
        return JobOutcome(
            kind="failed",
            event_id=event.id,
            attempts=event.attempts,
            reason=reason,
            dead_letter=True,
            received_at=event.received_at,
        )
    await events.record_attempt(event.id, verdict.reason)
    return JobOutcome(
        kind="retry",
        event_id=event.id,
        attempts=event.attempts,
        reason=verdict.reason,
        retry_in_s=policy.delay(event.attempts, rand()),
        received_at=event.received_at,
    )


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
) -> JobOutcome:
    """Send the message (the intent is already committed) and record the outcome."""
    try:
        sent = await enricher.send(lead_id, message)
    except Exception as exc:
        if provably_unsent(exc):
            await events.clear_send_intent(event.id)
            return await _settle(events, event, _classify_send_error(exc), policy, rand)
        await events.mark_failed(event.id, SEND_OUTCOME_UNKNOWN)
        return JobOutcome(
            kind="failed",
            event_id=event.id,
            attempts=event.attempts,
            reason=SEND_OUTCOME_UNKNOWN,
            received_at=event.received_at,
        )
    if not sent:
        # The send_c2s_messages flag is off: nothing reached C2S. The event is not "completed"
        # (that promises exactly one message); it is parked with a reason, to be re-run later.
        await events.clear_send_intent(event.id)
        await events.mark_failed(event.id, MESSAGES_DISABLED)
        return JobOutcome(
            kind="failed",
            event_id=event.id,
            attempts=event.attempts,
            reason=MESSAGES_DISABLED,
            received_at=event.received_at,
        )
    await _record_sent(events, event.id)
    return JobOutcome(
        kind="completed",
        event_id=event.id,
        attempts=event.attempts,
        sent=True,
        received_at=event.received_at,
    )


async def run_event_job(
    event_id: UUID,
    *,
    events: EventStore,
    enricher: Enricher,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    rand: Callable[[], float] = random.random,
    provably_unsent: Callable[[BaseException], bool] = is_provably_unsent,
) -> JobOutcome:
    """Process one stored webhook event: enrich the lead and post the message, at most once.

    Steps: claim the event (``processing``, one more attempt); if its message was already sent,
    complete it; if an earlier attempt recorded a send intent but no sent mark, fail it without
    resending (the message may or may not have reached C2S); otherwise resolve, fetch, store and
    format (:meth:`Enricher.prepare_event`), commit the send intent, send, and record the message
    as sent. Transient failures are recorded and returned as ``retry`` with a backoff delay until
    ``policy.max_attempts``, then the event is failed (the dead letter); permanent ones fail it
    at once.

    Args:
        event_id: The ``core.webhook_events`` id (the job's payload).
        events: The event store.
        enricher: The pipeline.
        policy: Retry limits and backoff.
        rand: Source of jitter in [0, 1).
        provably_unsent: Tells whether a send error proves that nothing reached C2S (only then
            is the send retried).

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
        return JobOutcome(
            kind="completed",
            event_id=event_id,
            attempts=event.attempts,
            received_at=event.received_at,
        )
    if event.send_intent_at is not None:
        await events.mark_failed(event_id, SEND_OUTCOME_UNKNOWN)
        return JobOutcome(
            kind="failed",
            event_id=event_id,
            attempts=event.attempts,
            reason=SEND_OUTCOME_UNKNOWN,
            received_at=event.received_at,
        )
    if event.attempts > policy.max_attempts:
        # Only reachable when runs die mid-job (each claim counts): a poison event that crashes
        # its worker must not crash the next one forever.
        reason = f"gave up after {event.attempts} attempts: the job was interrupted repeatedly"
        await events.mark_failed(event_id, reason)
        return JobOutcome(
            kind="failed",
            event_id=event_id,
            attempts=event.attempts,
            reason=reason,
            dead_letter=True,
            received_at=event.received_at,
        )
    try:
        lead = decode_stored_event(event.payload).to_lead()
    except InvalidInput as exc:
        return await _settle(
            events, event, _Verdict(False, f"stored payload is invalid: {exc.field}"), policy, rand
        )
    log = _FailureLog()
    try:
        result, _resolution = await _watched(enricher, log).prepare_event(lead)
    except Exception as exc:  # every failure is classified and recorded
        return await _settle(events, event, _classify_prepare_error(exc, log), policy, rand)
    if not await events.mark_send_intent(event_id):
        # A concurrent run (this job's lease expired while it was alive) got there first.
        return JobOutcome(
            kind="skipped",
            event_id=event_id,
            attempts=event.attempts,
            reason="another attempt owns the send",
            received_at=event.received_at,
        )
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


# --- Google Ads lead intake ----------------------------------------------------------------------

_GOOGLE_ID_MAX: Final = 256


class GoogleAdsColumn(msgspec.Struct, frozen=True, kw_only=True):
    """One answered field of a Google Ads lead form (``user_column_data`` item)."""

    column_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    column_name: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    string_value: Annotated[str, msgspec.Meta(max_length=4096)] | None = None


class GoogleAdsLead(msgspec.Struct, frozen=True, kw_only=True):
    """The Google Ads lead-form webhook payload (extra keys are tolerated)."""

    lead_id: Annotated[str, msgspec.Meta(min_length=1, max_length=_GOOGLE_ID_MAX)]
    user_column_data: Annotated[list[GoogleAdsColumn], msgspec.Meta(max_length=200)] = (
        msgspec.field(default_factory=list)
    )
    api_version: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    form_id: int | Annotated[str, msgspec.Meta(max_length=64)] | None = None
    campaign_id: int | Annotated[str, msgspec.Meta(max_length=64)] | None = None
    adgroup_id: int | Annotated[str, msgspec.Meta(max_length=64)] | None = None
    creative_id: int | Annotated[str, msgspec.Meta(max_length=64)] | None = None
    gcl_id: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    is_test: bool = False


class GoogleAdsResult(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of ``POST /webhooks/google-ads`` (the reference's fields)."""

    success: bool
    message: str
    lead_id: str
    c2s_lead_id: str | None = None


class GoogleAdsSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Tunables of the Google Ads intake.

    Attributes:
        description_max_length: Characters of the C2S lead description (the reference's
            ``C2S_DESCRIPTION_MAX_LENGTH``).
        default_seller_id: C2S seller the new lead is assigned to, if any.
        enrichment_timeout_s: Budget of the best-effort enrichment; the lead is created without
            it when exceeded (Google waits for the answer).
    """

    description_max_length: Annotated[int, msgspec.Meta(ge=1)] = 5000
    default_seller_id: str | None = None
    enrichment_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0


class GoogleLeadClaim(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of claiming a Google lead id.

    Attributes:
        acquired: This caller owns the lead now; ``False`` means it was seen before.
        c2s_lead_id: The C2S lead created for it earlier, when known.
    """

    acquired: bool
    c2s_lead_id: str | None = None


class GoogleLeadClaims(Protocol):
    """Durable dedup of Google Ads leads by Google's lead id."""

    async def claim(self, google_lead_id: str, payload: bytes) -> GoogleLeadClaim:
        """Claim the id (one winner among concurrent deliveries), storing the payload."""
        ...

    async def complete(self, google_lead_id: str, c2s_lead_id: str) -> None:
        """Record the C2S lead created for the id."""
        ...

    async def release(self, google_lead_id: str) -> None:
        """Drop the claim: nothing was created, a redelivery may try again."""
        ...

    async def fail(self, google_lead_id: str, reason: str) -> None:
        """Keep the claim as failed with ``reason`` (redeliveries are answered as duplicates)."""
        ...


_NAME_COLUMNS: Final = ("FULL_NAME",)
_FIRST_NAME: Final = "FIRST_NAME"
_LAST_NAME: Final = "LAST_NAME"
_PHONE_COLUMNS: Final = ("PHONE_NUMBER", "WORK_PHONE")
_EMAIL_COLUMNS: Final = ("EMAIL", "WORK_EMAIL")
_DEFAULT_NAME: Final = "Lead Google Ads"
_ELLIPSIS: Final = "…"


def truncate_text(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, marking the cut with an ellipsis.

    Counts code points, not bytes, so the result is always valid UTF-8 (the reference cut on a
    byte boundary and had to repair it).
    """
    if len(text) <= max_chars:
        return text
    if max_chars <= len(_ELLIPSIS):
        return text[:max_chars]
    return text[: max_chars - len(_ELLIPSIS)].rstrip() + _ELLIPSIS


def _columns(lead: GoogleAdsLead) -> dict[str, str]:
    out: dict[str, str] = {}
    for column in lead.user_column_data:
        key = (column.column_id or column.column_name or "").strip().upper()
        value = (column.string_value or "").strip()
        if key and value and key not in out:
            out[key] = value
    return out


def _google_contacts(lead: GoogleAdsLead) -> tuple[str, str | None, str | None]:
    """The lead's name, validated E.164 phone and normalised e-mail (invalid ones dropped)."""
    columns = _columns(lead)
    name = next((columns[c] for c in _NAME_COLUMNS if c in columns), None)
    if name is None:
        parts = [columns.get(_FIRST_NAME, ""), columns.get(_LAST_NAME, "")]
        name = " ".join(p for p in parts if p) or _DEFAULT_NAME
    phone: str | None = None
    for column in _PHONE_COLUMNS:
        if column in columns:
            with contextlib.suppress(InvalidInput):
                phone = parse_br_phone(columns[column]).e164
                break
    email: str | None = None
    for column in _EMAIL_COLUMNS:
        if column in columns:
            with contextlib.suppress(InvalidInput):
                email = parse_email(columns[column])
                break
    return name, phone, email


def _google_description(lead: GoogleAdsLead, enrichment: str | None) -> str:
    lines = ["Lead do Google Ads"]
    for column in lead.user_column_data:
        label = (column.column_name or column.column_id or "").strip()
        value = (column.string_value or "").strip()
        if label and value:
            lines.append(f"{label}: {value}")
    origin = [
        f"{label}: {value}"
        for label, value in (
            ("Formulário", lead.form_id),
            ("Campanha", lead.campaign_id),
            ("Grupo de anúncios", lead.adgroup_id),
        )
        if value is not None and str(value)
    ]
    if origin:
        lines.append(" | ".join(origin))
    if lead.is_test:
        lines.append("(lead de teste do Google Ads)")
    text = "\n".join(lines)
    if enrichment:
        text = f"{text}\n\n{enrichment}"
    return text


async def _enrich_best_effort(
    enricher: Enricher, customer: LeadCustomer, timeout_s: float
) -> str | None:
    """Resolve, fetch and store the lead's person(s), and format the message; ``None`` on failure.

    The lead is worth creating without its enrichment, so any failure is swallowed here.
    """
    try:
        async with asyncio.timeout(timeout_s):
            resolution = await enricher.resolve(customer)
            if not resolution.people:
                return None
            dossiers = await enricher.fetch_dossiers(
                [p.cpf for p in resolution.people], use_cache=True
            )
            if not dossiers:
                return None
            await enricher.store(dossiers, None)
            return enricher.format(resolution, dossiers, "webhook")
    except (DomainError, TimeoutError):
        return None


async def intake_google_lead(
    lead: GoogleAdsLead,
    payload: bytes,
    *,
    claims: GoogleLeadClaims,
    enricher: Enricher,
    settings: GoogleAdsSettings,
    provably_unsent: Callable[[BaseException], bool] = is_provably_unsent,
) -> GoogleAdsResult:
    """Create a C2S lead from a Google Ads lead form, once per Google lead id.

    Args:
        lead: The decoded payload.
        payload: Its raw bytes (stored with the claim).
        claims: Dedup by Google lead id.
        enricher: The pipeline (its steps are used best-effort; its C2S port creates the lead).
        settings: Description length, seller, enrichment budget.
        provably_unsent: Tells whether a failed creation certainly created nothing (then the
            claim is released so Google's redelivery can try again).

    Returns:
        ``success`` with the C2S lead id, or the duplicate answer.

    Raises:
        InvalidInput: ``user_column_data`` has neither a valid phone nor a valid e-mail.
        UpstreamError: C2S refused or failed the creation.
        DependencyUnavailable: C2S (or the claim store) is unavailable.
    """
    name, phone, email = _google_contacts(lead)
    if phone is None and email is None:
        raise InvalidInput("user_column_data", "the lead has neither a valid phone nor e-mail")
    claim = await claims.claim(lead.lead_id, payload)
    if not claim.acquired:
        return GoogleAdsResult(
            success=True,
            message="Lead already processed (duplicate)",
            lead_id=lead.lead_id,
            c2s_lead_id=claim.c2s_lead_id,
        )
    try:
        customer = LeadCustomer(name=name, phone=phone, email=email)
        enrichment = await _enrich_best_effort(enricher, customer, settings.enrichment_timeout_s)
        description = truncate_text(
            _google_description(lead, enrichment), settings.description_max_length
        )
        new_lead = NewLead(
            name=name,
            description=description,
            phone=phone,
            email=email,
            seller_id=settings.default_seller_id or None,
        )
    except BaseException:
        await claims.release(lead.lead_id)
        raise
    try:
        c2s_lead_id = await enricher.c2s.create_lead(new_lead)
    except Exception as exc:
        if provably_unsent(exc):
            await claims.release(lead.lead_id)
        else:
            await claims.fail(lead.lead_id, CREATE_OUTCOME_UNKNOWN)
        raise
    await claims.complete(lead.lead_id, c2s_lead_id)
    return GoogleAdsResult(
        success=True,
        message="Lead created in C2S",
        lead_id=lead.lead_id,
        c2s_lead_id=c2s_lead_id,
    )
