"""Request and response Structs of the v1 HTTP contract (field names: docs/contract.md §1)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from domain.customers import UnifiedCustomer
from domain.dossier import NormalizedPerson
from domain.models import Party

__all__ = [
    "BatchItem",
    "BatchItemResult",
    "BatchRequest",
    "BatchResult",
    "CustomerDetail",
    "EmailRow",
    "EnrichRequest",
    "LeadContactInfo",
    "LeadPersonalInfo",
    "LeadPhone",
    "LeadRequest",
    "LeadResponse",
    "MaxAge",
    "MinLikelihood",
    "PhoneRow",
]

LeadId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$", max_length=64)]
ShortText = Annotated[str, msgspec.Meta(max_length=256)]
# Freshness and match threshold (domain/freshness.py): seconds >= 0, and a score in [0, 1].
# Litestar drops a bound of 0 from the OpenAPI document (a falsy value): stated again as extra.
_AT_LEAST_ZERO = {"extra": {"minimum": 0}}
MaxAge = Annotated[
    float,
    msgspec.Meta(
        ge=0,
        extra_json_schema=_AT_LEAST_ZERO,
        description=(
            "Seconds: stored data older than this is fetched again from the Work API (a paid "
            "call, `enrich` scope), and a cached body older than this is not served"
        ),
    ),
]
MinLikelihood = Annotated[
    float,
    msgspec.Meta(
        ge=0,
        le=1,
        extra_json_schema=_AT_LEAST_ZERO,
        description=(
            "0..1: a CPF resolved from the e-mail/phone whose match score is lower is neither "
            "fetched nor used (`matched: false`, `reason`); default MIN_LIKELIHOOD"
        ),
    ),
]


class EnrichRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/v1/enrich``: any of the identifiers (at least one).

    ``consent``: the person consented again, lifting the hold of an erasure at their request
    (otherwise a paid fetch of an erased person is refused with 451 ``subject-erased``).
    """

    cpf: ShortText | None = None
    email: ShortText | None = None
    phone: ShortText | None = None
    name: ShortText | None = None
    max_age: MaxAge | None = None
    min_likelihood: MinLikelihood | None = None
    consent: bool = False


class BatchItem(EnrichRequest, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One identifier set of a batch (its ``max_age``/``min_likelihood`` win over the batch's)."""


class BatchRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/v1/enrich/batch``: 1..100 items, answered item by item; ``max_age`` and
    ``min_likelihood`` apply to every item that does not set its own."""

    items: Annotated[list[BatchItem], msgspec.Meta(min_length=1, max_length=100)]
    max_age: MaxAge | None = None
    min_likelihood: MinLikelihood | None = None


class BatchItemResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The outcome of one batch item: a customer, or a problem (status, detail)."""

    index: int
    status: int
    customer: UnifiedCustomer | None = None
    error: str | None = None
    detail: str | None = None
    field: str | None = None


class BatchResult(msgspec.Struct, frozen=True, kw_only=True):
    """Per-item results in request order; partial success is normal."""

    results: list[BatchItemResult]
    succeeded: int
    failed: int


class EmailRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    email: str
    created_at: str | None


class PhoneRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    number: str
    country_code: str | None
    created_at: str | None


class CustomerDetail(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /api/v1/customers/{id}``; ``enrichment_data`` is the stored normalised dossier."""

    customer: Party
    emails: list[EmailRow]
    phones: list[PhoneRow]
    enrichment_data: NormalizedPerson | None
    # When the enrichment was bought (ISO 8601; null if never) and its age in whole seconds.
    enriched_at: str | None = None
    data_age_s: int | None = None


class LeadPersonalInfo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: ShortText
    email: ShortText | None = None
    cpf: ShortText | None = None


class LeadPhone(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    phone: ShortText


class LeadContactInfo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    phones: Annotated[list[LeadPhone], msgspec.Meta(max_length=20)] = msgspec.field(
        default_factory=list
    )


class LeadRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/v1/leads``: basic lead processing (no C2S calls)."""

    lead_id: LeadId
    personal_info: LeadPersonalInfo
    contact_info: LeadContactInfo = msgspec.field(default_factory=LeadContactInfo)


class LeadResponse(msgspec.Struct, frozen=True, kw_only=True):
    """Always HTTP 200; ``success`` tells."""

    success: bool
    message: str
    data: CustomerDetail | None


JSONObject = dict[str, Any]
