"""Ports: what the use cases need from the outside world, as ``typing.Protocol``s.

Adapters in ``infra/`` implement these; ``tests/support/fakes.py`` holds in-memory fakes for
unit tests.
Every method may raise :class:`domain.errors.DependencyUnavailable` (breaker open, timeout,
connection refused) or :class:`domain.errors.UpstreamError` (the upstream answered badly).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from contextlib import AbstractAsyncContextManager
    from datetime import date
    from uuid import UUID

    from domain.admission import Admission, Tier
    from domain.audit import AccessRecord, AuditPage, AuditQuery
    from domain.bulk.models import (
        BulkStats,
        ClaimedItem,
        EnrichJobView,
        ItemOutcome,
        ItemView,
        JobPosition,
        NewJob,
    )
    from domain.dossier import Dossier
    from domain.flags import FlagState
    from domain.models import (
        CpfCandidate,
        Lead,
        LeadLockState,
        NewLead,
        PartyWithContacts,
        StoredDossier,
        StoredEnrichment,
    )
    from domain.search import CustomerSearch, SearchHit, SearchPosition
    from domain.subjects import ErasedData, SubjectRecords, Tombstone
    from domain.usage import UsageCount
    from domain.webhooks.events import AcceptResult, QueueStats, StoredEvent
    from domain.webhooks.google_ads import GoogleLeadClaim
    from domain.webhooks.jobs import JobState, JobView, RedriveOutcome
    from domain.webhooks.parsing import WebhookEvent

__all__ = [
    "AuditReader",
    "AuditTrail",
    "BulkJobStore",
    "BulkQueue",
    "C2SPort",
    "Clock",
    "ContactCpfCache",
    "DiretrixPort",
    "DossierCache",
    "ErasureHolds",
    "EventStore",
    "FillLocks",
    "FlagAdmin",
    "Flags",
    "GoogleLeadClaims",
    "HotRead",
    "JobAdmin",
    "LeadLocks",
    "LeadMessages",
    "PartyRepository",
    "RecentCpfs",
    "StepObserver",
    "SubjectCaches",
    "SubjectStore",
    "UsageLedger",
    "UsageMeter",
    "WorkApiPort",
]


class C2SPort(Protocol):
    """The Contact2Sale CRM."""

    async def fetch_lead(self, lead_id: str) -> Lead:
        """Return the lead; ``NotFound`` when C2S answers 404."""
        ...

    async def send_message(self, lead_id: str, body: str) -> None:
        """Post a message to the lead. Never retried blindly (not idempotent)."""
        ...

    async def create_lead(self, lead: NewLead) -> str:
        """Create a lead and return its id. Never retried blindly."""
        ...


class DiretrixPort(Protocol):
    """Diretrix: contact -> CPF candidates."""

    async def search_by_phone(self, national_phone: str) -> list[CpfCandidate]:
        """Candidates for a phone in national digits (DDD + number); ``[]`` when unknown."""
        ...

    async def search_by_email(self, email: str) -> list[CpfCandidate]:
        """Candidates for an e-mail; ``[]`` when unknown."""
        ...


class WorkApiPort(Protocol):
    """The Work API data broker."""

    async def fetch_module(self, module: str, query: str) -> bytes:
        """Return the raw JSON body of ``modulo=module&consulta=query``.

        Raises:
            UpstreamSoftError: the body carries an error inside HTTP 200 (never returned as data).
        """
        ...

    async def fetch_dossier(self, cpf: str) -> tuple[Dossier, bytes]:
        """Return the decoded ``modulo=cpf`` dossier and its raw bytes."""
        ...


class PartyRepository(Protocol):
    """The party model in PostgreSQL."""

    async def find_by_cpf(self, cpf: str) -> PartyWithContacts | None:
        """The newest person party with this CPF (11 digits)."""
        ...

    async def find_by_email(self, email: str) -> PartyWithContacts | None:
        """The newest party owning this (lower-cased) e-mail."""
        ...

    async def find_by_phone(self, national_phone: str) -> PartyWithContacts | None:
        """The newest party owning this digits-only phone (type phone or whatsapp)."""
        ...

    async def search_by_name(self, name: str, limit: int = 10) -> list[PartyWithContacts]:
        """Parties whose name contains ``name`` (case-insensitive), best match first."""
        ...

    async def get_party(self, party_id: UUID) -> PartyWithContacts | None:
        """A party by id with its contacts."""
        ...

    async def store_dossier(
        self, cpf: str, dossier: Dossier, raw: bytes, lead_id: str | None
    ) -> StoredDossier:
        """Write party, person, contacts, addresses and enrichment in one transaction."""
        ...

    async def find_enrichment(self, cpf: str) -> StoredEnrichment | None:
        """The current stored Work API payload of the newest party with this CPF."""
        ...

    async def search_customers(
        self, search: CustomerSearch, *, after: SearchPosition | None, limit: int
    ) -> list[SearchHit]:
        """Persons matching ``search`` (``domain/search.py``), best rank first then by id,
        starting after ``after``; at most ``limit``, in one statement."""
        ...


class DossierCache(Protocol):
    """Shared cache of Work API bodies, integrity-protected (a tampered entry is a miss)."""

    async def get(self, key: str) -> bytes | None:
        """The verified raw body stored under ``key`` (``cpf:<cpf>``, ``module:<m>:<q>``)."""
        ...

    async def put(self, key: str, raw: bytes) -> None:
        """Store a successful body (never an error)."""
        ...

    async def get_fresh(self, key: str, max_age_s: float) -> bytes | None:
        """Like :meth:`get`, but only an entry written at most ``max_age_s`` seconds ago (the
        entry's age; an entry whose age cannot be told is a miss)."""
        ...


class FillLocks(Protocol):
    """Short locks, shared by every process, on filling one cache key from the upstream.

    A holder that dies loses its lock when the lock expires; an adapter that cannot reach its
    store grants the lock (the caller then pays the upstream call itself).
    """

    async def acquire(self, key: str) -> bool:
        """Take the lock on ``key``; ``False`` while another process holds it."""
        ...

    async def release(self, key: str) -> None:
        """Release a lock this process holds (a no-op otherwise)."""
        ...


class ContactCpfCache(Protocol):
    """Shared cache of contact -> CPF candidates; ``[]`` (not found) is cached shorter."""

    async def get(self, kind: str, value: str) -> list[CpfCandidate] | None:
        """Cached candidates for ``kind`` (``phone``/``email``) and value; ``None`` = miss."""
        ...

    async def put(self, kind: str, value: str, candidates: Sequence[CpfCandidate]) -> None:
        """Remember the candidates found (possibly none)."""
        ...


class LeadLocks(Protocol):
    """In-flight lock per lead, shared by every worker, with a replay of the finished answer.

    Scoped to the tenant of the request (:data:`domain.tenancy.current_tenant`): one tenant's
    lock or answer is never seen by another.
    """

    async def acquire(self, lead_id: str) -> LeadLockState:
        """Take the lock, or report who holds it / the finished answer to replay."""
        ...

    async def finish(self, lead_id: str, result: bytes) -> None:
        """Release the lock, keeping ``result`` (JSON) for the replay window."""
        ...

    async def abandon(self, lead_id: str) -> None:
        """Release the lock without a result (the processing crashed)."""
        ...


class LeadMessages(Protocol):
    """The durable record of each lead's last message (``docs/contract.md`` §2, one message
    per lead): per tenant (:data:`domain.tenancy.current_tenant`) and lead id, the contact
    fingerprint it was messaged for (:func:`domain.lead_messages.contact_fingerprint`; stored as
    a keyed digest) and the CPFs of that message. Shared by every process, kept across restarts.
    """

    async def messaged(self, lead_id: str, contact: str) -> bool:
        """Whether the lead's recorded message is for this contact fingerprint."""
        ...

    async def claim(self, lead_id: str, contact: str, cpfs: Sequence[str]) -> bool:
        """Record the message about to be sent; ``False`` (nothing changed) when the lead is
        already recorded for this contact fingerprint. One winner among concurrent claims."""
        ...

    async def release(self, lead_id: str, contact: str) -> None:
        """Drop this fingerprint's record: its message provably did not reach C2S."""
        ...


class RecentCpfs(Protocol):
    """CPFs enriched in the last minute, skipped by ``/leads/process``.

    Scoped to the tenant of the request (:data:`domain.tenancy.current_tenant`).
    """

    async def recent(self, cpfs: Sequence[str]) -> set[str]:
        """The subset of ``cpfs`` processed within the window."""
        ...

    async def mark(self, cpfs: Sequence[str]) -> None:
        """Record ``cpfs`` as just processed."""
        ...


class StepObserver(Protocol):
    """Traces and measures the pipeline (adapters: an OTel span + a histogram per step, a
    counter of finished enrichments)."""

    def step(self, name: str) -> AbstractAsyncContextManager[None]:
        """Context manager around one step; records its outcome from the exception, if any."""
        ...

    def enrichment_finished(self, entrypoint: str, outcome: str) -> None:
        """One enrichment ended: ``entrypoint`` (``leads_process``, ``c2s_enrich``, ``webhook``)
        and ``outcome`` (``enriched``, ``duplicate``, ``not_found`` or ``failed``)."""
        ...


class Clock(Protocol):
    """Wall-clock seconds since the epoch (injectable for tests)."""

    def now(self) -> float:
        """Current time."""
        ...


class Flags(Protocol):
    """Runtime feature flags (``domain/flags.py`` names them and sets their defaults).

    Synchronous on purpose: an adapter answers from a per-process cache refreshed in the
    background, so asking costs a dict lookup and never waits for Redis.
    """

    def enabled(self, name: str) -> bool:
        """Whether flag ``name`` is on now (its default when no override is known)."""
        ...


class EventStore(Protocol):
    """The durable inbox of webhook events (PostgreSQL) and its job queue.

    Every state change is committed before the method returns; methods may raise
    :class:`domain.errors.DependencyUnavailable` (``postgres``).
    """

    async def accept(
        self, events: Sequence[WebhookEvent], trace_context: Mapping[str, str] | None = None
    ) -> AcceptResult:
        """Store each event idempotently and enqueue a job for each new one, atomically."""
        ...

    async def load(self, event_id: UUID) -> StoredEvent | None:
        """The event, or ``None`` if it does not exist."""
        ...

    async def mark_processing(self, event_id: UUID) -> StoredEvent | None:
        """Claim an open event for one attempt: status ``processing``, ``attempts + 1``.

        Returns:
            The event after the update, or ``None`` when it is missing or already terminal.
        """
        ...

    async def mark_send_intent(self, event_id: UUID) -> bool:
        """Record that the message is about to be sent; ``False`` if an intent already exists."""
        ...

    async def clear_send_intent(self, event_id: UUID) -> None:
        """Forget the intent of a send that provably did not reach C2S."""
        ...

    async def mark_sent_completed(self, event_id: UUID) -> None:
        """Record the message as sent (``message_sent_at``) and the event ``completed``."""
        ...

    async def mark_completed_unsent(self, event_id: UUID, note: str) -> None:
        """Complete a ``processing`` event that needs no message (``note`` says why); no send
        intent or sent mark is left behind."""
        ...

    async def mark_failed(self, event_id: UUID, reason: str, *, dead_letter: bool = False) -> None:
        """Fail the event with ``reason`` (never over a completed one); ``dead_letter`` marks a
        transient failure given up on (retry budget spent), which an operator may redrive."""
        ...

    async def record_attempt(self, event_id: UUID, reason: str) -> None:
        """Record a transient failure: back to ``queued`` with ``reason``, awaiting a retry."""
        ...

    async def queue_stats(self) -> QueueStats:
        """Counts by status and the oldest open event's age."""
        ...


class GoogleLeadClaims(Protocol):
    """Durable dedup of Google Ads leads by Google's lead id."""

    async def claim(self, google_lead_id: str, payload: bytes) -> GoogleLeadClaim:
        """Claim the id (one winner among concurrent deliveries), storing the payload."""
        ...

    async def complete(self, google_lead_id: str, c2s_lead_id: str) -> None:
        """Record the C2S lead created for the id."""
        ...

    async def release(self, google_lead_id: str) -> None:
        """Drop the claim: nothing was created, a redelivery may try again."""
        ...

    async def fail(self, google_lead_id: str, reason: str) -> None:
        """Keep the claim as failed with ``reason`` (redeliveries are answered as duplicates)."""
        ...


class HotRead(Protocol):
    """Admission and the hot path's cache read (ADRs 0005, 0009).

    The rate-limit decision for a request (from the process's local view of the shared counters,
    no round trip in steady state) and, when the route names one and the request is admitted,
    the dossier-cache entry it is about to serve: on the hot path (``/work/modules/all``) every
    round trip costs more than the rest of the request.
    """

    async def admit(
        self,
        identities: Mapping[Tier, str],
        *,
        read_ahead: str | None = None,
        costs: Mapping[Tier, int] | None = None,
    ) -> Admission:
        """Count the request in every tier of ``identities``; read ``read_ahead`` with it.

        Args:
            identities: The tiers that apply, each with its (hashed) identity.
            read_ahead: A dossier-cache key (``cpf:<cpf>``) to read for an admitted request.
            costs: Units the request takes per tier (default 1).

        Never raises for a storage failure: the decision falls back to per-process limits and
        nothing is prefetched.
        """
        ...


class FlagAdmin(Protocol):
    """Runtime overrides of the feature flags, shared by every process (ADR 0007).

    Attributes:
        ttl_s: How old this process's view of the overrides may get.
    """

    ttl_s: float

    @property
    def degraded(self) -> bool:
        """The shared store could not be read at the last refresh (defaults apply)."""
        ...

    async def refresh(self) -> bool:
        """Read the overrides now; whether the store answered."""
        ...

    def states(self) -> list[FlagState]:
        """Every flag as this process applies it."""
        ...

    async def set(self, name: str, enabled: bool, *, actor: str) -> FlagState:
        """Override ``name``; ``actor`` names who did it (never a key or personal data)."""
        ...

    async def unset(self, name: str, *, actor: str) -> FlagState:
        """Drop the override of ``name``: its default applies again."""
        ...


class JobAdmin(Protocol):
    """The webhook queue as an operator handles it: list events, redrive failed ones."""

    async def list_jobs(self, state: JobState = "all", limit: int = 50) -> list[JobView]:
        """Events in ``state``, most recently changed first (never their payloads)."""
        ...

    async def redrive(self, event_id: UUID) -> RedriveOutcome:
        """Put one failed event back in the queue (attempts reset), or say why not."""
        ...

    async def redrive_dead(self, limit: int = 1000) -> list[UUID]:
        """Put every dead letter back in the queue; their ids."""
        ...


class AuditTrail(Protocol):
    """The append-only record of every read or fetch of a person's data (``domain/audit.py``)."""

    def record(self, record: AccessRecord) -> None:
        """Append ``record``; never blocks the caller (written in batches, flushed on drain)."""
        ...

    async def flush(self) -> None:
        """Write every record appended so far (the drain calls it before the process exits)."""
        ...

    async def about(self, tenant: str | None, subject: str) -> list[AccessRecord]:
        """The records about ``subject`` (oldest first); ``tenant`` ``None``: every tenant's."""
        ...


class UsageMeter(Protocol):
    """Counts paid upstream calls and each key's paid calls of the UTC day (``domain/usage.py``).

    :meth:`record` never blocks (an in-process accumulator written in batches, flushed on
    drain); :meth:`reserve` and :meth:`release` are the quota's shared per-key day counter (one
    round trip; the adapter falls back to the process's own count when its store is down).
    """

    async def reserve(self, tenant: str, key_id: str, day: date, quota: int) -> bool:
        """Take one unit of ``key_id``'s paid calls on ``day``; ``False`` (nothing taken) when
        the key already made ``quota`` paid calls that day."""
        ...

    async def release(self, key_id: str, day: date) -> None:
        """Give back a unit taken by :meth:`reserve` for a call that was not paid."""
        ...

    def record(self, count: UsageCount) -> None:
        """Count paid calls (accumulated; written within the flush period)."""
        ...

    def refused(self, tenant: str, upstream: str) -> None:
        """A paid call was refused for the quota (a metric; no I/O)."""
        ...

    async def flush(self) -> None:
        """Write every count recorded so far."""
        ...


class UsageLedger(Protocol):
    """The stored paid-call counts (per day, tenant, key and upstream)."""

    async def usage(self, tenant: str, first: date, last: date) -> list[UsageCount]:
        """The counts of ``tenant`` from ``first`` to ``last`` (UTC days, both included)."""


class AuditReader(Protocol):
    """Searching the audit trail (``GET /api/v1/admin/audit``)."""

    async def search(self, query: AuditQuery) -> AuditPage:
        """One page of ``query.tenant``'s records, newest first (keyset on ``(at, id)``)."""


class BulkJobStore(Protocol):
    """Bulk enrichment jobs and their items, tenant-scoped (``domain/bulk``)."""

    async def create(self, job: NewJob) -> EnrichJobView:
        """Store the job and every item in one transaction; the job as created."""
        ...

    async def get(self, tenant: str, job_id: UUID) -> EnrichJobView | None:
        """The job, if ``tenant`` owns it."""
        ...

    async def results(
        self, tenant: str, job_id: UUID, *, after_seq: int, limit: int
    ) -> list[ItemView] | None:
        """Up to ``limit`` items with ``seq > after_seq`` in order; ``None``: no such job."""
        ...

    async def cancel(self, tenant: str, job_id: UUID) -> EnrichJobView | None:
        """Cancel the job's items not started; the job after it (``None``: no such job)."""
        ...

    async def list_jobs(
        self, tenant: str, *, state: str | None, before: JobPosition | None, limit: int
    ) -> list[EnrichJobView]:
        """Up to ``limit`` of ``tenant``'s jobs (of ``state`` if given), newest first (creation
        time, then id, both descending), older than ``before`` if given."""
        ...


class BulkQueue(Protocol):
    """The items table as workers consume it: claims with leases, results, expired leases."""

    async def claim(
        self, worker: UUID, *, limit: int, tenant_limit: int, lease_s: float
    ) -> list[ClaimedItem]:
        """Lease up to ``limit`` items, the tenants served in turn, never more than
        ``tenant_limit`` of one tenant running across workers."""
        ...

    async def finish(self, worker: UUID, item: ClaimedItem, outcome: ItemOutcome) -> str | None:
        """Store the item's result (or put it back for a retry); the job's final state if this
        ended it (its callback enqueued in the same transaction), else ``None``."""
        ...

    async def renew(self, worker: UUID, *, lease_s: float) -> int:
        """Extend the leases of the worker's running items; how many."""
        ...

    async def reap(self) -> int:
        """Put running items whose lease expired back in the queue; how many."""
        ...

    async def sample(self) -> BulkStats:
        """Jobs by state and the oldest open job's age."""
        ...


class SubjectStore(Protocol):
    """Everything PostgreSQL stores about one person, and the erasure tombstones
    (``domain/subjects.py``). Scoped like the lookups: the parties of the caller's tenant
    (:data:`domain.tenancy.current_tenant`) and the shared ones; every tenant's when ``None``."""

    async def export(self, cpf: str) -> SubjectRecords | None:
        """The stored records of the CPF (11 digits); ``None`` when no party has it."""
        ...

    async def erase(self, cpf: str, tombstone: Tombstone) -> ErasedData | None:
        """Remove every record of the CPF and write ``tombstone``, in ONE transaction;
        ``None`` (nothing written) when no party has it."""
        ...

    async def tombstone(self, subject: str) -> Tombstone | None:
        """The tombstone of a subject digest, lifted or not."""
        ...


class SubjectCaches(Protocol):
    """The shared caches (Redis, and each process's in-memory copy) holding a person's data."""

    async def forget(self, cpf: str, erased: ErasedData) -> int:
        """Drop every entry about the person (dossiers, contact -> CPF answers, recent marks,
        lead replays); the number of entries removed. Never raises for a storage failure."""
        ...


class ErasureHolds(Protocol):
    """The erasure tombstones as the pipeline sees them, before any paid fetch of a CPF."""

    async def held(self, cpf: str) -> Tombstone | None:
        """The tombstone refusing a paid fetch of ``cpf`` now (hold running, not lifted)."""
        ...

    async def lift(self, cpf: str) -> bool:
        """The person consented again: lift the hold; whether one was running."""
        ...
