"""Customer lookup: the unified view of a person from the database and the Work API.

The use cases of ``GET /api/v1/contributor/customer`` and ``POST /api/v1/enrich``
(:func:`lookup_customer`, ``docs/contract.md`` §1.5), ``POST /api/v1/enrich/batch``
(:func:`lookup_batch`), ``GET /api/v1/customers/{id}`` (:func:`get_customer`, §1.6) and
``POST /api/v1/leads`` (:func:`process_basic_lead`, §1.7). The view is built from
:class:`domain.dossier.NormalizedPerson`, which decodes the nested Work API payload.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final
from uuid import UUID

import msgspec

from domain.audit import paid_scope
from domain.documents import is_valid_cpf, normalize_cpf
from domain.dossier import NormalizedPerson, normalize_dossier
from domain.emails import is_valid_email, normalize_email
from domain.errors import (
    DependencyUnavailable,
    DomainError,
    ErrorOutcome,
    Forbidden,
    InvalidInput,
    NotFound,
    UpstreamError,
    error_outcome,
)
from domain.flags import Flag, require_enabled
from domain.freshness import (
    check_max_age,
    check_min_likelihood,
    data_age_s,
    is_too_old,
    likelihood_or,
    split_by_likelihood,
)
from domain.models import LeadCustomer, PartyWithContacts
from domain.phones import parse_br_phone
from domain.pipeline import MatchInfo  # runtime: a field type of UnifiedCustomer
from domain.resolution import REASON_BELOW_MIN_LIKELIHOOD
from domain.subjects import lift_hold

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Sequence

    from domain.audit import Operation
    from domain.dossier import Dossier
    from domain.models import Party
    from domain.pipeline import Enricher
    from domain.resolution import ResolvedPerson

__all__ = [
    "BATCH_CONCURRENCY",
    "NOT_STORED",
    "STALE_NEEDS_ENRICH",
    "AddressView",
    "BasicLead",
    "BasicLeadResult",
    "BatchItemOutcome",
    "ContactInfo",
    "CustomerQuery",
    "EmailView",
    "FinancialInfo",
    "Metadata",
    "PersonalInfo",
    "PhoneView",
    "UnifiedCustomer",
    "get_customer",
    "lookup_batch",
    "lookup_customer",
    "process_basic_lead",
    "validate_query",
]

# Lookups of one batch in flight at once (each may cost paid upstream calls).
BATCH_CONCURRENCY: Final = 8
# A lookup by a key without the ``enrich`` scope found nothing stored (docs/security.md).
NOT_STORED: Final = (
    "Customer not found in the stored data; a key with the 'enrich' scope would fetch it "
    "from the Work API"
)
# A lookup with ``max_age`` by a key without the ``enrich`` scope found only older stored data.
STALE_NEEDS_ENRICH: Final = (
    "The stored data is older than max_age; a key with the 'enrich' scope would fetch it "
    "again from the Work API"
)


class CustomerQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Identifiers to look a customer up by; at least one is required.

    ``consent``: the person consented (again) to their data being fetched, which lifts the hold
    of an erasure at their request (``domain/subjects.py``).

    ``max_age_s`` and ``min_likelihood``, when set, win over the lookup's own (a batch item's
    over its batch's; ``domain/freshness.py``).
    """

    cpf: str | None = None
    email: str | None = None
    phone: str | None = None
    name: str | None = None
    consent: bool = False
    max_age_s: float | None = None
    min_likelihood: float | None = None


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


def _clean(query: CustomerQuery) -> CustomerQuery:
    """Validate and normalise the identifiers; an invalid one is a 400 naming the field."""
    cpf = normalize_cpf(query.cpf) if query.cpf and query.cpf.strip() else None
    email = None
    if query.email and query.email.strip():
        if not is_valid_email(query.email):
            raise InvalidInput("email", "not a valid e-mail address")
        email = normalize_email(query.email)
    phone = parse_br_phone(query.phone).national if query.phone and query.phone.strip() else None
    name = query.name.strip() if query.name and query.name.strip() else None
    if name is not None and len(name) < 2:
        raise InvalidInput("name", "name must have at least 2 characters")
    if not (cpf or email or phone or name):
        raise InvalidInput("cpf", "At least one identifier required (cpf, email, phone, or name)")
    return CustomerQuery(cpf=cpf, email=email, phone=phone, name=name, consent=query.consent)


def validate_query(query: CustomerQuery) -> CustomerQuery:
    """The identifiers validated and normalised as a lookup does (bulk jobs check every item at
    submission).

    Raises:
        InvalidInput: No usable identifier, or an invalid one (naming its field).
    """
    return _clean(query)


