"""Shared-secret request authentication: HMAC body signatures and plain tokens, no I/O.

Signature scheme (the ``X-C2S-Signature`` header of the C2S webhook; reusable for any signed
HTTP exchange)::

    X-C2S-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>

* The timestamp is part of the signed bytes, so a captured request cannot be replayed outside the
  tolerance window (``|now - t| <= tolerance_s``, both directions, for clock skew).
* Several ``v1=`` entries may be sent (a sender signing with two secrets during a rotation,
  :func:`sign_with`, as the bulk-job callbacks do); one match is enough. Unknown schemes
  (``v0=``, ``v2=``...) are ignored.
* A receiver holds one or more secrets (current first, then those being retired); every one of
  them verifies. Every comparison is constant-time and every secret is tried, so the answer time
  says nothing about which secret, or which prefix, matched.

Tokens (the secret itself, sent by senders that cannot sign) are compared through their SHA-256
digests, so neither the content nor the length of a secret leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import Enum
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "MAX_SIGNATURE_HEADER_LENGTH",
    "SIGNATURE_SCHEME",
    "SignatureCheck",
    "compute_signature",
    "parse_secrets",
    "sign",
    "sign_with",
    "token_matches",
    "verify_signature",
]

SIGNATURE_SCHEME: Final = "v1"
# Room for a timestamp and a handful of v1 entries; anything longer is refused unparsed.
MAX_SIGNATURE_HEADER_LENGTH: Final = 1024
_MAX_SIGNATURES: Final = 8
_HEX_DIGEST_LENGTH: Final = 64
_MAX_TIMESTAMP_DIGITS: Final = 12
_HEX: Final = frozenset("0123456789abcdef")


class SignatureCheck(Enum):
    """The outcome of :func:`verify_signature` (safe to log: it names no secret)."""

    VALID = "valid"
    MALFORMED = "malformed"
    STALE = "stale"
    MISMATCH = "mismatch"


def parse_secrets(raw: str) -> tuple[str, ...]:
    """Split a comma-separated secret list (current first, then retiring ones).

    Blank entries are dropped; surrounding whitespace is not part of a secret.
    """
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def compute_signature(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>." + body`` under ``secret``."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The full header value ``t=<timestamp>,v1=<signature>`` for ``body``."""
    return f"t={timestamp},{SIGNATURE_SCHEME}={compute_signature(secret, timestamp, body)}"


def sign_with(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """``t=<timestamp>,v1=<sig under secrets[0]>,v1=<sig under secrets[1]>...``: one ``v1=`` per
    secret, in the given order (Stripe's practice while a secret is rolled: a receiver holding
    either the new or the old secret verifies the same request).

    Raises:
        ValueError: No secret, or more than :func:`verify_signature` reads.
    """
    if not secrets or len(secrets) > _MAX_SIGNATURES:
        raise ValueError(f"sign with 1 to {_MAX_SIGNATURES} secrets")
    signatures = ",".join(
        f"{SIGNATURE_SCHEME}={compute_signature(secret, timestamp, body)}" for secret in secrets
    )
    return f"t={timestamp},{signatures}"


def _parse_header(header: str) -> tuple[int, list[str]] | None:
    """``(timestamp, [v1 signatures])``, or ``None`` when the header is not well formed."""
    if len(header) > MAX_SIGNATURE_HEADER_LENGTH:
        return None
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            return None
        if key == "t":
            digits_ok = value.isascii() and value.isdigit() and len(value) <= _MAX_TIMESTAMP_DIGITS
            if timestamp is not None or not digits_ok:
                return None
            timestamp = int(value)
        elif key == SIGNATURE_SCHEME:
            digest = value.lower()
            if len(digest) != _HEX_DIGEST_LENGTH or not set(digest) <= _HEX:
                return None
            signatures.append(digest)
    if timestamp is None or not signatures or len(signatures) > _MAX_SIGNATURES:
        return None
    return timestamp, signatures


def verify_signature(
    header: str,
    body: bytes,
    secrets: Sequence[str],
    *,
    now: float,
    tolerance_s: float,
) -> SignatureCheck:
    """Check a ``t=...,v1=...`` header against the raw ``body`` and every secret.

    Args:
        header: The header value as received.
        body: The raw request body, byte for byte as received.
        secrets: Every secret currently accepted (an empty sequence verifies nothing).
        now: The current Unix time in seconds.
        tolerance_s: How far the signed timestamp may be from ``now``, in either direction.

    Returns:
        ``VALID`` when one signature matches one secret within the window; otherwise why not.
    """
    parsed = _parse_header(header)
    if parsed is None:
        return SignatureCheck.MALFORMED
    timestamp, presented = parsed
    if abs(now - timestamp) > tolerance_s:
        return SignatureCheck.STALE
    matched = False
    for secret in secrets:
        expected = compute_signature(secret, timestamp, body).encode()
        for candidate in presented:
            # No short-circuit: every pair is compared, whatever matched before.
            matched |= hmac.compare_digest(expected, candidate.encode())
    return SignatureCheck.VALID if matched else SignatureCheck.MISMATCH


def token_matches(presented: str, secrets: Sequence[str]) -> bool:
    """Whether ``presented`` equals one of ``secrets``, in time independent of both."""
    digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(digest, hashlib.sha256(secret.encode()).digest())
    return matched
