"""In-memory fakes of the domain ports, for unit tests of the use cases.

Small and honest: each keeps state the way the real adapter does (a dict where Redis or
PostgreSQL would be), so tests assert on behaviour, never on calls to our own code.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from domain.audit import AccessRecord, Auditor, AuditPage, AuditQuery, SubjectDigester
from domain.bulk import (
    ITEM_STATES,
    BulkStats,
    CallbackView,
    ClaimedItem,
    EnrichJobView,
    ItemError,
    ItemOutcome,
    ItemView,
    JobCounts,
    JobPosition,
    NewJob,
)
from domain.customers import CustomerQuery, UnifiedCustomer
from domain.dossier import decode_dossier, normalize_dossier
from domain.errors import DependencyUnavailable, NotFound, UpstreamError, UpstreamSoftError
from domain.models import (
    Contact,
    ContactType,
    CpfCandidate,
    Lead,
    LeadLockState,
    NewLead,
    Party,
    PartyWithContacts,
    StoredDossier,
    StoredEnrichment,
)
from domain.pipeline import Enricher, PipelineSettings
from domain.search import SearchHit, name_words
from domain.subjects import ErasedData, ErasureCounts, SubjectRecords, Tombstone
from domain.tenancy import current_tenant
from domain.text import fold
from domain.usage import MeteredDiretrix, MeteredWorkApi, PaidCalls, UsageCount
from domain.webhooks import AcceptResult, GoogleLeadClaim, QueueStats, StoredEvent
from tests.support.clocks import FakeClock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence

    from domain.dossier import Dossier
    from domain.flags import StaticFlags
    from domain.ports import DiretrixPort, WorkApiPort
    from domain.search import CustomerSearch, SearchPosition
    from domain.webhooks import EventStatus, WebhookEvent


@dataclass
class FakeC2S:
    leads: dict[str, Lead] = field(default_factory=dict)
    messages: dict[str, list[str]] = field(default_factory=dict)
    created: list[NewLead] = field(default_factory=list)
    fail_fetch: DependencyUnavailable | UpstreamError | None = None
    fail_send: DependencyUnavailable | UpstreamError | None = None

    async def fetch_lead(self, lead_id: str) -> Lead:
        if self.fail_fetch is not None:
            raise self.fail_fetch
        if lead_id not in self.leads:
            raise NotFound("lead not found")
        return self.leads[lead_id]

    async def send_message(self, lead_id: str, body: str) -> None:
        if self.fail_send is not None:
            raise self.fail_send
        self.messages.setdefault(lead_id, []).append(body)

    async def create_lead(self, lead: NewLead) -> str:
        self.created.append(lead)
        return uuid.uuid4().hex


@dataclass
class FakeDiretrix:
    by_phone: dict[str, list[CpfCandidate]] = field(default_factory=dict)
    by_email: dict[str, list[CpfCandidate]] = field(default_factory=dict)
    down: bool = False
    calls: int = 0

    async def search_by_phone(self, national_phone: str) -> list[CpfCandidate]:
        self.calls += 1
        if self.down:
            raise DependencyUnavailable("diretrix", "breaker open")
        return list(self.by_phone.get(national_phone, []))

    async def search_by_email(self, email: str) -> list[CpfCandidate]:
        self.calls += 1
        if self.down:
            raise DependencyUnavailable("diretrix", "breaker open")
        return list(self.by_email.get(email, []))


@dataclass
class FakeWorkApi:
    dossiers: dict[str, bytes] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    down: bool = False
    calls: list[str] = field(default_factory=list)
    # Seconds each answer takes, as a network call would (lets concurrent callers overlap).
    delay_s: float = 0.0

    async def fetch_module(self, module: str, query: str) -> bytes:
        if module == "cpf":
            return (await self.fetch_dossier(query))[1]
        raise UpstreamSoftError("work_api", "unknown module", 403, "unknown_module")

    async def fetch_dossier(self, cpf: str) -> tuple[Dossier, bytes]:
        self.calls.append(cpf)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.down:
            raise DependencyUnavailable("work_api", "breaker open")
        if cpf in self.failing:
            raise UpstreamError("work_api", "Work API answered 500", status=500)
        if cpf not in self.dossiers:
            raise UpstreamSoftError("work_api", "CPF not found", 404, "not_found")
        raw = self.dossiers[cpf]
        return decode_dossier(raw), raw


@dataclass
class _Row:
    party: Party
    contacts: list[Contact]
    raw: bytes | None = None
    normalized: bytes | None = None
    enriched_at: dt.datetime | None = None


@dataclass
class FakeRepository:
    rows: dict[uuid.UUID, _Row] = field(default_factory=dict)
    down: bool = False
    now: dt.datetime = field(default_factory=lambda: dt.datetime(2026, 11, 26, tzinfo=dt.UTC))

    def _check(self) -> None:
        if self.down:
            raise DependencyUnavailable("postgres", "connection refused")

    def _view(self, row: _Row) -> PartyWithContacts:
        return PartyWithContacts(
            party=row.party,
            contacts=list(row.contacts),
            normalized_data=row.normalized,
            enriched_at=row.enriched_at,
        )

    def add_party(self, party: Party, contacts: Sequence[Contact] = ()) -> None:
        self.rows[party.id] = _Row(party=party, contacts=list(contacts))

    async def find_by_cpf(self, cpf: str) -> PartyWithContacts | None:
        self._check()
        for row in self.rows.values():
            if row.party.cpf_cnpj == cpf and row.party.party_type == "person":
                return self._view(row)
        return None

    async def find_by_email(self, email: str) -> PartyWithContacts | None:
        self._check()
        for row in self.rows.values():
            if any(c.contact_type == "email" and c.value == email for c in row.contacts):
                return self._view(row)
        return None

    async def find_by_phone(self, national_phone: str) -> PartyWithContacts | None:
        self._check()
        for row in self.rows.values():
            if any(c.contact_type != "email" and c.value == national_phone for c in row.contacts):
                return self._view(row)
        return None

    async def search_by_name(self, name: str, limit: int = 10) -> list[PartyWithContacts]:
        self._check()
        hits = [r for r in self.rows.values() if name.lower() in r.party.full_name.lower()]
        return [self._view(r) for r in hits[:limit]]

    async def get_party(self, party_id: uuid.UUID) -> PartyWithContacts | None:
        self._check()
        row = self.rows.get(party_id)
        return self._view(row) if row is not None else None

    async def store_dossier(
        self, cpf: str, dossier: Dossier, raw: bytes, lead_id: str | None
    ) -> StoredDossier:
        self._check()
        import msgspec

        person = normalize_dossier(dossier)
        existing = next((r for r in self.rows.values() if r.party.cpf_cnpj == cpf), None)
        created = existing is None
        if existing is None:
            party = Party(
                id=uuid.uuid4(),
                party_type="person",
                cpf_cnpj=cpf,
                full_name=person.name or "",
                enriched=True,
            )
            existing = _Row(party=party, contacts=[])
            self.rows[party.id] = existing
        before = len(existing.contacts)
        known = {(c.contact_type, c.value) for c in existing.contacts}
        for email in person.emails:
            if ("email", email.address) not in known:
                existing.contacts.append(
                    Contact(id=uuid.uuid4(), contact_type="email", value=email.address)
                )
        for phone in person.phones:
            kind: ContactType = "whatsapp" if phone.is_whatsapp else "phone"
            if (kind, phone.number) not in known:
                existing.contacts.append(
                    Contact(id=uuid.uuid4(), contact_type=kind, value=phone.number)
                )
        existing.raw = raw
        existing.normalized = msgspec.json.encode(person)
        existing.enriched_at = self.now
        return StoredDossier(
            party_id=existing.party.id,
            created=created,
            contacts_added=len(existing.contacts) - before,
            addresses_added=0,
        )

    async def search_customers(
        self, search: CustomerSearch, *, after: SearchPosition | None, limit: int
    ) -> list[SearchHit]:
        """Names containing every word a hit must contain, exactly (rank: the share of the name
        the searched name's length covers); the fake keeps no addresses, so a city or UF filter
        finds nobody."""
        self._check()
        if search.city is not None or search.uf is not None:
            return []
        words = name_words(search.name) if search.name is not None else ()
        hits: list[SearchHit] = []
        for row in self.rows.values():
            key = fold(row.party.full_name)
            if row.party.party_type != "person" or not all(w in key for w in words):
                continue
            rank = len(search.name or "") / len(key) if search.name else 0.0
            hits.append(SearchHit(party=row.party, rank=rank, enriched_at=row.enriched_at))
        hits.sort(key=lambda h: (-h.rank, h.party.id))
        if after is not None:
            hits = [
                h
                for h in hits
                if h.rank < after.rank or (h.rank == after.rank and h.party.id > after.party_id)
            ]
        return hits[:limit]

    async def find_enrichment(self, cpf: str) -> StoredEnrichment | None:
        self._check()
        for row in self.rows.values():
            if row.party.cpf_cnpj == cpf and row.raw is not None and row.enriched_at is not None:
                return StoredEnrichment(
                    party_id=row.party.id, raw_payload=row.raw, enriched_at=row.enriched_at
                )
        return None


@dataclass
class FakeDossierCache:
    entries: dict[str, bytes] = field(default_factory=dict)
    # When each entry was written (FakeClock seconds); an entry put in ``entries`` by hand has
    # no age and is never "fresh".
    written: dict[str, float] = field(default_factory=dict)
    clock: FakeClock = field(default_factory=FakeClock)

    async def get(self, key: str) -> bytes | None:
        return self.entries.get(key)

    async def put(self, key: str, raw: bytes) -> None:
        self.entries[key] = raw
        self.written[key] = self.clock.now()

    async def get_fresh(self, key: str, max_age_s: float) -> bytes | None:
        written = self.written.get(key)
        if written is None or self.clock.now() - written > max_age_s:
            return None
        return self.entries.get(key)


@dataclass
class FakeContactCache:
    entries: dict[tuple[str, str], list[CpfCandidate]] = field(default_factory=dict)

    async def get(self, kind: str, value: str) -> list[CpfCandidate] | None:
        found = self.entries.get((kind, value))
        return list(found) if found is not None else None

    async def put(self, kind: str, value: str, candidates: Sequence[CpfCandidate]) -> None:
        self.entries[(kind, value)] = list(candidates)


@dataclass
class FakeLeadLocks:
    """Per tenant (``domain.tenancy.current_tenant``), like the Redis adapter; ``held`` and
    ``finished`` are the current tenant's."""

    clock: FakeClock
    by_tenant: dict[str, tuple[dict[str, float], dict[str, bytes]]] = field(default_factory=dict)

    def _mine(self) -> tuple[dict[str, float], dict[str, bytes]]:
        return self.by_tenant.setdefault(current_tenant.get() or "", ({}, {}))

    @property
    def held(self) -> dict[str, float]:
        return self._mine()[0]

    @property
    def finished(self) -> dict[str, bytes]:
        return self._mine()[1]

    async def acquire(self, lead_id: str) -> LeadLockState:
        if lead_id in self.finished:
            return LeadLockState(acquired=False, finished=self.finished[lead_id])
        if lead_id in self.held:
            return LeadLockState(acquired=False, started_at=self.held[lead_id])
        self.held[lead_id] = self.clock.now()
        return LeadLockState(acquired=True)

    async def finish(self, lead_id: str, result: bytes) -> None:
        self.held.pop(lead_id, None)
        self.finished[lead_id] = result

    async def abandon(self, lead_id: str) -> None:
        self.held.pop(lead_id, None)


@dataclass
class FakeRecentCpfs:
    """Per tenant, like the Redis adapter."""

    clock: FakeClock
    window_s: float = 60.0
    by_tenant: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def seen(self) -> dict[str, float]:
        return self.by_tenant.setdefault(current_tenant.get() or "", {})

    async def recent(self, cpfs: Sequence[str]) -> set[str]:
        now = self.clock.now()
        seen = self.seen
        return {c for c in cpfs if c in seen and now - seen[c] < self.window_s}

    async def mark(self, cpfs: Sequence[str]) -> None:
        for cpf in cpfs:
            self.seen[cpf] = self.clock.now()


@dataclass
class FakeLeadMessages:
    """The per-(tenant, lead) message record, like the PostgreSQL adapter (the fingerprint kept
    as given: a test may look at it)."""

    records: dict[tuple[str, str], tuple[str, list[str]]] = field(default_factory=dict)
    down: bool = False

    def _key(self, lead_id: str) -> tuple[str, str]:
        if self.down:
            raise DependencyUnavailable("postgres", "connection refused")
        return (current_tenant.get() or "", lead_id)

    async def messaged(self, lead_id: str, contact: str) -> bool:
        found = self.records.get(self._key(lead_id))
        return found is not None and found[0] == contact

    async def claim(self, lead_id: str, contact: str, cpfs: Sequence[str]) -> bool:
        key = self._key(lead_id)
        found = self.records.get(key)
        if found is not None and found[0] == contact:
            return False
        self.records[key] = (contact, list(cpfs))
        return True

    async def release(self, lead_id: str, contact: str) -> None:
        key = self._key(lead_id)
        found = self.records.get(key)
        if found is not None and found[0] == contact:
            del self.records[key]


@dataclass
class FakeFillLocks:
    """Fill locks shared by "processes": ``holders`` maps a key to whoever holds it.

    ``owner`` names this process; a test plays another process by putting a key in ``holders``
    under another name (and removing it, as an expiry, to play a dead holder).
    """

    owner: str = "me"
    holders: dict[str, str] = field(default_factory=dict)
    refused: int = 0

    async def acquire(self, key: str) -> bool:
        holder = self.holders.setdefault(key, self.owner)
        if holder != self.owner:
            self.refused += 1
            return False
        return True

    async def release(self, key: str) -> None:
        if self.holders.get(key) == self.owner:
            del self.holders[key]


@dataclass
class RecordingObserver:
    """Records each step and its outcome, like the metric the real observer feeds."""

    steps: list[tuple[str, str]] = field(default_factory=list)
    enrichments: list[tuple[str, str]] = field(default_factory=list)

    def enrichment_finished(self, entrypoint: str, outcome: str) -> None:
        self.enrichments.append((entrypoint, outcome))

    @asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[None]:
        try:
            yield
        except BaseException as exc:
            self.steps.append((name, type(exc).__name__))
            raise
        self.steps.append((name, "ok"))


@dataclass
class FakeUsageMeter:
    """The usage meter and ledger in memory: counts by (day, tenant, key, upstream), and each
    key's paid calls of the day (the quota counter); ``flush`` has nothing to write."""

    counts: dict[tuple[dt.date, str, str, str], int] = field(default_factory=dict)
    day_calls: dict[tuple[str, dt.date], int] = field(default_factory=dict)
    refusals: list[tuple[str, str]] = field(default_factory=list)

    async def reserve(self, tenant: str, key_id: str, day: dt.date, quota: int) -> bool:
        used = self.day_calls.get((key_id, day), 0)
        if used >= quota:
            return False
        self.day_calls[(key_id, day)] = used + 1
        return True

    async def release(self, key_id: str, day: dt.date) -> None:
        self.day_calls[(key_id, day)] = max(0, self.day_calls.get((key_id, day), 0) - 1)

    def record(self, count: UsageCount) -> None:
        key = (count.day, count.tenant, count.key_id, count.upstream)
        self.counts[key] = self.counts.get(key, 0) + count.calls

    def refused(self, tenant: str, upstream: str) -> None:
        self.refusals.append((tenant, upstream))

    async def flush(self) -> None:
        return None

    async def usage(self, tenant: str, first: dt.date, last: dt.date) -> list[UsageCount]:
        return [
            UsageCount(day, t, key_id, upstream, calls)
            for (day, t, key_id, upstream), calls in self.counts.items()
            if t == tenant and first <= day <= last
        ]


@dataclass
class FakeAuditTrail:
    """The audit trail as a list (written at once: nothing is buffered)."""

    records: list[AccessRecord] = field(default_factory=list)

    def record(self, record: AccessRecord) -> None:
        self.records.append(record)

    async def flush(self) -> None:
        return None

    async def about(self, tenant: str | None, subject: str) -> list[AccessRecord]:
        return [
            r
            for r in self.records
            if r.subject == subject and (tenant is None or r.tenant == tenant)
        ]

    async def search(self, query: AuditQuery) -> AuditPage:
        found = [
            r
            for r in reversed(self.records)
            if r.tenant == query.tenant
            and query.subject in (None, r.subject)
            and query.key_id in (None, r.key_id)
            and (query.since is None or r.at >= query.since)
            and (query.until is None or r.at < query.until)
        ]
        return AuditPage(records=found[: query.limit])


SUBJECTS = SubjectDigester(b"unit-test-subject-key")
"""The subject digest of the unit tests' audit records."""


@dataclass
class World:
    """Every fake wired into one :class:`Enricher`."""

    clock: FakeClock = field(default_factory=FakeClock)
    c2s: FakeC2S = field(default_factory=FakeC2S)
    diretrix: FakeDiretrix = field(default_factory=FakeDiretrix)
    work_api: FakeWorkApi = field(default_factory=FakeWorkApi)
    repository: FakeRepository = field(default_factory=FakeRepository)
    dossier_cache: FakeDossierCache = field(default_factory=FakeDossierCache)
    contact_cache: FakeContactCache = field(default_factory=FakeContactCache)
    observer: RecordingObserver = field(default_factory=RecordingObserver)
    lead_locks: FakeLeadLocks | None = None
    recent_cpfs: FakeRecentCpfs | None = None
    fill_locks: FakeFillLocks | None = None
    lead_messages: FakeLeadMessages = field(default_factory=FakeLeadMessages)
    # Set: the Work API and Diretrix are metered paid calls (domain/usage.py), as in production.
    meter: FakeUsageMeter | None = None
    audit: FakeAuditTrail = field(default_factory=FakeAuditTrail)
    erasure_holds: FakeErasureHolds | None = None

    def enricher(
        self, settings: PipelineSettings | None = None, flags: StaticFlags | None = None
    ) -> Enricher:
        self.lead_locks = self.lead_locks or FakeLeadLocks(self.clock)
        self.recent_cpfs = self.recent_cpfs or FakeRecentCpfs(self.clock)
        diretrix: DiretrixPort = self.diretrix
        work_api: WorkApiPort = self.work_api
        if self.meter is not None:
            paid = PaidCalls(self.meter, self.clock)
            diretrix, work_api = MeteredDiretrix(diretrix, paid), MeteredWorkApi(work_api, paid)
        return Enricher(
            c2s=self.c2s,
            diretrix=diretrix,
            work_api=work_api,
            repository=self.repository,
            dossier_cache=self.dossier_cache,
            contact_cache=self.contact_cache,
            lead_locks=self.lead_locks,
            recent_cpfs=self.recent_cpfs,
            observer=self.observer,
            clock=self.clock,
            settings=settings,
            flags=flags,
            fill_locks=self.fill_locks,
            lead_messages=self.lead_messages,
            audit=Auditor(self.audit, SUBJECTS, self.clock),
            erasure_holds=self.erasure_holds,
        )


@dataclass
class _EventRow:
    id: uuid.UUID
    lead_id: str
    updated_at: dt.datetime
    hook_action: str | None
    payload: bytes
    received_at: dt.datetime
    status: EventStatus = "queued"
    attempts: int = 0
    send_intent_at: dt.datetime | None = None
    message_sent_at: dt.datetime | None = None
    error_message: str | None = None
    dead_letter: bool = False
    redriven_at: dt.datetime | None = None

    def view(self) -> StoredEvent:
        return StoredEvent(
            id=self.id,
            source="c2s",
            lead_id=self.lead_id,
            updated_at=self.updated_at,
            hook_action=self.hook_action,
            payload=self.payload,
            status=self.status,
            attempts=self.attempts,
            received_at=self.received_at,
            send_intent_at=self.send_intent_at,
            message_sent_at=self.message_sent_at,
            error_message=self.error_message,
            redriven_at=self.redriven_at,
        )


@dataclass
class FakeEventStore:
    """The event store's semantics (guarded status writes) over a dict, with a job list."""

    rows: dict[uuid.UUID, _EventRow] = field(default_factory=dict)
    jobs: list[uuid.UUID] = field(default_factory=list)
    down: bool = False

    def _check(self) -> None:
        if self.down:
            raise DependencyUnavailable("postgres", "connection refused")

    @staticmethod
    def _now() -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    async def accept(
        self, events: Sequence[WebhookEvent], trace_context: Mapping[str, str] | None = None
    ) -> AcceptResult:
        self._check()
        keys = {(r.lead_id, r.updated_at) for r in self.rows.values()}
        ids: list[uuid.UUID] = []
        for event in events:
            if (event.lead_id, event.updated_at) in keys:
                continue
            row = _EventRow(
                id=uuid.uuid4(),
                lead_id=event.lead_id,
                updated_at=event.updated_at,
                hook_action=event.hook_action,
                payload=event.raw,
                received_at=self._now(),
            )
            self.rows[row.id] = row
            keys.add((event.lead_id, event.updated_at))
            self.jobs.append(row.id)
            ids.append(row.id)
        return AcceptResult(
            received=len(events), processed=len(ids), duplicates=len(events) - len(ids), ids=ids
        )

    async def load(self, event_id: uuid.UUID) -> StoredEvent | None:
        self._check()
        row = self.rows.get(event_id)
        return row.view() if row is not None else None

    async def mark_processing(self, event_id: uuid.UUID) -> StoredEvent | None:
        self._check()
        row = self.rows.get(event_id)
        if row is None or row.status in ("completed", "failed"):
            return None
        row.status = "processing"
        row.attempts += 1
        return row.view()

    async def mark_send_intent(self, event_id: uuid.UUID) -> bool:
        self._check()
        row = self.rows[event_id]
        if row.status != "processing" or row.send_intent_at or row.message_sent_at:
            return False
        row.send_intent_at = self._now()
        return True

    async def clear_send_intent(self, event_id: uuid.UUID) -> None:
        self._check()
        row = self.rows[event_id]
        if row.message_sent_at is None:
            row.send_intent_at = None

    async def mark_sent_completed(self, event_id: uuid.UUID) -> None:
        self._check()
        row = self.rows[event_id]
        row.message_sent_at = row.message_sent_at or self._now()
        row.status = "completed"
        row.error_message = None

    async def mark_completed_unsent(self, event_id: uuid.UUID, note: str) -> None:
        self._check()
        row = self.rows[event_id]
        if row.status == "processing" and row.message_sent_at is None:
            row.status = "completed"
            row.send_intent_at = None
            row.error_message = note

    async def mark_failed(
        self, event_id: uuid.UUID, reason: str, *, dead_letter: bool = False
    ) -> None:
        self._check()
        row = self.rows[event_id]
        if row.status != "completed":
            row.status = "failed"
            row.error_message = reason
            row.dead_letter = dead_letter

    async def record_attempt(self, event_id: uuid.UUID, reason: str) -> None:
        self._check()
        row = self.rows[event_id]
        if row.status not in ("completed", "failed"):
            row.status = "queued"
            row.error_message = reason

    async def queue_stats(self) -> QueueStats:
        counts = {"received": 0, "queued": 0, "processing": 0}
        for row in self.rows.values():
            if row.status in counts:
                counts[row.status] += 1
        return QueueStats(counts=counts)


@dataclass
class FakeClaims:
    """Google Ads lead claims by Google lead id: (status, C2S lead id, failure reason)."""

    rows: dict[str, tuple[str, str | None, str | None]] = field(default_factory=dict)

    async def claim(self, google_lead_id: str, payload: bytes) -> GoogleLeadClaim:
        if google_lead_id in self.rows:
            return GoogleLeadClaim(acquired=False, c2s_lead_id=self.rows[google_lead_id][1])
        self.rows[google_lead_id] = ("processing", None, None)
        return GoogleLeadClaim(acquired=True)

    async def complete(self, google_lead_id: str, c2s_lead_id: str) -> None:
        self.rows[google_lead_id] = ("completed", c2s_lead_id, None)

    async def release(self, google_lead_id: str) -> None:
        self.rows.pop(google_lead_id, None)

    async def fail(self, google_lead_id: str, reason: str) -> None:
        self.rows[google_lead_id] = ("failed", None, reason)


@dataclass
class _BulkItem:
    job_id: uuid.UUID
    seq: int
    ref: str | None
    query: CustomerQuery
    state: str = "queued"
    result: bytes | None = None
    attempts: int = 0
    claimed_by: uuid.UUID | None = None


@dataclass
class FakeBulkJobs:
    """Bulk jobs and items in memory: both ``BulkJobStore`` and ``BulkQueue``, with the real
    adapter's rules (tenant scope, leases held by one worker, a job ended by its last item,
    claims taking the tenants in turn within their bound). Leases never expire here: a test
    "kills" a worker with :meth:`expire_leases`."""

    jobs: dict[uuid.UUID, NewJob] = field(default_factory=dict)
    items: dict[uuid.UUID, list[_BulkItem]] = field(default_factory=dict)
    states: dict[uuid.UUID, str] = field(default_factory=dict)
    cancel_requested: set[uuid.UUID] = field(default_factory=set)
    ended: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    claims: list[list[tuple[str, int]]] = field(default_factory=list)
    clock: FakeClock = field(default_factory=FakeClock)
    created: dict[uuid.UUID, dt.datetime] = field(default_factory=dict)

    async def create(self, job: NewJob) -> EnrichJobView:
        self.jobs[job.id] = job
        self.created[job.id] = dt.datetime.fromtimestamp(self.clock.now(), dt.UTC)
        self.states[job.id] = "queued"
        self.items[job.id] = [
            _BulkItem(job_id=job.id, seq=i, ref=item.ref, query=item.query)
            for i, item in enumerate(job.items)
        ]
        return self._view(job.id)

    async def get(self, tenant: str, job_id: uuid.UUID) -> EnrichJobView | None:
        job = self.jobs.get(job_id)
        return self._view(job_id) if job is not None and job.tenant == tenant else None

    async def results(
        self, tenant: str, job_id: uuid.UUID, *, after_seq: int, limit: int
    ) -> list[ItemView] | None:
        if await self.get(tenant, job_id) is None:
            return None
        rows = [i for i in self.items[job_id] if i.seq > after_seq][:limit]
        return [_bulk_item_view(row) for row in rows]

    async def cancel(self, tenant: str, job_id: uuid.UUID) -> EnrichJobView | None:
        if await self.get(tenant, job_id) is None:
            return None
        if self.states[job_id] in ("queued", "running"):
            self.cancel_requested.add(job_id)
            for item in self.items[job_id]:
                if item.state == "queued":
                    item.state = "cancelled"
            self._maybe_end(job_id)
        return self._view(job_id)

    async def list_jobs(
        self, tenant: str, *, state: str | None, before: JobPosition | None, limit: int
    ) -> list[EnrichJobView]:
        keys = sorted(
            (
                (self.created[j.id], j.id)
                for j in self.jobs.values()
                if j.tenant == tenant and state in (None, self.states[j.id])
            ),
            reverse=True,
        )
        if before is not None:
            keys = [k for k in keys if k < (before.created_at, before.job_id)]
        return [self._view(job_id) for _, job_id in keys[:limit]]

    async def claim(
        self, worker: uuid.UUID, *, limit: int, tenant_limit: int, lease_s: float
    ) -> list[ClaimedItem]:
        open_jobs = [j for j in self.jobs.values() if self.states[j.id] in ("queued", "running")]
        by_tenant: dict[str, list[_BulkItem]] = {}
        for job in open_jobs:
            running = sum(
                1
                for other in open_jobs
                if other.tenant == job.tenant
                for i in self.items[other.id]
                if i.state == "running"
            )
            if job.tenant in by_tenant:
                continue
            queued = [i for i in self.items[job.id] if i.state == "queued"]
            if queued:
                by_tenant[job.tenant] = queued[: max(0, min(tenant_limit - running, limit))]
        chosen: list[_BulkItem] = []
        turn = 0
        while len(chosen) < limit and any(turn < len(q) for q in by_tenant.values()):
            chosen.extend(q[turn] for q in by_tenant.values() if turn < len(q))
            turn += 1
        chosen = chosen[:limit]
        self.claims.append([(self.jobs[i.job_id].tenant, i.seq) for i in chosen])
        claimed = []
        for item in chosen:
            item.state, item.claimed_by = "running", worker
            item.attempts += 1
            self.states[item.job_id] = "running"
            job = self.jobs[item.job_id]
            claimed.append(
                ClaimedItem(
                    job_id=item.job_id,
                    seq=item.seq,
                    query=item.query,
                    attempts=item.attempts,
                    tenant=job.tenant,
                    key_id=job.key_id,
                    request_id=job.request_id,
                    paid_quota=job.paid_quota,
                    may_fetch=job.may_fetch,
                    max_age_s=job.max_age_s,
                    min_likelihood=job.min_likelihood,
                )
            )
        return claimed

    async def finish(
        self, worker: uuid.UUID, item: ClaimedItem, outcome: ItemOutcome
    ) -> str | None:
        row = self.items[item.job_id][item.seq]
        if row.state != "running" or row.claimed_by != worker:
            return None
        row.claimed_by = None
        if outcome.state == "retry":
            row.state = "queued"
            return None
        row.state, row.result = outcome.state, outcome.result
        return self._maybe_end(item.job_id)

    async def renew(self, worker: uuid.UUID, *, lease_s: float) -> int:
        return sum(1 for rows in self.items.values() for i in rows if i.claimed_by == worker)

    async def reap(self) -> int:
        return 0

    async def sample(self) -> BulkStats:
        jobs = {"queued": 0, "running": 0}
        for state in self.states.values():
            if state in jobs:
                jobs[state] += 1
        return BulkStats(jobs=jobs)

    def expire_leases(self) -> int:
        """What the reaper does after a worker died: its running items are queued again."""
        expired = 0
        for rows in self.items.values():
            for row in rows:
                if row.state == "running":
                    row.state, row.claimed_by = "queued", None
                    expired += 1
        return expired

    def _maybe_end(self, job_id: uuid.UUID) -> str | None:
        if any(i.state in ("queued", "running") for i in self.items[job_id]):
            return None
        state = "cancelled" if job_id in self.cancel_requested else "done"
        self.states[job_id] = state
        self.ended.append((job_id, state))
        return state

    def _view(self, job_id: uuid.UUID) -> EnrichJobView:
        job = self.jobs[job_id]
        rows = self.items[job_id]
        count = {s: sum(1 for i in rows if i.state == s) for s in ITEM_STATES}
        return EnrichJobView(
            id=job_id,
            state=self.states[job_id],  # type: ignore[arg-type]
            counts=JobCounts(total=len(rows), **count),
            created_at=self.created[job_id],
            max_age_s=job.max_age_s,
            min_likelihood=job.min_likelihood,
            callback=CallbackView(url=job.callback_url, state="waiting")
            if job.callback_url
            else None,
        )


def _bulk_item_view(row: _BulkItem) -> ItemView:
    customer = (
        msgspec.json.decode(row.result, type=UnifiedCustomer)
        if row.result is not None and row.state == "done"
        else None
    )
    error = (
        msgspec.json.decode(row.result, type=ItemError)
        if row.result is not None and row.state in ("failed", "not_found")
        else None
    )
    return ItemView(
        seq=row.seq,
        ref=row.ref,
        state=row.state,  # type: ignore[arg-type]
        customer=customer,
        error=error,
    )


# --- data-subject rights (domain/subjects.py) ---------------------------------------------------


@dataclass
class FakeErasureHolds:
    """Erasure tombstones by CPF digest, like ``core.erasures`` (hold checked against the clock).

    ``checks`` counts the hold look-ups (the paid path's one round trip)."""

    digester: SubjectDigester
    clock: FakeClock
    tombstones: dict[str, Tombstone] = field(default_factory=dict)
    checks: int = 0

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock.now(), dt.UTC)

    async def held(self, cpf: str) -> Tombstone | None:
        self.checks += 1
        found = self.tombstones.get(self.digester.digest(cpf))
        return found if found is not None and found.holds(self._now()) else None

    async def lift(self, cpf: str) -> bool:
        subject = self.digester.digest(cpf)
        found = self.tombstones.get(subject)
        if found is None or not found.holds(self._now()):
            return False
        self.tombstones[subject] = msgspec.structs.replace(found, lifted_at=self._now())
        return True


@dataclass
class FakeSubjectStore:
    """What PostgreSQL holds about people: the records of each CPF, and the tombstones (shared
    with :class:`FakeErasureHolds`)."""

    holds: FakeErasureHolds
    records: dict[str, SubjectRecords] = field(default_factory=dict)
    contacts: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)

    async def export(self, cpf: str) -> SubjectRecords | None:
        return self.records.get(cpf)

    async def erase(self, cpf: str, tombstone: Tombstone) -> ErasedData | None:
        if self.records.pop(cpf, None) is None:
            return None
        emails, phones = self.contacts.pop(cpf, ([], []))
        self.holds.tombstones[tombstone.subject] = tombstone
        return ErasedData(
            counts=ErasureCounts(parties=1, contacts=len(emails) + len(phones)),
            emails=emails,
            phones=phones,
        )

    async def tombstone(self, subject: str) -> Tombstone | None:
        return self.holds.tombstones.get(subject)


@dataclass
class FakeSubjectCaches:
    """Cache entries naming a CPF (what Redis would hold); ``forget`` drops them."""

    entries: dict[str, set[str]] = field(default_factory=dict)

    async def forget(self, cpf: str, erased: ErasedData) -> int:
        return len(self.entries.pop(cpf, set()))
