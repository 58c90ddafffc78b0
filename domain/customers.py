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
from domain.customer_view import (
    AddressView,
    ContactInfo,
    EmailView,
    FinancialInfo,
    Metadata,
    PersonalInfo,
    PhoneView,
    UnifiedCustomer,
    customer_view,
    unmatched_view,
)
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
    is_too_old,
    likelihood_or,
    split_by_likelihood,
)
from domain.models import LeadCustomer, PartyWithContacts
from domain.phones import parse_br_phone
from domain.subjects import lift_hold

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Sequence

    from domain.audit import Operation
    from domain.dossier import Dossier
    from domain.models import Party
    from domain.pipeline import Enricher, MatchInfo

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
                return unmatched_view(shown[0], now=now)
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
    return customer_view(
        stored_found, person, ["work_api"], now=now, match=match, enriched_at=enriched_at
    )


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
        return customer_view(
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
        return customer_view(found, None, ["local_db"], now=now, match=None, enriched_at=None)
    written = await enricher.store({cpf: fetched}, None)
    refreshed = await enricher.repository.find_by_cpf(cpf) if written else None
    return customer_view(
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
