"""PostgreSQL side of the data-subject rights: export, erasure, tombstones (``domain/subjects.py``).

:func:`erase_parties` is the ONE place that knows how to remove parties completely; the subject
erasure (:meth:`PgSubjectStore.erase`) and the retention job (:mod:`infra.db.retention`) both
call it inside their own transaction. It removes, for the given parties:

* the parties and everything hanging from them (``ON DELETE CASCADE``): people, companies,
  contacts, address links, the current enrichment and its history (raw payloads included);
* the addresses no other party is linked to any more;
* their CPFs from ``core.lead_messages`` (the per-lead record of which CPFs a message named);
* the payload of the webhook events of the leads they were enriched for or messaged about, and,
  for a subject erasure (``deep``), of any event whose payload names the CPF (plain or
  formatted), one of their e-mails or phones: the payload becomes ``{"erased": true}`` and an
  open event fails with ``subject erased`` (its queued job then finds it terminal and does
  nothing). pgqueuer job payloads hold only event ids;
* the items of bulk enrichment jobs (``core.enrich_job_items``) that asked for the CPF, one of
  their e-mails or phones, or found the CPF: their identifiers and result are cleared
  (``result`` ``{"erased": true}``); states are kept, so the job's counts stay true (a queued
  one, left with no identifier, fails in the worker as an invalid item).

The audit trail (``audit.access_log``) holds keyed digests only and is kept (it is the record of
processing the LGPD asks for); dropping its old partitions is the retention job's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec

from domain.documents import format_cpf
from domain.subjects import ErasedData, ErasureCounts, SubjectRecords, Tombstone
from domain.tenancy import current_tenant
from infra.db import sql
from infra.db.events import PooledStore

if TYPE_CHECKING:
    from collections.abc import Sequence
    from uuid import UUID

    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    from domain.audit import SubjectDigester

__all__ = [
    "ERASED_PAYLOAD",
    "ERASE_TIMEOUT",
    "PgSubjectStore",
    "erase_parties",
    "erasure_patterns",
]

# An erasure scans a few tables (events by text): longer than a request's statement timeout.
ERASE_TIMEOUT: Final = "SET LOCAL statement_timeout = '120s'"
ERASED_PAYLOAD: Final = '{"erased": true}'

# The parties of a CPF the caller's tenant can see (its own and shared ones; all when NULL),
# locked. $1 text: CPF. $2 text: tenant or NULL.
_PARTIES_OF_CPF: Final = """
SELECT id FROM core.parties AS p
 WHERE cpf_cnpj = $1 AND ($2::text IS NULL OR p.tenant IS NULL OR p.tenant = $2)
   FOR UPDATE
"""

# What the caches must forget and what the counts report, before anything is deleted.
# $1 uuid[]: parties. $2 text[]: their CPFs.
_COLLECT: Final = """
SELECT
  (SELECT coalesce(array_agg(DISTINCT value), '{}') FROM core.party_contacts
    WHERE party_id = ANY($1) AND contact_type = 'email') AS emails,
  (SELECT coalesce(array_agg(DISTINCT value), '{}') FROM core.party_contacts
    WHERE party_id = ANY($1) AND contact_type <> 'email') AS phones,
  (SELECT count(*) FROM core.party_contacts WHERE party_id = ANY($1)) AS contacts,
  (SELECT coalesce(array_agg(DISTINCT address_id), '{}') FROM core.party_addresses
    WHERE party_id = ANY($1)) AS addresses,
  (SELECT count(*) FROM core.party_enrichments WHERE party_id = ANY($1)) AS enrichments,
  (SELECT count(*) FROM core.party_enrichment_history WHERE party_id = ANY($1)) AS history,
  (SELECT coalesce(array_agg(DISTINCT lead_id), '{}')
     FROM (SELECT lead_id FROM core.party_enrichments WHERE party_id = ANY($1)
           UNION SELECT lead_id FROM core.party_enrichment_history WHERE party_id = ANY($1)
           UNION SELECT lead_id FROM core.lead_messages WHERE cpfs && $2::text[]) AS l
    WHERE lead_id IS NOT NULL) AS lead_ids,
  (SELECT coalesce(array_agg(DISTINCT tenant), '{}')
     FROM (SELECT tenant FROM core.api_keys UNION SELECT '') AS t) AS tenants
