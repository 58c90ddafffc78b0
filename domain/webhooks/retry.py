"""Retry classification of the webhook job: which failures a later attempt may fix, and when.

Failure texts recorded for operators (``error_message``) never contain personal data: they name
dependencies, fields, HTTP statuses and exception classes only.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Annotated, Final

import msgspec

from domain.errors import (
    DependencyUnavailable,
    DomainError,
    InvalidInput,
    NotFound,
    UpstreamError,
    UpstreamSoftError,
)

if TYPE_CHECKING:
    from domain.dossier import Dossier
    from domain.models import CpfCandidate
    from domain.pipeline import Enricher
    from domain.ports import DiretrixPort, WorkApiPort

__all__ = [
    "DEFAULT_RETRY_BUDGET_S",
    "DEFAULT_RETRY_POLICY",
    "FailureLog",
    "RetryPolicy",
    "Verdict",
    "classify_prepare_error",
    "classify_send_error",
    "is_provably_unsent",
    "transient_reason",
    "watched",
]


# The default retry budget: an upstream outage of up to 6 hours is ridden out without an operator.
DEFAULT_RETRY_BUDGET_S: Final = 6 * 3600.0


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Retries of transient failures: exponential backoff with full jitter until a time budget is
    spent, then the dead letter.

    Attributes:
        budget_s: Time from the event's arrival (or its last redrive) within which transient
            failures are retried; a retry that would start after it is not scheduled and the
            event is dead-lettered (``WORKER_RETRY_BUDGET_S``).
        base_delay_s: Delay cap after the first failed attempt.
        max_delay_s: Cap of the delay (the exponential stops growing there).
        max_attempts: Hard cap on attempts whatever the budget (a poison event that kills its
            worker on every run must not be retried for hours).
    """

    budget_s: Annotated[float, msgspec.Meta(ge=0)] = DEFAULT_RETRY_BUDGET_S
    base_delay_s: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    max_delay_s: Annotated[float, msgspec.Meta(ge=0)] = 1800.0
    max_attempts: Annotated[int, msgspec.Meta(ge=1)] = 100

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        "Full jitter": uniform in [0, min(max_delay_s, base_delay_s x 2^(attempt-1))), so the
        retries of events that failed together (an upstream outage) spread over the whole window.

        Args:
            attempt: The attempt that just failed, from 1.
            rand: A number in [0, 1).
        """
        exponent = min(max(attempt - 1, 0), 30)
        capped = min(self.max_delay_s, self.base_delay_s * (2.0**exponent))
        return capped * min(max(rand, 0.0), 1.0)

    def exhausted(self, attempts: int, elapsed_s: float, next_delay_s: float) -> bool:
        """Whether to give up instead of retrying after ``next_delay_s``.

        Args:
            attempts: Attempts made so far.
            elapsed_s: Seconds since the event arrived (or was last redriven).
            next_delay_s: The backoff before the next attempt.
        """
        return attempts >= self.max_attempts or elapsed_s + next_delay_s > self.budget_s


DEFAULT_RETRY_POLICY: Final = RetryPolicy()


NO_CPF_REASON: Final = "no CPF found for the lead's phone or e-mail"
"""The reason of an event failed because its lead has no CPF: a correct answer, not an outage."""


class Verdict(msgspec.Struct, frozen=True):
    """Whether a failed attempt is worth another one, and the reason recorded for operators."""

    transient: bool
    reason: str


# Work API soft errors that a retry cannot fix (an operator must act, or the CPF is unknown).
_PERMANENT_SOFT_KINDS: Final = frozenset(
    {"not_found", "unknown_module", "expired_token", "no_credits"}
)
# HTTP statuses of a rejected send that a later retry may see accepted.
_RETRYABLE_STATUSES: Final = frozenset({408, 425, 429})


def is_provably_unsent(exc: BaseException) -> bool:
    """Tell whether a failed send certainly did not post the message.

    True when C2S answered with an HTTP error (4xx/5xx, including 404 for the lead): the message
    was refused. Timeouts, dropped connections and anything else may have reached C2S, so they
    are not provable; adapters that know more (a breaker that rejected the call before any
    request) extend this predicate.

    Args:
        exc: What the send raised.
    """
    if isinstance(exc, NotFound):
        return True
    if isinstance(exc, UpstreamError) and not isinstance(exc, UpstreamSoftError):
        return exc.status is not None and exc.status >= 400
    return False


class FailureLog:
    """The upstream failures one run met, which ``prepare_event`` folds into generic errors."""

    def __init__(self) -> None:
        self.diretrix_failed = False
        self.work_api_errors: list[DomainError] = []


class _WatchedDiretrix:
    """Diretrix as the pipeline sees it, noting whether any lookup failed.

    The pipeline ignores one failed lookup when the other contact resolves (and reports an
    outage when none does); the note keeps the job's "nobody found" (permanent) apart from
    "Diretrix down" (retry) whatever path the failure took.
    """

    def __init__(self, inner: DiretrixPort, log: FailureLog) -> None:
        self._inner = inner
        self._log = log

    async def search_by_phone(self, national_phone: str) -> list[CpfCandidate]:
        try:
            return await self._inner.search_by_phone(national_phone)
        except (DependencyUnavailable, UpstreamError):
            self._log.diretrix_failed = True
            raise

    async def search_by_email(self, email: str) -> list[CpfCandidate]:
        try:
            return await self._inner.search_by_email(email)
        except (DependencyUnavailable, UpstreamError):
            self._log.diretrix_failed = True
            raise


class _WatchedWorkApi:
    """The Work API, noting why dossier fetches failed (soft errors may be permanent)."""

    def __init__(self, inner: WorkApiPort, log: FailureLog) -> None:
        self._inner = inner
        self._log = log

    async def fetch_module(self, module: str, query: str) -> bytes:
        return await self._inner.fetch_module(module, query)

    async def fetch_dossier(self, cpf: str) -> tuple[Dossier, bytes]:
        try:
            return await self._inner.fetch_dossier(cpf)
        except DomainError as exc:
            self._log.work_api_errors.append(exc)
            raise


def watched(enricher: Enricher, log: FailureLog) -> Enricher:
    """A per-run copy of the enricher whose Diretrix and Work API ports report failures."""
    clone = copy.copy(enricher)
    clone.diretrix = _WatchedDiretrix(enricher.diretrix, log)
    clone.work_api = _WatchedWorkApi(enricher.work_api, log)
    return clone


def transient_reason(exc: BaseException) -> str:
    if isinstance(exc, DependencyUnavailable):
        return f"{exc.dependency} unavailable"
    if isinstance(exc, UpstreamSoftError):
        return f"{exc.upstream} soft error: {exc.kind}"
    if isinstance(exc, UpstreamError):
        status = f" (HTTP {exc.status})" if exc.status is not None else ""
        return f"{exc.upstream} error{status}"
    return f"unexpected {type(exc).__name__}"


def classify_prepare_error(exc: Exception, log: FailureLog) -> Verdict:
    """Decide whether a failure before the send is worth a retry."""
    if isinstance(exc, NotFound):
        if log.diretrix_failed:
            return Verdict(True, "diretrix unavailable")
        return Verdict(False, NO_CPF_REASON)
    if isinstance(exc, DependencyUnavailable):
        return Verdict(True, transient_reason(exc))
    if isinstance(exc, UpstreamError) and exc.upstream == "work_api" and log.work_api_errors:
        errors = log.work_api_errors
        if all(
            isinstance(e, UpstreamSoftError) and e.kind in _PERMANENT_SOFT_KINDS for e in errors
        ):
            first = errors[0]
            kind = first.kind if isinstance(first, UpstreamSoftError) else "other"
            return Verdict(False, f"work_api soft error: {kind}")
        retryable = next(
            e
            for e in errors
            if not (isinstance(e, UpstreamSoftError) and e.kind in _PERMANENT_SOFT_KINDS)
        )
        return Verdict(True, transient_reason(retryable))
    if isinstance(exc, UpstreamError):
        return Verdict(True, transient_reason(exc))
    if isinstance(exc, InvalidInput):
        return Verdict(False, f"invalid {exc.field}")
    if isinstance(exc, DomainError):
        return Verdict(False, type(exc).__name__)
    # An unknown exception may be a driver hiccup as well as a bug: retry, bounded.
    return Verdict(True, transient_reason(exc))


def classify_send_error(exc: BaseException) -> Verdict:
    """For a send that provably did not reach C2S: retry or give up."""
    if isinstance(exc, NotFound):
        return Verdict(False, "lead not found in C2S")
    if (
        isinstance(exc, UpstreamError)
        and exc.status is not None
        and 400 <= exc.status < 500  # client errors
        and exc.status not in _RETRYABLE_STATUSES
    ):
        return Verdict(False, f"{exc.upstream} rejected the message (HTTP {exc.status})")
    return Verdict(True, transient_reason(exc))
