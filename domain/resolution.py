"""The values of the pipeline: how CPFs were resolved from a lead's contacts, and the answers of
its three entry points (``docs/contract.md`` §1.3, §1.4, §2).

Value types only (no behaviour beyond derived properties); :mod:`domain.pipeline` produces them.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

__all__ = [
    "CPF_LOOKUP_UNAVAILABLE",
    "DIRETRIX_RETRY_AFTER_S",
    "REASON_BELOW_MIN_LIKELIHOOD",
    "REASON_UPSTREAM_UNAVAILABLE",
    "ContactLookup",
    "DirectResult",
    "EnrichmentOutcome",
    "EventResult",
    "LookupStatus",
    "MatchInfo",
    "ProcessResult",
    "Resolution",
    "ResolvedPerson",
    "Via",
]

Via = Literal["phone", "email", "both", "direct"]
# What an enrichment came to (StepObserver.enrichment_finished): ``failed`` is an upstream or
# dependency failure, the bad event of the enrichment SLO; the others are correct answers.
EnrichmentOutcome = Literal["enriched", "duplicate", "not_found", "failed"]
LookupStatus = Literal["found", "not_found", "invalid", "absent", "unavailable"]

# An outage is not "not found" (docs/contract.md §1.3, §1.4, §2).
CPF_LOOKUP_UNAVAILABLE: Final = "Could not look up the CPF: Diretrix unavailable, try again later"
REASON_UPSTREAM_UNAVAILABLE: Final = "upstream_unavailable"
# A CPF resolved from a contact whose match score is below the caller's ``min_likelihood``: it
# is neither enriched nor messaged (docs/contract.md §1.3, §1.5).
REASON_BELOW_MIN_LIKELIHOOD: Final = "below_min_likelihood"
# Retry-After of a Diretrix failure that gave none (an error status rather than an open breaker).
DIRETRIX_RETRY_AFTER_S: Final = 5.0


class MatchInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """How a CPF was resolved from a contact.

    Attributes:
        score: Name similarity between the lead's name and the candidate's, in [0, 1]; 0 when the
            lead has no name to compare.
        method: The name-matching rule that decided (``exact``, ``fuzzy-full``... or ``none``).
        source: Where the candidate came from (``diretrix`` or ``cache``).
        matched: Whether the names are considered the same person; ``False`` too when the
            score is below the caller's ``min_likelihood`` (then ``reason`` says so).
        reason: Why the CPF was not used (:data:`REASON_BELOW_MIN_LIKELIHOOD`); absent when it
            was.
    """

    score: float
    method: str
    source: str
    matched: bool
    reason: str | None = None


class ResolvedPerson(msgspec.Struct, frozen=True, kw_only=True):
    """One CPF found for a lead, and how."""

    cpf: str
    via: Via
    contact: str | None = None
    match: MatchInfo | None = None


class ContactLookup(msgspec.Struct, frozen=True, kw_only=True):
    """What one contact (phone or e-mail) yielded."""

    status: LookupStatus
    person: ResolvedPerson | None = None
    # When ``unavailable``: seconds after which Diretrix may answer again.
    retry_after: float | None = None


class Resolution(msgspec.Struct, frozen=True, kw_only=True):
    """The CPFs found for a lead: phone first, then e-mail, one entry per distinct CPF."""

    people: list[ResolvedPerson]
    phone: ContactLookup
    email: ContactLookup

    @property
    def same_person(self) -> bool:
        """Phone and e-mail led to the same CPF."""
        return len(self.people) == 1 and self.people[0].via == "both"

    @property
    def unavailable(self) -> bool:
        """No CPF, and a lookup failed: nobody can say the person is unknown (an outage)."""
        return not self.people and "unavailable" in (self.phone.status, self.email.status)

    @property
    def retry_after(self) -> float:
        """Seconds after which the failed lookups are worth another try."""
        waits = [c.retry_after for c in (self.phone, self.email) if c.retry_after is not None]
        return max(waits, default=DIRETRIX_RETRY_AFTER_S)


class ProcessResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The answer of ``/leads/process`` (docs/contract.md §1.3 fields, plus ``matches``)."""

    success: bool
    message: str
    lead_id: str
    # Why an answer is unsuccessful, when a client should act on it: ``upstream_unavailable``
    # (try again later; docs/contract.md §1.3).
    reason: str | None = None
    duplicate_request: bool | None = None
    cpfs_processed: list[str] | None = None
    entities_stored: int | None = None
    matches: list[ResolvedPerson] | None = None
    # Only present (false) when the send_c2s_messages flag held the message back.
    message_sent: bool | None = None


class DirectResult(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of ``/c2s/enrich/{lead_id}``."""

    success: bool
    lead_id: str
    customer_name: str
    enriched: bool
    message_sent: bool
    stored_in_db: int
    entity_ids: list[str]
    cpfs_enriched: list[str]
    same_person: bool
    matches: list[ResolvedPerson]


class EventResult(msgspec.Struct, frozen=True, kw_only=True):
    """What the webhook job did."""

    cpfs: list[str]
    stored: int
    message: str
    used_stored_data: bool
