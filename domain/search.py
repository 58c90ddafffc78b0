"""Search of stored customers: ``GET /api/v1/customers?name=&city=&uf=&cursor=&limit=`` (#16.5).

Every stored person matching the criteria, page by page:

* ``name`` is matched fuzzily (trigram word similarity, typos tolerated) against the person's
  search key (``core.search_key(full_name)``: upper case, no accents, single spaces; the twin of
  :func:`domain.text.fold`): every word of 3 or more characters of the name must be found in it,
  in any order and with any other words between them ("luciana gomes" finds LUCIANA HELENA
  AZEVEDO GOMES), the longest :data:`MAX_NAME_WORDS` of them when there are more; shorter words
  (DA, DE, DOS) count in the rank only; a name without such a word is matched whole. ``city``
  (folded the same way) and ``uf`` filter on the person's addresses. At least a name of 2
  characters, a city or a UF is required.
* Ranked by similarity to the name (best first; 0 for every hit of a search without a name),
  then by party id: a total, stable order.
* Keyset pagination: the opaque ``cursor`` of a page names the last hit (its rank and id) and
  the search it belongs to, so the next page starts right after it, with no duplicate and no
  gap however deep; a cursor of another search (or altered) is a 400.
* Tenant-scoped like every lookup: shared parties and the caller's own (the adapter reads
  :data:`domain.tenancy.current_tenant`).
"""

from __future__ import annotations

import datetime as dt  # runtime: a field type of SearchHit
import hashlib
from typing import TYPE_CHECKING, Final
from uuid import UUID

import msgspec

from domain.cursors import decode_position, encode_position
from domain.errors import InvalidInput
from domain.freshness import data_age_s
from domain.models import Party
from domain.text import fold, parse_uf

if TYPE_CHECKING:
    from domain.ports import PartyRepository

__all__ = [
    "DEFAULT_SEARCH_LIMIT",
    "MAX_NAME_WORDS",
    "MAX_SEARCH_LIMIT",
    "MIN_NAME_LENGTH",
    "MIN_WORD_LENGTH",
    "CustomerHit",
    "CustomerPage",
    "CustomerSearch",
    "SearchHit",
    "SearchPosition",
    "name_words",
    "search_customers",
]

DEFAULT_SEARCH_LIMIT: Final = 20
MAX_SEARCH_LIMIT: Final = 100
MIN_NAME_LENGTH: Final = 2
# Words of the name a hit must contain: those of at least MIN_WORD_LENGTH characters (a shorter
# one has too few trigrams to be matched fuzzily), at most the MAX_NAME_WORDS longest (each is
# one condition of the statement, answered by the trigram index).
MIN_WORD_LENGTH: Final = 3
MAX_NAME_WORDS: Final = 4


class CustomerSearch(msgspec.Struct, frozen=True, kw_only=True):
    """Normalised criteria (at least one set).

    Attributes:
        name: The folded name to match fuzzily (each of its :func:`name_words`) and rank by, or
            ``None``.
        city: The folded city an address of the person must be in, or ``None``.
        uf: The UF an address of the person must be in, or ``None``.
    """

    name: str | None = None
    city: str | None = None
    uf: str | None = None


def name_words(name_key: str) -> tuple[str, ...]:
    """The words of a folded name a hit must contain: its distinct words of at least
    :data:`MIN_WORD_LENGTH` characters, the :data:`MAX_NAME_WORDS` longest (in the name's order),
    or the whole name when it has no such word."""
    words = list(dict.fromkeys(w for w in name_key.split() if len(w) >= MIN_WORD_LENGTH))
    if not words:
        return (name_key,)
    if len(words) > MAX_NAME_WORDS:
        kept = set(sorted(words, key=len, reverse=True)[:MAX_NAME_WORDS])
        words = [w for w in words if w in kept]
    return tuple(words)


class SearchPosition(msgspec.Struct, frozen=True, kw_only=True):
    """Where a page ended: the last hit's rank and party id (hits after it come next)."""

    rank: float
    party_id: UUID


class SearchHit(msgspec.Struct, frozen=True, kw_only=True):
    """One stored person found, as the repository returns it."""

    party: Party
    rank: float
    enriched_at: dt.datetime | None = None


