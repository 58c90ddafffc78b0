"""Raw ASGI middleware for the request id.

Written against the ASGI interface directly (no per-request objects) because it runs on every
request of the hot path (its budget: ADR 0005, Context).
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

from litestar.enums import ScopeType

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["REQUEST_ID_HEADER", "RequestIdMiddleware", "request_id_of"]

REQUEST_ID_HEADER = "x-request-id"
_HEADER_BYTES = REQUEST_ID_HEADER.encode()
# Accept caller ids that are safe to echo and log: bounded length, no control characters.
_VALID_ID = re.compile(rb"^[A-Za-z0-9._:/+=-]{1,128}$")


def request_id_of(scope: Scope) -> str | None:
    """Return the request id stored in the scope by :class:`RequestIdMiddleware`."""
    value = scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


class RequestIdMiddleware:
    """Accept a caller's ``X-Request-ID`` (when well-formed) or generate one, and echo it."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        raw: bytes | None = None
        for name, value in scope["headers"]:
            if name == _HEADER_BYTES:
                raw = value
                break
        rid = raw if raw is not None and _VALID_ID.match(raw) else uuid.uuid4().hex.encode()
        scope.setdefault("state", {})["request_id"] = rid.decode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append((_HEADER_BYTES, rid))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)