"""

_DELETE_PARTIES: Final = "DELETE FROM core.parties WHERE id = ANY($1::uuid[])"

# Addresses left without any party. $1 uuid[]: the addresses the erased parties were linked to.
_DELETE_ORPHAN_ADDRESSES: Final = """
DELETE FROM core.addresses AS a
 WHERE a.id = ANY($1::uuid[])
   AND NOT EXISTS (SELECT 1 FROM core.party_addresses AS l WHERE l.address_id = a.id)
"""

# The CPFs out of the lead-message records (the record itself stays: one message per lead).
# $1 text[]: CPFs. Served by idx_lead_messages_cpfs.
_FORGET_LEAD_MESSAGES: Final = """
UPDATE core.lead_messages
   SET cpfs = array(SELECT c FROM unnest(cpfs) AS c WHERE c <> ALL($1::text[]))
 WHERE cpfs && $1::text[]
"""

# Redact the payloads of the events of the leads ($1 text[], idx_webhook_events_lead) and, when
# $2 (text[] of lower-case LIKE patterns) is not NULL, of every event whose payload names one of
# them (a scan: a subject erasure only). An open event fails: its job finds it terminal.
_REDACT_EVENTS: Final = """
UPDATE core.webhook_events
   SET payload_raw = '{"erased": true}'::jsonb,
       status = CASE WHEN status IN ('received', 'queued', 'processing') THEN 'failed'
                     ELSE status END,
       error_message = CASE WHEN status IN ('received', 'queued', 'processing')
                            THEN 'subject erased' ELSE error_message END,
       processed_at = coalesce(processed_at, now())
 WHERE payload_raw <> '{"erased": true}'::jsonb
   AND (lead_id = ANY($1::text[])
        OR ($2::text[] IS NOT NULL AND lower(payload_raw::text) LIKE ANY($2::text[])))
"""

# The e-mails (lower case) and phones of the CPF's visible parties. $1 CPF, $2 tenant or NULL.
_PERSON_CONTACTS: Final = """
SELECT coalesce(array_agg(DISTINCT lower(c.value)) FILTER (WHERE c.contact_type = 'email'), '{}')
           AS emails,
       coalesce(array_agg(DISTINCT c.value) FILTER (WHERE c.contact_type <> 'email'), '{}')
           AS phones
  FROM core.party_contacts AS c
  JOIN core.parties AS p ON p.id = c.party_id
 WHERE p.cpf_cnpj = $1 AND ($2::text IS NULL OR p.tenant IS NULL OR p.tenant = $2)
"""

_UPSERT_TOMBSTONE: Final = """
INSERT INTO core.erasures AS e
       (subject, erased_at, hold_until, tenant, key_id, consent_withdrawn, lifted_at)
VALUES ($1, $2, $3, $4, $5, $6, NULL)
ON CONFLICT (subject) DO UPDATE
   SET erased_at = excluded.erased_at, hold_until = excluded.hold_until,
       tenant = excluded.tenant, key_id = excluded.key_id,
       consent_withdrawn = excluded.consent_withdrawn, lifted_at = NULL
"""

_SELECT_TOMBSTONE: Final = """
SELECT subject, erased_at, hold_until, tenant, key_id, consent_withdrawn, lifted_at
  FROM core.erasures WHERE subject = $1
