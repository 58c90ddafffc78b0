"""``GET /api/v1/customers``: fuzzy, ranked, tenant-scoped search of stored persons, page by
page with an opaque cursor (issue #16.5).

The persons are written straight into the session database with a surname no synthetic person
has, so the expected hits are exactly the rows this module wrote.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.factories import issue_key

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.testing import AsyncTestClient

pytestmark = pytest.mark.integration

SEARCH = "/api/v1/customers"
TENANT, OTHER = "search-a", "search-b"
EXACT = "ZEFERINO QUARTZOLINO"
# First and last name with two others between them: found by a search of the first and last.
MIDDLE_NAMES = "ZEFERINO ALBUQUERQUE MARANHAO QUARTZOLINO"
# (full name, tenant, city, uf): four exact twins (one rank: ordered by id), longer names and a
# typo, shared or the tenant's, some elsewhere; the other tenant's are never seen.
ROWS: list[tuple[str, str | None, str, str]] = [
    (EXACT, None, "São Paulo", "SP"),
    (EXACT, TENANT, "São Paulo", "SP"),
    (EXACT, TENANT, "Campinas", "SP"),
    (EXACT, None, "Curitiba", "PR"),
    ("Zeferino Quartzolino da Conceição", None, "São Paulo", "SP"),
    ("ZEFERINO QUARTZOLINO NETO", TENANT, "Recife", "PE"),
    ("ZEFERINA QUARTZOLINO", None, "Sao Paulo", "SP"),
    (MIDDLE_NAMES, TENANT, "Recife", "PE"),
    (EXACT, OTHER, "São Paulo", "SP"),
    ("ZEFERINO QUARTZOLINO FILHO", OTHER, "Recife", "PE"),
]


@pytest.fixture(scope="module")
async def key(database_url: str) -> str:
    plaintext, _ = await issue_key(database_url, tenant=TENANT, scopes="read")
    return plaintext


@pytest.fixture(scope="module")
async def parties(database_url: str) -> dict[str, tuple[str, str | None, str, str]]:
    """The rows above, written once; id -> row."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    written: dict[str, tuple[str, str | None, str, str]] = {}
    try:
        for index, row in enumerate(ROWS):
            name, tenant, city, uf = row
            party_id = await conn.fetchval(
                """INSERT INTO core.parties (party_type, cpf_cnpj, full_name, tenant)
                   VALUES ('person', $1, $2, $3) RETURNING id""",
                f"{99000000000 + index}",
                name,
                tenant,
            )
            address_id = await conn.fetchval(
                """INSERT INTO core.addresses (hash, street, city, state)
                   VALUES ($1, 'Rua Teste', $2, $3) RETURNING id""",
                uuid.uuid4().hex,
                city,
                uf,
            )
            await conn.execute(
                "INSERT INTO core.party_addresses (party_id, address_id) VALUES ($1, $2)",
                party_id,
                address_id,
            )
            written[str(party_id)] = row
    finally:
        await conn.close()
    return written


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def every_page(
    client: AsyncTestClient[Litestar], key: str, **params: Any
) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get(SEARCH, params=query, headers=auth(key))
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 20, "the cursor never ends"


def visible(parties: dict[str, tuple[str, str | None, str, str]]) -> set[str]:
    return {pid for pid, (_, tenant, _, _) in parties.items() if tenant in (None, TENANT)}


async def test_every_match_across_pages_no_duplicate_no_gap_ranked_and_scoped(
    client: AsyncTestClient[Litestar],
    key: str,
    parties: dict[str, tuple[str, str | None, str, str]],
) -> None:
    pages = await every_page(client, key, name="zeferino quartzolino", limit=2)
    hits = [hit for page in pages for hit in page]
    ids = [hit["id"] for hit in hits]
    assert all(len(page) == 2 for page in pages[:-1])
    assert len(ids) == len(set(ids))  # no duplicate
    assert set(ids) == visible(parties)  # no gap, and nothing of the other tenant
    order = [(-hit["score"], hit["id"]) for hit in hits]
    assert order == sorted(order)  # best first, then by id (twins included)
    exact = [hit for hit in hits if hit["name"] == EXACT]
    assert [hit["score"] for hit in exact] == [1.0] * 4
    assert hits[:4] == exact  # the exact name outranks longer names and the typo


