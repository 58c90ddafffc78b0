"""Data-subject rights (LGPD art. 18): export everything stored about a person, erase it.

:class:`SubjectRights` is the use case behind ``GET`` and ``DELETE /api/v1/subjects/{cpf}``
(``dpo`` scope). A person is named by their CPF; the records about them are found through the
:class:`domain.ports.SubjectStore` port (PostgreSQL) and the shared caches
(:class:`domain.ports.SubjectCaches`, Redis), and every export or erasure is appended to the
audit trail (:class:`domain.ports.AuditTrail`) under the person's keyed digest
(:class:`domain.audit.SubjectDigester`), never the CPF.

An erasure leaves a :class:`Tombstone`: for ``ERASURE_HOLD_DAYS`` the pipeline refuses to buy the
person's dossier again (:class:`SubjectErased`, answered 451 ``subject-erased``) unless the request
says the person consented again, which lifts the hold (:meth:`domain.ports.ErasureHolds.lift`).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, ClassVar, Final

import msgspec

from domain.audit import AccessRecord, SubjectDigester
from domain.documents import normalize_cpf
from domain.errors import DomainError, NotFound
from domain.tenancy import current_caller

if TYPE_CHECKING:
    from domain.audit import Operation
    from domain.ports import AuditTrail, Clock, ErasureHolds, SubjectCaches, SubjectStore

__all__ = [
    "DEFAULT_HOLD_DAYS",
    "ERASED_NOT_ENRICHED",
    "ErasedData",
    "ErasureCounts",
    "ErasureResult",
    "SubjectErased",
    "SubjectExport",
    "SubjectRecords",
    "SubjectRights",
    "Tombstone",
    "UnrecordedAudit",
    "erased_detail",
    "lift_hold",
    "refuse_erased",
]

DEFAULT_HOLD_DAYS: Final = 180


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class Tombstone(msgspec.Struct, frozen=True, kw_only=True):
    """What is left of an erased person: when, until when re-buying is refused, who asked.

    Attributes:
        subject: The keyed digest of the CPF (:class:`SubjectDigester`).
        erased_at: When the data was erased.
        hold_until: Until when the pipeline refuses to fetch the person's dossier again.
        tenant: The requester's tenant (``""``: an operator).
        key_id: The requester's API key id, if any.
        consent_withdrawn: Whether the person withdrew their consent (the reason given).
        lifted_at: When a request carrying the person's renewed consent lifted the hold.
    """

    subject: str
    erased_at: dt.datetime
    hold_until: dt.datetime
    tenant: str = ""
    key_id: str | None = None
    consent_withdrawn: bool = False
    lifted_at: dt.datetime | None = None

    def holds(self, now: dt.datetime) -> bool:
        """Whether paid fetches of the person are refused at ``now``."""
        return self.lifted_at is None and now < self.hold_until


def erased_detail(tombstone: Tombstone) -> str:
    """The text of a 404 about an erased person: when (never who or which CPF)."""
    return (
        "No data is stored about this person: it was erased on request on "
        f"{_stamp(tombstone.erased_at)}"
    )


class SubjectErased(DomainError):
    """A paid fetch of a person whose data was erased on request, within the hold (HTTP 451).

    Problem type ``https://c2s-api.dev/problems/subject-erased``. The request may carry the
    person's renewed consent (``consent=true``), which lifts the hold.

    Attributes:
        tombstone: The erasure that holds.
    """

    http_status: ClassVar[int] = 451

    def __init__(self, tombstone: Tombstone) -> None:
        super().__init__(
            "This person's data was erased at their request on "
            f"{_stamp(tombstone.erased_at)}; it is not fetched again before "
            f"{_stamp(tombstone.hold_until)} unless the request says the person consented "
            "again (consent=true)"
        )
        self.tombstone = tombstone


ERASED_NOT_ENRICHED: Final = (
    "Not enriched: the person's data was erased at their request (LGPD) and is not fetched again"
)


async def refuse_erased(holds: ErasureHolds | None, cpf: str) -> None:
    """Before a paid fetch of ``cpf``: refuse a person erased on request, hold running.

    One PostgreSQL round trip, on the paid path only (a cache hit never asks).

    Raises:
        SubjectErased: The hold of the person's erasure is running.
    """
    if holds is not None:
        tombstone = await holds.held(cpf)
        if tombstone is not None:
            raise SubjectErased(tombstone)


async def lift_hold(holds: ErasureHolds | None, cpf: str) -> bool:
    """The person consented again (``consent=true``): lift the hold; whether one was running."""
    return await holds.lift(cpf) if holds is not None else False


class SubjectRecords(msgspec.Struct, frozen=True, kw_only=True):
    """Everything PostgreSQL stores about one CPF, each section a JSON array as stored.

    Attributes:
        parties: ``core.parties`` rows.
        people: ``core.people`` rows.
        contacts: ``core.party_contacts`` rows (e-mails, phones), with their source and times.
        addresses: ``{"link": core.party_addresses row, "address": core.addresses row}``.
        enrichments: The current enrichment of each party (``core.party_enrichments``), with
            its provider (source), time, normalised data and the raw upstream payload.
        enrichment_history: Every enrichment ever stored (``core.party_enrichment_history``).
        lead_messages: C2S messages that named the CPF (tenant, lead id, time).
        webhook_events: Webhook events of the leads enriched with the person (their payloads).
        enrich_job_items: Items of bulk enrichment jobs that asked for or found the person
            (``null`` where bulk jobs are not installed).
    """

    parties: msgspec.Raw
    people: msgspec.Raw
    contacts: msgspec.Raw
    addresses: msgspec.Raw
    enrichments: msgspec.Raw
    enrichment_history: msgspec.Raw
    lead_messages: msgspec.Raw
    webhook_events: msgspec.Raw
    enrich_job_items: msgspec.Raw | None = None


class SubjectExport(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of ``GET /api/v1/subjects/{cpf}``.

    Attributes:
        cpf: The person's CPF (the requester sent it).
        exported_at: When the export was made.
        records: The stored records.
        audit: The audit records about the person (who read or bought their data, when).
        erasure: A past erasure whose hold was lifted by renewed consent, if any.
    """

    cpf: str
    exported_at: str
    records: SubjectRecords
    audit: list[AccessRecord]
    erasure: Tombstone | None = None


class ErasureCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Rows removed from PostgreSQL by one erasure (no identifier)."""

    parties: int = 0
    contacts: int = 0
    addresses: int = 0
    enrichments: int = 0
    enrichment_history: int = 0
    lead_messages: int = 0
    webhook_events: int = 0
    enrich_job_items: int = 0


class ErasedData(msgspec.Struct, frozen=True, kw_only=True):
    """What an erasure removed: the counts, and what the caches must forget (kept in memory
    only, never answered or logged).

    Attributes:
        counts: Rows removed.
        emails: The person's e-mails (normalised).
        phones: The person's phones (storage digits).
        lead_ids: The leads enriched with or messaged about the person.
        tenants: Every tenant whose per-tenant cache entries may name the person.
    """

    counts: ErasureCounts
    emails: list[str] = msgspec.field(default_factory=list)
    phones: list[str] = msgspec.field(default_factory=list)
    lead_ids: list[str] = msgspec.field(default_factory=list)
    tenants: list[str] = msgspec.field(default_factory=list)


class ErasureResult(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of ``DELETE /api/v1/subjects/{cpf}``: counts only, never an identifier.

    Attributes:
        erased_at: When.
        hold_until: Until when re-buying the person's data is refused.
        consent_withdrawn: The reason recorded.
        removed: Rows removed from PostgreSQL.
        cache_entries: Redis entries removed.
    """

    erased_at: str
    hold_until: str
    consent_withdrawn: bool
    removed: ErasureCounts
    cache_entries: int


