"""Encryption of Redis values that hold answers with personal data (AES-256-GCM).

Idempotency records and lead replays keep whole API answers (CPFs, e-mails, phones) for up to a
day; anyone who can read Redis (a replica, a backup, ``MONITOR``) would otherwise read them too.

:class:`AeadEnvelope` stores ``<kid>.<12-byte nonce><ciphertext and 16-byte tag>``. The Redis key
name is the associated data, so a value copied under another key (another tenant's, say) does not
open. Keys are derived with HKDF-SHA256 from the rotating ``CACHE_HMAC_KEYS`` secrets, one AES key
per key id and purpose: the first key id seals, every listed one opens, so the HMAC rotation
procedure rotates these keys too. A value that does not open (tampered, or sealed under a key id
no longer listed) reads as absent.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["AeadEnvelope"]

_NONCE_BYTES = 12
_INFO = b"c2s-api/redis-aead/v1/"


def _derive(secret: bytes, purpose: str) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO + purpose.encode())
    return AESGCM(key.derive(secret))


class AeadEnvelope:
    """Seal and open Redis values with AES-256-GCM bound to their key name.

    Args:
        keys: ``[(kid, secret), ...]``, the sealing key first (``CACHE_HMAC_KEYS``).
        purpose: Separates the derived keys of different uses (``idempotency``, ``lead_replay``).
    """

    __slots__ = ("_aeads", "_current")

    def __init__(self, keys: Sequence[tuple[str, bytes]], *, purpose: str) -> None:
        if not keys:
            raise ValueError("at least one key is required")
        self._aeads = {kid.encode(): _derive(secret, purpose) for kid, secret in keys}
        self._current = keys[0][0].encode()

    def seal(self, name: str, payload: bytes) -> bytes:
        """Encrypt ``payload`` for storage under the Redis key ``name``."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aeads[self._current].encrypt(nonce, payload, name.encode())
        return b"".join((self._current, b".", nonce, sealed))

    def open(self, name: str, sealed: bytes) -> bytes | None:
        """The payload, or ``None`` when ``sealed`` does not verify under ``name``."""
        kid, sep, rest = sealed.partition(b".")
        aead = self._aeads.get(kid)
        if not sep or aead is None or len(rest) <= _NONCE_BYTES:
            return None
        try:
            return aead.decrypt(rest[:_NONCE_BYTES], rest[_NONCE_BYTES:], name.encode())
        except InvalidTag:
            return None
