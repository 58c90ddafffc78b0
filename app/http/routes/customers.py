"""Customer lookups: ``/contributor/customer``, ``/enrich``, ``/enrich/batch``, ``/customers/{id}``,
and the basic lead processing of ``POST /leads``."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
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
from domain.freshness import data_age_s
from domain.search import (
    DEFAULT_SEARCH_LIMIT,
    MAX_SEARCH_LIMIT,
    CustomerPage,
    search_customers,
)

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
MaxAgeParam = Annotated[
    float | None,
    QueryParameter(
        name="max_age",
        ge=0,
        schema_extra={"minimum": 0},  # Litestar drops a bound of 0 from the document
        required=False,
        description=(
            "Seconds. Stored data older than this is fetched again from the Work API (a paid "
            "call: with only the `read` scope, 403 naming `enrich`); a cached body older than "
            "this is not served."
        ),
    ),
]
MinLikelihoodParam = Annotated[
    float | None,
    QueryParameter(
        ge=0,
        schema_extra={"minimum": 0},  # Litestar drops a bound of 0 from the document
        le=1,
        required=False,
        description=(
            "0..1. A CPF resolved from the e-mail/phone whose match score is lower is not "
            "fetched: the answer has `matched: false`, `match.score` and `reason`. Default: "
            "the MIN_LIKELIHOOD setting. A CPF given directly is not subject to it."
        ),
    ),
]
CONSENT_DOC = (
    "The person consented (again) to their data being fetched: lifts the hold of an erasure at "
    "their request (without it such a fetch is refused with 451 `subject-erased`)."
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def customer_detail(found: PartyWithContacts, now: dt.datetime | None = None) -> CustomerDetail:
    """The customer document of ``docs/contract.md`` §1.6, with the stored enrichment and its
    freshness (``enriched_at``, ``data_age_s``)."""

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
        customer=found.party,
        emails=emails,
        phones=phones,
        enrichment_data=enrichment,
        enriched_at=stamp(found.enriched_at),
        data_age_s=data_age_s(found.enriched_at, now or _now()),
    )


_SEARCH_EXAMPLE = ResponseSpec(
    data_container=CustomerPage,
    description="A page of hits, best first; `next_cursor` is null on the last page",
    generate_examples=False,
    examples=[
        Example(
            summary="First page of ?name=maria silva&uf=SP&limit=2",
            value={
                "items": [
                    {
                        "id": "3f0c9a52-1d6e-4c1b-9a53-2b8f0c1d2e3f",
                        "name": "MARIA SILVA",
                        "cpf": "52998224725",
                        "birth_date": "1980-02-01",
                        "score": 1.0,
                        "enriched": True,
                        "enriched_at": "2026-12-07T10:00:00Z",
                        "data_age_s": 3600,
                    },
                    {
                        "id": "7a1e2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b",
                        "name": "MARIA DA SILVA SANTOS",
                        "cpf": "39053344705",
                        "birth_date": "1975-09-30",
                        "score": 0.71875,
                        "enriched": True,
                        "enriched_at": "2026-11-20T08:30:00Z",
                        "data_age_s": 612000,
                    },
                ],
                "next_cursor": "WzAuNzE4NzUsIjdhMWUyYjNjLTRkNWUtNGY2MC04YTdiLTljMGQxZTJmM2E0YiJd",
            },
        )
    ],
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
        max_age: MaxAgeParam = None,
        min_likelihood: MinLikelihoodParam = None,
    ) -> UnifiedCustomer:
        query = CustomerQuery(cpf=cpf, email=email, phone=phone, name=name, consent=consent)
        return await lookup_customer(
            enricher,
            query,
            now=_now(),
            may_fetch=may_spend(request.scope),
            max_age_s=max_age,
            min_likelihood=min_likelihood,
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
        return await lookup_customer(
            enricher,
            query,
            now=_now(),
            max_age_s=data.max_age,
            min_likelihood=data.min_likelihood,
        )

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
                max_age_s=item.max_age,
                min_likelihood=item.min_likelihood,
            )
            for item in data.items
        ]
        # The enable_batch flag off: 503 + Retry-After (docs/adr/0007-feature-flags.md).
        outcomes = await lookup_batch(
            enricher,
            queries,
            now=_now(),
            max_age_s=data.max_age,
            min_likelihood=data.min_likelihood,
        )
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
        "/customers",
        operation_id="searchCustomers",
        summary="Every stored person matching a name (fuzzy), a city and/or a UF, page by page",
        description=(
            "Needs `name` (at least 2 characters), `city` or `uf`. `name` is matched fuzzily: "
            "each word of 3 or more characters must be found in the person's name, in any "
            "order (typos tolerated, case and accents ignored; shorter words such as `da` only "
            "rank); `city` and `uf` filter on the "
            "person's addresses. Hits are ranked by similarity to the name (`score`), then by "
            "id; pass `next_cursor` as `cursor` for the next page (`null` on the last). Only "
            "stored data: no upstream call. Example: "
            "`GET /api/v1/customers?name=maria%20silva&uf=SP&limit=2` (the 200 example)."
        ),
        responses={200: _SEARCH_EXAMPLE, **problem_responses(400, 401, 403, 429, 503)},
    )
    async def search(
        self,
        enricher: EnricherDep,
        name: Identifier = None,
        city: Identifier = None,
        uf: Annotated[str | None, QueryParameter(max_length=16, required=False)] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=512, required=False)] = None,
        limit: Annotated[
            int, QueryParameter(ge=1, le=MAX_SEARCH_LIMIT, description="Hits per page")
        ] = DEFAULT_SEARCH_LIMIT,
    ) -> CustomerPage:
        return await search_customers(
            enricher.repository,
            name=name,
            city=city,
            uf=uf,
            cursor=cursor,
            limit=limit,
            now=_now(),
        )

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
