"""Person-name matching (``docs/contract.md`` §6.4).

Used to decide whether a candidate found by phone/e-mail/name lookups is the lead's person.
:func:`match_names` applies the rules in this order and returns the first that fires:

1. ``exact``: the normalised names are equal -> 1.0.
2. ``fuzzy-full``: whole-name similarity >= threshold -> that similarity.
3. ``first-name-only``: same first name (>= 3 letters) and the lead gave only one name -> 0.85.
4. ``first-last-fuzzy``: same first name (>= 3 letters), last names similar (>= 0.6)
   -> (1 + last-name similarity) / 2.
5. ``last-first-fuzzy``: same last name (>= 3 letters), first names similar (>= 0.6)
   -> (1 + first-name similarity) / 2.
6. ``contains``: one name contains the other and the length ratio is >= 0.3
   -> 0.7 + 0.3 x ratio.
7. ``abbreviation``: same first name and one last name is a 1-2 letter prefix of the other -> 0.8.
8. ``initials``: the lead is 2-3 letters that start the candidate's initials -> 0.85.
9. ``initials-last-name``: the lead is ``<initials> <last name>``, the initials match the
   candidate's first names and the last names are similar (>= 0.7) -> 0.9.
10. ``none``: no rule fired; the score is the whole-name similarity and ``matched`` is False.

Rules 3-9 report a match whatever the threshold: the threshold only governs rule 2. Callers
that need a floor (the CPF-by-name tier needs >= 0.7) compare ``score``.

Two rules the contract leaves open: abbreviations and suffixes are matched as whole words only
(never inside a token such as ``M.SILVA``), and a name that normalises to nothing (empty, or only
``JUNIOR``) never matches, not even another empty name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import msgspec

from domain.documents import is_valid_cpf, normalize_cpf
from domain.text import strip_accents

if TYPE_CHECKING:
    from collections.abc import Sequence

    from domain.models import CpfCandidate

__all__ = [
    "DEFAULT_THRESHOLD",
    "NameMatch",
    "NameMatchMethod",
    "best_candidate",
    "levenshtein",
    "match_names",
    "normalize_name",
    "similarity",
]

DEFAULT_THRESHOLD = 0.75

NameMatchMethod = Literal[
    "exact",
    "fuzzy-full",
    "first-name-only",
    "first-last-fuzzy",
    "last-first-fuzzy",
    "contains",
    "abbreviation",
    "initials",
    "initials-last-name",
    "none",
]

# Common abbreviations in Brazilian registries and lead forms.
_ABBREVIATIONS: dict[str, str] = {
    "MA.": "MARIA",
    "M.": "MARIA",
    "JO.": "JOSE",
    "J.": "JOSE",
    "ANT.": "ANTONIO",
    "A.": "ANTONIO",
    "FCO.": "FRANCISCO",
    "F.": "FRANCISCO",
    "DR.": "DOUTOR",
    "DRA.": "DOUTORA",
    "SR.": "SENHOR",
    "SRA.": "SENHORA",
    "PE.": "PADRE",
    "S.": "SANTOS",
    "STO.": "SANTO",
    "STA.": "SANTA",
}

# Generational suffixes vary between sources ("JOSE SILVA" vs "JOSE SILVA JUNIOR").
_SUFFIXES = frozenset(
    {"JUNIOR", "JR", "JR.", "FILHO", "NETO", "SOBRINHO", "SEGUNDO", "II", "III"},
)

_FIRST_NAME_MIN = 3
_LAST_NAME_MIN = 3
_PART_SIMILARITY_MIN = 0.6
_FIRST_NAME_ONLY_SCORE = 0.85
_CONTAINS_RATIO_MIN = 0.3
_CONTAINS_BASE = 0.7
_CONTAINS_SPAN = 0.3
_ABBREVIATION_MAX_LEN = 2
_ABBREVIATION_SCORE = 0.8
_INITIALS_MIN = 2
_INITIALS_MAX = 3
_INITIALS_SCORE = 0.85
_INITIALS_LAST_SIMILARITY_MIN = 0.7
_INITIALS_LAST_SCORE = 0.9
# Upper-casing can create characters that decompose again (``ǰ`` -> ``J`` + caron); a few rounds
# reach the fixed point for every real name and keep normalize_name idempotent.
_FOLD_ROUNDS = 4


class NameMatch(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of comparing two names.

    Attributes:
        score: Confidence in [0, 1].
        method: The rule that decided (see the module docstring).
        matched: Whether the names are considered the same person.
    """

    score: float
    method: NameMatchMethod
    matched: bool


def _fold(raw: str) -> str:
    text = raw
    for _ in range(_FOLD_ROUNDS):
        folded = strip_accents(text.upper())
        if folded == text:
            break
        text = folded
    return text


def normalize_name(raw: str) -> str:
    """Normalise a person's name for comparison.

    Upper-cases, strips accents, expands common abbreviations (``MA.`` -> ``MARIA``), drops
    generational suffixes (JUNIOR, JR, FILHO, NETO, SOBRINHO, SEGUNDO, II, III) and collapses
    whitespace.

    Args:
        raw: A name as typed or as returned by an upstream.

    Returns:
        The normalised name, possibly empty. Idempotent.
    """
    words: list[str] = []
    for token in _fold(raw).split():
        word = _ABBREVIATIONS.get(token, token)
        if word not in _SUFFIXES:
            words.append(word)
    return " ".join(words)


