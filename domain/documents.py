"""Brazilian tax identifiers: CPF (people) and CNPJ (companies).

Normalisation rules (``docs/contract.md`` §6.1):

* Only ASCII digits are kept; every other character (dots, dashes, slashes, spaces) is dropped.
* Longer inputs are accepted only when the extra leading digits are all zeros: the Work API
  returns CPFs zero-padded to 14 digits (``00052998224725`` -> ``52998224725``). Dropping
  arbitrary leading digits (keeping the last 11) would silently turn garbage into a different
  person's CPF, so a non-zero prefix makes the value invalid.
* Shorter inputs are left-padded with zeros only when at most two
  leading zeros are missing (9 or 10 digits for a CPF, 12 or 13 for a CNPJ). That is how
  identifiers starting with ``0`` come back from spreadsheets and numeric JSON fields. Anything
  shorter is not a lost-zeros identifier but a wrong one: ``1234567`` stays invalid instead of
  being read as ``00001234567`` and left to the check digits, which would accept about one short
  garbage string in a hundred.
* The result must have the exact length, must not be one repeated digit, and must carry the
  right check digits.

Error messages never contain the value itself (it is personal data).
"""

from __future__ import annotations

import functools
import re

from domain.errors import InvalidInput

__all__ = [
    "CNPJ_LENGTH",
    "CPF_LENGTH",
    "WORK_API_CPF_LENGTH",
    "cnpj_check_digits",
    "cpf_check_digits",
    "format_cnpj",
    "format_cpf",
    "is_valid_cnpj",
    "is_valid_cpf",
    "normalize_cnpj",
    "normalize_cpf",
    "only_digits",
    "to_work_api_cpf",
]

CPF_LENGTH = 11
CNPJ_LENGTH = 14
WORK_API_CPF_LENGTH = 14

# How many leading zeros a numeric transport (JSON number, spreadsheet cell) may have eaten.
_MAX_LOST_LEADING_ZEROS = 2

_NON_DIGITS = re.compile(r"[^0-9]")

_CPF_WEIGHTS_1 = tuple(range(10, 1, -1))  # 10..2 over the first 9 digits
_CPF_WEIGHTS_2 = tuple(range(11, 1, -1))  # 11..2 over the first 10 digits
_CNPJ_WEIGHTS_1 = (5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)
_CNPJ_WEIGHTS_2 = (6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)


def only_digits(raw: str) -> str:
    """Keep only the ASCII digits of ``raw``.

    Unicode digits (full-width, Arabic-Indic...) are dropped on purpose: ``str.isdigit`` accepts
    them, and none of our upstreams would.

    Args:
        raw: Any text.

    Returns:
        The ASCII digits of ``raw`` in order, possibly empty.
    """
    return _NON_DIGITS.sub("", raw)


def _mod11_digit(digits: str, weights: tuple[int, ...]) -> str:
    total = 0
    for digit, weight in zip(digits, weights, strict=True):  # ASCII digits (checked by callers)
        total += (ord(digit) - 48) * weight
    remainder = total % 11
    return "0" if remainder < 2 else str(11 - remainder)


def _require_digits(value: str, length: int, what: str) -> None:
    if len(value) != length or not value.isascii() or not value.isdigit():
        raise ValueError(f"{what} needs exactly {length} ASCII digits")


def cpf_check_digits(first_nine: str) -> str:
    """Compute the two CPF check digits.

    Args:
        first_nine: The first 9 digits of a CPF.

    Returns:
        The two check digits as a 2-character string.

    Raises:
        ValueError: If ``first_nine`` is not 9 ASCII digits (a programming error, not bad input).
    """
    _require_digits(first_nine, 9, "cpf_check_digits")
    d1 = _mod11_digit(first_nine, _CPF_WEIGHTS_1)
    d2 = _mod11_digit(first_nine + d1, _CPF_WEIGHTS_2)
    return d1 + d2


def cnpj_check_digits(first_twelve: str) -> str:
    """Compute the two CNPJ check digits.

    Args:
        first_twelve: The first 12 digits of a CNPJ.

    Returns:
        The two check digits as a 2-character string.

    Raises:
        ValueError: If ``first_twelve`` is not 12 ASCII digits (a programming error).
    """
    _require_digits(first_twelve, 12, "cnpj_check_digits")
    d1 = _mod11_digit(first_twelve, _CNPJ_WEIGHTS_1)
    d2 = _mod11_digit(first_twelve + d1, _CNPJ_WEIGHTS_2)
    return d1 + d2