async def test_a_typo_still_finds_the_person(
    client: AsyncTestClient[Litestar],
    key: str,
    parties: dict[str, tuple[str, str | None, str, str]],
) -> None:
    pages = await every_page(client, key, name="Zeferino Quartzolyno")
    assert {hit["id"] for page in pages for hit in page} == visible(parties)


async def test_first_and_last_name_find_a_person_with_middle_names_in_any_order(
    client: AsyncTestClient[Litestar],
    key: str,
    parties: dict[str, tuple[str, str | None, str, str]],
) -> None:
    middle = {pid for pid, row in parties.items() if row[0] == MIDDLE_NAMES}
    for name in ("zeferino quartzolino", "Quartzolino, Zeferino", "zeferino da quartzolino"):
        pages = await every_page(client, key, name=name)
        assert middle <= {hit["id"] for page in pages for hit in page}, name
    # Every word of 3+ characters must be found: a surname none of them has finds nobody.
    assert await every_page(client, key, name="zeferino xilofonio") == [[]]
    maranhao = await every_page(client, key, name="maranhão quartzolino")
    assert {hit["id"] for page in maranhao for hit in page} == middle


async def test_city_and_uf_filter_on_the_addresses(
    client: AsyncTestClient[Litestar],
    key: str,
    parties: dict[str, tuple[str, str | None, str, str]],
) -> None:
    in_sao_paulo = {
        pid for pid in visible(parties) if parties[pid][2] in ("São Paulo", "Sao Paulo")
    }
    pages = await every_page(client, key, name="quartzolino", city="SAO PAULO", limit=1)
    assert {hit["id"] for page in pages for hit in page} == in_sao_paulo
    in_sp = {pid for pid in visible(parties) if parties[pid][3] == "SP"}
    by_uf = await every_page(client, key, name="quartzolino", uf="sp")
    assert {hit["id"] for page in by_uf for hit in page} == in_sp
    # A place without a name: every visible person there (other rows of the session too).
    recife = await every_page(client, key, city="recife", uf="PE", limit=100)
    found = {hit["id"] for page in recife for hit in page}
    assert {pid for pid in visible(parties) if parties[pid][2] == "Recife"} <= found
    assert not found & {pid for pid, row in parties.items() if row[1] == OTHER}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "name"),
        ({"name": "z"}, "name"),
        ({"uf": "XX"}, "uf"),
        ({"name": "zeferino", "cursor": "not-a-cursor"}, "cursor"),
        ({"name": "zeferino", "limit": "101"}, "limit"),
        ({"name": "zeferino", "limit": "0"}, "limit"),
    ],
)
async def test_bad_searches_are_400_naming_the_field(
    client: AsyncTestClient[Litestar], key: str, params: dict[str, str], field: str
) -> None:
    response = await client.get(SEARCH, params=params, headers=auth(key))
    assert response.status_code == 400, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]


async def test_a_cursor_only_continues_its_own_search(
    client: AsyncTestClient[Litestar],
    key: str,
    parties: dict[str, tuple[str, str | None, str, str]],
) -> None:
    first = await client.get(SEARCH, params={"name": "quartzolino", "limit": 1}, headers=auth(key))
    cursor = first.json()["next_cursor"]
    assert cursor
    other = await client.get(
        SEARCH, params={"name": "quartzolino", "uf": "SP", "cursor": cursor}, headers=auth(key)
    )
    assert other.status_code == 400
    assert other.json()["errors"][0]["field"] == "cursor"
