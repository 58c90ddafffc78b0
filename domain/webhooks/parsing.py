"""The C2S webhook body, parsed tolerantly into events (``docs/contract.md`` §1.9).

Three shapes are accepted: a single event ``{id, hook_action?, attributes:{...}}``, an array of
those, and the envelope ``{hook_action, lead:{id, internal_id?, attributes:{...}}}``. Each event is
validated on its own: one with a missing/invalid ``id`` or ``updated_at``, or an unknown
``hook_action``, is rejected and counted neither processed nor duplicate.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any, Final

import msgspec

from domain.errors import InvalidInput
from domain.models import Lead, LeadCustomer

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "HOOK_ACTIONS",
    "ParsedWebhook",
    "RejectedEvent",
    "WebhookEvent",
    "count_webhook_events",
    "decode_stored_event",
    "parse_updated_at",
    "parse_webhook_body",
    "parse_webhook_document",
]

HOOK_ACTIONS: Final = frozenset({"on_create_lead", "on_update_lead", "on_close_lead"})

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
# ``%Y-%m-%d %H:%M:%S%.f %z``; the offset may be written +hhmm or +hh:mm.
_SPACED_OFFSET: Final = re.compile(
    rf"^{_DATE_TIME} {_CLOCK} (?P<sign>[+-])(?P<oh>\d{{2}}):?(?P<om>\d{{2}})$"
)
# Naive ``%Y-%m-%d %H:%M:%S%.f``: taken as UTC.
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

    Accepted forms (``docs/contract.md`` §1.9): RFC 3339 (``2025-11-26T10:00:00.123Z``,
    ``...-03:00``), ``YYYY-MM-DD HH:MM:SS.fff +zzzz`` and naive ``YYYY-MM-DD HH:MM:SS.fff``
    (taken as UTC). Fractions beyond microseconds are truncated, which is also PostgreSQL's
    precision, so the idempotency key is the same in Python and in the database.

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
        raw: The event's JSON as received (the whole envelope for that shape), stored as is.
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
    if isinstance(lead, dict):  # the envelope: {hook_action, lead: {id, attributes}}
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
