"""SQL of the party repository, as module-level constants.

Each constant documents its positional parameters (asyncpg uses ``$n``) and what it returns.

Lookups return one text column, ``doc``: a JSON document per party built by PostgreSQL,

    {"party": <core.parties row>, "contacts": [...], "normalized_data": <jsonb|null>,
     "enriched_at": <timestamptz|null>}

so a lookup is ONE round trip (party, contacts and current enrichment together) and the adapter
decodes it with msgspec straight into Structs, without a Python loop over columns.
"""

from __future__ import annotations

import functools

__all__ = [
    "BEGIN_AND_LOCK_CPF",
    "FIND_BY_CPF",
    "FIND_BY_EMAIL",
    "FIND_BY_PHONE",
    "GET_PARTY",
    "LOCK_CPF",
    "PARTY_LOCK_NAMESPACE",
    "SEARCH_BY_NAME",
    "STORE_DOSSIER",
    "search_customers_query",
]

# First key of the two-key advisory lock taken per CPF while storing. The two-int4 key space is
# separate from the single-bigint one, and this namespace keeps our locks apart from other users
# of two-key advisory locks in the same database.
PARTY_LOCK_NAMESPACE = 0x0C25_0001

# The document of one party ``p`` (any row source exposing the core.parties columns, aliased
# ``p``). Contacts come primary first, then oldest; contact_id breaks ties so the order is
# stable.
_DOC_SELECT = """
SELECT json_build_object(
    'party', to_json(p),
    'contacts', coalesce(
        (SELECT json_agg(
                    json_build_object(
                        'id', c.contact_id,
                        'contact_type', c.contact_type,
                        'value', c.value,
                        'is_primary', c.is_primary,
                        'is_verified', c.is_verified,
                        'is_whatsapp', c.is_whatsapp,
                        'source', c.source,
                        'created_at', c.created_at)
                    ORDER BY c.is_primary DESC, c.created_at, c.contact_id)
           FROM core.party_contacts AS c
          WHERE c.party_id = p.id),
        '[]'),
    'normalized_data', e.normalized_data,
    'enriched_at', e.enriched_at
)::text AS doc
"""

_DOC_JOIN = """
LEFT JOIN core.party_enrichments AS e ON e.party_id = p.id
"""


def _doc_query(source: str, tail: str = "") -> str:
    """Assemble a lookup: the document of each party row produced by ``source`` (``AS p``).

    Only ever called at import time with the constant fragments below.
    """
    return "".join((_DOC_SELECT, source, _DOC_JOIN, tail))


# Tenancy: every lookup takes the caller's tenant as its last parameter ($T text, NULL for
# internal callers: the worker, the CLI). A party is visible to a tenant when it belongs to it or
# to nobody (shared data: imports, the webhook flow); another tenant's party is invisible.

# The newest person party with this CPF.
# $1 text: CPF, 11 digits.   $2 text: tenant (see above).
# Index: idx_parties_cpf_cnpj (cpf_cnpj, updated_at DESC) serves the filter and the order.
FIND_BY_CPF = _doc_query(
    """
FROM (SELECT *
        FROM core.parties AS p
       WHERE cpf_cnpj = $1 AND party_type = 'person'
         AND ($2::text IS NULL OR p.tenant IS NULL OR p.tenant = $2)
       ORDER BY updated_at DESC
       LIMIT 1) AS p
""",
)

# The newest party owning this e-mail.
# $1 text: the e-mail, trimmed and lower-cased (the storage form).   $2 text: tenant.
# Index: idx_party_contacts_value (value, contact_type).
FIND_BY_EMAIL = _doc_query(
    """
FROM (SELECT p.*
        FROM core.party_contacts AS c
        JOIN core.parties AS p ON p.id = c.party_id
       WHERE c.value = $1 AND c.contact_type = 'email'
         AND ($2::text IS NULL OR p.tenant IS NULL OR p.tenant = $2)
       ORDER BY p.updated_at DESC
       LIMIT 1) AS p
""",
)

