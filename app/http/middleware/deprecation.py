"""Deprecating an operation: ``Deprecation``/``Sunset``/``Link`` headers and the OpenAPI flag.

The policy is ``docs/api-versioning.md``. To deprecate an operation (or a whole controller or
router: ``opt`` is merged down the layers), declare it in the route's ``opt``::

    @get(
        "/old",
        opt={"deprecated": Deprecation(since="2026-12-01", sunset="2027-06-30",
                                       link="https://c2s-api.dev/docs/changelog#old")},
    )

A plain dict with the same keys works too (``{"since": ..., "sunset": ..., "link": ...}``).
Two pieces then act on it, both registered once in ``create_app``:

* :class:`DeprecationMiddleware` (route-level ASGI middleware) adds to **every** response of the
  operation, errors included (a client that only ever sees 4xx must learn it too):

  - ``Deprecation: @<epoch>`` (RFC 9745: a Structured Field Date, when it was deprecated);
  - ``Sunset: <HTTP-date>`` (RFC 8594: when it stops working; 00:00:00 GMT of the date);
  - ``Link: <link>; rel="deprecation"; type="text/html"`` (RFC 9745 section 3) and, when a
    replacement is named, ``Link: <successor>; rel="successor-version"`` (RFC 5829).

* :class:`DeprecationPlugin` marks the operation ``deprecated: true`` in the OpenAPI document,
  appends the dates to its description and documents the three response headers.

The middleware costs one dict lookup on operations that are not deprecated. On deprecated ones it
also logs ``deprecated_operation_used`` with the route template and the calling API key's id (at
most once an hour per key and route, per process), so the owners of the integrations that still
call it can be found before the sunset.
"""

from __future__ import annotations

import calendar
import datetime as dt
import time
from email.utils import formatdate
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

import msgspec
import structlog
from litestar.datastructures import ResponseHeader
from litestar.enums import ScopeType
from litestar.exceptions import ImproperlyConfiguredException
from litestar.handlers import HTTPRouteHandler
from litestar.plugins import ReceiveRoutePlugin
from litestar.routes import HTTPRoute

if TYPE_CHECKING:
    from litestar.routes import BaseRoute
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "OPT_KEY",
    "Deprecation",
    "DeprecationMiddleware",
    "DeprecationPlugin",
    "deprecation_headers",
    "deprecation_of",
]

log = structlog.get_logger(__name__)

OPT_KEY: Final = "deprecated"
"""The route ``opt`` key that carries a :class:`Deprecation`."""

_LINK: Final = b"link"
# Usage log throttle: one line per (route, key) per hour and process, at most this many pairs.
_USAGE_LOG_INTERVAL_S: Final = 3600.0
_USAGE_LOG_MAX_PAIRS: Final = 10_000


