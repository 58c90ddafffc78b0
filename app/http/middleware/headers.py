"""HTTP hardening: security headers on every response and a strict request Content-Type.

Two raw ASGI middlewares (no per-request objects: both run on the hot path):

* :class:`SecurityHeadersMiddleware` wraps the whole ASGI handler (like the request-id wrapper),
  so responses produced before routing (404, 405) and by other middleware (401, 429) carry the
  headers too: ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
  ``Referrer-Policy: no-referrer``, a ``Content-Security-Policy`` (nothing may load for API
  responses; same-origin scripts, styles and images for the Swagger UI under ``/docs``, whose
  assets are served by us and which has no inline script), ``Cache-Control: no-store`` on API
  responses (personal data must not sit in shared caches) and, in production only,
  ``Strict-Transport-Security`` (a development server on plain HTTP must not pin browsers).
* :class:`StrictContentTypeMiddleware` runs at route level: a POST/PUT/PATCH carrying a body must
  say ``application/json`` (optionally ``; charset=utf-8``), else 415 problem+json. Routes with
  ``opt["lenient_content_type"]`` (the C2S webhooks, which may send ``text/plain``) accept any
  JSON-ish type or none.

Body size is not limited here: Litestar's ``request_max_body_size`` (5 MiB, ``MAX_BODY_BYTES``)
refuses a larger ``Content-Length`` before reading and stops reading a chunked body as soon as
the streamed bytes pass the limit (``tests/api/test_security_headers.py`` proves both, memory
included), answering 413 through the problem+json table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from litestar.enums import ScopeType

from app.http.problems import send_problem

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "API_CSP",
    "DOCS_CSP",
    "SecurityHeadersMiddleware",
    "StrictContentTypeMiddleware",
    "is_json_content_type",
    "request_has_body",
]

API_CSP: Final = "default-src 'none'; frame-ancestors 'none'"
# Swagger UI: its bundle, stylesheet and favicon come from /docs/static, the document from
# /schema/openapi.json (connect-src), and its CSS embeds SVG icons as data: URLs.
DOCS_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
HSTS: Final = "max-age=63072000; includeSubDomains"

_COMMON: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
_CACHE_CONTROL: Final = b"cache-control"
_DOCS_PREFIX: Final = "/docs"


def _is_docs(path: str) -> bool:
    return path == _DOCS_PREFIX or path.startswith(_DOCS_PREFIX + "/")


class SecurityHeadersMiddleware:
    """Add the security headers to every HTTP response (see the module docstring).

    Headers a handler already set (say a ``Cache-Control`` of its own) are kept.

    Args:
        app: The ASGI app to wrap (``app.asgi_handler``).
        production: Also send ``Strict-Transport-Security``.
    """

    __slots__ = ("_api", "_docs", "app")

    def __init__(self, app: ASGIApp, *, production: bool = False) -> None:
        self.app = app
        hsts: tuple[tuple[bytes, bytes], ...] = (
            ((b"strict-transport-security", HSTS.encode()),) if production else ()
        )
        self._api: tuple[tuple[bytes, bytes], ...] = (
            *_COMMON,
            *hsts,
            (b"content-security-policy", API_CSP.encode()),
            (_CACHE_CONTROL, b"no-store"),
        )
        # The documents are public and static: browsers may cache them.
        self._docs: tuple[tuple[bytes, bytes], ...] = (
            *_COMMON,
            *hsts,
            (b"content-security-policy", DOCS_CSP.encode()),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        extra = self._docs if _is_docs(scope["path"]) else self._api

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(pair for pair in extra if pair[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- Content-Type ---------------------------------------------------------------------------

_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
_JSON: Final = b"application/json"
_LENIENT_TYPES: Final = frozenset({b"application/json", b"text/plain", b"text/json"})
_UTF8: Final = frozenset({b"utf-8", b"utf8"})


def is_json_content_type(value: bytes | None, *, lenient: bool = False) -> bool:
    """Whether a request's ``Content-Type`` is acceptable for a JSON body.

    Args:
        value: The raw header value, or ``None`` when absent.
        lenient: Accept any JSON-ish type (``text/plain``, ``text/json``, ``application/*+json``)
            or none at all, for senders we do not control (webhooks).

    Returns:
        Strict: ``application/json`` with no parameter or a UTF-8 ``charset`` only (RFC 8259:
        JSON on the wire is UTF-8). Lenient: as described.
    """
    if value is None:
        return lenient
    media, _, params = value.partition(b";")
    media = media.strip().lower()
    if lenient:
        return media in _LENIENT_TYPES or (
            media.startswith(b"application/") and media.endswith(b"+json")
        )
    if media != _JSON:
        return False
    for param in params.split(b";"):
        name, _, param_value = param.strip().partition(b"=")
        if not name:
            continue
        if name.strip().lower() != b"charset" or param_value.strip(b' "').lower() not in _UTF8:
            return False
    return True


def _has_body(headers: Any) -> tuple[bool, bytes | None]:  # Any: ASGI header pairs
    """``(request has a body, Content-Type)`` from the raw headers, in one pass."""
    length: bytes | None = None
    chunked = False
    content_type: bytes | None = None
    for name, value in headers:
        if name == b"content-length":
            length = value
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"content-type":
            content_type = value
    if chunked:
        return True, content_type
    if length is None:
        return False, content_type
    stripped = length.strip()
    return (not stripped.isdigit() or int(stripped) > 0), content_type


def request_has_body(headers: Any) -> bool:  # Any: ASGI header pairs
    """Whether the request declares a body (``Content-Length`` > 0 or chunked)."""
    return _has_body(headers)[0]


class StrictContentTypeMiddleware:
    """Route-level ASGI middleware: 415 for a request body that is not declared as JSON."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        has_body, content_type = _has_body(scope["headers"])
        if not has_body:
            await self.app(scope, receive, send)
            return
        handler = scope.get("route_handler")
        lenient = bool(handler.opt.get("lenient_content_type")) if handler is not None else False
        if is_json_content_type(content_type, lenient=lenient):
            await self.app(scope, receive, send)
            return
        await _send_415(scope, send)


async def _send_415(scope: Scope, send: Send) -> None:
    # The offending value is not echoed: it is client input and may carry anything.
    detail = "Unsupported Content-Type: send 'Content-Type: application/json'"
    await send_problem(scope, send, 415, detail, headers=[(b"accept", b"application/json")])
