"""E-mail validation and normalisation (``docs/contract.md`` §6.3).

:func:`is_valid_email` applies the contract's rule exactly: at least 5 characters, an ``@`` and a
``.`` somewhere, none of the fake-lead digit runs lead forms produce (``1199999999333@gmail.com``),
and a simplified RFC 5322 pattern. Consecutive dots in the local part are tolerated, because
real mailboxes created before providers enforced the RFC still use them.
"""

from __future__ import annotations

import re

from domain.errors import InvalidInput

__all__ = ["FAKE_EMAIL_PATTERNS", "is_valid_email", "normalize_email", "parse_email"]

FAKE_EMAIL_PATTERNS: tuple[str, ...] = ("999999", "111111", "000000", "123456789")

_MIN_LENGTH = 5
# ASCII classes are spelled out: Python's \w would admit any Unicode letter.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@" + _LABEL + r"(?:\." + _LABEL + r")*",
)


def is_valid_email(raw: str) -> bool:
    """Tell whether ``raw`` is an acceptable e-mail address. Never raises.

    The check runs on the value as given; call :func:`normalize_email` first to ignore
    surrounding spaces and case (:func:`parse_email` does both).

    Args:
        raw: Any text.

    Returns:
        True for addresses like ``a@b.c``; False for ``a@b``, anything with spaces, and
        addresses containing a fake-lead pattern.
    """
    if len(raw) < _MIN_LENGTH or "@" not in raw or "." not in raw:
        return False
    if any(pattern in raw for pattern in FAKE_EMAIL_PATTERNS):
        return False
    return _EMAIL.fullmatch(raw) is not None


def normalize_email(raw: str) -> str:
    """Return the storage and lookup form of an address: trimmed and lower-cased.

    Args:
        raw: Any text.

    Returns:
        ``raw`` without surrounding whitespace, in lower case.
    """
    return raw.strip().lower()


def parse_email(raw: str) -> str:
    """Normalise and validate an e-mail address.

    Args:
        raw: The address as received.

    Returns:
        The normalised address.

    Raises:
        InvalidInput: ``field="email"`` when the normalised address is not valid.
    """
    email = normalize_email(raw)
    if not is_valid_email(email):
        raise InvalidInput("email", "email is not a valid address")
    return email