class CustomerHit(msgspec.Struct, frozen=True, kw_only=True):
    """One person of a page of ``GET /api/v1/customers``.

    Attributes:
        id: The party id (``GET /api/v1/customers/{id}`` has the whole record).
        name: The stored full name.
        cpf: The CPF.
        birth_date: ISO date, or null.
        score: Similarity to the searched name in [0, 1] (0 for a search without a name).
        enriched: Whether a dossier is stored.
        enriched_at: When the stored dossier was bought (ISO 8601), or null.
        data_age_s: Its age in whole seconds, or null.
    """

    id: str
    name: str
    cpf: str | None
    birth_date: str | None
    score: float
    enriched: bool
    enriched_at: str | None
    data_age_s: int | None


class CustomerPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of hits and the cursor of the next one (``null`` on the last page)."""

    items: list[CustomerHit]
    next_cursor: str | None


class _Cursor(msgspec.Struct, frozen=True, array_like=True):
    rank: float
    party_id: UUID
    search: str


def _criteria(name: str | None, city: str | None, uf: str | None) -> CustomerSearch:
    """Fold and check the criteria; each invalid one is a 400 naming it."""
    name_key = fold(name.replace("\x00", "")) if name is not None else ""
    if name_key and len(name_key) < MIN_NAME_LENGTH:
        raise InvalidInput("name", "name must have at least 2 characters")
    city_key = fold(city.replace("\x00", "")) if city is not None else ""
    state = None
    if uf is not None and uf.strip():
        state = parse_uf(uf)
        if state is None:
            raise InvalidInput("uf", "uf must be a Brazilian federative unit (e.g. SP)")
    if not (name_key or city_key or state):
        raise InvalidInput("name", "Give a name (at least 2 characters), a city or a uf")
    return CustomerSearch(name=name_key or None, city=city_key or None, uf=state)


def _search_id(search: CustomerSearch) -> str:
    """A short digest of the criteria: a cursor only continues the search it came from."""
    text = "\x1f".join(part or "" for part in (search.name, search.city, search.uf))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode_cursor(hit: SearchHit, search: CustomerSearch) -> str:
    return encode_position(_Cursor(hit.rank, hit.party.id, _search_id(search)))


def _decode_cursor(cursor: str, search: CustomerSearch) -> SearchPosition:
    detail = "cursor is not one of this search's pages"
    decoded = decode_position(cursor, _Cursor, detail=detail)
    if decoded.search != _search_id(search):
        raise InvalidInput("cursor", detail)
    return SearchPosition(rank=decoded.rank, party_id=decoded.party_id)


def _hit_view(hit: SearchHit, now: dt.datetime) -> CustomerHit:
    party = hit.party
    return CustomerHit(
        id=str(party.id),
        name=party.full_name,
        cpf=party.cpf_cnpj,
        birth_date=party.birth_date.isoformat() if party.birth_date else None,
        score=round(hit.rank, 6),
        enriched=hit.enriched_at is not None,
        enriched_at=hit.enriched_at.isoformat().replace("+00:00", "Z")
        if hit.enriched_at is not None
        else None,
        data_age_s=data_age_s(hit.enriched_at, now),
    )


async def search_customers(
    repository: PartyRepository,
    *,
    name: str | None = None,
    city: str | None = None,
    uf: str | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_SEARCH_LIMIT,
    now: dt.datetime,
) -> CustomerPage:
    """One page of the stored persons matching the criteria (one statement).

    Args:
        repository: The party store (tenant-scoped).
        name: Part of a name, matched fuzzily (at least 2 characters).
        city: A city of one of the person's addresses (case and accents ignored).
        uf: A UF of one of the person's addresses.
        cursor: ``next_cursor`` of the previous page of the same search, or ``None``.
        limit: Hits per page, 1..100.
        now: The reference of the data's age.

    Returns:
        The page; ``next_cursor`` is ``None`` on the last one.

    Raises:
        InvalidInput: no criterion, a name under 2 characters, an unknown UF, a limit out of
            1..100, or a cursor of another search (each names its field).
        DependencyUnavailable: PostgreSQL cannot serve now.
    """
    if not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise InvalidInput("limit", f"limit must be between 1 and {MAX_SEARCH_LIMIT}")
    search = _criteria(name, city, uf)
    after = _decode_cursor(cursor, search) if cursor else None
    hits = await repository.search_customers(search, after=after, limit=limit + 1)
    page = hits[:limit]
    more = len(hits) > limit
    return CustomerPage(
        items=[_hit_view(hit, now) for hit in page],
        next_cursor=_encode_cursor(page[-1], search) if more and page else None,
    )
