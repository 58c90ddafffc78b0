"""C2S (Contact2Sale) client: implements :class:`domain.ports.C2SPort`.

Only ``fetch_lead`` is retried: posting a message or creating a lead twice would duplicate it in
the CRM, so those calls are made exactly once and their failures surface to the caller.

The lead parser is tolerant: every customer field may be missing or null (a null e-mail or
phone is not an error), blank strings count as absent, ids may be numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote

import msgspec

from domain.errors import NotFound, UpstreamError
from domain.models import Lead, LeadCustomer
from infra.upstream.http import (
    DEFAULT_RETRY,
    RetryPolicy,
    UpstreamTransport,
    client_timeout,
    decode_json,
)

if TYPE_CHECKING:
    import aiohttp

    from domain.models import NewLead
    from infra.breaker.circuit import CircuitBreaker

__all__ = ["C2SClient", "C2SConfig"]

_NAME = "c2s"
_NOT_FOUND = 404

IdLike = str | int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class C2SConfig:
    """How to reach C2S (the app maps ``Settings.c2s_*`` onto this).

    Attributes:
        base_url: e.g. ``https://api.contact2sale.com``.
        token: Bearer token (hidden from ``repr``).
        timeout_s: Whole-call bound per attempt (well under 30 s).
        connect_timeout_s: Socket connect bound.
        retry: Retry policy of ``fetch_lead``.
    """

    base_url: str
    token: str = field(repr=False)
    timeout_s: float = 10.0
    connect_timeout_s: float = 2.0
    retry: RetryPolicy = DEFAULT_RETRY


class _Customer(msgspec.Struct, frozen=True):
    id: IdLike = None
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    phone2: str | None = None
    phone_global: str | None = None


class _Product(msgspec.Struct, frozen=True):
    id: IdLike = None
    description: str | None = None
    prop_ref: IdLike = None


class _Named(msgspec.Struct, frozen=True):
    id: IdLike = None
    name: str | None = None
    alias: str | None = None


class _Attributes(msgspec.Struct, frozen=True):
    customer: _Customer | None = None
    description: str | None = None
    product: _Product | None = None
    lead_source: _Named | None = None
    lead_status: _Named | None = None
    seller: _Named | None = None
    created_at: str | None = None
    updated_at: str | None = None


class _LeadData(msgspec.Struct, frozen=True):
    id: str | int
    attributes: _Attributes | None = None
    type: str | None = None


class _LeadEnvelope(msgspec.Struct, frozen=True):
    data: _LeadData


class _CreatedData(msgspec.Struct, frozen=True):
    id: IdLike = None


class _Created(msgspec.Struct, frozen=True):
    data: _CreatedData | None = None
    id: IdLike = None
    lead_id: IdLike = None


class _MessageOut(msgspec.Struct, frozen=True):
    lead_id: str = msgspec.field(name="leadId")
    body: str


class _NewLeadAttributes(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    description: str
    type_negotiation: str
    source: str
    phone: str | None = None
    email: str | None = None
    seller_id: str | None = None


class _NewLeadData(msgspec.Struct, frozen=True):
    attributes: _NewLeadAttributes
    type: str = "lead"


class _NewLeadOut(msgspec.Struct, frozen=True):
    data: _NewLeadData


def _text(value: IdLike) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def parse_lead(body: bytes) -> Lead:
    """Parse a C2S ``GET /integration/leads/{id}`` body into a :class:`Lead`.

    Raises:
        UpstreamError: The body is not a JSON:API lead.
    """
    envelope = decode_json(_NAME, body, _LeadEnvelope)
    data = envelope.data
    attrs = data.attributes or _Attributes()
    customer = attrs.customer or _Customer()
    product = attrs.product or _Product()
    status = attrs.lead_status
    return Lead(
        id=str(data.id),
        customer=LeadCustomer(
            id=_text(customer.id),
            name=_text(customer.name),
            email=_text(customer.email),
            phone=_text(customer.phone) or _text(customer.phone_global),
            phone2=_text(customer.phone2),
        ),
        description=attrs.description,
        product_ref=_text(product.prop_ref),
        product_description=_text(product.description),
        status=(_text(status.alias) or _text(status.name)) if status else None,
        seller_name=_text(attrs.seller.name) if attrs.seller else None,
        source=_text(attrs.lead_source.name) if attrs.lead_source else None,
        created_at=attrs.created_at,
        updated_at=attrs.updated_at,
    )


class C2SClient:
    """The C2S CRM over HTTP.

    Args:
        session: The worker's shared session.
        config: Base URL, token, timeouts, retry policy.
        breaker: The ``c2s`` breaker.
    """

    def __init__(
        self, session: aiohttp.ClientSession, config: C2SConfig, breaker: CircuitBreaker
    ) -> None:
        self._transport = UpstreamTransport(
            _NAME,
            session,
            config.base_url,
            timeout=client_timeout(config.timeout_s, config.connect_timeout_s),
            breaker=breaker,
            retry=config.retry,
            headers={"Authorization": f"Bearer {config.token}"},
        )

    @property
    def breaker(self) -> CircuitBreaker:
        """The breaker guarding C2S."""
        return self._transport.breaker

    async def fetch_lead(self, lead_id: str) -> Lead:
        """Fetch a lead (retried on network errors, timeouts, 5xx and 429).

        Raises:
            NotFound: C2S answered 404.
            DependencyUnavailable: C2S unreachable, too slow, or its breaker is open.
            UpstreamError: Any other error status or an unparsable body.
        """
        response = await self._transport.request(
            "GET",
            f"/integration/leads/{quote(lead_id, safe='')}",
            route="GET /integration/leads/{id}",
            idempotent=True,
            accept=(_NOT_FOUND,),
        )
        if response.status == _NOT_FOUND:
            raise NotFound("lead not found in C2S")
        return parse_lead(response.body)

    async def send_message(self, lead_id: str, body: str) -> None:
        """Post a message to a lead. Made exactly once: a retry could post it twice.

        Raises:
            DependencyUnavailable: C2S unreachable, too slow, or its breaker is open.
            UpstreamError: Any non-2xx answer.
        """
        await self._transport.request(
            "POST",
            f"/integration/leads/{quote(lead_id, safe='')}/create_message",
            route="POST /integration/leads/{id}/create_message",
            body=msgspec.json.encode(_MessageOut(lead_id=lead_id, body=body)),
            idempotent=False,
        )

    async def create_lead(self, lead: NewLead) -> str:
        """Create a lead and return its id. Made exactly once (not idempotent).

        Raises:
            DependencyUnavailable: C2S unreachable, too slow, or its breaker is open.
            UpstreamError: A non-2xx answer, or no id in the answer.
        """
        payload = _NewLeadOut(
            data=_NewLeadData(
                attributes=_NewLeadAttributes(
                    name=lead.name,
                    description=lead.description,
                    type_negotiation=lead.type_negotiation,
                    source=lead.source,
                    phone=lead.phone,
                    email=lead.email,
                    seller_id=lead.seller_id,
                )
            )
        )
        response = await self._transport.request(
            "POST",
            "/integration/leads",
            route="POST /integration/leads",
            body=msgspec.json.encode(payload),
            idempotent=False,
        )
        created = decode_json(_NAME, response.body, _Created)
        # The new lead id is data.id, else id, else lead_id (string or integer).
        lead_id = (
            (_text(created.data.id) if created.data else None)
            or _text(created.id)
            or _text(created.lead_id)
        )
        if lead_id is None:
            raise UpstreamError(_NAME, "c2s created a lead without returning its id", 200)
        return lead_id