async def _find_in_db(enricher: Enricher, query: CustomerQuery) -> PartyWithContacts | None:
    repo = enricher.repository
    if query.cpf and (found := await repo.find_by_cpf(query.cpf)):
        return found
    if query.email and (found := await repo.find_by_email(query.email)):
        return found
    if query.phone and (found := await repo.find_by_phone(query.phone)):
        return found
    if query.name:
        hits = await repo.search_by_name(query.name, limit=1)
        if hits:
            return hits[0]
    return None


async def lookup_customer(
    enricher: Enricher,
    query: CustomerQuery,
    *,
    now: dt.datetime,
    may_fetch: bool = True,
    operation: Operation = "lookup",
    max_age_s: float | None = None,
    min_likelihood: float | None = None,
) -> UnifiedCustomer:
    """Find a customer: database first (cpf > email > phone > name), then the Work API.

    A party found but never enriched is enriched on the way (cached dossier, stored). A customer
    not in the database is looked up by CPF, or by a CPF resolved from the e-mail/phone through
    Diretrix (reported in ``match``); an e-mail or a phone is never sent as a CPF.

    Without ``may_fetch`` (a key without the ``enrich`` scope) the answer comes from the stored
    data only: no Diretrix or Work API call (paid), no cache read, no database write; a party
    found but never enriched is answered as stored.

    A customer answered is recorded in the audit trail (``operation``; one record, its paid
    calls: a Diretrix resolution, a Work API fetch that was not a cache hit); a lookup that
    answers an error records nothing.

    Freshness (``domain/freshness.py``): stored data older than ``max_age_s`` is fetched again
    (a paid call; without ``may_fetch``: :class:`Forbidden`), and a cached Work API body older
    than it is not used. A CPF resolved from the e-mail/phone whose match score is below
    ``min_likelihood`` (default: the ``MIN_LIKELIHOOD`` setting) is not fetched: the answer has
    ``matched: false``, the score in ``match`` and ``reason``.

    Args:
        enricher: The pipeline.
        query: The identifiers (its own ``max_age_s``/``min_likelihood`` win).
        now: The view's timestamp (and the reference of the data's age).
        may_fetch: Whether upstream calls (and the writes that store their data) are allowed.
        operation: What the audit record calls this lookup.
        max_age_s: How old (seconds) the answer's data may be; ``None``: any age.
        min_likelihood: The match threshold (0..1) of a CPF resolved from the contacts.

    Raises:
        InvalidInput: no usable identifier, or an invalid one (``max_age``, ``min_likelihood``
            included).
        NotFound: nowhere to be found (:data:`NOT_STORED` without ``may_fetch``).
        Forbidden: stored data older than ``max_age_s`` without ``may_fetch``
            (:data:`STALE_NEEDS_ENRICH`).
        DependencyUnavailable: the Work API or Diretrix is down and nothing is stored (or the
            stored data is too old).
        SubjectErased: the person's data was erased at their request (hold running) and the
            query does not carry their renewed ``consent`` (451).
    """
    with paid_scope():
        view = await _lookup(
            enricher,
            query,
            now=now,
            may_fetch=may_fetch,
            max_age_s=max_age_s,
            min_likelihood=min_likelihood,
        )
        cpf = view.personal_info.cpf
        if cpf and is_valid_cpf(cpf):
            diretrix = view.match is not None and view.match.source == "diretrix"
            enricher.audit.record(
                operation, normalize_cpf(cpf), upstreams=("diretrix",) if diretrix else ()
            )
    return view


