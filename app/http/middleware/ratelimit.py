"""Rate-limit middleware: per client IP, per API key and global, with IETF draft headers.

Runs after routing (route ``opt`` decides), in one Redis round trip that can also prefetch the
route's cached body (route ``opt["cache_prefetch"]``: a function of the scope returning the Redis
key to read, or ``""``). Responses carry ``RateLimit-Policy`` and ``RateLimit``
(draft-ietf-httpapi-ratelimit-headers) and ``X-RateLimit-Limit/Remaining/Reset`` (Reset is
seconds until the window resets, like the draft's ``t``); a 429 is problem+json with
``Retry-After``.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import math
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from litestar.enums import ScopeType

from app.http.middleware.request_id import request_id_of
from app.http.problems import (
    PROBLEM_MEDIA_TYPE,
    Problem,
    encode_problem,
    problem_instance,
    problem_type,
)

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from infra.ratelimit import Decision, RateLimiter, Tier

__all__ = ["ClientAddress", "RateLimitMiddleware", "format_headers"]

PrefetchFn = Callable[["Scope"], str]


class ClientAddress:
    """The client's IP: the first proxy hop only when the peer is a trusted proxy."""

    __slots__ = ("_networks",)

    def __init__(self, trusted: tuple[str, ...]) -> None:
        self._networks = [ipaddress.ip_network(cidr, strict=False) for cidr in trusted]

    def _trusted(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self._networks)

    def of(self, scope: Scope) -> str:
        """Return the client address for ``scope``."""
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        if not self._networks or not self._trusted(peer):
            return peer
        forwarded: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"fly-client-ip":
                forwarded = value
                break
            if name == b"x-forwarded-for" and forwarded is None:
                forwarded = value
        if forwarded is None:
            return peer
        first = forwarded.split(b",", 1)[0].strip().decode("latin-1")
        try:
            return str(ipaddress.ip_address(first))
        except ValueError:
            return peer


def _digest(value: str, salt: bytes) -> str:
    return hashlib.blake2b(value.encode(), key=salt[:64], digest_size=12).hexdigest()


@functools.lru_cache(maxsize=64)
def _policy_header(shape: tuple[tuple[str, int, float], ...]) -> tuple[bytes, tuple[str, ...]]:
    """``RateLimit-Policy`` for a set of limits, and each limit's policy name (memoised: the
    configured limits are few and constant, and this runs on every request)."""
    per_tier = Counter(tier for tier, _, _ in shape)
    # Policy names must be unique: a tier with several windows names each one.
    names = tuple(
        tier if per_tier[tier] == 1 else f"{tier}-{math.ceil(window)}s" for tier, _, window in shape
    )
    policy = ", ".join(
        f'"{name}";q={quota};w={math.ceil(window)}'
        for name, (_, quota, window) in zip(names, shape, strict=True)
    )
    return policy.encode(), names


def format_headers(limiter: RateLimiter, decision: Decision) -> list[tuple[bytes, bytes]]:
    """The rate-limit response headers for ``decision``."""
    shape = tuple((s.tier, s.quota, s.window_s) for s in decision.states)
    policy, names = _policy_header(shape)
    headers: list[tuple[bytes, bytes]] = []
    if policy:
        headers.append((b"ratelimit-policy", policy))
    tight = decision.tightest
    if tight is not None:
        reset = math.ceil(tight.reset_s)
        name = names[decision.states.index(tight)]
        headers += [
            (b"ratelimit", f'"{name}";r={tight.remaining};t={reset}'.encode()),
            (b"x-ratelimit-limit", str(tight.quota).encode()),
            (b"x-ratelimit-remaining", str(tight.remaining).encode()),
            (b"x-ratelimit-reset", str(reset).encode()),
        ]
    return headers


class RateLimitMiddleware:
    """ASGI middleware (route level) enforcing the tiers of :class:`infra.ratelimit.RateLimiter`."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = scope.get("route_handler")
        opt: dict[str, Any] = handler.opt if handler is not None else {}
        state = scope["app"].state
        limiter: RateLimiter | None = getattr(state, "rate_limiter", None)
        if scope["type"] != ScopeType.HTTP or opt.get("exclude_from_rate_limit") or limiter is None:
            await self.app(scope, receive, send)
            return
        edge = state.edge
        identities: dict[Tier, str] = {
            "ip": _digest(edge.client_address.of(scope), edge.salt),
            "global": "all",
        }
        key_id = scope.get("state", {}).get("api_key_id")
        if key_id:
            identities["key"] = key_id
        prefetch: PrefetchFn | None = opt.get("cache_prefetch")
        extra_key = prefetch(scope) if prefetch is not None else ""
        decision = await limiter.check(identities, extra_key=extra_key)
        headers = format_headers(limiter, decision)
        if not decision.allowed:
            await _send_429(scope, send, decision.retry_after_s, headers)
            return
        if extra_key and not decision.degraded:
            # Only a real Redis read counts as the cache lookup: in per-process mode nothing was
            # read, and the handler must look the cache up itself (else a hit becomes a paid
            # upstream call).
            scope.setdefault("state", {})["prefetched"] = (extra_key, decision.extra)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _send_429(
    scope: Scope, send: Send, retry_after: int, headers: list[tuple[bytes, bytes]]
) -> None:
    type_uri, title = problem_type(429)
    detail = f"Rate limit exceeded; retry in {retry_after} s"
    body = encode_problem(
        Problem(
            type=type_uri,
            title=title,
            status=429,
            detail=detail,
            error=detail,
            instance=problem_instance(scope),
            request_id=request_id_of(scope),
            retry_after=retry_after,
        )
    )
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
