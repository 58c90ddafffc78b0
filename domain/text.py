"""Text normalisation shared by the domain and the storage adapters.

One definition of each rule, so a name, a UF or a CEP compares the same in a dossier, in a
search key and in a stored address:

* :func:`fold`: upper case, accents stripped, runs of whitespace collapsed to one space
  (``"  José  da Silva"`` -> ``"JOSE DA SILVA"``); the Python twin of the SQL ``core.search_key``.
* :func:`parse_uf`: one of the 27 Brazilian federative units, or None.
* :func:`parse_cep`: a CEP as its 8 digits, or None (a CEP sent as a JSON number gets its
  leading zeros back).
"""

from __future__ import annotations

import unicodedata
from typing import Final, Literal, get_args

from domain.documents import only_digits

__all__ = ["CEP_LENGTH", "BrazilianState", "fold", "parse_cep", "parse_uf", "strip_accents"]

BrazilianState = Literal[
    "AC", "AL", "AM", "AP", "BA", "CE", "DF", "ES", "GO", "MA", "MG", "MS", "MT", "PA",
    "PB", "PE", "PI", "PR", "RJ", "RN", "RO", "RR", "RS", "SC", "SE", "SP", "TO",
]  # fmt: skip
_STATES: Final[dict[str, BrazilianState]] = {s: s for s in get_args(BrazilianState)}

CEP_LENGTH: Final = 8


def strip_accents(text: str) -> str:
    """``text`` with every combining mark removed (``"Conceição"`` -> ``"Conceicao"``)."""
    if text.isascii():  # most names and streets: nothing to decompose
        return text
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def fold(text: str) -> str:
    """Upper case, no accents, single spaces, no leading or trailing space."""
    return " ".join(strip_accents(text.upper()).split())


def parse_uf(raw: str | None) -> BrazilianState | None:
    """The UF in ``raw`` (trimmed, any case), None when it is not a Brazilian unit."""
    if raw is None:
        return None
    return _STATES.get(raw.strip().upper())


def parse_cep(raw: str | int | None) -> str | None:
    """The 8 digits of a CEP, None when ``raw`` holds no CEP."""
    if raw is None:
        return None
    digits = only_digits(str(raw))
    if isinstance(raw, int) and 0 < len(digits) < CEP_LENGTH:
        digits = digits.zfill(CEP_LENGTH)
    return digits if len(digits) == CEP_LENGTH else None
