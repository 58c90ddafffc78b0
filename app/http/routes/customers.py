"""Customer lookups: ``/contributor/customer``, ``/enrich``, ``/enrich/batch``, ``/customers/{id}``,
and the basic lead processing of ``POST /leads``."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import msgspec
from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from app.http.problems import problem_responses
from app.http.routes import API_KEY_SECURITY, EnricherDep
from app.http.schemas import (
    BatchItemResult,
    BatchRequest,
    BatchResult,
    CustomerDetail,
    EmailRow,
    EnrichRequest,
    LeadRequest,
    LeadResponse,
    PhoneRow,
)
from domain.customers import CustomerQuery, UnifiedCustomer, lookup_customer
from domain.dossier import NormalizedPerson
from domain.errors import DependencyUnavailable, DomainError, InvalidInput, NotFound
from domain.flags import Flag, require_enabled

if TYPE_CHECKING:
    from domain.models import PartyWithContacts

__all__ = ["CustomerController", "batch_cost", "customer_detail"]

_BATCH_CONCURRENCY = 8


class _BatchShape(msgspec.Struct):
    """Just enough of a batch body to count its items (anything else is ignored here)."""

    items: list[msgspec.Raw]


def batch_cost(body: bytes) -> int:
    """Units of the per-key limits a batch takes: one per item (1 for a body that is not one;
    the handler answers it 400)."""
    try:
        return max(1, len(msgspec.json.decode(body, type=_BatchShape).items))
    except msgspec.MsgspecError:
        return 1


Identifier = Annotated[str | None, QueryParameter(max_length=256, required=False)]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def customer_detail(found: PartyWithContacts) -> CustomerDetail:
    """The customer document (docs/contract.md §1.6), with the stored enrichment filled in."""

    def stamp(value: dt.datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    emails = [
        EmailRow(id=str(c.id), email=c.value, created_at=stamp(c.created_at))
        for c in found.contacts
        if c.contact_type == "email"
    ]
    phones = [
        PhoneRow(id=str(c.id), number=c.value, country_code=None, created_at=stamp(c.created_at))
        for c in found.contacts
        if c.contact_type != "email"
    ]
    enrichment = (
        msgspec.json.decode(found.normalized_data, type=NormalizedPerson)
        if found.normalized_data is not None
        else None
    )
    return CustomerDetail(
        customer=found.party, emails=emails, phones=phones, enrichment_data=enrichment
    )


class CustomerController(Controller):
    """Look customers up in the party model, enriching from the Work API when needed."""

    path = "/api/v1"
    tags = ["customers"]  # noqa: RUF012 - Litestar reads class attributes
    security = API_KEY_SECURITY

    @get(
        "/contributor/customer",
        operation_id="getContributorCustomer",
        summary="Find a customer by cpf > email > phone > name (database, then Work API)",
        responses=problem_responses(400, 401, 403, 404, 429, 503),
    )
    async def contributor_customer(
        self,
        enricher: EnricherDep,
        cpf: Identifier = None,
        email: Identifier = None,
        phone: Identifier = None,
        name: Identifier = None,
    ) -> UnifiedCustomer:
        query = CustomerQuery(cpf=cpf, email=email, phone=phone, name=name)
        return await lookup_customer(enricher, query, now=_now())

    @post(
        "/enrich",
        operation_id="enrichCustomer",
        summary="Same as the customer lookup, identifiers in a JSON body",
        status_code=200,
        responses=problem_responses(400, 401, 403, 404, 413, 415, 429, 503),
    )
    async def enrich(self, enricher: EnricherDep, data: JSONBody[EnrichRequest]) -> UnifiedCustomer:
        query = CustomerQuery(cpf=data.cpf, email=data.email, phone=data.phone, name=data.name)
        return await lookup_customer(enricher, query, now=_now())

    @post(
        "/enrich/batch",
        operation_id="enrichBatch",
        summary="Look up 1..100 customers; per-item results, partial success",
        description="Each item counts as one request against the API key's rate limits.",
        status_code=200,
        # Up to 100 lookups (and their paid upstream calls): the per-key quota is charged per item.
        opt={"rate_limit_cost": batch_cost},
        responses=problem_responses(400, 401, 403, 413, 415, 429, 503),
    )
    async def enrich_batch(
        self, enricher: EnricherDep, data: JSONBody[BatchRequest]
    ) -> BatchResult:
        require_enabled(enricher.flags, Flag.ENABLE_BATCH)  # off: 503 + Retry-After (ADR 0007)
        gate = asyncio.Semaphore(_BATCH_CONCURRENCY)
        now = _now()

        async def one(index: int, item: EnrichRequest) -> BatchItemResult:
            query = CustomerQuery(cpf=item.cpf, email=item.email, phone=item.phone, name=item.name)
            async with gate:
                try:
                    customer = await lookup_customer(enricher, query, now=now)
                except InvalidInput as exc:
                    return BatchItemResult(
                        index=index,
                        status=400,
                        error=exc.detail,
                        detail=exc.detail,
                        field=exc.field,
                    )
                except NotFound as exc:
                    return BatchItemResult(
                        index=index, status=404, error=exc.detail, detail=exc.detail
                    )
                except DomainError as exc:
                    status = 503 if isinstance(exc, DependencyUnavailable) else 502
                    text = "Service unavailable" if status == 503 else "External service error"
                    return BatchItemResult(index=index, status=status, error=text, detail=text)
            return BatchItemResult(index=index, status=200, customer=customer)

        results = await asyncio.gather(*(one(i, item) for i, item in enumerate(data.items)))
        ok = sum(1 for r in results if r.status == 200)
        return BatchResult(results=list(results), succeeded=ok, failed=len(results) - ok)

    @get(
        "/customers/{customer_id:uuid}",
        operation_id="getCustomer",
        summary="A stored customer (party) by id, with contacts and its current enrichment",
        responses=problem_responses(400, 401, 403, 404, 429, 503),
    )
    async def customer(self, enricher: EnricherDep, customer_id: FromPath[UUID]) -> CustomerDetail:
        found = await enricher.repository.get_party(customer_id)
        if found is None or found.party.party_type != "person":
            raise NotFound(f"Customer with id {customer_id} not found")
        return customer_detail(found)

    @post(
        "/leads",
        operation_id="processBasicLead",
        summary="Basic lead processing: look the lead's person up (no C2S calls); always 200",
        status_code=200,
        responses=problem_responses(400, 401, 403, 413, 415, 429, 503),
    )
    async def basic_lead(self, enricher: EnricherDep, data: JSONBody[LeadRequest]) -> LeadResponse:
        phones = data.contact_info.phones
        query = CustomerQuery(
            cpf=data.personal_info.cpf,
            email=data.personal_info.email,
            phone=phones[0].phone if phones else None,
            name=data.personal_info.name,
        )
        try:
            view = await lookup_customer(enricher, query, now=_now())
        except DomainError as exc:
            text = exc.detail if isinstance(exc, InvalidInput | NotFound) else "dependency failure"
            return LeadResponse(success=False, message=f"Failed to enrich lead: {text}", data=None)
        party_id = view.metadata.party_id
        found = await enricher.repository.get_party(UUID(party_id)) if party_id else None
        if found is None or not found.contacts:
            return LeadResponse(success=False, message="No contact data found for lead", data=None)
        return LeadResponse(
            success=True,
            message="Lead processed and enriched successfully",
            data=customer_detail(found),
        )
