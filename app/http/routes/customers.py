"""Customer lookups: ``/contributor/customer``, ``/enrich``, ``/enrich/batch``, ``/customers/{id}``,
and the basic lead processing of ``POST /leads``."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from app.http.problems import problem_responses
from app.http.routes import API_KEY_SECURITY, READ_OR_ENRICH, EnricherDep, may_spend
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
from domain.customers import (
    BasicLead,
    CustomerQuery,
    UnifiedCustomer,
    get_customer,
    lookup_batch,
    lookup_customer,
    process_basic_lead,
)
from domain.dossier import NormalizedPerson

if TYPE_CHECKING:
    from domain.models import PartyWithContacts

__all__ = ["CustomerController", "batch_cost", "customer_detail"]


class _BatchShape(msgspec.Struct):
    """Just enough of a batch body to count its items (anything else is ignored here)."""

    items: list[msgspec.Raw]


def batch_cost(body: bytes) -> int:
    """Units of the per-key limits a batch takes: one per item (1 for a body that is not one,
    malformed or too deeply nested included: the handler answers it 400)."""
    try:
        return max(1, len(msgspec.json.decode(body, type=_BatchShape).items))
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        return 1


Identifier = Annotated[str | None, QueryParameter(max_length=256, required=False)]
CONSENT_DOC = (
    "The person consented (again) to their data being fetched: lifts the hold of an erasure at "
    "their request (without it such a fetch is refused with 451 `subject-erased`)."
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def customer_detail(found: PartyWithContacts) -> CustomerDetail:
    """The customer document of ``docs/contract.md`` §1.6, with the stored enrichment."""

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
        responses=problem_responses(400, 401, 403, 404, 429, 451, 503),
        opt={"scope": "read", "scope_note": READ_OR_ENRICH},
    )
    async def contributor_customer(
        self,
        enricher: EnricherDep,
        request: Request[Any, Any, Any],
        cpf: Identifier = None,
        email: Identifier = None,
        phone: Identifier = None,
        name: Identifier = None,
        consent: Annotated[bool, QueryParameter(description=CONSENT_DOC)] = False,
    ) -> UnifiedCustomer:
        query = CustomerQuery(cpf=cpf, email=email, phone=phone, name=name, consent=consent)
        return await lookup_customer(
            enricher, query, now=_now(), may_fetch=may_spend(request.scope)
        )

    @post(
        "/enrich",
        operation_id="enrichCustomer",
        summary="Same as the customer lookup, identifiers in a JSON body",
        status_code=200,
        responses=problem_responses(400, 401, 403, 404, 413, 415, 429, 451, 503),
    )
    async def enrich(self, enricher: EnricherDep, data: JSONBody[EnrichRequest]) -> UnifiedCustomer:
        query = CustomerQuery(
            cpf=data.cpf, email=data.email, phone=data.phone, name=data.name, consent=data.consent
        )
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
        queries = [
            CustomerQuery(
                cpf=item.cpf,
                email=item.email,
                phone=item.phone,
                name=item.name,
                consent=item.consent,
            )
            for item in data.items
        ]
        # The enable_batch flag off: 503 + Retry-After (docs/adr/0007-feature-flags.md).
        outcomes = await lookup_batch(enricher, queries, now=_now())
        results = [
            BatchItemResult(index=index, status=200, customer=outcome.customer)
            if outcome.error is None
            else BatchItemResult(
                index=index,
                status=outcome.error.status,
                error=outcome.error.detail,
                detail=outcome.error.detail,
                field=outcome.error.field,
            )
            for index, outcome in enumerate(outcomes)
        ]
        ok = sum(1 for r in results if r.status == 200)
        return BatchResult(results=results, succeeded=ok, failed=len(results) - ok)

    @get(
        "/customers/{customer_id:uuid}",
        operation_id="getCustomer",
        summary="A stored customer (party) by id, with contacts and its current enrichment",
        responses=problem_responses(400, 401, 403, 404, 429, 503),
    )
    async def customer(self, enricher: EnricherDep, customer_id: FromPath[UUID]) -> CustomerDetail:
        return customer_detail(await get_customer(enricher, customer_id))

    @post(
        "/leads",
        operation_id="processBasicLead",
        summary="Basic lead processing: look the lead's person up (no C2S calls); always 200",
        status_code=200,
        responses=problem_responses(400, 401, 403, 413, 415, 429, 503),
    )
    async def basic_lead(self, enricher: EnricherDep, data: JSONBody[LeadRequest]) -> LeadResponse:
        lead = BasicLead(
            name=data.personal_info.name,
            email=data.personal_info.email,
            cpf=data.personal_info.cpf,
            phones=[phone.phone for phone in data.contact_info.phones],
        )
        result = await process_basic_lead(enricher, lead, now=_now())
        return LeadResponse(
            success=result.success,
            message=result.message,
            data=customer_detail(result.customer) if result.customer is not None else None,
        )