# The newest party owning this phone, stored as type phone or whatsapp.
# $1 text: the phone's storage digits (DDD + number, no 55).   $2 text: tenant.
# Index: idx_party_contacts_value (value, contact_type).
FIND_BY_PHONE = _doc_query(
    """
FROM (SELECT p.*
        FROM core.party_contacts AS c
        JOIN core.parties AS p ON p.id = c.party_id
       WHERE c.value = $1 AND c.contact_type IN ('phone', 'whatsapp')
         AND ($2::text IS NULL OR p.tenant IS NULL OR p.tenant = $2)
       ORDER BY p.updated_at DESC
       LIMIT 1) AS p
""",
)

# Parties whose name contains the search text, case- and accent-insensitively, best first.
# $1 text: the search key (upper case, no accents, single spaces), as core.search_key makes it.
# $2 text: LIKE pattern for the index: the key's words joined by '%' ('%MARIA%SILVA%'), with
#          \, % and _ escaped. It matches a superset of the names containing the key, and the
#          trigram index answers it about twice as fast as '%MARIA SILVA%': the blank-padded
#          word-boundary trigrams ('  m', ' ma', 'a  '...) are in most names, and intersecting
#          their posting lists dominated the index scan (measured on 1M parties: 25 ms -> 13 ms
#          for a four-word name). strpos() then keeps exactly the names containing the key; it
#          is not indexable, so the planner does not add those trigrams back.
# $3 int: how many parties to return.
# $4 int: how many matching rows to rank at most. A common surname matches tens of thousands
#         of a million parties and ranking them all costs tens of milliseconds; ranking a
#         bounded candidate set keeps the query fast. The best names still come first whenever
#         the term has fewer matches than the cap (any full name, in practice); for a common
#         term the ranking is over an arbitrary sample of that size.
# $5 text: tenant.
# Index: idx_parties_name_trgm, GIN trigram on search_name (= core.search_key(full_name)).
SEARCH_BY_NAME = _doc_query(
    """
FROM (SELECT q.*
        FROM (SELECT p.*, similarity(p.search_name, $1) AS rank
                FROM core.parties AS p
               WHERE p.search_name LIKE $2
                 AND strpos(p.search_name, $1) > 0
                 AND ($5::text IS NULL OR p.tenant IS NULL OR p.tenant = $5)
               LIMIT $4) AS q
       ORDER BY q.rank DESC, q.updated_at DESC, q.id
       LIMIT $3) AS p
""",
    """
ORDER BY p.rank DESC, p.updated_at DESC, p.id
""",
)

# A party by id.
# $1 uuid: the party id.   $2 text: tenant.
GET_PARTY = _doc_query(
    """
FROM core.parties AS p
""",
    """
WHERE p.id = $1 AND ($2::text IS NULL OR p.tenant IS NULL OR p.tenant = $2)
""",
)

# The current Work API payload of the newest person party with this CPF (none once retention
# purged it). $1 text: CPF, 11 digits.   $2 text: tenant.
# Index: idx_parties_cpf_cnpj, then uq_party_enrichments_party.
FIND_ENRICHMENT = """
SELECT e.party_id, e.raw_payload::text AS raw_payload, e.enriched_at
  FROM (SELECT id
          FROM core.parties AS p
         WHERE cpf_cnpj = $1 AND party_type = 'person'
           AND ($2::text IS NULL OR p.tenant IS NULL OR p.tenant = $2)
         ORDER BY updated_at DESC
         LIMIT 1) AS p
  JOIN core.party_enrichments AS e ON e.party_id = p.id
   -- A raw payload purged by retention (JSON null) is no dossier to reuse.
   AND e.raw_payload <> 'null'::jsonb
"""

# The customer search (domain/search.py): one page of persons, ranked, after a keyset position.
# Built from constant fragments for the criteria present (0-4 name words x city x UF x with/without
# a position), so each shape has its own plan: a "$n IS NULL OR ..." filter would keep a generic
# plan off the indexes. Parameters, in order: $1 text tenant, $2 int limit, then as present: the
# folded name (text) and each of its words a hit must contain (text, domain.search.name_words),
# the folded city (text), the UF (text), the position's rank (float8) and party id (uuid).
# Each row: doc = {"party": <core.parties row>, "rank": float8, "enriched_at": timestamptz|null}.
# Indexes: idx_parties_name_trgm (GIN trigram on search_name) answers each `word <% search_name`
# (word similarity >= pg_trgm.word_similarity_threshold, 0.6 by default; several words: a
# BitmapAnd or one index scan and the others as filters); idx_addresses_city_key
# and idx_addresses_state (migration 20261207400001) the address filters, then
# idx_party_addresses_address. rank = the mean of word_similarity and similarity to the whole
# name (an exact full name first), computed once per row so the keyset compares the same value.
_SEARCH_RANK = (
    "(word_similarity({name}, p.search_name)::float8 + similarity({name}, p.search_name)::float8)"
    " / 2"
)


