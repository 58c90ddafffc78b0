"""Masking of personal data for logs, span attributes and anything else an operator reads.

Two layers, used together:

* :func:`mask_pii` is the deliberate one: code that *knows* it holds a CPF, a phone, an e-mail,
  a name or a key masks it before putting it in a log field or a span attribute.
* :func:`scrub_text` is the last line of defence: a single regex pass that rewrites anything
  *looking like* a CPF, a Brazilian phone, an e-mail, a bearer token or a ``token=`` query
  parameter. The structlog processor and the span exporter run it over every string value.

The masks never re-match the patterns (``scrub_text(scrub_text(x)) == scrub_text(x)``) and keep
just enough (last two digits, first letter, top-level domain) to tell two values apart in an
incident without identifying anybody (LGPD art. 6, data minimisation).
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["PiiKind", "mask_pii", "scrub_text"]

PiiKind = Literal["cpf", "phone", "email", "name", "api_key", "secret"]

_STAR = "*"


def _mask_digits(digits: str, keep: int = 2) -> str:
    """Stars for every digit but the last ``keep``."""
    if len(digits) <= keep:
        return _STAR * len(digits)
    return _STAR * (len(digits) - keep) + digits[-keep:]


def _mask_cpf(value: str) -> str:
    digits = "".join(ch for ch in value if ch.isdigit())
    if len(digits) != 11:
        return _mask_digits(digits) if digits else "***"
    # Only the two check digits stay: they are derived from the other nine, so they say little.
    return f"***.***.***-{digits[-2:]}"


def _mask_email(value: str) -> str:
    local, sep, domain = value.rpartition("@")
    if not sep or not local or not domain:
        return "***"
    host, dot, tld = domain.rpartition(".")
    if not dot:
        return f"{local[0]}***@***"
    return f"{local[0]}***@{host[:1]}***.{tld}"


def _mask_name(value: str) -> str:
    # Initials only: "Maria da Silva" -> "M*** d*** S***".
    parts = value.split()
    return " ".join(f"{part[0]}***" for part in parts) if parts else "***"


def _mask_key(value: str) -> str:
    # Keys are long random strings; the last four characters tell two keys apart in a log, like
    # card numbers on a receipt, and carry too little entropy to help an attacker.
    return "****" + value[-4:] if len(value) >= 16 else "****"


def mask_pii(value: str | None, kind: PiiKind) -> str:
    """Mask ``value`` of a known ``kind`` for a log field or a span attribute.

    Args:
        value: The raw value (``None`` and empty strings give ``""``).
        kind: What the value is: ``cpf`` keeps the two check digits (``***.***.***-25``),
            ``phone`` keeps the last two digits (``*********21``), ``email`` keeps the first
            letters and the top-level domain (``m***@d***.com``), ``name`` keeps initials
            (``M*** S***``), ``api_key`` keeps the last four characters of keys of 16+
            characters, ``secret`` keeps nothing.

    Returns:
        The masked text; it never matches :func:`scrub_text`'s patterns again.
    """
    if not value:
        return ""
    if kind == "cpf":
        return _mask_cpf(value)
    if kind == "phone":
        digits = "".join(ch for ch in value if ch.isdigit())
        return _mask_digits(digits) if digits else "***"
    if kind == "email":
        return _mask_email(value)
    if kind == "name":
        return _mask_name(value)
    if kind == "api_key":
        return _mask_key(value)
    return "***"


# One alternation, one pass. Order matters: the earlier alternatives win at a position, so
# credentials and e-mails (which may contain digit runs) are matched before bare numbers, and
# UUIDs and hex ids of 16+ characters (trace, span and request ids: a random 32-hex id holds a
# run of 10+ decimal digits surprisingly often) are matched and kept as they are.
_CREDENTIALS_AND_EMAILS = r"""
    (?P<bearer>\b[Bb]earer\s+[A-Za-z0-9._~+/=-]{4,})
    | (?P<kv>(?i:\b[a-z_-]*(?:token|api[_-]?key|apikey|secret|password|passwd|senha))=)
        (?P<kv_value>[^&\s"'<>;,]+)
    | (?P<email>[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]++
        @(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63})
"""
_NUMBERS = r"""
    (?P<hexid>(?<![0-9A-Za-z])
        (?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}
          | (?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{16,})
        (?![0-9A-Za-z]))
    | (?P<cpf>(?<!\d)\d{3}\.\d{3}\.\d{3}[-.\s/]?\d{2}(?!\d))
    | (?P<phone>(?<![\d+])
        (?:\+?55[\s.-]?)?\(?\d{2}\)?[\s.-]?9?\d{4}[\s.-]?\d{4}(?!\d))
    | (?P<mobile>(?<!\d)9\d{4}-\d{4}(?!\d))
    | (?P<digits>(?<!\d)\d{10,13}(?!\d))
"""
_PATTERN = re.compile(_CREDENTIALS_AND_EMAILS + "|" + _NUMBERS, re.VERBOSE)
# Text without '@', '=' or "earer" can only hold numbers, and every number shape above has two
# digits in a row: most log values (event names, levels, routes like "/api/v1/customers/{id}")
# are then answered by two substring tests and one tiny regex. Measured: such a route took 13 us
# through the whole alternation, which tries every alternative at every position.
_NUMBERS_PATTERN = re.compile(_NUMBERS, re.VERBOSE)
_TWO_DIGITS = re.compile(r"\d\d")


def _replace(match: re.Match[str]) -> str:
    kind = match.lastgroup
    text = match.group(0)
    if kind == "bearer":
        return "Bearer ***"
    if kind == "kv_value":
        return match.group("kv") + "***"
    if kind == "hexid":
        return text
    if kind == "email":
        # '/' is legal in a local part, so in a URL the match starts at the port
        # ("127.0.0.1:8099/Email/ana@x.com"): keep the path, mask what follows its last '/'.
        path, slash, address = text.rpartition("/")
        if slash and not address.startswith("@"):
            return f"{path}{slash}{_mask_email(address)}"
        return _mask_email(text)
    if kind == "cpf":
        return _mask_cpf(text)
    # phones and bare digit runs (a bare 11-digit run may be a CPF or a mobile: mask both alike)
    return _mask_digits("".join(ch for ch in text if ch.isdigit()))


def scrub_text(text: str) -> str:
    """Rewrite anything in ``text`` that looks like personal data or a credential.

    Matches formatted and bare CPFs, Brazilian phone numbers (with or without ``+55``, area code
    in parentheses, 9-digit mobiles), e-mail addresses, ``Bearer <token>`` and
    ``token=``/``api_key=``/``password=``-style parameters; any other run of 10-13 digits is
    masked too (it could be a CPF or a phone written without separators).

    Args:
        text: Any string.

    Returns:
        ``text`` with each match replaced by its mask; the same object when nothing matched.
    """
    if "@" in text or "=" in text or "earer" in text:
        return _PATTERN.sub(_replace, text)
    if _TWO_DIGITS.search(text) is None:
        return text
    return _NUMBERS_PATTERN.sub(_replace, text)