"""

# The running hold of a subject, if any (one index probe: the paid path's one round trip).
_HELD: Final = _SELECT_TOMBSTONE + " AND lifted_at IS NULL AND hold_until > now()"

_LIFT: Final = """
UPDATE core.erasures SET lifted_at = now()
 WHERE subject = $1 AND lifted_at IS NULL AND hold_until > now()
"""

# Everything stored about a CPF, as one JSON document (see domain.subjects.SubjectRecords).
# $1 text: CPF. $2 text: tenant or NULL (the lookups' scoping).
_EXPORT: Final = """
WITH p AS (
    SELECT * FROM core.parties AS x
     WHERE cpf_cnpj = $1 AND ($2::text IS NULL OR x.tenant IS NULL OR x.tenant = $2)
), leads AS (
    SELECT lead_id FROM core.party_enrichments WHERE party_id IN (SELECT id FROM p)
    UNION SELECT lead_id FROM core.party_enrichment_history WHERE party_id IN (SELECT id FROM p)
    UNION SELECT lead_id FROM core.lead_messages WHERE cpfs && ARRAY[$1::text]
)
SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM p) THEN NULL ELSE json_build_object(
  'parties', (SELECT coalesce(json_agg(to_json(p) ORDER BY p.updated_at DESC), '[]') FROM p),
  'people', (SELECT coalesce(json_agg(to_json(x)), '[]') FROM core.people AS x
              WHERE x.party_id IN (SELECT id FROM p)),
  'contacts', (SELECT coalesce(json_agg(to_json(x) ORDER BY x.created_at), '[]')
                 FROM core.party_contacts AS x WHERE x.party_id IN (SELECT id FROM p)),
  'addresses', (SELECT coalesce(json_agg(json_build_object('link', to_json(l),
                                                          'address', to_json(a))
                                          ORDER BY l.created_at), '[]')
                  FROM core.party_addresses AS l JOIN core.addresses AS a ON a.id = l.address_id
                 WHERE l.party_id IN (SELECT id FROM p)),
  'enrichments', (SELECT coalesce(json_agg(to_json(x)), '[]') FROM core.party_enrichments AS x
                   WHERE x.party_id IN (SELECT id FROM p)),
  'enrichment_history', (SELECT coalesce(json_agg(to_json(x) ORDER BY x.enriched_at), '[]')
                           FROM core.party_enrichment_history AS x
                          WHERE x.party_id IN (SELECT id FROM p)),
  'lead_messages', (SELECT coalesce(json_agg(json_build_object(
                        'tenant', m.tenant, 'lead_id', m.lead_id, 'messaged_at', m.messaged_at)
                        ORDER BY m.messaged_at), '[]')
                      FROM core.lead_messages AS m
                     WHERE m.cpfs && ARRAY[$1::text]
                       AND ($2::text IS NULL OR m.tenant = $2)),
  'webhook_events', (SELECT coalesce(json_agg(json_build_object(
                        'id', w.id, 'source', w.source, 'lead_id', w.lead_id,
                        'received_at', w.received_at, 'status', w.status,
                        'payload', w.payload_raw) ORDER BY w.received_at), '[]')
                       FROM core.webhook_events AS w
                      WHERE w.lead_id IN (SELECT lead_id FROM leads WHERE lead_id IS NOT NULL))
)::text END
"""

# Bulk enrichment job items: identifiers and results cleared, states kept (the job's counters
# stay true: a queued item left with no identifier fails in the worker as an invalid item).
# $1 text[]: CPFs. $2 text[]: e-mails (lower case). $3 text[]: phones (storage digits).
_JOB_ITEMS_WHERE: Final = """
 WHERE cpf = ANY($1::text[]) OR subject_cpf = ANY($1::text[])
    OR lower(email) = ANY($2::text[])
    OR regexp_replace(phone, '\\D', '', 'g') = ANY($3::text[])
    OR regexp_replace(phone, '\\D', '', 'g') = ANY(SELECT '55' || p FROM unnest($3::text[]) AS p)
"""
_ERASE_JOB_ITEMS: Final = (
    """
