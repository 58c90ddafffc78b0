"""The unified customer view (``docs/contract.md`` §1.5): what a lookup answers about a person.

Built from the stored party and its contacts and from :class:`domain.dossier.NormalizedPerson`
(the decoded Work API dossier); the lookups of :mod:`domain.customers` return it.
"""

from __future__ import annotations

import datetime as dt  # noqa: TC003 - msgspec resolves the field types at run time
from typing import TYPE_CHECKING

import msgspec

from domain.freshness import data_age_s
from domain.pipeline import MatchInfo
from domain.resolution import REASON_BELOW_MIN_LIKELIHOOD

if TYPE_CHECKING:
    from domain.dossier import NormalizedPerson
    from domain.models import PartyWithContacts
    from domain.resolution import ResolvedPerson

__all__ = [
    "AddressView",
    "ContactInfo",
    "EmailView",
    "FinancialInfo",
    "Metadata",
    "PersonalInfo",
    "PhoneView",
    "UnifiedCustomer",
    "customer_view",
    "stamp",
    "unmatched_view",
]


class PersonalInfo(msgspec.Struct, frozen=True, kw_only=True):
    cpf: str | None
    name: str | None
    birth_date: str | None
    gender: str | None
    mother_name: str | None
    father_name: str | None
    marital_status: str | None
    rg: str | None
    voter_id: str | None = None


class EmailView(msgspec.Struct, frozen=True, kw_only=True):
    email: str
    is_valid: bool
    source: str


class PhoneView(msgspec.Struct, frozen=True, kw_only=True):
    phone: str
    ddd: str | None
    operator: str | None
    type: str | None
    is_valid: bool
    source: str
    is_whatsapp: bool = False


class ContactInfo(msgspec.Struct, frozen=True, kw_only=True):
    emails: list[EmailView]
    phones: list[PhoneView]


class AddressView(msgspec.Struct, frozen=True, kw_only=True):
    street: str | None
    number: str | None
    complement: str | None
    neighborhood: str | None
    city: str | None
    state: str | None
    cep: str | None
    source: str


class FinancialInfo(msgspec.Struct, frozen=True, kw_only=True):
    income: float | None
    purchasing_power: str | None
    income_range: str | None
    credit_score: int | None
    risk_band: str | None
    quality_score: float


class Metadata(msgspec.Struct, frozen=True, kw_only=True):
    enriched: bool
    sources: list[str]
    timestamp: str
    modules_consulted: list[str]
    party_id: str | None = None


class UnifiedCustomer(msgspec.Struct, frozen=True, kw_only=True):
    """The customer view of ``docs/contract.md`` §1.5, filled from the nested dossier, plus
    ``match``."""

    source: str
    type: str
    personal_info: PersonalInfo
    contact_info: ContactInfo
    addresses: list[AddressView]
    financial_info: FinancialInfo | None
    interests: None
    metadata: Metadata
    wealth_assessment: None
    match: MatchInfo | None = None
    # Freshness (additive, issue #15.4): when the stored dossier was bought (ISO 8601, UTC;
    # null if never) and its age in whole seconds at the answer's time.
    enriched_at: str | None = None
    data_age_s: int | None = None
    # False when the CPF resolved from the contacts scored below min_likelihood: nothing was
    # fetched, ``match`` carries the score and ``reason`` says why (issue #15.5).
    matched: bool = True
    reason: str | None = None


def unmatched_view(person: ResolvedPerson, *, now: dt.datetime) -> UnifiedCustomer:
    """The answer for a CPF resolved below the match threshold: no personal data (the CPF may
    be someone else's), ``matched: false``, the score in ``match`` and the reason."""
    empty = PersonalInfo(
        cpf=None,
        name=None,
        birth_date=None,
        gender=None,
        mother_name=None,
        father_name=None,
        marital_status=None,
        rg=None,
    )
    return UnifiedCustomer(
        source="c2s-api",
        type="customer",
        personal_info=empty,
        contact_info=ContactInfo(emails=[], phones=[]),
        addresses=[],
        financial_info=None,
        interests=None,
        metadata=Metadata(
            enriched=False,
            sources=[person.match.source] if person.match is not None else [],
            timestamp=stamp(now),
            modules_consulted=[],
        ),
        wealth_assessment=None,
        match=person.match,
        matched=False,
        reason=REASON_BELOW_MIN_LIKELIHOOD,
    )


