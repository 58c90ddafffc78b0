"""The enrichment pipeline: lead -> CPF(s) -> dossier(s) -> store -> message -> C2S.

Written against the ports only. Three entry points share the steps:

* :meth:`Enricher.process_lead` — ``GET /api/v1/leads/process`` (Make.com): in-flight lock with a
  replay of the finished answer, recent-CPF dedup, cached dossiers; always an answer object.
* :meth:`Enricher.enrich_lead` — ``POST /api/v1/c2s/enrich/{lead_id}``: no dedup, fresh dossiers,
  failures raised as domain errors (HTTP errors).
* :meth:`Enricher.prepare_event` — the durable webhook job: stored/cached data first.

Rules (``docs/contract.md`` §2, §7): CPF and dossier are paired by CPF, never by list index;
Diretrix lookups run concurrently; phones are validated before Diretrix (national digits, never
``+55...``); the lead lock is released when processing ends; upstream errors are never cached;
the data is stored before the message is sent, so a failing send loses nothing.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import msgspec

from domain.audit import Auditor, note_paid_call, paid_scope
from domain.contact_resolution import ContactResolver
from domain.dossier import Dossier, decode_dossier
from domain.errors import (
    DependencyUnavailable,
    DomainError,
    NotFound,
    QuotaExceeded,
    UpstreamError,
)
from domain.flags import Flag, StaticFlags
from domain.freshness import below_likelihood_result, likelihood_or, split_by_likelihood
from domain.lead_messages import UnrecordedLeadMessages, contact_fingerprint
from domain.message import PersonSource, format_lead_message
from domain.resolution import (
    CPF_LOOKUP_UNAVAILABLE,
    REASON_UPSTREAM_UNAVAILABLE,
    ContactLookup,
    DirectResult,
    EnrichmentOutcome,
    EventResult,
    MatchInfo,
    ProcessResult,
    Resolution,
    ResolvedPerson,
)
from domain.singleflight import SingleFlight
from domain.subjects import ERASED_NOT_ENRICHED, SubjectErased, refuse_erased

if TYPE_CHECKING:
    from collections.abc import Sequence

    from domain.models import CpfCandidate, Lead, LeadCustomer
    from domain.ports import (
        C2SPort,
        Clock,
        ContactCpfCache,
        DiretrixPort,
        DossierCache,
        ErasureHolds,
        FillLocks,
        Flags,
        LeadLocks,
        LeadMessages,
        PartyRepository,
        RecentCpfs,
        StepObserver,
        WorkApiPort,
    )

__all__ = [
    "CPF_LOOKUP_UNAVAILABLE",
    "REASON_UPSTREAM_UNAVAILABLE",
    "ContactLookup",
    "DirectResult",
    "Enricher",
    "EventResult",
    "MatchInfo",
    "ProcessResult",
    "Resolution",
    "ResolvedPerson",
]


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """Tunables of the pipeline."""

    income_multiplier: float = 1.9
    name_match_threshold: float = 0.75
    stored_dossier_max_age_s: float = 30 * 24 * 3600.0
    # How long a process waits for another process's fill of a missed dossier before calling.
    fill_wait_s: float = 5.0
    min_likelihood: float = 0.0  # MIN_LIKELIHOOD: the default threshold (domain/freshness.py)


# A Diretrix answer to cache: (kind, contact value, candidates).
_Answer = tuple[Literal["phone", "email"], str, "Sequence[CpfCandidate]"]
# A dossier and the bytes it was decoded from.
_Fetched = tuple[Dossier, bytes]
# The answer of /leads/process and the outcome it counts as.
_Answered = tuple[ProcessResult, EnrichmentOutcome]


def _dossier_key(cpf: str) -> str:
    return f"cpf:{cpf}"


def _no_cpf_outcome(resolution: Resolution) -> EnrichmentOutcome:
    """No CPF is a correct answer, unless a lookup could not be made (Diretrix down)."""
    lookups = (resolution.phone.status, resolution.email.status)
    return "failed" if "unavailable" in lookups else "not_found"


class Enricher:
    """The use cases of the enrichment pipeline, bound to their ports."""

    def __init__(
        self,
        *,
        c2s: C2SPort,
        diretrix: DiretrixPort,
        work_api: WorkApiPort,
        repository: PartyRepository,
        dossier_cache: DossierCache,
        contact_cache: ContactCpfCache,
        lead_locks: LeadLocks,
        recent_cpfs: RecentCpfs,
        observer: StepObserver,
        clock: Clock,
        settings: PipelineSettings | None = None,
        flags: Flags | None = None,
        fill_locks: FillLocks | None = None,
        lead_messages: LeadMessages | None = None,
        erasure_holds: ErasureHolds | None = None,
        audit: Auditor | None = None,
    ) -> None:
        self.c2s = c2s
        self.diretrix = diretrix
        self.work_api = work_api
        self.repository = repository
        self.dossier_cache = dossier_cache
        self.contact_cache = contact_cache
        self.lead_locks = lead_locks
        self.recent_cpfs = recent_cpfs
        self.observer = observer
        self.clock = clock
        self.settings = settings or PipelineSettings()
        # Without a flag store every flag has its documented default (domain/flags.py).
        self.flags: Flags = flags if flags is not None else StaticFlags()
        # One message per lead and contacts (docs/contract.md §2); without a store, no record.
        self.lead_messages: LeadMessages = (
            lead_messages if lead_messages is not None else UnrecordedLeadMessages()
        )
        # Erased people are not bought again during their hold (domain/subjects.py).
        self.erasure_holds = erasure_holds
        # One audit record per person whose data an operation used (none without a trail).
        self.audit = audit if audit is not None else Auditor.disabled()
        self.resolver = ContactResolver(
            diretrix, contact_cache, name_match_threshold=self.settings.name_match_threshold
        )
        # Cache misses of one key share one Work API call (in this process and, with fill
        # locks, across processes).
        self.single_flight = SingleFlight(
            dossier_cache, fill_locks, wait_s=self.settings.fill_wait_s
        )

    # --- steps ---------------------------------------------------------------------------------

    async def fetch_lead(self, lead_id: str) -> Lead:
        """Fetch the lead from C2S."""
        async with self.observer.step("fetch_lead"):
            return await self.c2s.fetch_lead(lead_id)

    async def resolve(self, customer: LeadCustomer) -> Resolution:
        """Resolve the customer's CPF(s) from phone and e-mail (:class:`ContactResolver`)."""
        async with self.observer.step("resolve_cpf"):
            return await self.resolver.resolve(customer)

    async def fetch_dossiers(
        self,
        cpfs: Sequence[str],
        *,
        use_cache: bool,
        refused: dict[str, SubjectErased] | None = None,
    ) -> dict[str, _Fetched]:
        """Fetch each CPF's dossier concurrently; a CPF whose fetch failed is simply absent.
        Results are keyed by CPF, so a failure of one CPF can never shift another CPF's data.
        A CPF refused because the person's data was erased on request is added to ``refused``."""
        async with self.observer.step("fetch_dossier"):
            results = await asyncio.gather(
                *(self.fetch_dossier(cpf, use_cache=use_cache) for cpf in cpfs),
                return_exceptions=True,
            )
        out: dict[str, _Fetched] = {}
        for cpf, result in zip(cpfs, results, strict=True):
            if isinstance(result, tuple):
                out[cpf] = result
            elif isinstance(result, SubjectErased) and refused is not None:
                refused[cpf] = result
            elif isinstance(result, QuotaExceeded) or not isinstance(result, DomainError):
                raise result  # a bug, or the key's quota (429): not one CPF's upstream failure
        return out

    async def fetch_dossier(
        self, cpf: str, *, use_cache: bool, max_age_s: float | None = None
    ) -> _Fetched:
        """One CPF's dossier: the shared cache first (when allowed), then the Work API.

        Only successful bodies are cached: the Work API client raises on soft errors. With the
        ``use_dossier_cache`` flag off the cache is neither read nor written. Concurrent misses
        of one CPF make one Work API call (:class:`~domain.singleflight.SingleFlight`); a paid
        call of an erased person within the hold raises :class:`SubjectErased`.
        With ``max_age_s`` an older cached body is not served: the Work API is called (no
        single-flight: its waiters may get an older cached body).
        """
        key = _dossier_key(cpf)
        cache_on = self.flags.enabled(Flag.USE_DOSSIER_CACHE)
        if use_cache and cache_on and max_age_s is not None:
            if (young := await self.dossier_cache.get_fresh(key, max_age_s)) is not None:
                return decode_dossier(young), young
            use_cache = False
        if use_cache and cache_on:
            cached = await self.dossier_cache.get(key)
            if cached is not None:
                return decode_dossier(cached), cached

            fetched: list[Dossier] = []

            async def fetch_raw() -> bytes:
                await refuse_erased(self.erasure_holds, cpf)
                dossier, body = await self.work_api.fetch_dossier(cpf)
                note_paid_call(cpf, "work_api")  # in the fetching caller's operation only
                fetched.append(dossier)
                return body

            raw = await self.single_flight.load(key, fetch_raw)
            # The caller that fetched holds the decoded dossier; the others decode the bytes.
            return (fetched[0] if fetched else decode_dossier(raw)), raw
        await refuse_erased(self.erasure_holds, cpf)
        dossier, raw = await self.work_api.fetch_dossier(cpf)
        note_paid_call(cpf, "work_api")
        if cache_on:
            await self.dossier_cache.put(key, raw)
        return dossier, raw

    async def reuse_dossiers(self, cpfs: Sequence[str]) -> dict[str, _Fetched]:
        """The dossiers of ``cpfs`` already at hand, without a Work API call.

        The shared cache first, then the stored enrichment (its raw payload); a CPF with
        neither is absent, and a failing cache or database counts as "not at hand".
        """
        out: dict[str, _Fetched] = {}
        cache_on = self.flags.enabled(Flag.USE_DOSSIER_CACHE)
        for cpf in cpfs:
            raw = await self.dossier_cache.get(_dossier_key(cpf)) if cache_on else None
            if raw is None:
                try:
                    stored = await self.repository.find_enrichment(cpf)
                except DependencyUnavailable:
                    stored = None
                raw = stored.raw_payload if stored is not None else None
            if raw is not None:
                out[cpf] = (decode_dossier(raw), raw)
        return out

    async def store(self, dossiers: dict[str, _Fetched], lead_id: str | None) -> list[str]:
        """Store each dossier (one transaction each); return the stored party ids.

        A failed store is not fatal for the lead (the message is still worth sending); the
        failure is visible in the step metric and span.
        """
        party_ids: list[str] = []
        async with self.observer.step("store"):
            for cpf, (dossier, raw) in dossiers.items():
                try:
                    stored = await self.repository.store_dossier(cpf, dossier, raw, lead_id)
                except DependencyUnavailable:
                    continue
                party_ids.append(str(stored.party_id))
        return party_ids

    def format(
        self,
        resolution: Resolution,
        dossiers: dict[str, _Fetched],
        layout: Literal["webhook", "process"],
    ) -> str:
        """Format the C2S message for the people whose dossier was fetched."""
        people = [
            PersonSource(cpf=p.cpf, dossier=dossiers[p.cpf][0], via=p.via, contact=p.contact)
            for p in resolution.people
            if p.cpf in dossiers
        ]
        return format_lead_message(
            people, layout=layout, income_multiplier=self.settings.income_multiplier
        )

    async def send(self, lead_id: str, message: str) -> bool:
        """Post the message to the lead in C2S (never retried blindly).

        Returns:
            ``False`` when the ``send_c2s_messages`` flag is off and nothing was posted.
        """
        if not self.flags.enabled(Flag.SEND_C2S_MESSAGES):
            return False
        async with self.observer.step("send_message"):
            await self.c2s.send_message(lead_id, message)
        return True

    # --- entry points --------------------------------------------------------------------------

    async def process_lead(
        self, lead_id: str, *, min_likelihood: float | None = None
    ) -> ProcessResult:
        """``/leads/process``: deduplicated, cached, always an answer (``success`` tells).

        ``min_likelihood``: see ``domain/freshness.py`` (InvalidInput when out of range).
        """
        threshold = likelihood_or(min_likelihood, self.settings.min_likelihood)
        lock = await self.lead_locks.acquire(lead_id)
        if not lock.acquired:
            self.observer.enrichment_finished("leads_process", "duplicate")
            if lock.finished is not None:
                replay = msgspec.json.decode(lock.finished, type=ProcessResult)
                return msgspec.structs.replace(replay, duplicate_request=True)
            started = lock.started_at if lock.started_at is not None else self.clock.now()
            elapsed = max(0, math.floor(self.clock.now() - started))
            return ProcessResult(
                success=True,
                message=(
                    f"Lead already being processed (started {elapsed} seconds ago). "
                    "Duplicate request blocked."
                ),
                lead_id=lead_id,
                duplicate_request=True,
            )
        try:
            with paid_scope():
                result, outcome = await self._process(lead_id, threshold)
        except BaseException as exc:
            if isinstance(exc, Exception):
                self.observer.enrichment_finished("leads_process", "failed")
            await self.lead_locks.abandon(lead_id)
            raise
        self.observer.enrichment_finished("leads_process", outcome)
        if result.success:
            await self.lead_locks.finish(lead_id, msgspec.json.encode(result))
        else:
            # Only a success is replayed: a failure (an outage above all) is never answered
            # again as a duplicate; the next request tries again (docs/contract.md §1.3).
            await self.lead_locks.abandon(lead_id)
        return result

    async def _process(self, lead_id: str, min_likelihood: float = 0.0) -> _Answered:
        def fail(message: str, outcome: EnrichmentOutcome = "failed") -> _Answered:
            return ProcessResult(success=False, message=message, lead_id=lead_id), outcome

        try:
            lead = await self.fetch_lead(lead_id)
        except NotFound:
            return fail("Failed to fetch lead from C2S: lead not found", "not_found")
        except (UpstreamError, DependencyUnavailable) as exc:
            return fail(f"Failed to fetch lead from C2S: {exc.detail}")
        resolution = await self.resolve(lead.customer)
        if resolution.unavailable:
            return ProcessResult(
                success=False,
                message=CPF_LOOKUP_UNAVAILABLE,
                lead_id=lead_id,
                reason=REASON_UPSTREAM_UNAVAILABLE,
            ), "failed"
        if not resolution.people:
            return fail("Could not find CPF from phone or email", _no_cpf_outcome(resolution))
        usable, shown = split_by_likelihood(resolution.people, min_likelihood)
        if not usable:
            return below_likelihood_result(lead_id, shown, min_likelihood), "not_found"
        resolution = msgspec.structs.replace(resolution, people=usable)
        cpfs = [p.cpf for p in resolution.people]
        # CPFs enriched within the window are not paid for again: their dossier is reused from
        # the cache or the database (a second lead of the same person still gets its message).
        recent = await self.recent_cpfs.recent(cpfs)
        reused = await self.reuse_dossiers([c for c in cpfs if c in recent])
        todo = [c for c in cpfs if c not in reused]
        contact = contact_fingerprint(lead.customer)
        if not todo and await self._messaged(lead_id, contact):
            # This very lead already got this message (a repeat after the replay window).
            return ProcessResult(
                success=True,
                message="CPFs already recently processed (deduplication)",
                lead_id=lead_id,
                cpfs_processed=cpfs,
                entities_stored=0,
                matches=shown,
            ), "duplicate"
        refused: dict[str, SubjectErased] = {}
        fresh = await self.fetch_dossiers(todo, use_cache=True, refused=refused) if todo else {}
        if not fresh and not reused:
            if refused and len(refused) == len(todo):
                return fail(ERASED_NOT_ENRICHED, "not_found")
            return fail("Failed to enrich any CPFs")
        if fresh:
            await self.recent_cpfs.mark(list(fresh))
        stored = await self.store(fresh, lead_id) if fresh else []
        dossiers = {
            cpf: (reused.get(cpf) or fresh[cpf]) for cpf in cpfs if cpf in reused or cpf in fresh
        }
        self.audit.people("lead", resolution, dossiers)
        async with self.observer.step("format"):
            message = self.format(resolution, dossiers, "process")
        try:
            sent = await self.send(lead_id, message)
        except (UpstreamError, DependencyUnavailable, NotFound) as exc:
            return fail(f"Enriched data but failed to send to C2S: {exc.detail}")
        if sent:
            await self._record(lead_id, contact, list(dossiers))
        held = "" if sent else f" Message not sent to C2S ({Flag.SEND_C2S_MESSAGES} is off)."
        text = "CPFs already recently processed (deduplication)"
        if fresh:
            text = f"Successfully processed and enriched lead. Stored {len(stored)} entities"
            text += " in database."
        return ProcessResult(
            success=True,
            message=f"{text}{held}",
            lead_id=lead_id,
            cpfs_processed=cpfs,
            entities_stored=len(stored),
            matches=shown,
            message_sent=None if sent else False,
        ), "enriched"

    async def _messaged(self, lead_id: str, contact: str) -> bool:
        """Whether the lead's record says it was messaged for ``contact`` (unknown: no)."""
        try:
            return await self.lead_messages.messaged(lead_id, contact)
        except DependencyUnavailable:
            return False

    async def _record(self, lead_id: str, contact: str, cpfs: list[str]) -> None:
        """Record a message sent by ``/leads/process`` (best effort: the message is out)."""
        try:
            await self.lead_messages.claim(lead_id, contact, cpfs)
        except DependencyUnavailable:
            return

    async def enrich_lead(self, lead_id: str) -> DirectResult:
        """``/c2s/enrich/{lead_id}``: the full flow with fresh data; failures raise.

        Raises:
            NotFound: the lead does not exist in C2S, or no CPF was found for it.
            UpstreamError: C2S failed, or every Work API call failed, or the send failed.
            DependencyUnavailable: an upstream is down (breaker open, timeout), including a
                Diretrix failure that left no CPF: an outage is never "not found" (503).
        """
        try:
            with paid_scope():
                result = await self._enrich_lead(lead_id)
        except NotFound:
            self.observer.enrichment_finished("c2s_enrich", "not_found")
            raise
        except Exception:
            self.observer.enrichment_finished("c2s_enrich", "failed")
            raise
        self.observer.enrichment_finished("c2s_enrich", "enriched")
        return result

    async def _enrich_lead(self, lead_id: str) -> DirectResult:
        lead = await self.fetch_lead(lead_id)
        resolution = await self.resolve(lead.customer)
        if resolution.unavailable:
            raise DependencyUnavailable(
                "diretrix", CPF_LOOKUP_UNAVAILABLE, retry_after=resolution.retry_after
            )
        if not resolution.people:
            raise NotFound("Could not find CPF via Diretrix")
        cpfs = [p.cpf for p in resolution.people]
        refused: dict[str, SubjectErased] = {}
        dossiers = await self.fetch_dossiers(cpfs, use_cache=False, refused=refused)
        if not dossiers:
            if len(refused) == len(cpfs):
                raise next(iter(refused.values()))
            raise UpstreamError("work_api", "Failed to enrich any CPFs")
        self.audit.people("lead", resolution, dossiers)
        stored = await self.store(dossiers, lead_id)
        async with self.observer.step("format"):
            message = self.format(resolution, dossiers, "webhook")
        sent = await self.send(lead_id, message)
        return DirectResult(
            success=True,
            lead_id=lead_id,
            customer_name=lead.customer.name or "",
            enriched=True,
            message_sent=sent,
            stored_in_db=len(stored),
            entity_ids=stored,
            cpfs_enriched=list(dossiers),
            same_person=resolution.same_person,
            matches=resolution.people,
        )

    async def prepare_event(self, lead: Lead) -> tuple[EventResult, Resolution]:
        """The webhook job up to (not including) the send: resolve, fetch, store, format.

        Stored dossiers younger than ``stored_dossier_max_age_s`` are reused (their normalised
        data is stored, so the message is complete; ``docs/contract.md`` §7), then the shared
        cache, then the Work API.

        Raises:
            NotFound: no CPF for the lead's contacts.
            DependencyUnavailable: no CPF, and a Diretrix lookup failed (retried by the job).
            UpstreamError: no dossier could be fetched.
        """
        resolution = await self.resolve(lead.customer)
        if resolution.unavailable:
            # A retry, never "no CPF" (docs/contract.md §2).
            raise DependencyUnavailable(
                "diretrix", CPF_LOOKUP_UNAVAILABLE, retry_after=resolution.retry_after
            )
        if not resolution.people:
            raise NotFound("Could not find CPF from phone or email")
        cpfs = [p.cpf for p in resolution.people]
        dossiers: dict[str, _Fetched] = {}
        for cpf in cpfs:
            stored = await self.repository.find_enrichment(cpf)
            max_age = self.settings.stored_dossier_max_age_s
            if stored is not None and self.clock.now() - stored.enriched_at.timestamp() <= max_age:
                dossiers[cpf] = (decode_dossier(stored.raw_payload), stored.raw_payload)
        used_stored = bool(dossiers)
        missing = [cpf for cpf in cpfs if cpf not in dossiers]
        refused: dict[str, SubjectErased] = {}
        fresh: dict[str, _Fetched] = {}
        if missing:
            fresh = await self.fetch_dossiers(missing, use_cache=True, refused=refused)
        if not dossiers and not fresh:
            if refused and len(refused) == len(missing):
                raise next(iter(refused.values()))  # terminal for the job: erased on request
            raise UpstreamError("work_api", "Failed to enrich any CPFs")
        stored_ids = await self.store(fresh, lead.id) if fresh else []
        dossiers.update(fresh)
        self.audit.people("webhook", resolution, dossiers)
        async with self.observer.step("format"):
            message = self.format(resolution, dossiers, "webhook")
        return (
            EventResult(
                cpfs=[c for c in cpfs if c in dossiers],
                stored=len(stored_ids),
                message=message,
                used_stored_data=used_stored,
            ),
            resolution,
        )