def levenshtein(a: str, b: str) -> int:
    """Return the Levenshtein edit distance between two strings.

    Args:
        a: First string.
        b: Second string.

    Returns:
        The minimum number of single-character insertions, deletions and substitutions.
    """
    if len(a) < len(b):
        a, b = b, a
    # Two rows of the classic DP table over the shorter string keep memory at O(min(len)).
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)),
            )
        previous = current
    return previous[-1]


def similarity(a: str, b: str) -> float:
    """Return ``1 - levenshtein(a, b) / max(len(a), len(b))``.

    Args:
        a: First string (compared as given; normalise first).
        b: Second string.

    Returns:
        A value in [0, 1]: 1.0 for equal strings, 0.0 when either is empty and they differ.
    """
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    return 1.0 - levenshtein(a, b) / max(len(a), len(b))


def _match(lead: str, candidate: str, threshold: float) -> tuple[NameMatchMethod, float]:
    if lead == candidate:
        return "exact", 1.0
    full = similarity(lead, candidate)
    if full >= threshold:
        return "fuzzy-full", full

    lead_words = lead.split(" ")
    cand_words = candidate.split(" ")
    lead_first, lead_last = lead_words[0], lead_words[-1]
    cand_first, cand_last = cand_words[0], cand_words[-1]

    if lead_first == cand_first and len(lead_first) >= _FIRST_NAME_MIN:
        if len(lead_words) == 1:
            return "first-name-only", _FIRST_NAME_ONLY_SCORE
        last_sim = similarity(lead_last, cand_last)
        if last_sim >= _PART_SIMILARITY_MIN:
            return "first-last-fuzzy", (1.0 + last_sim) / 2.0

    if lead_last == cand_last and len(lead_last) >= _LAST_NAME_MIN:
        first_sim = similarity(lead_first, cand_first)
        if first_sim >= _PART_SIMILARITY_MIN:
            return "last-first-fuzzy", (1.0 + first_sim) / 2.0

    if lead in candidate or candidate in lead:
        ratio = min(len(lead), len(candidate)) / max(len(lead), len(candidate))
        if ratio >= _CONTAINS_RATIO_MIN:
            return "contains", _CONTAINS_BASE + _CONTAINS_SPAN * ratio

    if lead_first == cand_first and (
        (len(lead_last) <= _ABBREVIATION_MAX_LEN and cand_last.startswith(lead_last))
        or (len(cand_last) <= _ABBREVIATION_MAX_LEN and lead_last.startswith(cand_last))
    ):
        return "abbreviation", _ABBREVIATION_SCORE

    if _INITIALS_MIN <= len(lead) <= _INITIALS_MAX:
        initials = "".join(word[0] for word in cand_words)
        if initials.startswith(lead):
            return "initials", _INITIALS_SCORE

    if len(lead_words) >= 2 and _INITIALS_MIN <= len(lead_first) <= _INITIALS_MAX:
        cand_initials = "".join(word[0] for word in cand_words[: len(lead_first)])
        if (
            cand_initials == lead_first
            and similarity(lead_last, cand_last) >= _INITIALS_LAST_SIMILARITY_MIN
        ):
            return "initials-last-name", _INITIALS_LAST_SCORE

    return "none", full


def match_names(
    lead_name: str, candidate_name: str, threshold: float = DEFAULT_THRESHOLD
) -> NameMatch:
    """Compare a lead's name with a candidate's name.

    Args:
        lead_name: The name the lead typed (may be partial: ``MARIA``, ``JP SOUZA``).
        candidate_name: The registered name of a candidate person.
        threshold: Minimum whole-name similarity for the ``fuzzy-full`` rule.

    Returns:
        The first rule that fires, with its score and whether it counts as a match.
    """
    lead = normalize_name(lead_name)
    candidate = normalize_name(candidate_name)
    if not lead or not candidate:
        return NameMatch(score=0.0, method="none", matched=False)
    method, score = _match(lead, candidate, threshold)
    # Float arithmetic must not push a score out of [0, 1].
    score = min(1.0, max(0.0, score))
    return NameMatch(score=score, method=method, matched=method != "none")


def best_candidate(
    candidates: Sequence[CpfCandidate], lead_name: str | None, threshold: float
) -> tuple[str, float, str, bool] | None:
    """The candidate whose name best matches the lead's (the first valid one on ties), as
    ``(normalised CPF, score, method, matched)``; ``None`` when no candidate has a valid CPF.

    A lookup's first answer is not trusted blindly: a better-matching later candidate wins, and
    the score is reported so a client can judge a weak match. Without a lead name the first
    candidate with a valid CPF is taken (score 0, method ``none``).
    """
    best: tuple[str, float, str, bool] | None = None
    for candidate in candidates:
        if not is_valid_cpf(candidate.cpf):
            continue
        cpf = normalize_cpf(candidate.cpf)
        if not lead_name or not lead_name.strip():
            return (cpf, 0.0, "none", False)
        result = match_names(lead_name, candidate.name, threshold)
        if best is None or result.score > best[1]:
            best = (cpf, result.score, result.method, result.matched)
    return best