def stamp(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def customer_view(
    found: PartyWithContacts | None,
    person: NormalizedPerson | None,
    sources: list[str],
    *,
    now: dt.datetime,
    match: MatchInfo | None,
    enriched_at: dt.datetime | None,
) -> UnifiedCustomer:
    party = found.party if found is not None else None
    emails: dict[str, EmailView] = {}
    phones: dict[str, PhoneView] = {}
    addresses: list[AddressView] = []
    # The dossier's view of a contact (operator, type, validity) wins over the stored row's.
    if person is not None:
        for email in person.emails:
            emails.setdefault(
                email.address,
                EmailView(
                    email=email.address, is_valid=not email.is_blacklisted, source="work_api"
                ),
            )
        for phone in person.phones:
            phones.setdefault(
                phone.number,
                PhoneView(
                    phone=phone.number,
                    ddd=phone.number[:2] if len(phone.number) >= 10 else None,
                    operator=phone.operator,
                    type=phone.type,
                    is_valid=phone.status != "NO",
                    source="work_api",
                    is_whatsapp=phone.is_whatsapp,
                ),
            )
        addresses = [
            AddressView(
                street=" ".join(p for p in (a.street_type, a.street) if p) or None,
                number=a.number,
                complement=a.complement,
                neighborhood=a.neighborhood,
                city=a.city,
                state=a.state,
                cep=a.zip_code,
                source="work_api",
            )
            for a in person.addresses
        ]
    if found is not None:
        for contact in found.contacts:
            if contact.contact_type == "email":
                emails.setdefault(
                    contact.value, EmailView(email=contact.value, is_valid=True, source="database")
                )
            else:
                phones.setdefault(
                    contact.value,
                    PhoneView(
                        phone=contact.value,
                        ddd=contact.value[:2] if len(contact.value) >= 10 else None,
                        operator=None,
                        type=contact.contact_type,
                        is_valid=True,
                        source="database",
                        is_whatsapp=contact.is_whatsapp,
                    ),
                )

    def pick(from_person: str | None, from_party: str | None) -> str | None:
        return from_person if from_person is not None else from_party

    birth = person.birth_date if person is not None and person.birth_date else None
    if birth is None and party is not None:
        birth = party.birth_date
    personal = PersonalInfo(
        cpf=pick(person.cpf if person else None, party.cpf_cnpj if party else None),
        name=pick(person.name if person else None, party.full_name if party else None),
        birth_date=birth.isoformat() if birth else None,
        gender=pick(person.sex if person else None, party.sex if party else None),
        mother_name=pick(
            person.mother_name if person else None, party.mother_name if party else None
        ),
        father_name=pick(
            person.father_name if person else None, party.father_name if party else None
        ),
        marital_status=person.marital_status if person else None,
        rg=pick(person.rg if person else None, party.rg if party else None),
    )
    financial = (
        FinancialInfo(
            income=person.income,
            purchasing_power=person.purchasing_power,
            income_range=person.income_range,
            credit_score=person.credit_score,
            risk_band=person.risk_band,
            quality_score=person.quality_score,
        )
        if person is not None and (person.income is not None or person.risk_band is not None)
        else None
    )
    enriched = person is not None
    return UnifiedCustomer(
        source="c2s-api",
        type="customer",
        personal_info=personal,
        contact_info=ContactInfo(emails=list(emails.values()), phones=list(phones.values())),
        addresses=addresses,
        financial_info=financial,
        interests=None,
        metadata=Metadata(
            enriched=enriched,
            sources=sources,
            timestamp=stamp(now),
            modules_consulted=["cpf"] if "work_api" in sources or enriched else [],
            party_id=str(party.id) if party is not None else None,
        ),
        wealth_assessment=None,
        match=match,
        enriched_at=stamp(enriched_at) if enriched_at is not None else None,
        data_age_s=data_age_s(enriched_at, now),
    )
