"""Opaque page cursors: a keyset position (a msgspec struct) as URL-safe base64 of its JSON.

The audit search, the customer search and the job listing page with them; each says which
struct its cursor holds and checks what the struct's types cannot (a time with its offset, the
search a cursor belongs to).
"""

from __future__ import annotations

import base64
import binascii
from typing import TypeVar

import msgspec

from domain.errors import InvalidInput

__all__ = ["decode_position", "encode_position"]

T = TypeVar("T")


def encode_position(position: msgspec.Struct) -> str:
    """The opaque, URL-safe text of ``position``."""
    return base64.urlsafe_b64encode(msgspec.json.encode(position)).decode().rstrip("=")


def decode_position(text: str, type_: type[T], *, detail: str) -> T:
    """The ``type_`` made by :func:`encode_position`.

    Raises:
        InvalidInput: ``text`` is not such a cursor (field ``cursor``, ``detail``).
    """
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return msgspec.json.decode(raw, type=type_)
    except (binascii.Error, ValueError, msgspec.MsgspecError):
        raise InvalidInput("cursor", detail) from None
