"""Entities and value objects shared by the use cases and the ports.

Plain msgspec Structs: adapters convert rows and wire payloads into these at their boundary.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal
from uuid import UUID

import msgspec

__all__ = [
    "Contact",
    "ContactType",
    "CpfCandidate",
    "Lead",
    "LeadCustomer",
    "LeadLockState",
    "NewLead",
    "Party",
    "PartyWithContacts",
    "StoredDossier",
    "StoredEnrichment",
]

ContactType = Literal["email", "phone", "whatsapp"]


class LeadCustomer(msgspec.Struct, frozen=True, kw_only=True):
    """The customer block of a C2S lead; any field may be missing in real payloads."""

    id: str | None = None
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    phone2: str | None = None


class Lead(msgspec.Struct, frozen=True, kw_only=True):
    """A C2S lead as the pipeline needs it."""

    id: str
    customer: LeadCustomer
    description: str | None = None
    product_ref: str | None = None
    product_description: str | None = None
    status: str | None = None
    seller_name: str | None = None
    source: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


class NewLead(msgspec.Struct, frozen=True, kw_only=True):
    """A lead to create in C2S (the Google Ads path)."""

    name: str
    description: str
    source: str = "Google Ads"
    type_negotiation: str = "Compra"
    phone: str | None = None
    email: str | None = None
    seller_id: str | None = None


class CpfCandidate(msgspec.Struct, frozen=True, kw_only=True):
    """One Diretrix answer: a person's name and CPF."""

    name: str
    cpf: str


class Party(msgspec.Struct, frozen=True, kw_only=True):
    """A row of ``core.parties`` (person or company)."""

    id: UUID
    party_type: str
    cpf_cnpj: str | None
    full_name: str
    normalized_name: str | None = None
    sex: str | None = None
    birth_date: date | None = None
    mother_name: str | None = None
    father_name: str | None = None
    rg: str | None = None
    fantasy_name: str | None = None
    normalized_fantasy_name: str | None = None
    opening_date: date | None = None
    registration_status_date: date | None = None
    company_type: str | None = None
    company_size: str | None = None
    enriched: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    tenant: str | None = None


class Contact(msgspec.Struct, frozen=True, kw_only=True):
    """A row of ``core.party_contacts``."""

    id: UUID
    contact_type: ContactType
    value: str
    is_primary: bool = False
    is_verified: bool = False
    is_whatsapp: bool = False
    source: str | None = None
    created_at: datetime | None = None


class PartyWithContacts(msgspec.Struct, frozen=True, kw_only=True):
    """A party, its contacts (primary first, then oldest) and its current enrichment."""

    party: Party
    contacts: list[Contact]
    normalized_data: bytes | None = None  # JSON of domain.dossier.NormalizedPerson, if enriched
    enriched_at: datetime | None = None


class StoredDossier(msgspec.Struct, frozen=True, kw_only=True):
    """What one ``store_dossier`` call wrote."""

    party_id: UUID
    created: bool
    contacts_added: int
    addresses_added: int


class StoredEnrichment(msgspec.Struct, frozen=True, kw_only=True):
    """The current Work API payload stored for a party."""

    party_id: UUID
    raw_payload: bytes
    enriched_at: datetime


class LeadLockState(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of trying to take a lead's in-flight lock.

    Attributes:
        acquired: This caller holds the lock now.
        started_at: When the holder started (epoch seconds), if someone else holds it.
        finished: The finished answer (JSON) of a run that ended within the replay window.
    """

    acquired: bool
    started_at: float | None = None
    finished: bytes | None = None