class Deprecation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When an operation was deprecated, when it goes away, and where to read about it.

    Attributes:
        since: The day it was (or will be) deprecated (``Deprecation`` header).
        sunset: The day it stops working (``Sunset`` header); not before ``since``. The policy
            asks for at least 6 months between the two.
        link: A human-readable page about the deprecation and the migration (``rel=deprecation``).
        successor: The replacing operation's URL or documentation, if any
            (``rel=successor-version``).
    """

    since: dt.date
    sunset: dt.date
    link: str
    successor: str | None = None

    def __post_init__(self) -> None:
        if self.sunset < self.since:
            raise ValueError("sunset must not be before since")
        for value in (self.link, self.successor):
            # A URI reference inside <...>: anything that could break the header is refused.
            if value is not None and (not value or any(c in value for c in '<>"\r\n ,;')):
                raise ValueError(f"not a usable link target: {value!r}")


def deprecation_of(value: Any) -> Deprecation:  # Any: whatever a route put in its opt
    """Validate an ``opt["deprecated"]`` value (a :class:`Deprecation` or an equivalent dict).

    Raises:
        ValueError: It is neither, or its fields are invalid.
    """
    if isinstance(value, Deprecation):
        return value
    try:
        return msgspec.convert(value, Deprecation, strict=False)
    except (msgspec.ValidationError, TypeError) as exc:
        raise ValueError(f"invalid deprecation {value!r}: {exc}") from None


def _epoch(day: dt.date) -> int:
    return calendar.timegm(day.timetuple())


@lru_cache(maxsize=256)
def deprecation_headers(deprecation: Deprecation) -> tuple[tuple[bytes, bytes], ...]:
    """The response headers announcing ``deprecation`` (computed once per declaration)."""
    headers = [
        (b"deprecation", f"@{_epoch(deprecation.since)}".encode()),
        (b"sunset", formatdate(_epoch(deprecation.sunset), usegmt=True).encode()),
        (_LINK, f'<{deprecation.link}>; rel="deprecation"; type="text/html"'.encode()),
    ]
    if deprecation.successor is not None:
        headers.append((_LINK, f'<{deprecation.successor}>; rel="successor-version"'.encode()))
    return tuple(headers)


_logged: dict[tuple[str, str], float] = {}


def _log_use(scope: Scope, deprecation: Deprecation) -> None:
    """Log who still calls a deprecated route, throttled (no PII: template and key id only)."""
    route = str(scope.get("path_template") or "")
    # Read when the answer starts: the authentication middleware has identified the key by then.
    key_id = str(scope.get("state", {}).get("api_key_id") or "anonymous")
    now = time.monotonic()
    last = _logged.get((route, key_id))
    if last is not None and now - last < _USAGE_LOG_INTERVAL_S:
        return
    if len(_logged) >= _USAGE_LOG_MAX_PAIRS:
        _logged.clear()
    _logged[(route, key_id)] = now
    log.info(
        "deprecated_operation_used",
        route=route,
        api_key_id=key_id,
        sunset=deprecation.sunset.isoformat(),
    )


class DeprecationMiddleware:
    """Route-level ASGI middleware adding the deprecation headers of the route's ``opt``.

    Register it first in ``create_app``'s route middleware, so answers produced by the other
    middleware (401, 429...) carry the headers too.
    """

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = scope.get("route_handler")
        declared = handler.opt.get(OPT_KEY) if handler is not None else None
        if declared is None or scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        deprecation = deprecation_of(declared)
        extra = deprecation_headers(deprecation)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
                _log_use(scope, deprecation)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _describe(deprecation: Deprecation) -> str:
    note = (
        f"**Deprecated** since {deprecation.since.isoformat()}; removed on "
        f"{deprecation.sunset.isoformat()} (see the `Sunset` header). "
        f"Migration notes: {deprecation.link}"
    )
    if deprecation.successor is not None:
        note += f" Replacement: {deprecation.successor}"
    return note


_DOCUMENTED_HEADERS: Final = (
    ResponseHeader(
        name="Deprecation",
        documentation_only=True,
        description="RFC 9745: when this operation was deprecated (`@<epoch seconds>`).",
    ),
    ResponseHeader(
        name="Sunset",
        documentation_only=True,
        description="RFC 8594: when this operation stops working (HTTP-date).",
    ),
    ResponseHeader(
        name="Link",
        documentation_only=True,
        description='`rel="deprecation"` (migration notes), `rel="successor-version"`.',
    ),
)


class DeprecationPlugin(ReceiveRoutePlugin):
    """Marks operations whose ``opt`` declares a deprecation in the OpenAPI document.

    Validates every declaration as its route is registered, so a bad date fails the app's start,
    not a client's request.
    """

    __slots__ = ()

    def receive_route(self, route: BaseRoute) -> None:
        """Flag the route's deprecated handlers (called by Litestar for each registered route)."""
        if not isinstance(route, HTTPRoute):
            return
        for handler in route.route_handlers:
            declared = handler.opt.get(OPT_KEY)
            if declared is None or not isinstance(handler, HTTPRouteHandler):
                continue
            try:
                deprecation = deprecation_of(declared)
            except ValueError as exc:
                raise ImproperlyConfiguredException(f"{route.path}: {exc}") from None
            handler.opt[OPT_KEY] = deprecation  # validated once; the middleware reuses it
            handler.deprecated = True
            description = _describe(deprecation)
            if not (handler.description or "").endswith(description):
                handler.description = (
                    f"{handler.description}\n\n{description}"
                    if handler.description
                    else description
                )
            names = {header.name.lower() for header in handler.response_headers or ()}
            handler.response_headers = [
                *(handler.response_headers or ()),
                *(h for h in _DOCUMENTED_HEADERS if h.name.lower() not in names),
            ]