async def _lookup(
    enricher: Enricher,
    query: CustomerQuery,
    *,
    now: dt.datetime,
    may_fetch: bool,
    max_age_s: float | None,
    min_likelihood: float | None,
) -> UnifiedCustomer:
    max_age = check_max_age(query.max_age_s if query.max_age_s is not None else max_age_s)
    threshold = likelihood_or(
        query.min_likelihood if query.min_likelihood is not None else min_likelihood,
        enricher.settings.min_likelihood,
    )
    query = _clean(query)
    found = await _find_in_db(enricher, query)
    match: MatchInfo | None = None
    if found is not None:
        return await _from_stored(enricher, found, now=now, may_fetch=may_fetch, max_age_s=max_age)
    if not may_fetch:
        raise NotFound(NOT_STORED)
    cpf = query.cpf
    if cpf is None and (query.email or query.phone):
        resolution = await enricher.resolve(
            LeadCustomer(name=query.name, email=query.email, phone=query.phone)
        )
        if resolution.people:
            usable, shown = split_by_likelihood(resolution.people, threshold)
            if not usable:
                return _unmatched(shown[0], now=now)
            cpf = usable[0].cpf
            match = usable[0].match
        elif "unavailable" in (resolution.phone.status, resolution.email.status):
            raise DependencyUnavailable("diretrix", "CPF resolution unavailable", retry_after=5)
    if cpf is None:
        raise NotFound("Customer not found in database or Work API")
    if query.consent:
        await lift_hold(enricher.erasure_holds, cpf)
    try:
        async with enricher.observer.step("fetch_dossier"):
            dossier, raw = await enricher.fetch_dossier(cpf, use_cache=True, max_age_s=max_age)
    except (UpstreamError, NotFound):
        # An outage (DependencyUnavailable) propagates as a 503: retrying later can help.
        raise NotFound("Customer not found in database or Work API") from None
    stored = await enricher.store({cpf: (dossier, raw)}, None)
    person = normalize_dossier(dossier)
    stored_found = await enricher.repository.find_by_cpf(cpf) if stored else None
    enriched_at = stored_found.enriched_at if stored_found is not None else None
    return _view(stored_found, person, ["work_api"], now=now, match=match, enriched_at=enriched_at)


async def _from_stored(
    enricher: Enricher,
    found: PartyWithContacts,
    *,
    now: dt.datetime,
    may_fetch: bool,
    max_age_s: float | None,
) -> UnifiedCustomer:
    """The view of a stored party: as stored, enriched on the way (never enriched before), or
    fetched again (stored data older than ``max_age_s``)."""
    stored = (
        msgspec.json.decode(found.normalized_data, type=NormalizedPerson)
        if found.normalized_data is not None
        else None
    )
    too_old = stored is not None and is_too_old(found.enriched_at, now, max_age_s)
    cpf = found.party.cpf_cnpj if found.party.party_type == "person" else None
    if too_old and not may_fetch:
        raise Forbidden(STALE_NEEDS_ENRICH)
    if (stored is not None and not too_old) or not may_fetch or not cpf:
        return _view(
            found, stored, ["local_db"], now=now, match=None, enriched_at=found.enriched_at
        )
    cpf = normalize_cpf(cpf)
    fetched: tuple[Dossier, bytes] | None
    if too_old:
        # The caller asked for younger data: a failure to fetch it is an error, not old data.
        async with enricher.observer.step("fetch_dossier"):
            fetched = await enricher.fetch_dossier(cpf, use_cache=True, max_age_s=max_age_s)
    else:
        fetched = await _fetch_quietly(enricher, cpf, max_age_s)
    if fetched is None:  # never enriched, and the Work API failed: as stored
        return _view(found, None, ["local_db"], now=now, match=None, enriched_at=None)
    written = await enricher.store({cpf: fetched}, None)
    refreshed = await enricher.repository.find_by_cpf(cpf) if written else None
    return _view(
        refreshed or found,
        normalize_dossier(fetched[0]),
        ["local_db", "work_api"],
        now=now,
        match=None,
        enriched_at=refreshed.enriched_at if refreshed is not None else None,
    )


async def _fetch_quietly(
    enricher: Enricher, cpf: str, max_age_s: float | None
) -> tuple[Dossier, bytes] | None:
    """The dossier of a stored, never-enriched party; ``None`` when the fetch failed."""
    try:
        async with enricher.observer.step("fetch_dossier"):
            return await enricher.fetch_dossier(cpf, use_cache=True, max_age_s=max_age_s)
    except DomainError:
        return None


def _unmatched(person: ResolvedPerson, *, now: dt.datetime) -> UnifiedCustomer:
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
            timestamp=_stamp(now),
            modules_consulted=[],
        ),
        wealth_assessment=None,
        match=person.match,
        matched=False,
        reason=REASON_BELOW_MIN_LIKELIHOOD,
    )


def _stamp(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _view(
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
            timestamp=_stamp(now),
            modules_consulted=["cpf"] if "work_api" in sources or enriched else [],
            party_id=str(party.id) if party is not None else None,
        ),
        wealth_assessment=None,
        match=match,
        enriched_at=_stamp(enriched_at) if enriched_at is not None else None,
        data_age_s=data_age_s(enriched_at, now),
    )


# --- batch ---------------------------------------------------------------------------------------


class BatchItemOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """One item of a batch: its customer, or how its lookup failed (:func:`error_outcome`)."""

    customer: UnifiedCustomer | None = None
    error: ErrorOutcome | None = None