_IN_PLACE = (
    "p.id IN (SELECT pa.party_id FROM core.party_addresses AS pa"
    " JOIN core.addresses AS a ON a.id = pa.address_id WHERE {filters})"
)


@functools.cache
def search_customers_query(*, words: int, city: bool, uf: bool, after: bool) -> str:
    """The statement of one search shape (see the comment above); a constant per shape.

    ``words``: 0 for a search without a name, else how many words of it a hit must contain.
    """
    params = iter(f"${n}" for n in range(3, 10 + words))
    where = ["p.party_type = 'person'", "($1::text IS NULL OR p.tenant IS NULL OR p.tenant = $1)"]
    rank = "0::float8"
    if words:
        rank = _SEARCH_RANK.format(name=f"{next(params)}::text")
        where.extend(f"{next(params)}::text <% p.search_name" for _ in range(words))
    place = []
    if city:
        place.append(f"core.search_key(a.city) = {next(params)}::text")
    if uf:
        place.append(f"a.state = {next(params)}::text")
    if place:
        where.append(_IN_PLACE.format(filters=" AND ".join(place)))
    keyset = ""
    if after:
        at_rank, at_id = f"{next(params)}::float8", f"{next(params)}::uuid"
        keyset = f"WHERE q.rank < {at_rank} OR (q.rank = {at_rank} AND q.id > {at_id})"
    # Constant fragments and $n placeholders only: no value is ever formatted into the text.
    return f"""
SELECT json_build_object('party', to_json(p), 'rank', p.rank, 'enriched_at', e.enriched_at)::text
       AS doc
  FROM (SELECT q.*
          FROM (SELECT p.*, {rank} AS rank
                  FROM core.parties AS p
                 WHERE {" AND ".join(where)}) AS q
         {keyset}
         ORDER BY q.rank DESC, q.id
         LIMIT $2) AS p
  LEFT JOIN core.party_enrichments AS e ON e.party_id = p.id
 ORDER BY p.rank DESC, p.id
"""  # noqa: S608


# --------------------------------------------------------------------------------------------
# store_dossier: BEGIN_AND_LOCK_CPF, STORE_DOSSIER, COMMIT: one transaction, three round trips.
# --------------------------------------------------------------------------------------------

# Serialise concurrent stores of the same CPF until the transaction ends, so two enrichments of
# one person never create two parties (there is deliberately no UNIQUE on cpf_cnpj). Different
# CPFs whose hashes collide merely wait for each other.
# $1 text: CPF.
LOCK_CPF = f"SELECT pg_advisory_xact_lock({PARTY_LOCK_NAMESPACE}, hashtext($1))"

# Open the store's transaction and take the CPF's lock in ONE round trip (simple query protocol,
# so no parameters: the caller passes a validated CPF, 11 ASCII digits, formatted in).
BEGIN_AND_LOCK_CPF = (
    f"BEGIN; SELECT pg_advisory_xact_lock({PARTY_LOCK_NAMESPACE}, hashtext('{{cpf}}'))"
)