def _fit_length(digits: str, length: int) -> str | None:
    """Bring a digit string to ``length`` by the padding rules of the module docstring."""
    if len(digits) > length:
        excess = digits[: len(digits) - length]
        return digits[len(digits) - length :] if excess.count("0") == len(excess) else None
    if len(digits) < length - _MAX_LOST_LEADING_ZEROS:
        return None
    return digits.zfill(length)


@functools.lru_cache(maxsize=4096)
def normalize_cpf(raw: str) -> str:
    """Return the canonical 11-digit CPF of ``raw``.

    Memoised (bounded): the hot path normalises the same CPFs again and again, twice per
    request. Invalid input raises every time (exceptions are not cached).

    Args:
        raw: A CPF in any common shape: ``52998224725``, ``529.982.247-25``, the Work API's
            ``00052998224725``, or a 9/10-digit value that lost its leading zeros.

    Returns:
        The 11 digits.

    Raises:
        InvalidInput: ``field="cpf"`` when the value has the wrong length, is one repeated digit,
            or has wrong check digits.
    """
    cpf = _fit_length(only_digits(raw), CPF_LENGTH)
    if cpf is None:
        raise InvalidInput("cpf", "CPF must have 11 digits")
    if cpf == cpf[0] * CPF_LENGTH:
        raise InvalidInput("cpf", "CPF must not be a single repeated digit")
    if cpf[9:] != cpf_check_digits(cpf[:9]):
        raise InvalidInput("cpf", "CPF check digits do not match")
    return cpf


def is_valid_cpf(raw: str) -> bool:
    """Tell whether ``raw`` normalises to a valid CPF. Never raises.

    Args:
        raw: Any text.

    Returns:
        True when :func:`normalize_cpf` accepts ``raw``.
    """
    try:
        normalize_cpf(raw)
    except InvalidInput:
        return False
    return True


def format_cpf(cpf: str) -> str:
    """Format a CPF for display as ``XXX.XXX.XXX-XX``.

    Args:
        cpf: A CPF in any shape :func:`normalize_cpf` accepts.

    Returns:
        The formatted CPF.

    Raises:
        InvalidInput: If ``cpf`` is not a valid CPF.
    """
    c = normalize_cpf(cpf)
    return f"{c[:3]}.{c[3:6]}.{c[6:9]}-{c[9:]}"


def to_work_api_cpf(cpf: str) -> str:
    """Return the 14-digit zero-padded form the Work API uses for CPFs.

    Args:
        cpf: A CPF in any shape :func:`normalize_cpf` accepts.

    Returns:
        ``000`` followed by the 11 CPF digits.

    Raises:
        InvalidInput: If ``cpf`` is not a valid CPF.
    """
    return normalize_cpf(cpf).zfill(WORK_API_CPF_LENGTH)


def normalize_cnpj(raw: str) -> str:
    """Return the canonical 14-digit CNPJ of ``raw``.

    Only the numeric CNPJ is supported; the alphanumeric format announced for 2026 is not.

    Args:
        raw: A CNPJ in any common shape: ``11222333000181``, ``11.222.333/0001-81``, or a
            12/13-digit value that lost its leading zeros.

    Returns:
        The 14 digits.

    Raises:
        InvalidInput: ``field="cnpj"`` when the value has the wrong length, is one repeated
            digit, or has wrong check digits.
    """
    cnpj = _fit_length(only_digits(raw), CNPJ_LENGTH)
    if cnpj is None:
        raise InvalidInput("cnpj", "CNPJ must have 14 digits")
    if cnpj == cnpj[0] * CNPJ_LENGTH:
        raise InvalidInput("cnpj", "CNPJ must not be a single repeated digit")
    if cnpj[12:] != cnpj_check_digits(cnpj[:12]):
        raise InvalidInput("cnpj", "CNPJ check digits do not match")
    return cnpj


def is_valid_cnpj(raw: str) -> bool:
    """Tell whether ``raw`` normalises to a valid CNPJ. Never raises.

    Args:
        raw: Any text.

    Returns:
        True when :func:`normalize_cnpj` accepts ``raw``.
    """
    try:
        normalize_cnpj(raw)
    except InvalidInput:
        return False
    return True


def format_cnpj(cnpj: str) -> str:
    """Format a CNPJ for display as ``XX.XXX.XXX/XXXX-XX``.

    Args:
        cnpj: A CNPJ in any shape :func:`normalize_cnpj` accepts.

    Returns:
        The formatted CNPJ.

    Raises:
        InvalidInput: If ``cnpj`` is not a valid CNPJ.
    """
    c = normalize_cnpj(cnpj)
    return f"{c[:2]}.{c[2:5]}.{c[5:8]}/{c[8:12]}-{c[12:]}"
