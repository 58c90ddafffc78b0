"""How old stored data may be, and how sure a contact match must be (issue #15 parts 4 and 5).

Pure rules shared by the customer lookups (:mod:`domain.customers`) and ``/leads/process``
(:mod:`domain.pipeline`):

* **Freshness**: a stored dossier has an age (``now - enriched_at``, whole seconds). A caller's
  ``max_age`` (seconds, >= 0) says how old an answer may be: older stored data is fetched again
  (a paid call), and a cached Work API body older than it is not served either.
* **Match threshold**: a CPF resolved from a phone or an e-mail (Diretrix) carries the name
  similarity of the match (:class:`~domain.resolution.MatchInfo`). Below the caller's
  ``min_likelihood`` (0..1) it is neither enriched nor messaged; the answer says so
  (``matched: false``, the score, ``reason``). A CPF given directly is never subject to it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

import msgspec

from domain.errors import InvalidInput
from domain.resolution import REASON_BELOW_MIN_LIKELIHOOD, ProcessResult

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Sequence

    from domain.resolution import ResolvedPerson

__all__ = [
    "MAX_AGE_FIELD",
    "MIN_LIKELIHOOD_FIELD",
    "below_likelihood_result",
    "check_max_age",
    "check_min_likelihood",
    "data_age_s",
    "held_back",
    "is_too_old",
    "likelihood_or",
    "split_by_likelihood",
]

# The wire names of the two parameters (query parameter or JSON field), named by a 400.
MAX_AGE_FIELD: Final = "max_age"
MIN_LIKELIHOOD_FIELD: Final = "min_likelihood"


def check_max_age(value: float | None) -> float | None:
    """``value`` as a maximum age in seconds, ``None`` for "any age".

    Raises:
        InvalidInput: negative or not a finite number (names ``max_age``).
    """
    if value is None:
        return None
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(MAX_AGE_FIELD, "max_age must be a number of seconds >= 0")
    return float(value)


def check_min_likelihood(value: float | None) -> float | None:
    """``value`` as a match threshold in [0, 1], ``None`` for "the default".

    Raises:
        InvalidInput: outside [0, 1] or not a finite number (names ``min_likelihood``).
    """
    if value is None:
        return None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidInput(MIN_LIKELIHOOD_FIELD, "min_likelihood must be between 0 and 1")
    return float(value)


def likelihood_or(value: float | None, default: float) -> float:
    """The caller's threshold (checked by :func:`check_min_likelihood`), else ``default``."""
    checked = check_min_likelihood(value)
    return default if checked is None else checked


def data_age_s(enriched_at: dt.datetime | None, now: dt.datetime) -> int | None:
    """Whole seconds since ``enriched_at`` (never negative); ``None`` when never enriched."""
    if enriched_at is None:
        return None
    return max(0, math.floor((now - enriched_at).total_seconds()))


def is_too_old(enriched_at: dt.datetime | None, now: dt.datetime, max_age_s: float | None) -> bool:
    """Whether data stored at ``enriched_at`` is older than ``max_age_s`` at ``now``.

    ``None`` (no limit) is never too old; data never stored (``enriched_at`` None) is not
    "too old" either: there is nothing stored to refresh.
    """
    if max_age_s is None or enriched_at is None:
        return False
    return (now - enriched_at).total_seconds() > max_age_s


def held_back(person: ResolvedPerson) -> ResolvedPerson:
    """``person`` marked as not used: ``matched: false`` and the reason, its score kept."""
    if person.match is None:
        return person
    match = msgspec.structs.replace(person.match, matched=False, reason=REASON_BELOW_MIN_LIKELIHOOD)
    return msgspec.structs.replace(person, match=match)


def _below(person: ResolvedPerson, min_likelihood: float) -> bool:
    # A CPF given directly (no match) is not a guess: the threshold does not apply to it.
    return (
        person.via != "direct"
        and person.match is not None
        and (person.match.score < min_likelihood)
    )


def split_by_likelihood(
    people: Sequence[ResolvedPerson], min_likelihood: float
) -> tuple[list[ResolvedPerson], list[ResolvedPerson]]:
    """The people to use, and every person as the answer shows them (held back ones marked).

    Args:
        people: The CPFs resolved for a lead or a lookup, in order.
        min_likelihood: The threshold; 0 keeps everyone (today's behaviour).

    Returns:
        ``(usable, shown)``: the people whose score reaches the threshold, and all of
        ``people`` in order with those below it marked by :func:`held_back`.
    """
    usable: list[ResolvedPerson] = []
    shown: list[ResolvedPerson] = []
    for person in people:
        if _below(person, min_likelihood):
            shown.append(held_back(person))
        else:
            usable.append(person)
            shown.append(person)
    return usable, shown


def below_likelihood_result(
    lead_id: str, shown: list[ResolvedPerson], min_likelihood: float
) -> ProcessResult:
    """The answer of ``/leads/process`` when every CPF found is below ``min_likelihood``: not
    a success (nothing enriched, no message), ``reason`` says why, ``matches`` the scores."""
    return ProcessResult(
        success=False,
        message=f"No CPF matched the lead with likelihood >= {min_likelihood:g}",
        lead_id=lead_id,
        reason=REASON_BELOW_MIN_LIKELIHOOD,
        matches=shown,
    )
