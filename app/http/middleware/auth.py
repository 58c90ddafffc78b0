"""API-key authentication (raw ASGI, route level) and a guard for scopes.

Every route needs a key unless its ``opt`` says ``exclude_from_auth`` (health, readiness,
documents, metrics, webhooks: they carry their own token). The key comes in
``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` and is checked against the SHA-256
digests in ``core.api_keys`` (ADR 0006):

* missing key: 401 with ``WWW-Authenticate: Bearer``; unknown, revoked or expired key: 401 with
  one and the same body (which of the three is not revealed);
* key without the route's scope (``opt["scope"]``, else ``read`` for GET and ``enrich`` for
  anything else): 403;
* PostgreSQL unreachable while the key is not cached: 503 with ``Retry-After`` (never 500);
* a client (IP) past ``AUTH_FAILURE_LIMIT`` failed authentications: 429 with ``Retry-After``,
  decided before any database work (:class:`~app.http.middleware.ratelimit.AuthFailureGuard`).
  A key found in the positive cache skips the check, so the hot path never touches the counter.

Verification runs against a per-process cache keyed by the digest, positive and negative entries
alike, with a TTL of ``API_KEY_CACHE_TTL_S`` (default 2 s, at most 5 s): a cached lookup costs no
round trip (each one costs 100-200 us of client CPU), and a revocation is effective everywhere
within the TTL because every worker's entry expires by then.

On success the middleware stores ``api_key_id`` (the key's id, never the key), ``tenant`` and
``scopes`` in ``scope["state"]`` for the rate limiter and the handlers, and sets
:data:`domain.tenancy.current_tenant` for the storage layer.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO

import structlog
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException

from app.http.middleware.ratelimit import send_429
from app.http.middleware.request_id import request_id_of
from app.http.problems import (
    PROBLEM_MEDIA_TYPE,
    Problem,
    encode_problem,
    problem_instance,
    problem_type,
)
from domain.errors import DependencyUnavailable
from domain.keys import (
    ApiKey,
    digest_key,
    grants,
    key_prefix_of,
    key_status,
    new_api_key,
    required_scope,
)
from domain.tenancy import current_tenant
from infra.db.keys import PgApiKeyStore
from observability.tracing import current_trace_id

if TYPE_CHECKING:
    from collections.abc import Callable
    from uuid import UUID

    import asyncpg
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler
    from litestar.types import ASGIApp, Guard, Receive, Scope, Send

    from app.http.middleware.ratelimit import AuthFailureGuard

__all__ = [
    "DEFAULT_CACHE_TTL_S",
    "MAX_CACHE_TTL_S",
    "AuthMiddleware",
    "AuthServices",
    "AuthServicesHandle",
    "KeyLookup",
    "KeyVerifier",
    "LookupDeclined",
    "Principal",
    "ensure_dev_key",
    "require_scope",
]

log = structlog.get_logger(__name__)

DEFAULT_CACHE_TTL_S: Final = 2.0
# The revocation promise: a revoked key stops working within 5 s on every worker.
MAX_CACHE_TTL_S: Final = 5.0
# Bounded per kind, so a flood of random keys (negative entries) cannot evict the valid ones.
DEFAULT_MAX_ENTRIES: Final = 10_000
# Key lookups in flight per process: every random key is a cache miss, so a flood of them would
# otherwise take every pooled connection from the requests that carry data.
DEFAULT_MAX_CONCURRENT_LOOKUPS: Final = 4
TOUCH_INTERVAL_S: Final = 60.0
RETRY_AFTER_S: Final = 1

_AUTHORIZATION: Final = b"authorization"
_X_API_KEY: Final = b"x-api-key"
_MISSING_DETAIL: Final = "Missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
_INVALID_DETAIL: Final = "Invalid API key"
_WWW_AUTHENTICATE_MISSING: Final = b'Bearer realm="c2s-api"'
_WWW_AUTHENTICATE_INVALID: Final = b'Bearer realm="c2s-api", error="invalid_token"'


class KeyLookup(Protocol):
    """What the verifier needs from a key store (:class:`infra.db.keys.PgApiKeyStore`)."""

    async def find_by_hash(self, digest: bytes) -> ApiKey | None:
        """The key with this digest, whatever its state, or ``None``."""
        ...

    async def touch(self, key_id: UUID) -> None:
        """Record a use of the key."""
        ...


class LookupDeclined(Exception):
    """The verifier's ``admit`` check declined a store look-up (the client got blocked)."""