# Everything else of a store in ONE statement, run after BEGIN_AND_LOCK_CPF (its snapshot is
# taken after the lock is held, so it sees a concurrent store of the CPF that just committed).
# Data-modifying CTEs all run exactly once; the foreign keys to a party inserted here are
# checked at the end of the statement.
#
# party: the newest person party with the CPF among those the tenant can see (its own and shared
#   ones), its empty columns filled, or a new one of the tenant.
# person: the person details; new facts win, unknown (NULL) ones keep the stored value.
# contacts: the contacts the party does not have yet; known ones are left untouched. A contact
#   is primary only when it comes first in the dossier AND the party has no primary contact of
#   that family yet (e-mail, or phone/whatsapp), so re-enrichment never yields two primaries.
# addresses / linked: addresses upserted by their hash (shared between parties living at the
#   same place; hashes unique and sorted, so concurrent stores lock rows in one order) and
#   linked to the party. The first address of the dossier becomes the primary link when the
#   party has none (the partial unique index allows one), confidence 0.90, others 0.75; known
#   links keep their primary flag and the higher confidence.
# enrichment / history: this enrichment becomes the party's current one (its quality score the
#   best seen so far) and is appended to the history with its own score (ADR 0001). When a lead
#   id is given and the payload is an object, a top-level "lead_id" key is added to it.
#
# $1 text: CPF   $2 text: full name ('' when unknown; full_name is NOT NULL)
# $3 text: normalized name   $4 date: birth date   $5 text: sex 'M'/'F'/NULL
# $6 text: mother's name   $7 text: father's name   $8 text: RG   $9 text: tenant or NULL
# $10 text: marital status   $11 text: occupation   $12 numeric: income
# $13 text: contact source   $14 text[]: contact types   $15 text[]: values
# $16 bool[]: is_primary   $17 bool[]: is_verified   $18 bool[]: is_whatsapp
# $19 text[]: address hash   $20 text[]: street type   $21 text[]: street   $22 text[]: number
# $23 text[]: complement   $24 text[]: neighborhood   $25 text[]: city   $26 text[]: state (UF)
# $27 text[]: zip code   $28 int[]: position in the dossier (1 = first)
# $29 text: provider   $30 text: lead id or NULL   $31 jsonb (text): raw upstream payload
# $32 jsonb (text): normalized data   $33 numeric: quality score of this enrichment
# (each group of arrays is parallel, same length; empty arrays store nothing of that kind)
# Returns one row: id uuid, created bool, contacts_added bigint, addresses_added bigint.
STORE_DOSSIER = """
WITH found AS (
    SELECT id
      FROM core.parties AS p
     WHERE cpf_cnpj = $1::text AND party_type = 'person'
       AND ($9::text IS NULL OR p.tenant IS NULL OR p.tenant = $9::text)
     ORDER BY updated_at DESC
     LIMIT 1
       FOR UPDATE
), updated AS (
    UPDATE core.parties AS p
       SET full_name = CASE WHEN p.full_name = '' THEN $2::text ELSE p.full_name END,
           normalized_name = coalesce(p.normalized_name, $3::text),
           birth_date = coalesce(p.birth_date, $4::date),
           sex = coalesce(p.sex, $5::text),
           mother_name = coalesce(p.mother_name, $6::text),
           father_name = coalesce(p.father_name, $7::text),
           rg = coalesce(p.rg, $8::text),
           enriched = true,
           updated_at = now()
      FROM found
     WHERE p.id = found.id
 RETURNING p.id, false AS created
), inserted AS (
    INSERT INTO core.parties
           (party_type, cpf_cnpj, full_name, normalized_name, birth_date, sex,
            mother_name, father_name, rg, enriched, tenant)
    SELECT 'person', $1::text, $2::text, $3::text, $4::date, $5::text, $6::text, $7::text,
           $8::text, true, $9::text
     WHERE NOT EXISTS (SELECT 1 FROM found)
 RETURNING id, true AS created
), party AS (
    SELECT id, created FROM updated
    UNION ALL
    SELECT id, created FROM inserted
), person AS (
    INSERT INTO core.people AS pe
           (party_id, full_name, mothers_name, fathers_name, birth_date, sex, marital_status,
            document_cpf, rg, occupation, income)
    SELECT party.id, $2::text, $6::text, $7::text, $4::date, $5::text, $10::text, $1::text,
           $8::text, $11::text, $12::numeric
      FROM party
    ON CONFLICT (party_id) DO UPDATE
       SET full_name = coalesce(nullif(excluded.full_name, ''), pe.full_name),
           mothers_name = coalesce(excluded.mothers_name, pe.mothers_name),
           fathers_name = coalesce(excluded.fathers_name, pe.fathers_name),
           birth_date = coalesce(excluded.birth_date, pe.birth_date),
           sex = coalesce(excluded.sex, pe.sex),
           marital_status = coalesce(excluded.marital_status, pe.marital_status),
           document_cpf = coalesce(excluded.document_cpf, pe.document_cpf),
           rg = coalesce(excluded.rg, pe.rg),
           occupation = coalesce(excluded.occupation, pe.occupation),
           income = coalesce(excluded.income, pe.income),
           updated_at = now()
), contacts AS (
    INSERT INTO core.party_contacts
           (party_id, contact_type, value, is_primary, is_verified, is_whatsapp, source)
    SELECT party.id,
           c.contact_type::core.contact_type_enum,
           c.value,
           c.is_primary AND NOT EXISTS (
               SELECT 1
                 FROM core.party_contacts AS x
                WHERE x.party_id = party.id
                  AND x.is_primary
                  AND (x.contact_type = 'email') = (c.contact_type = 'email')),
           c.is_verified,
           c.is_whatsapp,
           $13::text
      FROM party,
           unnest($14::text[], $15::text[], $16::bool[], $17::bool[], $18::bool[])
           AS c(contact_type, value, is_primary, is_verified, is_whatsapp)
    ON CONFLICT (party_id, contact_type, value) DO NOTHING
    RETURNING contact_id
), address_input AS (
    SELECT *
      FROM unnest($19::text[], $20::text[], $21::text[], $22::text[], $23::text[],
                  $24::text[], $25::text[], $26::text[], $27::text[], $28::int[])
           AS a(hash, street_type, street, number, complement, neighborhood, city, state,
                zip_code, position)
), addresses AS (
    INSERT INTO core.addresses AS ad
           (hash, street_type, street, number, complement, neighborhood, city, state, zip_code)
    SELECT hash, street_type, street, number, complement, neighborhood, city, state, zip_code
      FROM address_input
     ORDER BY hash
    ON CONFLICT (hash) DO UPDATE
       SET street_type = coalesce(ad.street_type, excluded.street_type),
           neighborhood = coalesce(ad.neighborhood, excluded.neighborhood),
           updated_at = now()
    RETURNING id, hash
), linked AS (
    INSERT INTO core.party_addresses AS l
           (party_id, address_id, address_type, is_primary, confidence_score, metadata)
    SELECT party.id,
           u.id,
           'residential',
           i.position = 1 AND NOT EXISTS (
               SELECT 1
                 FROM core.party_addresses AS x
                WHERE x.party_id = party.id AND x.is_primary),
           CASE WHEN i.position = 1 THEN 0.90 ELSE 0.75 END,
           jsonb_build_object('source', 'work_api')
      FROM party, addresses AS u
      JOIN address_input AS i ON i.hash = u.hash
    ON CONFLICT (party_id, address_id) DO UPDATE
       SET confidence_score = greatest(l.confidence_score, excluded.confidence_score),
           is_current = true,
           updated_at = now()
    RETURNING (xmax = 0) AS created
), enrichment AS (
    INSERT INTO core.party_enrichments AS e
           (party_id, provider, lead_id, raw_payload, normalized_data, quality_score, enriched_at)
    SELECT party.id, $29::text, $30::text,
           CASE WHEN $30::text IS NOT NULL AND jsonb_typeof($31::jsonb) = 'object'
                THEN $31::jsonb || jsonb_build_object('lead_id', $30::text)
                ELSE $31::jsonb END,
           $32::jsonb, $33::numeric, now()
      FROM party
    ON CONFLICT (party_id) DO UPDATE
       SET provider = excluded.provider,
           lead_id = excluded.lead_id,
           raw_payload = excluded.raw_payload,
           normalized_data = excluded.normalized_data,
           quality_score = greatest(e.quality_score, excluded.quality_score),
           enriched_at = excluded.enriched_at,
           updated_at = now()
    RETURNING party_id, provider, lead_id, raw_payload, normalized_data, enriched_at
), history AS (
    INSERT INTO core.party_enrichment_history
           (party_id, provider, lead_id, raw_payload, normalized_data, quality_score,
            enriched_at)
    SELECT party_id, provider, lead_id, raw_payload, normalized_data, $33::numeric,
           enriched_at
      FROM enrichment
)
SELECT party.id,
       party.created,
       (SELECT count(*) FROM contacts) AS contacts_added,
       (SELECT count(*) FILTER (WHERE created) FROM linked) AS addresses_added
  FROM party
"""