UPDATE core.enrich_job_items
   SET cpf = NULL, email = NULL, phone = NULL, name = NULL, subject_cpf = NULL,
       result = CASE WHEN result IS NULL THEN NULL ELSE '{"erased": true}'::jsonb END
"""
    + _JOB_ITEMS_WHERE
)
# The retention's (per batch): by CPF only, both columns indexed. $1 text[]: CPFs.
_ERASE_JOB_ITEMS_BY_CPF: Final = """
UPDATE core.enrich_job_items
   SET cpf = NULL, email = NULL, phone = NULL, name = NULL, subject_cpf = NULL,
       result = CASE WHEN result IS NULL THEN NULL ELSE '{"erased": true}'::jsonb END
 WHERE cpf = ANY($1::text[]) OR subject_cpf = ANY($1::text[])
"""
_EXPORT_JOB_ITEMS: Final = """
SELECT coalesce(json_agg(to_json(i) ORDER BY i.job_id, i.seq), '[]')::text
  FROM core.enrich_job_items AS i
 WHERE (cpf = ANY($1::text[]) OR subject_cpf = ANY($1::text[])
        OR lower(email) = ANY($2::text[])
        OR regexp_replace(phone, '\\D', '', 'g') = ANY($3::text[])
        OR regexp_replace(phone, '\\D', '', 'g')
           = ANY(SELECT '55' || p FROM unnest($3::text[]) AS p))
   AND ($4::text IS NULL
        OR EXISTS (SELECT 1 FROM core.enrich_jobs AS j WHERE j.id = i.job_id AND j.tenant = $4))
"""

_RECORDS: Final = msgspec.json.Decoder(SubjectRecords)


def _count(status: str) -> int:
    """The row count of an asyncpg command status (``DELETE 3`` -> 3)."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def erasure_patterns(cpf: str, emails: Sequence[str], phones: Sequence[str]) -> list[str]:
    """The LIKE patterns (lower case) of a person's identifiers in a stored payload."""
    texts = {cpf, format_cpf(cpf), *emails, *phones}
    return sorted(_like(text) for text in texts if text)


async def erase_parties(
    conn: asyncpg.Connection | PoolConnectionProxy,
    party_ids: Sequence[UUID],
    cpfs: Sequence[str],
    *,
    deep: bool,
) -> ErasedData:
    """Remove ``party_ids`` completely, inside the caller's transaction (see the module doc).

    Args:
        conn: A connection inside a transaction (the caller commits).
        party_ids: The parties to remove (already locked by the caller, or lockable).
        cpfs: Their CPFs (to remove from lead-message records).
        deep: Also redact every event whose payload names the person, and clear the bulk job
            items that asked for their e-mail or phone (a subject erasure; scans), not only the
            events of their leads and the items of their CPF (retention).

    Returns:
        What was removed and what the caches must forget.
    """
    ids = list(party_ids)
    cpf_list = sorted({c for c in cpfs if c})
    row = await conn.fetchrow(_COLLECT, ids, cpf_list)
    if row is None:  # pragma: no cover - one row always
        raise RuntimeError("collect statement returned no row")
    emails: list[str] = list(row["emails"])
    phones: list[str] = list(row["phones"])
    lead_ids: list[str] = list(row["lead_ids"])
    parties = _count(await conn.execute(_DELETE_PARTIES, ids))
    addresses = _count(await conn.execute(_DELETE_ORPHAN_ADDRESSES, list(row["addresses"])))
    messages = _count(await conn.execute(_FORGET_LEAD_MESSAGES, cpf_list)) if cpf_list else 0
    patterns = None
    if deep:
        patterns = [p for cpf in cpf_list for p in erasure_patterns(cpf, emails, phones)]
    events = 0
    if lead_ids or patterns:
        events = _count(await conn.execute(_REDACT_EVENTS, lead_ids, patterns))
    asked = [*cpf_list, *(format_cpf(c) for c in cpf_list)]  # as sent, either form
    if deep:  # also the items that asked by e-mail or phone (a scan of the items)
        lower = [e.lower() for e in emails]
        items = _count(await conn.execute(_ERASE_JOB_ITEMS, asked, lower, phones))
    else:
        items = _count(await conn.execute(_ERASE_JOB_ITEMS_BY_CPF, asked))
    return ErasedData(
        counts=ErasureCounts(
            parties=parties,
            contacts=int(row["contacts"]),
            addresses=addresses,
            enrichments=int(row["enrichments"]),
            enrichment_history=int(row["history"]),
            lead_messages=messages,
            webhook_events=events,
            enrich_job_items=items,
        ),
        emails=emails,
        phones=phones,
        lead_ids=lead_ids,
        tenants=list(row["tenants"]),
    )


