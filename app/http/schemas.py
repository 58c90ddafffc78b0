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
    "PhoneRow",
]

LeadId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$", max_length=64)]
ShortText = Annotated[str, msgspec.Meta(max_length=256)]


class EnrichRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/v1/enrich``: any of the identifiers (at least one).

    ``consent``: the person consented again, lifting the hold of an erasure at their request
    (otherwise a paid fetch of an erased person is refused with 451 ``subject-erased``).
    """

    cpf: ShortText | None = None
    email: ShortText | None = None
    phone: ShortText | None = None
    name: ShortText | None = None
    consent: bool = False


class BatchItem(EnrichRequest, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One identifier set of a batch."""


class BatchRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/v1/enrich/batch``: 1..100 items, answered item by item."""

    items: Annotated[list[BatchItem], msgspec.Meta(min_length=1, max_length=100)]


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
