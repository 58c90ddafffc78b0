"""PostgreSQL implementation of :class:`domain.ports.PartyRepository` (asyncpg).

* Lookups are one round trip each: PostgreSQL assembles the party, its contacts and its current
  enrichment into one JSON document (see :mod:`infra.db.sql`) that msgspec decodes into Structs.
* :meth:`PgPartyRepository.store_dossier` writes everything in ONE transaction of three round
  trips (``BEGIN`` with the CPF's advisory lock, one statement writing every table, ``COMMIT``),
  serialised per CPF by that transaction-level lock: a dossier is stored whole or not at all,
  never half written.
* With a read replica (``reads``, ADR 0015) the lookups (by CPF, e-mail, phone, name, id) read
  from it while it serves; a task that stored reads the primary afterwards (read-your-writes).
  :meth:`PgPartyRepository.find_enrichment` (whose answer decides whether to fetch and store
  again) always reads the primary.
* Any sign that PostgreSQL cannot serve now (refused or dropped connection, pool exhausted,
  statement timeout, server shutting down, deadlock) surfaces as
  ``DependencyUnavailable("postgres", ...)``; programming errors (bad SQL, constraint
  violations) propagate unchanged so they are not mistaken for an outage.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Final

import msgspec

from domain.documents import normalize_cpf, only_digits
from domain.dossier import normalize_dossier
from domain.emails import normalize_email
from domain.errors import InvalidInput
from domain.models import Contact, Party, PartyWithContacts, StoredDossier, StoredEnrichment
from domain.phones import storage_digits
from domain.search import SearchHit, name_words
from domain.tenancy import current_tenant
from domain.text import fold, parse_cep, parse_uf
from infra.db import sql
from infra.db.pool import ReadConnection, pooled_connection
from infra.db.replica import ReadRouting, mark_wrote

if TYPE_CHECKING:
    from collections.abc import Sequence
    from contextlib import AbstractAsyncContextManager
    from uuid import UUID

    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    from domain.dossier import Dossier, NormalizedAddress, NormalizedPerson
    from domain.search import CustomerSearch, SearchPosition

__all__ = [
    "DEFAULT_ACQUIRE_TIMEOUT_S",
    "DEFAULT_NAME_CANDIDATES",
    "PgPartyRepository",
    "address_hash",
    "contains_pattern",
    "jsonb_text",
    "name_search_key",
]

DEFAULT_ACQUIRE_TIMEOUT_S: Final = 2.0
# How many rows matching a name are ranked at most (see sql.SEARCH_BY_NAME). Measured on one
# million seeded parties, ranking 1,000 candidates of a common surname took ~9 ms and 300 took
# ~5 ms; 500 keeps most of the gain while ranking a larger sample.
DEFAULT_NAME_CANDIDATES: Final = 500
_MAX_NAME_LIMIT: Final = 100
_CPF_DIGITS: Final = 11
_PROVIDER: Final = "work_api"
_CONTACT_SOURCE: Final = "work_api"
# people.income is numeric(14, 2): larger values are garbage and must not abort the store.
_MAX_INCOME: Final = Decimal("999999999999.99")
# A JSON \u0000 escape not itself escaped: jsonb rejects it (PostgreSQL text cannot hold NUL).
_JSON_NUL: Final = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")
_VERIFIED_EMAIL_QUALITY: Final = frozenset({"OTIMO", "ÓTIMO", "BOM"})
_ACTIVE_PHONE_STATUS: Final = "ATIVO"


class _PartyDoc(msgspec.Struct, frozen=True):
    """The JSON document a lookup query returns for one party."""

    party: Party
    contacts: list[Contact]
    # Raw keeps the jsonb text as bytes without decoding it; JSON null arrives as b"null".
    normalized_data: msgspec.Raw = msgspec.Raw(b"null")
    enriched_at: datetime | None = None


_DOC_DECODER: Final = msgspec.json.Decoder(_PartyDoc)
_SEARCH_DECODER: Final = msgspec.json.Decoder(SearchHit)


def _to_party(doc_text: str) -> PartyWithContacts:
    doc = _DOC_DECODER.decode(doc_text)
    raw = bytes(doc.normalized_data)
    return PartyWithContacts(
        party=doc.party,
        contacts=doc.contacts,
        normalized_data=None if raw == b"null" else raw,
        enriched_at=doc.enriched_at,
    )


def _cpf_key(cpf: str) -> str:
    """The digits a CPF is looked up by: the canonical CPF, or the bare digits of an invalid one.

    Eleven ASCII digits are their own key either way (valid: already canonical; invalid: their
    digits), so the usual input, already normalised by the caller, skips the check digits.
    """
    if len(cpf) == _CPF_DIGITS and cpf.isascii() and cpf.isdigit():
        return cpf
    try:
        return normalize_cpf(cpf)
    except InvalidInput:
        return only_digits(cpf)


def name_search_key(name: str) -> str:
    """Return the key a name is searched by: upper case, no accents, single spaces.

    Args:
        name: The text a client searches for.

    Returns:
        The key compared (as a substring) with ``core.search_key(full_name)``.
    """
    return fold(name)


def contains_pattern(key: str) -> str:
    """Return the LIKE pattern the name index is searched with (see ``sql.SEARCH_BY_NAME``).

    The words of ``key`` joined by ``%``: every name containing ``key`` matches it (a
    superset, narrowed exactly by the query), with LIKE's own wildcards taken literally.

    Args:
        key: A search key (see :func:`name_search_key`).

    Returns:
        ``%WORD1%WORD2%`` with ``\\``, ``%`` and ``_`` escaped in each word.
    """
    words = (w.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for w in key.split())
    return "%" + "%".join(words) + "%"


def _clean(text: str | None) -> str | None:
    """Drop NUL characters (PostgreSQL text cannot store them); blank becomes None."""
    if text is None:
        return None
    cleaned = text.replace("\x00", "").strip()
    return cleaned or None


def jsonb_text(raw: bytes) -> str:
    """JSON bytes as text jsonb accepts: escaped NULs (``\\u0000``) dropped.

    The regex is skipped for the usual body without one: it cost ~240 us on a 5 KB dossier,
    half of a store's CPU (bench/README.md).
    """
    if b"\\u0000" not in raw:
        return raw.decode("utf-8", errors="replace")
    return _JSON_NUL.sub(rb"\1", raw).decode("utf-8", errors="replace")


class _AddressRow(msgspec.Struct, frozen=True):
    """An address ready for ``sql.STORE_DOSSIER``: validated, with its hash and position."""

    hash: str
    street_type: str | None
    street: str | None
    number: str | None
    complement: str | None
    neighborhood: str | None
    city: str | None
    state: str | None
    zip_code: str | None
    position: int


def address_hash(
    street: str | None,
    number: str | None,
    complement: str | None,
    zip_code: str | None,
    city: str | None,
    state: str | None,
) -> str:
    """Identify an address by its normalised parts, so storing it again finds the same row.

    Parts are upper-cased, stripped of accents and of repeated spaces before hashing, so
    ``"Rua  das Flores"`` and ``"RUA DAS FLORES"`` are one address.

    Args:
        street: Street name.
        number: Street number.
        complement: Apartment, block...
        zip_code: CEP (8 digits) or None.
        city: City name.
        state: UF or None.

    Returns:
        A hex SHA-256 digest.
    """
    parts = (street, number, complement, zip_code, city, state)
    text = "|".join(fold(part) if part else "" for part in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _address_rows(addresses: Sequence[NormalizedAddress]) -> list[_AddressRow]:
    """Validate, hash and de-duplicate addresses; invalid UF/CEP become NULL, never an error."""
    rows: dict[str, _AddressRow] = {}
    for position, address in enumerate(addresses, start=1):
        street = _clean(address.street)
        number = _clean(address.number)
        complement = _clean(address.complement)
        city = _clean(address.city)
        state = parse_uf(_clean(address.state))
        zip_code = parse_cep(_clean(address.zip_code))
        if not (street or city or state or zip_code):
            continue
        digest = address_hash(street, number, complement, zip_code, city, state)
        if digest in rows:  # the same place listed twice: keep its first (best) position
            continue
        rows[digest] = _AddressRow(
            hash=digest,
            street_type=_clean(address.street_type),
            street=street,
            number=number,
            complement=complement,
            neighborhood=_clean(address.neighborhood),
            city=city,
            state=state,
            zip_code=zip_code,
            position=position,
        )
    # Sorted by hash: concurrent stores sharing addresses then lock those rows in one order.
    return [rows[digest] for digest in sorted(rows)]


def _income(value: float | None) -> Decimal | None:
    if value is None or not math.isfinite(value):
        return None
    amount = Decimal(str(value)).quantize(Decimal("0.01"))
    return amount if abs(amount) <= _MAX_INCOME else None


def _quality(score: float) -> Decimal | None:
    # The column is numeric(4, 3) in [0, 1]; a score outside must not abort the store.
    if not math.isfinite(score):
        return None
    return Decimal(str(min(1.0, max(0.0, score)))).quantize(Decimal("0.001"))


class _ContactRows(msgspec.Struct, frozen=True):
    """Parallel arrays of contacts for ``sql.STORE_DOSSIER``."""

    types: list[str]
    values: list[str]
    primary: list[bool]
    verified: list[bool]
    whatsapp: list[bool]


def _contact_rows(person: NormalizedPerson) -> _ContactRows:
    rows = _ContactRows(types=[], values=[], primary=[], verified=[], whatsapp=[])
    seen: set[tuple[str, str]] = set()

    def add(kind: str, value: str | None, *, first: bool, verified: bool, whatsapp: bool) -> None:
        if not value or (kind, value) in seen:
            return
        seen.add((kind, value))
        rows.types.append(kind)
        rows.values.append(value)
        rows.primary.append(first)
        rows.verified.append(verified)
        rows.whatsapp.append(whatsapp)

    for index, email in enumerate(person.emails):
        quality = (email.quality or "").strip().upper()
        add(
            "email",
            _clean(normalize_email(email.address)),
            first=index == 0,
            verified=quality in _VERIFIED_EMAIL_QUALITY,
            whatsapp=False,
        )
    for index, phone in enumerate(person.phones):
        status = (phone.status or "").strip().upper()
        add(
            "whatsapp" if phone.is_whatsapp else "phone",
            # Already the storage digits (normalize_dossier; storage_digits is a fixed point).
            _clean(phone.number),
            first=index == 0,
            verified=status == _ACTIVE_PHONE_STATUS,
            whatsapp=phone.is_whatsapp,
        )
    return rows


class PgPartyRepository:
    """The party model in PostgreSQL, on an asyncpg pool.

    Args:
        pool: The worker's pool. Its ``command_timeout`` / server ``statement_timeout`` bound
            every query; this class bounds the wait for a free connection.
        acquire_timeout: Seconds to wait for a pooled connection (including connecting).
        name_candidates: How many name matches are ranked at most (``sql.SEARCH_BY_NAME``).
        reads: Where lookups read (a replica and its fallback, ADR 0015); default: ``pool``.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT_S,
        name_candidates: int = DEFAULT_NAME_CANDIDATES,
        reads: ReadRouting | None = None,
    ) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout
        self._name_candidates = name_candidates
        self._reads = reads or ReadRouting(pool, acquire_timeout=acquire_timeout)

    def _connection(self) -> AbstractAsyncContextManager[PoolConnectionProxy]:
        """A pooled connection; outages become ``DependencyUnavailable``."""
        return pooled_connection(self._pool, self._acquire_timeout)

    def _reading(self) -> AbstractAsyncContextManager[PoolConnectionProxy]:
        """A pooled connection for one plain read: released without the reset round trip."""
        return ReadConnection(self._pool, self._acquire_timeout)

    async def _fetch_one(self, query: str, *args: object) -> PartyWithContacts | None:
        # One statement, no transaction, the tenant a parameter: one round trip per lookup, on
        # the replica while it serves (ADR 0015).
        doc: str | None = await self._reads.read(lambda conn: conn.fetchval(query, *args))
        return None if doc is None else _to_party(doc)

    # ------------------------------------------------------------------------------ lookups

    async def find_by_cpf(self, cpf: str) -> PartyWithContacts | None:
        """The newest person party with this CPF.

        Args:
            cpf: 11 digits; formatted or zero-padded forms are normalised first, and a value
                that is not a valid CPF is looked up by its digits (legacy rows).

        Returns:
            The party with its contacts and current enrichment, or None.

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        key = _cpf_key(cpf)
        if not key:
            return None
        return await self._fetch_one(sql.FIND_BY_CPF, key, current_tenant.get())

    async def find_by_email(self, email: str) -> PartyWithContacts | None:
        """The newest party owning this e-mail (compared trimmed and lower-cased).

        Args:
            email: The address in any case.

        Returns:
            The party, or None.

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        key = normalize_email(email)
        if not key:
            return None
        return await self._fetch_one(sql.FIND_BY_EMAIL, key, current_tenant.get())

    async def find_by_phone(self, national_phone: str) -> PartyWithContacts | None:
        """The newest party owning this phone as type phone or whatsapp.

        Args:
            national_phone: The number in any common shape; compared by its storage digits
                (DDD + number, no ``55``).

        Returns:
            The party, or None.

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        key = storage_digits(national_phone)
        if not key:
            return None
        return await self._fetch_one(sql.FIND_BY_PHONE, key, current_tenant.get())

    async def search_by_name(self, name: str, limit: int = 10) -> list[PartyWithContacts]:
        """Parties whose name contains ``name``, ignoring case and accents, best match first.

        Ranking is trigram similarity to the whole name (an exact name first, then shorter
        names containing the text), then the newest.

        Args:
            name: Part of a name (at least one non-blank character).
            limit: At most this many parties (1..100).

        Returns:
            The matching parties, possibly empty.

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        key = name_search_key(name.replace("\x00", ""))
        if not key:
            return []
        bounded = max(1, min(limit, _MAX_NAME_LIMIT))
        candidates = max(self._name_candidates, bounded)
        tenant = current_tenant.get()
        records = await self._reads.read(
            lambda conn: conn.fetch(
                sql.SEARCH_BY_NAME, key, contains_pattern(key), bounded, candidates, tenant
            )
        )
        return [_to_party(record["doc"]) for record in records]

    async def get_party(self, party_id: UUID) -> PartyWithContacts | None:
        """A party by id with its contacts and current enrichment.

        Args:
            party_id: The party's id.

        Returns:
            The party, or None.

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        return await self._fetch_one(sql.GET_PARTY, party_id, current_tenant.get())

    async def find_enrichment(self, cpf: str) -> StoredEnrichment | None:
        """The current stored Work API payload of the newest person party with ``cpf``.

        Read on the primary, never a replica: the answer's age decides whether the dossier is
        fetched and stored again (``stored_dossier_max_age_s``, the webhook job).

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        async with self._reading() as conn:
            row = await conn.fetchrow(sql.FIND_ENRICHMENT, cpf, current_tenant.get())
        if row is None:
            return None
        return StoredEnrichment(
            party_id=row["party_id"],
            raw_payload=row["raw_payload"].encode(),
            enriched_at=row["enriched_at"],
        )

    async def search_customers(
        self, search: CustomerSearch, *, after: SearchPosition | None, limit: int
    ) -> list[SearchHit]:
        """Persons matching ``search``, best rank first then by id, after ``after`` (one
        statement, ``sql.search_customers_query``, read on the replica while it serves).

        Raises:
            DependencyUnavailable: PostgreSQL cannot serve now.
        """
        words = name_words(search.name) if search.name is not None else ()
        query = sql.search_customers_query(
            words=len(words),
            city=search.city is not None,
            uf=search.uf is not None,
            after=after is not None,
        )
        args: list[object] = [current_tenant.get(), limit]
        if words:
            args.extend((search.name, *words))
        args.extend(v for v in (search.city, search.uf) if v is not None)
        if after is not None:
            args.extend((after.rank, after.party_id))
        # One statement: on the replica while it serves (ADR 0015).
        records = await self._reads.read(lambda conn: conn.fetch(query, *args))
        return [_SEARCH_DECODER.decode(record["doc"]) for record in records]

    # -------------------------------------------------------------------------------- store

    async def store_dossier(
        self, cpf: str, dossier: Dossier, raw: bytes, lead_id: str | None
    ) -> StoredDossier:
        """Write party, person, contacts, addresses and enrichment in ONE transaction.

        Everything is derived from ``normalize_dossier(dossier)``; the normalised person is
        stored as ``normalized_data``. The newest party with the CPF is reused (its empty
        columns filled) or a new one created; concurrent stores of one CPF are serialised, so
        they never create two parties or duplicate contacts. Re-storing the same dossier adds
        no contact or address and appends one history row. An invalid UF or CEP is stored as
        NULL instead of failing.

        Args:
            cpf: The CPF the dossier was fetched for (the explicit pairing; the dossier's own
                ``cpf`` field is not trusted for it).
            dossier: The decoded Work API dossier.
            raw: The upstream body, kept as ``raw_payload``.
            lead_id: The C2S lead that triggered the enrichment, added to ``raw_payload``.

        Returns:
            What was written.

        Raises:
            InvalidInput: ``cpf`` is not a valid CPF (nothing is written).
            DependencyUnavailable: PostgreSQL cannot serve now (nothing is written).
        """
        key = normalize_cpf(cpf)
        person = normalize_dossier(dossier)
        normalized_json = msgspec.json.encode(person)
        name = _clean(person.name) or ""
        mother = _clean(person.mother_name)
        father = _clean(person.father_name)
        rg = _clean(person.rg)
        contacts = _contact_rows(person)
        addresses = _address_rows(person.addresses)

        begin = sql.BEGIN_AND_LOCK_CPF.format(cpf=key)
        # From now on this task reads the primary: a replica may not have the write yet.
        mark_wrote()
        async with self._connection() as conn:
            # Three round trips: BEGIN with the CPF's lock, the one statement that writes
            # everything, COMMIT. On any failure the pool rolls the transaction back when the
            # connection is released, so nothing is written.
            await conn.execute(begin)
            row = await conn.fetchrow(
                sql.STORE_DOSSIER,
                key,
                name,
                _clean(person.normalized_name),
                person.birth_date,
                person.sex,
                mother,
                father,
                rg,
                current_tenant.get(),
                _clean(person.marital_status),
                _clean(person.occupation),
                _income(person.income),
                _CONTACT_SOURCE,
                contacts.types,
                contacts.values,
                contacts.primary,
                contacts.verified,
                contacts.whatsapp,
                [a.hash for a in addresses],
                [a.street_type for a in addresses],
                [a.street for a in addresses],
                [a.number for a in addresses],
                [a.complement for a in addresses],
                [a.neighborhood for a in addresses],
                [a.city for a in addresses],
                [a.state for a in addresses],
                [a.zip_code for a in addresses],
                [a.position for a in addresses],
                _PROVIDER,
                _clean(lead_id),
                jsonb_text(raw),
                jsonb_text(normalized_json),
                _quality(person.quality_score),
            )
            if row is None:  # pragma: no cover - the statement always returns a row
                raise RuntimeError("store statement returned no row")
            await conn.execute("COMMIT")
        party_id: UUID = row["id"]
        return StoredDossier(
            party_id=party_id,
            created=row["created"],
            contacts_added=row["contacts_added"],
            addresses_added=row["addresses_added"],
        )