class UnrecordedAudit:
    """An audit trail that keeps nothing (until the real one is wired)."""

    def record(self, record: AccessRecord) -> None:
        return None

    async def flush(self) -> None:
        return None

    async def about(self, tenant: str | None, subject: str) -> list[AccessRecord]:
        return []


class SubjectRights:
    """Export and erasure of one person's data.

    Args:
        store: The records in PostgreSQL and the tombstones.
        caches: The shared caches (Redis) that may hold the person's data.
        digester: Names the person in the audit trail and the tombstone.
        clock: Wall-clock seconds.
        audit: The audit trail (``None``: nothing recorded).
        hold_days: ``ERASURE_HOLD_DAYS``: how long re-buying an erased person is refused.
    """

    def __init__(
        self,
        *,
        store: SubjectStore,
        caches: SubjectCaches,
        digester: SubjectDigester,
        clock: Clock,
        audit: AuditTrail | None = None,
        hold_days: int = DEFAULT_HOLD_DAYS,
    ) -> None:
        self._store = store
        self._caches = caches
        self._digester = digester
        self._clock = clock
        self._audit: AuditTrail = audit if audit is not None else UnrecordedAudit()
        self._hold = dt.timedelta(days=hold_days)

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock.now(), dt.UTC)

    def _record(self, operation: Operation, subject: str, now: dt.datetime) -> None:
        caller = current_caller.get()
        self._audit.record(
            AccessRecord(
                at=now,
                tenant=caller.tenant if caller is not None else "",
                key_id=caller.key_id if caller is not None else None,
                operation=operation,
                subject=subject,
                request_id=caller.request_id if caller is not None else None,
            )
        )

    async def _not_found(self, subject: str) -> NotFound:
        tombstone = await self._store.tombstone(subject)
        if tombstone is not None and tombstone.lifted_at is None:
            return NotFound(erased_detail(tombstone))
        return NotFound("No data is stored about this person")

    async def export(self, raw_cpf: str) -> SubjectExport:
        """Everything stored about the person, and the audit records about them.

        Raises:
            InvalidInput: Not a valid CPF (``cpf``).
            NotFound: Nothing is stored (the text gives the erasure date of an erased person).
        """
        cpf = normalize_cpf(raw_cpf)
        subject = self._digester.digest(cpf)
        records = await self._store.export(cpf)
        if records is None:
            raise await self._not_found(subject)
        now = self._now()
        caller = current_caller.get()
        tenant = caller.tenant if caller is not None else None
        audit = await self._audit.about(tenant, subject)
        tombstone = await self._store.tombstone(subject)
        self._record("subject_export", subject, now)
        return SubjectExport(
            cpf=cpf, exported_at=_stamp(now), records=records, audit=audit, erasure=tombstone
        )

    async def erase(self, raw_cpf: str, *, consent_withdrawn: bool = False) -> ErasureResult:
        """Erase the person from PostgreSQL (one transaction, tombstone included) and Redis.

        Raises:
            InvalidInput: Not a valid CPF (``cpf``).
            NotFound: Nothing is stored (a second erasure: the text gives the first one's date).
        """
        cpf = normalize_cpf(raw_cpf)
        subject = self._digester.digest(cpf)
        now = self._now()
        caller = current_caller.get()
        tombstone = Tombstone(
            subject=subject,
            erased_at=now,
            hold_until=now + self._hold,
            tenant=caller.tenant if caller is not None else "",
            key_id=caller.key_id if caller is not None else None,
            consent_withdrawn=consent_withdrawn,
        )
        erased = await self._store.erase(cpf, tombstone)
        if erased is None:
            raise await self._not_found(subject)
        forgotten = await self._caches.forget(cpf, erased)
        self._record("subject_erasure", subject, now)
        return ErasureResult(
            erased_at=_stamp(tombstone.erased_at),
            hold_until=_stamp(tombstone.hold_until),
            consent_withdrawn=consent_withdrawn,
            removed=erased.counts,
            cache_entries=forgotten,
        )
