"""API-key authentication (raw ASGI, route level) and a guard for scopes.

Every route needs a key unless its ``opt`` says ``exclude_from_auth`` (health, readiness,
documents, metrics, webhooks: they carry their own token). The key comes in
``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` and is checked by the process's
:class:`~app.http.auth_verifier.KeyVerifier` (``docs/adr/0006-api-keys.md``):

* missing key: 401 with ``WWW-Authenticate: Bearer``; unknown, revoked or expired key: 401 with
  one and the same body (which of the three is not revealed);
* key without the route's scope (``opt["scope"]``, else ``read`` for GET and ``enrich`` for
  anything else): 403;
* PostgreSQL unreachable while the key is not cached: 503 with ``Retry-After`` (never 500);
* a client (IP) past ``AUTH_FAILURE_LIMIT`` failed authentications: 429 with ``Retry-After``,
  decided before any database work (:class:`~app.http.middleware.ratelimit.AuthFailureGuard`).
  A key found in the positive cache skips the check, so the hot path never touches the counter.

On success the middleware stores ``api_key_id`` (the key's id, never the key), ``tenant`` and
``scopes`` in ``scope["state"]`` for the rate limiter and the handlers, and sets
:data:`domain.tenancy.current_tenant` for the storage layer.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final, Protocol

import structlog
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException

from app.http.auth_verifier import (
    DEFAULT_CACHE_TTL_S,
    MAX_CACHE_TTL_S,
    KeyLookup,
    KeyVerifier,
    LookupDeclined,
    Principal,
)
from app.http.middleware.ratelimit import send_429
from app.http.problems import send_problem
from domain.errors import DependencyUnavailable
from domain.keys import digest_key, grants, key_prefix_of, required_scope
from domain.tenancy import Caller, current_caller, current_tenant

if TYPE_CHECKING:
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
    "require_scope",
]

log = structlog.get_logger(__name__)

_AUTHORIZATION: Final = b"authorization"
_X_API_KEY: Final = b"x-api-key"
_MISSING_DETAIL: Final = "Missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
_INVALID_DETAIL: Final = "Invalid API key"
_WWW_AUTHENTICATE_MISSING: Final = b'Bearer realm="c2s-api"'
_WWW_AUTHENTICATE_INVALID: Final = b'Bearer realm="c2s-api", error="invalid_token"'


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
        caller = Caller(
            tenant=principal.tenant,
            key_id=principal.key_id_text,
            request_id=request_state.get("request_id"),
            paid_quota=principal.paid_quota,
        )
        # Set inline (not caller_scope's generator): this runs on every authenticated request.
        caller_token = current_caller.set(caller)
        tenant_token = current_tenant.set(principal.tenant)
        try:
            await self.app(scope, receive, send)
        finally:
            current_tenant.reset(tenant_token)
            current_caller.reset(caller_token)


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
    headers = [(b"www-authenticate", www_authenticate)] if www_authenticate is not None else []
    await send_problem(
        scope,
        send,
        status,
        detail,
        retry_after=retry_after,
        dependency=dependency,
        headers=headers,
    )


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
