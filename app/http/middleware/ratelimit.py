"""Rate-limit middleware: per client IP, per API key and global, with IETF draft headers.

Runs after routing (route ``opt`` decides). The decision comes from the process's local view of
the shared counters, with no Redis round trip in steady state (ADR 0009), and an admitted
request can have the route's cached body read for it (:class:`domain.ports.HotRead`; route
``opt["read_ahead"]``: a :data:`ReadAheadFn` naming the dossier-cache key to read, or ``None``).
The entry read is handed to the handler as a typed :class:`domain.admission.Prefetched` under
the request-state key :data:`PREFETCHED` (read it with :func:`prefetched_of`). Responses carry
``RateLimit-Policy`` and ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers) and
``X-RateLimit-Limit/Remaining/Reset`` (Reset is seconds until the window resets, like the
draft's ``t``); a 429 is problem+json with ``Retry-After``.

A route whose work grows with its body declares ``opt["rate_limit_cost"]``: a function of the
body returning how many units of the per-key limits the request takes (``POST /enrich/batch``:
one per item). The body is then read here, once, bounded by ``MAX_BODY_BYTES``, and replayed to
the handler.

:class:`AuthFailureGuard` limits failed authentications per client IP (``AUTH_FAILURE_LIMIT``):
the API-key middleware asks it before any database work and tells it of every failure.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from litestar.enums import ScopeType

from app.http.problems import send_problem
from domain.admission import Prefetched
from observability.metrics import record_rate_limit

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from app.bootstrap import Services, ServicesHandle
    from domain.admission import Decision, Tier
    from infra.ratelimit import RateLimiter

__all__ = [
    "AUTH_FAILURE_POLICY",
    "PREFETCHED",
    "AuthFailureGuard",
    "ClientAddress",
    "RateLimitMiddleware",
    "ReadAheadFn",
    "format_headers",
    "prefetched_of",
    "send_429",
]

ReadAheadFn = Callable[["Scope", "Services"], "str | None"]
"""Route ``opt["read_ahead"]``: the dossier-cache key the handler will read, or ``None``."""
CostFn = Callable[[bytes], int]

PREFETCHED: Final = "prefetched"
"""Request-state key (``scope["state"]``) of the :class:`Prefetched` entry read during admission."""


def prefetched_of(scope: Scope) -> Prefetched | None:
    """The cache entry the rate limiter read for this request, if it read one."""
    value = scope.get("state", {}).get(PREFETCHED)
    return value if isinstance(value, Prefetched) else None


AUTH_FAILURE_POLICY: Final = "auth_failure"
"""``policy`` label of the failed-authentication limit in ``rate_limit_decisions_total``."""


class ClientAddress:
    """The client's IP address as far as trusted proxies vouch for it.

    * The peer is not a trusted proxy: the peer.
    * The peer is a trusted proxy and sent ``Fly-Client-IP``: that address (Fly's edge sets it).
    * Else ``X-Forwarded-For`` read from the right, each proxy appending the address it was
      reached from: the right-most entry that is not itself a trusted proxy. Entries to its left
      were written by the client and prove nothing. When every entry is a trusted proxy, the
      left-most of them; an unparsable entry ends the walk (nothing left of it is believed).
    """

    __slots__ = ("_networks", "_peers")

    _MAX_PEERS = 4096  # peers remembered as trusted or not (a proxy fleet is a handful)

    def __init__(self, trusted: tuple[str, ...]) -> None:
        self._networks = [ipaddress.ip_network(cidr, strict=False) for cidr in trusted]
        self._peers: dict[str, bool] = {}

    def _trusted(self, peer: str) -> bool:
        # Parsing an address costs more than the rest of this class: remember the answer per
        # peer (bounded; emptied when full, the peers of a deployment are few).
        known = self._peers.get(peer)
        if known is not None:
            return known
        try:
            trusted = self._trusted_address(ipaddress.ip_address(peer))
        except ValueError:
            trusted = False
        if len(self._peers) >= self._MAX_PEERS:
            self._peers.clear()
        self._peers[peer] = trusted
        return trusted

    def _trusted_address(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in self._networks)

    def of(self, scope: Scope) -> str:
        """Return the client address for ``scope``."""
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        if not self._networks or not self._trusted(peer):
            return peer
        forwarded: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"fly-client-ip":
                fly = _address(value)
                if fly is not None:
                    return fly
            elif name == b"x-forwarded-for":
                forwarded.append(value)
        if not forwarded:
            return peer
        # Several X-Forwarded-For lines are one list, in order (RFC 9110, 5.3).
        hops = b",".join(forwarded).split(b",")
        chosen = peer
        for hop in reversed(hops):
            text = hop.strip()
            if not text:
                continue
            try:
                address = ipaddress.ip_address(text.decode("latin-1"))
            except ValueError:
                break
            chosen = str(address)
            if not self._trusted_address(address):
                break
        return chosen


def _address(value: bytes) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip().decode("latin-1")))
    except ValueError:
        return None


def _digest(value: str, salt: bytes) -> str:
    return hashlib.blake2b(value.encode(), key=salt[:64], digest_size=12).hexdigest()


class AuthFailureGuard:
    """Counts failed authentications per client IP and refuses a client past its quota.

    The count is shared through Redis (the ``auth`` tier of a :class:`infra.ratelimit.RateLimiter`,
    checked exactly, one round trip per failure; per process while Redis is down). Only failures
    touch it: a request with a valid, cached key never does. Once the shared count refuses a
    client, this process remembers the block until the window lets it in again, so a blocked
    client costs a dictionary look-up per request: no
    Redis, no PostgreSQL. Another process learns of the block at its first failure from that
    client, so a flood costs at most the quota plus one key look-up per process and window.

    Args:
        limiter: A limiter whose ``auth`` tier holds ``AUTH_FAILURE_LIMIT``.
        client_address: How the client's address is read.
        salt: Key of the identity digest (no raw IP in Redis).
        max_entries: Blocked clients remembered at most (oldest forgotten first).
    """

    __slots__ = ("_blocked", "_client_address", "_limiter", "_max_entries", "_salt")

    def __init__(
        self,
        limiter: RateLimiter,
        client_address: ClientAddress,
        salt: bytes,
        *,
        max_entries: int = 10_000,
    ) -> None:
        self._limiter = limiter
        self._client_address = client_address
        self._salt = salt
        self._max_entries = max(1, max_entries)
        # identity -> monotonic deadline; insertion order = age.
        self._blocked: OrderedDict[str, float] = OrderedDict()

    def identity(self, scope: Scope) -> str:
        """The client's identity (a keyed digest of its address)."""
        return _digest(self._client_address.of(scope), self._salt)

    def blocked(self, identity: str) -> bool:
        """Whether ``identity`` is refused on this process now. No I/O, nothing recorded."""
        deadline = self._blocked.get(identity)
        return deadline is not None and deadline > time.monotonic()

    def blocked_for(self, identity: str) -> int:
        """Seconds ``identity`` stays refused on this process (0: not blocked), counted as a
        refusal in ``rate_limit_decisions_total``. No I/O."""
        deadline = self._blocked.get(identity)
        if deadline is None:
            return 0
        left = deadline - time.monotonic()
        if left <= 0:
            del self._blocked[identity]
            return 0
        record_rate_limit(AUTH_FAILURE_POLICY, allowed=False)
        return max(1, math.ceil(left))

    async def failed(self, identity: str) -> int:
        """Count one failed authentication; the ``Retry-After`` when it is over the quota, else 0.

        Never raises for a storage failure (the limiter falls back to per-process counts).
        """
        decision = await self._limiter.check({"auth": identity})
        if decision.allowed:
            return 0
        retry = max(1, decision.retry_after_s)
        self._blocked[identity] = time.monotonic() + retry
        self._blocked.move_to_end(identity)
        while len(self._blocked) > self._max_entries:
            self._blocked.popitem(last=False)
        return retry


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
    """ASGI middleware (route level) enforcing the tiers of :class:`infra.ratelimit.RateLimiter`
    through the :class:`domain.ports.HotRead` port.

    Built with ``DefineMiddleware(RateLimitMiddleware, services=handle)`` (ADR 0008).
    """

    __slots__ = ("_handle", "app")

    def __init__(self, app: ASGIApp, *, services: ServicesHandle) -> None:
        self.app = app
        self._handle = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = scope.get("route_handler")
        opt: dict[str, Any] = handler.opt if handler is not None else {}
        if scope["type"] != ScopeType.HTTP or opt.get("exclude_from_rate_limit"):
            await self.app(scope, receive, send)
            return
        services = self._handle.services
        identities: dict[Tier, str] = {
            "ip": _digest(services.client_address.of(scope), services.identity_salt),
            "global": "all",
        }
        key_id = scope.get("state", {}).get("api_key_id")
        if key_id:
            identities["key"] = key_id
        costs: dict[Tier, int] | None = None
        cost_of: CostFn | None = opt.get("rate_limit_cost")
        if cost_of is not None and key_id:
            body = await _read_body(scope, receive, send, services.settings.max_body_bytes)
            if body is None:
                return
            costs = {"key": cost_of(body)}
            receive = _replay(body, receive)
        read_ahead: ReadAheadFn | None = opt.get("read_ahead")
        admission = await services.hot_read.admit(
            identities,
            read_ahead=read_ahead(scope, services) if read_ahead is not None else None,
            costs=costs,
        )
        decision = admission.decision
        headers = format_headers(services.rate_limiter, decision)
        if not decision.allowed:
            await send_429(scope, send, decision.retry_after_s, headers)
            return
        if admission.prefetched is not None:
            scope.setdefault("state", {})[PREFETCHED] = admission.prefetched

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _read_body(scope: Scope, receive: Receive, send: Send, limit: int) -> bytes | None:
    """The whole request body, or ``None`` once answered (413) or the client went away."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            await send_problem(scope, send, 413, "Request body too large")
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` once, then defers to the client's."""
    delivered = False

    async def replay() -> Any:  # Any: an ASGI receive event
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def send_429(
    scope: Scope,
    send: Send,
    retry_after: int,
    headers: list[tuple[bytes, bytes]] | None = None,
    detail: str | None = None,
) -> None:
    """Answer 429 problem+json with ``Retry-After`` (and the rate-limit ``headers``)."""
    text = detail or f"Rate limit exceeded; retry in {retry_after} s"
    await send_problem(scope, send, 429, text, retry_after=retry_after, headers=headers or ())