def _tombstone(row: asyncpg.Record) -> Tombstone:
    return Tombstone(
        subject=row["subject"],
        erased_at=row["erased_at"],
        hold_until=row["hold_until"],
        tenant=row["tenant"],
        key_id=row["key_id"],
        consent_withdrawn=row["consent_withdrawn"],
        lifted_at=row["lifted_at"],
    )


class PgSubjectStore(PooledStore):
    """:class:`domain.ports.SubjectStore` and :class:`domain.ports.ErasureHolds` on PostgreSQL.

    Args:
        pool: The process's pool.
        digester: Names a CPF in the tombstones (the hold check digests the CPF it is given).
        acquire_timeout: Seconds to wait for a pooled connection.
    """

    def __init__(
        self, pool: asyncpg.Pool, digester: SubjectDigester, *, acquire_timeout: float
    ) -> None:
        super().__init__(pool, acquire_timeout=acquire_timeout)
        self._digester = digester

    async def export(self, cpf: str) -> SubjectRecords | None:
        tenant = current_tenant.get()
        async with self._connection() as conn:
            doc: str | None = await conn.fetchval(_EXPORT, cpf, tenant)
            if doc is None:
                return None
            records = _RECORDS.decode(doc)
            contacts = await conn.fetchrow(_PERSON_CONTACTS, cpf, tenant)
            emails = list(contacts["emails"]) if contacts is not None else []
            phones = list(contacts["phones"]) if contacts is not None else []
            asked = [cpf, format_cpf(cpf)]
            items: str = await conn.fetchval(_EXPORT_JOB_ITEMS, asked, emails, phones, tenant)
            records = msgspec.structs.replace(records, enrich_job_items=msgspec.Raw(items))
        return records

    async def erase(self, cpf: str, tombstone: Tombstone) -> ErasedData | None:
        async with self._connection() as conn, conn.transaction():
            await conn.execute(ERASE_TIMEOUT)
            # Serialised with the stores of the same CPF (infra.db.repository).
            await conn.execute(sql.LOCK_CPF, cpf)
            rows = await conn.fetch(_PARTIES_OF_CPF, cpf, current_tenant.get())
            if not rows:
                return None
            erased = await erase_parties(conn, [r["id"] for r in rows], [cpf], deep=True)
            await conn.execute(
                _UPSERT_TOMBSTONE,
                tombstone.subject,
                tombstone.erased_at,
                tombstone.hold_until,
                tombstone.tenant,
                tombstone.key_id,
                tombstone.consent_withdrawn,
            )
        return erased

    async def tombstone(self, subject: str) -> Tombstone | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(_SELECT_TOMBSTONE, subject)
        return None if row is None else _tombstone(row)

    async def held(self, cpf: str) -> Tombstone | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(_HELD, self._digester.digest(cpf))
        return None if row is None else _tombstone(row)

    async def lift(self, cpf: str) -> bool:
        async with self._connection() as conn:
            status = await conn.execute(_LIFT, self._digester.digest(cpf))
        return _count(status) > 0