class _Declined:
    """Marker: a look-up declined by its ``admit`` check."""


_DECLINED: Final = _Declined()


class Principal:
    """A verified key, as the request path needs it (precomputed once per cache fill).

    Attributes:
        key_id: The key's UUID.
        key_id_text: The same as text (the rate-limit identity, ``scope["state"]["api_key_id"]``).
        tenant: The tenant the key acts for.
        scopes: Granted scopes.
        usable_until: Epoch seconds of the key's expiry (``inf`` when it has none).
    """

    __slots__ = ("key_id", "key_id_text", "scopes", "tenant", "usable_until")

    def __init__(self, key: ApiKey) -> None:
        self.key_id = key.id
        self.key_id_text = str(key.id)
        self.tenant = key.tenant
        self.scopes: tuple[str, ...] = key.scopes
        self.usable_until = key.expires_at.timestamp() if key.expires_at else math.inf


class KeyVerifier:
    """Checks key digests against a store through a short per-process cache.

    Args:
        store: Where keys are looked up (and their use recorded).
        ttl_s: Lifetime of a cache entry; clamped to (0, 5] seconds.
        max_entries: Capacity of the positive and of the negative cache, each.
        max_concurrent_lookups: Store lookups in flight at most (the rest wait their turn).
    """

    __slots__ = (
        "_inflight",
        "_lookups",
        "_max_entries",
        "_negative",
        "_positive",
        "_tasks",
        "_touched",
        "store",
        "ttl_s",
    )

    def __init__(
        self,
        store: KeyLookup,
        *,
        ttl_s: float = DEFAULT_CACHE_TTL_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_concurrent_lookups: int = DEFAULT_MAX_CONCURRENT_LOOKUPS,
    ) -> None:
        self.store = store
        self._lookups = asyncio.Semaphore(max(1, max_concurrent_lookups))
        self.ttl_s = min(max(ttl_s, 0.001), MAX_CACHE_TTL_S)
        self._max_entries = max(1, max_entries)
        # digest -> (monotonic deadline, principal); insertion order = age, oldest evicted first.
        self._positive: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()
        self._negative: OrderedDict[bytes, float] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Task[Principal | _Declined | None]] = {}
        self._touched: dict[UUID, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def cached_entries(self) -> int:
        """How many digests are cached (positive and negative)."""
        return len(self._positive) + len(self._negative)

    def cached(self, digest: bytes) -> Principal | None:
        """The principal of a usable key found in the positive cache, else ``None`` (no I/O)."""
        hit = self._positive.get(digest)
        if hit is None or hit[0] <= time.monotonic():
            return None
        principal = hit[1]
        return principal if time.time() < principal.usable_until else None

    async def verify(
        self, digest: bytes, admit: Callable[[], bool] | None = None
    ) -> Principal | None:
        """Return the principal of a usable key, or ``None`` (unknown, revoked or expired).

        Args:
            digest: SHA-256 of the presented key.
            admit: Asked when a store look-up gets its turn (look-ups queue, a few at a time);
                false declines it. Requests of a client that got blocked while they queued then
                cost no look-up.

        Raises:
            DependencyUnavailable: The key is not cached and the store cannot answer.
            LookupDeclined: ``admit`` declined the look-up.
        """
        now = time.monotonic()
        hit = self._positive.get(digest)
        if hit is not None and hit[0] > now:
            cached = hit[1]
            # Expiry is checked on every use, so a cached key stops at its expires_at exactly.
            return cached if time.time() < cached.usable_until else None
        deadline = self._negative.get(digest)
        if deadline is not None and deadline > now:
            return None
        task = self._inflight.get(digest)
        if task is None:
            # One lookup per digest at a time: a burst of requests with a key that just left
            # the cache costs one round trip, not one each.
            task = asyncio.get_running_loop().create_task(self._load(digest, admit))
            self._inflight[digest] = task
            task.add_done_callback(lambda _t: self._inflight.pop(digest, None))
        result = await asyncio.shield(task)
        if isinstance(result, _Declined):
            if admit is not None and not admit():
                raise LookupDeclined
            # Declined for another request sharing the look-up: look it up for this one.
            result = await self._load(digest, admit)
            if isinstance(result, _Declined):
                raise LookupDeclined
        if result is not None and time.time() >= result.usable_until:
            return None
        return result

    async def _load(
        self, digest: bytes, admit: Callable[[], bool] | None = None
    ) -> Principal | _Declined | None:
        try:
            async with self._lookups:
                if admit is not None and not admit():
                    return _DECLINED
                key = await self.store.find_by_hash(digest)
        except DependencyUnavailable:
            raise
        except Exception as exc:  # auth fails closed: any store failure is "cannot verify now"
            log.error("api_key_lookup_failed", error_type=type(exc).__name__)
            raise DependencyUnavailable(
                "postgres", "API key store unavailable", retry_after=RETRY_AFTER_S
            ) from exc
        deadline = time.monotonic() + self.ttl_s
        if key is None or key_status(key, datetime.now(UTC)) != "active":
            _put(self._negative, digest, deadline, self._max_entries)
            self._positive.pop(digest, None)
            return None
        principal = Principal(key)
        _put(self._positive, digest, (deadline, principal), self._max_entries)
        self._negative.pop(digest, None)
        return principal

    def forget(self) -> None:
        """Drop every cached entry (tests, or an operator forcing an immediate revocation)."""
        self._positive.clear()
        self._negative.clear()

    def record_use(self, principal: Principal) -> None:
        """Update the key's ``last_used_at`` off the request path, at most once a minute.

        Fire-and-forget: the write runs in a background task whose errors are swallowed, so a
        slow or failing database never delays or fails a request for bookkeeping.
        """
        now = time.monotonic()
        last = self._touched.get(principal.key_id)
        if last is not None and now - last < TOUCH_INTERVAL_S:
            return
        if len(self._touched) >= self._max_entries:
            self._touched.clear()  # worst case one extra (throttled in SQL too) write per key
        self._touched[principal.key_id] = now
        task = asyncio.get_running_loop().create_task(self._touch(principal.key_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _touch(self, key_id: UUID) -> None:
        try:
            await self.store.touch(key_id)
        except Exception as exc:  # bookkeeping only: never surfaces
            log.debug("api_key_touch_failed", error_type=type(exc).__name__)

    async def drain(self) -> None:
        """Wait for pending ``last_used_at`` writes (call before closing the pool)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _put(
    cache: OrderedDict[bytes, Any], digest: bytes, value: Any, limit: int
) -> None:  # Any: either cache's value type
    cache[digest] = value
    cache.move_to_end(digest)
    while len(cache) > limit:
        cache.popitem(last=False)


# --- the middleware ---------------------------------------------------------------------------


class _Malformed:
    """Marker: a credential was sent but cannot be a key (ambiguous or badly encoded)."""


_MALFORMED: Final = _Malformed()


def presented_key(headers: Any) -> str | _Malformed | None:  # Any: ASGI header pairs
    """The key a request presents, ``None`` when it presents none.

    ``Authorization: Bearer <key>`` and ``X-API-Key: <key>`` are both accepted; when both are
    sent they must agree (a request carrying two different keys is refused, not guessed at).
    """
    bearer: str | None = None
    header_key: str | None = None
    for name, value in headers:
        if name == _AUTHORIZATION and bearer is None:
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() == b"bearer":
                bearer = credentials.strip().decode("latin-1")
        elif name == _X_API_KEY and header_key is None:
            header_key = value.strip().decode("latin-1")
    if bearer is not None and header_key is not None and bearer != header_key:
        return _MALFORMED
    key = bearer if bearer is not None else header_key
    return key or None


def _is_openapi_document(scope: Scope) -> bool:
    """Whether the request is for the OpenAPI document, whose router Litestar builds itself
    (no ``opt`` of ours can be put on it through ``OpenAPIConfig(path=...)``)."""
    config = scope["app"].openapi_config
    base = config.path if config is not None else None
    if not base:
        return False
    path = scope["path"]
    return path == base or path.startswith(base + "/")


class AuthServices(Protocol):
    """What the middleware needs of the process's services (:class:`app.bootstrap.Services`)."""

    @property
    def key_verifier(self) -> KeyVerifier:
        """The process's key verifier."""
        ...

    @property
    def auth_failures(self) -> AuthFailureGuard | None:
        """The failed-authentication limit (``None``: none configured)."""
        ...


class AuthServicesHandle(Protocol):
    """Where the running services are found (:class:`app.bootstrap.ServicesHandle`)."""

    @property
    def services(self) -> AuthServices:
        """The services, once the lifespan opened them."""
        ...


class AuthMiddleware:
    """Route-level ASGI middleware enforcing API keys and scopes (see the module docstring).

    Built with ``DefineMiddleware(AuthMiddleware, services=handle)``: the verifier and the
    failure guard are read from the handle the lifespan binds (ADR 0008).
    """

    __slots__ = ("_handle", "app")

    def __init__(self, app: ASGIApp, *, services: AuthServicesHandle) -> None:
        self.app = app
        self._handle = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = scope.get("route_handler")
        opt: dict[str, Any] = handler.opt if handler is not None else {}
        # OPTIONS only answers which methods exist (CORS preflights never carry credentials).
        if (
            scope["type"] != ScopeType.HTTP
            or opt.get("exclude_from_auth")
            or scope["method"] == "OPTIONS"
            or _is_openapi_document(scope)
        ):
            await self.app(scope, receive, send)
            return
        presented = presented_key(scope["headers"])
        services = self._handle.services
        guard = services.auth_failures
        if presented is None:
            await _refuse(scope, send, guard, _MISSING_DETAIL, _WWW_AUTHENTICATE_MISSING)
            return
        if isinstance(presented, _Malformed) or key_prefix_of(presented) is None:
            await _refuse(scope, send, guard, _INVALID_DETAIL, _WWW_AUTHENTICATE_INVALID)
            return
        verifier = services.key_verifier
        try:
            digest = digest_key(presented)
            principal = verifier.cached(digest)
            if principal is None:
                # Not a cached valid key: a client past its failed-authentication quota is
                # refused here, before the key costs a database look-up.
                if guard is None:
                    principal = await verifier.verify(digest)
                else:
                    identity = guard.identity(scope)
                    retry = guard.blocked_for(identity)
                    if not retry:
                        blocked = guard.blocked
                        try:
                            principal = await verifier.verify(digest, lambda: not blocked(identity))
                        except LookupDeclined:
                            retry = max(1, guard.blocked_for(identity))
                    if retry:
                        await send_429(scope, send, retry, detail=_auth_flood_detail(retry))
                        return
        except DependencyUnavailable as exc:
            log.warning("api_key_verification_unavailable", dependency=exc.dependency)
            await _send_problem(
                scope,
                send,
                503,
                f"Dependency unavailable: {exc.dependency}",
                dependency=exc.dependency,
                retry_after=max(1, math.ceil(exc.retry_after)),
            )
            return
        if principal is None:
            await _refuse(scope, send, guard, _INVALID_DETAIL, _WWW_AUTHENTICATE_INVALID)
            return
        needed = required_scope(scope["method"], opt.get("scope"))
        if not grants(principal.scopes, needed):
            await _send_problem(
                scope, send, 403, f"API key lacks the '{needed}' scope for this operation"
            )
            return
        request_state = scope.setdefault("state", {})
        request_state["api_key_id"] = principal.key_id_text
        request_state["tenant"] = principal.tenant
        request_state["scopes"] = principal.scopes
        verifier.record_use(principal)
        token = current_tenant.set(principal.tenant)
        try:
            await self.app(scope, receive, send)
        finally:
            current_tenant.reset(token)


def _auth_flood_detail(retry_after: int) -> str:
    return f"Too many failed authentications from this client; retry in {retry_after} s"


async def _refuse(
    scope: Scope, send: Send, guard: AuthFailureGuard | None, detail: str, www_authenticate: bytes
) -> None:
    """Answer 401, or 429 when this failure puts the client past ``AUTH_FAILURE_LIMIT``."""
    if guard is not None:
        identity = guard.identity(scope)
        retry = guard.blocked_for(identity) or await guard.failed(identity)
        if retry:
            await send_429(scope, send, retry, detail=_auth_flood_detail(retry))
            return
    await _send_problem(scope, send, 401, detail, www_authenticate)


async def _send_problem(
    scope: Scope,
    send: Send,
    status: int,
    detail: str,
    www_authenticate: bytes | None = None,
    *,
    dependency: str | None = None,
    retry_after: int | None = None,
) -> None:
    type_uri, title = problem_type(status)
    body = encode_problem(
        Problem(
            type=type_uri,
            title=title,
            status=status,
            detail=detail,
            error="Service unavailable" if status == 503 else detail,
            # The path may carry a CPF or an e-mail (a mistyped URL): never echo it raw.
            instance=problem_instance(scope),
            request_id=request_id_of(scope),
            trace_id=current_trace_id(),
            dependency=dependency,
            retry_after=retry_after,
        )
    )
    headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if www_authenticate is not None:
        headers.append((b"www-authenticate", www_authenticate))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


# --- guard --------------------------------------------------------------------------------------


def require_scope(needed: str) -> Guard:
    """A Litestar guard demanding ``needed`` of the request's key.

    The middleware already checks ``opt["scope"]``; the guard is for handlers that want the
    requirement visible in their decorator (``guards=[require_scope("admin")]``).

    Args:
        needed: The scope (``read``, ``enrich`` or ``admin``).

    Returns:
        The guard: 401 when the request was not authenticated, 403 without the scope.
    """

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        scopes = connection.scope.get("state", {}).get("scopes")
        if scopes is None:
            raise NotAuthorizedException(_MISSING_DETAIL)
        if not grants(scopes, needed):
            raise PermissionDeniedException(
                f"API key lacks the '{needed}' scope for this operation"
            )

    return guard


# --- development key ----------------------------------------------------------------------------

DEV_KEY_NAME: Final = "development"
DEV_KEY_TENANT: Final = "dev"


async def ensure_dev_key(
    pool: asyncpg.Pool, *, environment: str = "development", out: TextIO | None = None
) -> str | None:
    """Create a development key when no usable key exists, and print it once to stdout.

    For the embedded default (``ENVIRONMENT=development``) only: a new user running
    ``c2s-api serve`` gets a working key without reading the docs. Safe with several workers
    starting together (an advisory lock lets exactly one create it); later starts find the key
    and print nothing. The key is printed, never logged: logs are shipped and kept, stdout of a
    local development run is not.

    Args:
        pool: The process's pool (migrations applied).
        environment: ``settings.environment``; anything but ``development`` does nothing.
        out: Where to print (stdout by default).

    Returns:
        The plaintext key when one was created, else ``None``.

    Raises:
        DependencyUnavailable: PostgreSQL cannot serve now (the caller may log and go on).
    """
    if environment != "development":
        return None
    generated, record = new_api_key(
        name=DEV_KEY_NAME,
        tenant=DEV_KEY_TENANT,
        scopes=("read", "enrich", "admin"),
        now=datetime.now(UTC),
    )
    created = await PgApiKeyStore(pool).create_if_none_active(record)
    if created is None:
        return None
    stream = out if out is not None else sys.stdout
    print(
        "\nDevelopment API key (shown once; tenant 'dev', scopes read,enrich,admin):\n"
        f"  {generated.plaintext}\n"
        "Send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.\n"
        f"Revoke it with: c2s-api keys revoke {created.id}\n",
        file=stream,
        flush=True,
    )
    log.info("dev_api_key_created", key_id=str(created.id), key_prefix=created.key_prefix)
    return generated.plaintext