async def lookup_batch(
    enricher: Enricher,
    queries: Sequence[CustomerQuery],
    *,
    now: dt.datetime,
    concurrency: int = BATCH_CONCURRENCY,
    may_fetch: bool = True,
    max_age_s: float | None = None,
    min_likelihood: float | None = None,
) -> list[BatchItemOutcome]:
    """Look up each query on its own (:func:`lookup_customer`); one failing does not sink the rest.

    Args:
        enricher: The pipeline.
        queries: The items, in request order.
        now: The timestamp of every view.
        concurrency: Lookups in flight at once.
        may_fetch: Whether the lookups may call the upstreams (:func:`lookup_customer`).
        max_age_s: The batch's ``max_age``; an item's own wins.
        min_likelihood: The batch's ``min_likelihood``; an item's own wins.

    Returns:
        One outcome per query, in order; a failed item carries the status and text of its error
        (an item's invalid ``max_age``/``min_likelihood`` included).

    Raises:
        InvalidInput: The batch's ``max_age_s`` or ``min_likelihood`` is out of range.
        FeatureDisabled: The ``enable_batch`` flag is off (nothing was looked up).
    """
    check_max_age(max_age_s)
    check_min_likelihood(min_likelihood)
    require_enabled(enricher.flags, Flag.ENABLE_BATCH)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(query: CustomerQuery) -> BatchItemOutcome:
        async with gate:
            try:
                customer = await lookup_customer(
                    enricher,
                    query,
                    now=now,
                    may_fetch=may_fetch,
                    max_age_s=max_age_s,
                    min_likelihood=min_likelihood,
                    operation="batch",
                )
            except DomainError as exc:
                return BatchItemOutcome(error=error_outcome(exc))
        return BatchItemOutcome(customer=customer)

    return list(await asyncio.gather(*(one(query) for query in queries)))


# --- stored customer and basic lead --------------------------------------------------------------


async def get_customer(enricher: Enricher, customer_id: UUID) -> PartyWithContacts:
    """A stored person (party) by id, with its contacts and current enrichment.

    Raises:
        NotFound: No such party, or it is not a person.
    """
    found = await enricher.repository.get_party(customer_id)
    if found is None or found.party.party_type != "person":
        raise NotFound(f"Customer with id {customer_id} not found")
    if (cpf := _person_cpf(found.party)) is not None:
        enricher.audit.record("customer", cpf)
    return found


def _person_cpf(party: Party) -> str | None:
    """A stored person's CPF, normalised, or ``None`` (no CPF, or not a valid one)."""
    raw = party.cpf_cnpj
    return normalize_cpf(raw) if raw and is_valid_cpf(raw) else None


class BasicLead(msgspec.Struct, frozen=True, kw_only=True):
    """A lead of ``POST /api/v1/leads``: its person's identifiers, phones in the sent order."""

    name: str | None = None
    email: str | None = None
    cpf: str | None = None
    phones: list[str] = msgspec.field(default_factory=list)


class BasicLeadResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a basic lead (``docs/contract.md`` §1.7): ``success`` tells.

    Attributes:
        success: The lead's person was found (or enriched) and has contacts.
        message: The answer's text.
        customer: The stored person when ``success``.
    """

    success: bool
    message: str
    customer: PartyWithContacts | None = None


LEAD_ENRICHED: Final = "Lead processed and enriched successfully"
LEAD_WITHOUT_CONTACTS: Final = "No contact data found for lead"
_LEAD_FAILED: Final = "Failed to enrich lead: {reason}"
_LEAD_DEPENDENCY_FAILED: Final = "dependency failure"


async def process_basic_lead(
    enricher: Enricher, lead: BasicLead, *, now: dt.datetime
) -> BasicLeadResult:
    """Look the lead's person up by cpf > email > first phone > name (:func:`lookup_customer`).

    A failed lookup is an outcome, not an error: invalid or unknown identifiers are named in the
    message, any other failure is reported as a dependency failure.

    Raises:
        DependencyUnavailable: The database cannot load the person found.
    """
    query = CustomerQuery(
        cpf=lead.cpf,
        email=lead.email,
        phone=lead.phones[0] if lead.phones else None,
        name=lead.name,
    )
    try:
        view = await lookup_customer(enricher, query, now=now, operation="lead")
    except DomainError as exc:
        reason = exc.detail if isinstance(exc, InvalidInput | NotFound) else _LEAD_DEPENDENCY_FAILED
        return BasicLeadResult(success=False, message=_LEAD_FAILED.format(reason=reason))
    party_id = view.metadata.party_id
    found = await enricher.repository.get_party(UUID(party_id)) if party_id else None
    if found is None or not found.contacts:
        return BasicLeadResult(success=False, message=LEAD_WITHOUT_CONTACTS)
    return BasicLeadResult(success=True, message=LEAD_ENRICHED, customer=found)
