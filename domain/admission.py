"""Admission of a request against its rate limits, and what the hot path read with it.

Value types of the :class:`domain.ports.HotRead` port (ADRs 0005, 0009): the limiter's decision
for one request and, when the route asked for it, the cache entry read with it.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["Admission", "Decision", "LimitState", "Prefetched", "Tier"]

Tier = Literal["ip", "key", "global", "auth"]
"""A rate-limit tier: client address, API key, global ceiling, failed authentications."""


class LimitState(msgspec.Struct, frozen=True, kw_only=True):
    """One limit's state after a request."""

    tier: Tier
    quota: int
    window_s: float
    remaining: int
    reset_s: float
    refused: bool = False


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """The limiter's answer for one request.

    Attributes:
        allowed: Serve it.
        states: Every limit that applied, in policy order.
        tightest: The limit with the least room left (drives the response headers).
        retry_after_s: When refused, seconds before a retry can succeed.
        degraded: Decided by the per-process fallback (the shared store is unavailable).
    """

    allowed: bool
    states: list[LimitState]
    tightest: LimitState | None
    retry_after_s: int = 0
    degraded: bool = False


class Prefetched(msgspec.Struct, frozen=True, kw_only=True):
    """A dossier-cache entry read during admission, already verified.

    Attributes:
        key: The cache key that was read (``cpf:<cpf>``).
        body: The verified cached body; ``None`` when the cache held nothing usable (a miss,
            or an entry that failed its integrity check). Either way the cache was read: the
            reader must not read it again.
    """

    key: str
    body: bytes | None


class Admission(msgspec.Struct, frozen=True, kw_only=True):
    """The result of :meth:`domain.ports.HotRead.admit`.

    Attributes:
        decision: The rate-limit decision (and the headers' figures).
        prefetched: The entry read with the admission; ``None`` when none was asked for, the
            request was refused, or the decision was taken without the shared store (then
            nothing was read and the reader looks the cache up itself).
    """

    decision: Decision
    prefetched: Prefetched | None = None
