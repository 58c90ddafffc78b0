"""Brazilian phone numbers (``docs/contract.md`` §6.2).

Three forms are in play:

* E.164 (``+5511987654321``): what :func:`parse_br_phone` validates and returns in
  :attr:`BrPhone.e164`.
* National digits with DDD and without the ``55`` country code (``11987654321``): the storage and
  lookup form (:attr:`BrPhone.national`, :func:`storage_digits`) and what Diretrix expects
  (:func:`diretrix_form`). Every path sends Diretrix the national digits, never ``+55...``
  (``docs/contract.md`` §7).
* Display (``(11) 98765-4321``): :func:`format_br_phone`.
"""

from __future__ import annotations

import functools
import re

import msgspec
import phonenumbers

from domain.documents import only_digits
from domain.errors import InvalidInput

__all__ = [
    "BrPhone",
    "diretrix_form",
    "format_br_phone",
    "parse_br_phone",
    "storage_digits",
]

_REGION = "BR"
_COUNTRY_CODE = 55
_COUNTRY_PREFIX = "55"
# Raw input shorter than 8 characters is rejected before parsing ("Phone too short", §6.2).
_MIN_RAW_LENGTH = 8
# National numbers are 10 (landline) or 11 (mobile) digits; anything longer that starts with 55
# still carries the country code.
_MAX_NATIONAL_LENGTH = 11
# storage_digits iterates to a fixed point; each round either stops or strips two digits, so a
# small bound is never reached for real inputs and keeps the loop obviously finite.
_MAX_STORAGE_ROUNDS = 16
# libphonenumber would read letters as keypad digits ("9ABCD-EFGH"), non-ASCII digits as digits
# and "ext. 12" as an extension; none of that is a lead's phone, and accepting non-ASCII digits
# would also make parse_br_phone disagree with storage_digits.
_ALLOWED = re.compile(r"[0-9 ()+\-.]+")
_MOBILE_TYPES = frozenset(
    {phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}
)


class BrPhone(msgspec.Struct, frozen=True, kw_only=True):
    """A validated Brazilian phone number.

    Attributes:
        e164: ``+55`` followed by DDD and number (13 characters for landlines, 14 for mobiles).
        national: DDD and number, digits only, no country code: the storage and lookup form.
        ddd: The two-digit area code.
        is_mobile: True for mobile numbers (the ones with the leading 9).
    """

    e164: str
    national: str
    ddd: str
    is_mobile: bool


@functools.lru_cache(maxsize=8192)
def parse_br_phone(raw: str) -> BrPhone:
    """Validate and normalise a Brazilian phone number with libphonenumber.

    Memoised (bounded; :class:`BrPhone` is immutable): libphonenumber costs tens of microseconds
    per call, and one request or job parses the same number several times (validation, storage
    digits, fingerprints). Invalid input raises every time (exceptions are not cached).

    Args:
        raw: The number as typed: ``11987654321``, ``(11) 98765-4321``, ``+55 11 98765-4321``,
            ``5511987654321``...

    Returns:
        The parsed number.

    Raises:
        InvalidInput: ``field="phone"`` for empty or blank input, input shorter than 8
            characters, characters other than ASCII digits, spaces and ``()+-.``, unparsable
            input, and numbers that are not valid Brazilian numbers.
    """
    text = raw.strip()
    if not text:
        raise InvalidInput("phone", "phone is empty")
    if len(text) < _MIN_RAW_LENGTH:
        raise InvalidInput("phone", "phone is too short")
    if not _ALLOWED.fullmatch(text):
        raise InvalidInput("phone", "phone has characters other than digits and punctuation")
    try:
        number = phonenumbers.parse(text, _REGION)
    except phonenumbers.NumberParseException:
        raise InvalidInput("phone", "phone could not be parsed") from None
    if (
        number.country_code != _COUNTRY_CODE
        or number.extension
        or not phonenumbers.is_valid_number_for_region(number, _REGION)
    ):
        raise InvalidInput("phone", "phone is not a valid Brazilian number")
    national = str(number.national_number)
    return BrPhone(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        national=national,
        ddd=national[:2],
        is_mobile=phonenumbers.number_type(number) in _MOBILE_TYPES,
    )


def _storage_round(digits: str) -> str:
    try:
        return parse_br_phone(digits).national
    except InvalidInput:
        pass
    if len(digits) > _MAX_NATIONAL_LENGTH and digits.startswith(_COUNTRY_PREFIX):
        return digits[len(_COUNTRY_PREFIX) :]
    return digits


def storage_digits(raw: str) -> str:
    """Return the digits-only lookup form of a phone, without the ``55`` country code.

    Valid numbers give their national digits (``+55 11 98765-4321`` -> ``11987654321``). Invalid
    ones still get a best-effort key, so lookups of legacy rows keep working: non-digits are
    dropped and a leading ``55`` is stripped while the string is longer than 11 digits. The
    result is a fixed point, so ``storage_digits(storage_digits(x)) == storage_digits(x)``.

    Args:
        raw: Any text.

    Returns:
        A digit string, possibly empty. Never raises.
    """
    current = only_digits(raw)
    for _ in range(_MAX_STORAGE_ROUNDS):
        following = _storage_round(current)
        if following == current:
            break
        current = following
    return current


def diretrix_form(phone: BrPhone) -> str:
    """Return the form Diretrix's phone lookup expects: national digits, no ``+55``.

    Args:
        phone: A parsed phone.

    Returns:
        The national digits (``11987654321``).
    """
    return phone.national


def format_br_phone(national: str) -> str:
    """Format a Brazilian number for display: ``(DD) 9XXXX-XXXX`` or ``(DD) XXXX-XXXX``.

    Args:
        national: National digits (any formatting, an optional leading ``55`` is tolerated).

    Returns:
        The display form for 10- and 11-digit numbers; other inputs come back as their
        :func:`storage_digits` unchanged, since display must never fail.
    """
    digits = storage_digits(national)
    if len(digits) == _MAX_NATIONAL_LENGTH:
        return f"({digits[:2]}) {digits[2:7]}-{digits[7:]}"
    if len(digits) == _MAX_NATIONAL_LENGTH - 1:
        return f"({digits[:2]}) {digits[2:6]}-{digits[6:]}"
    return digits
