"""Slow request bodies: a deadline on receiving them and a cap on unauthenticated ones.

:class:`BodyGuardMiddleware` wraps the whole ASGI handler (inside the request-id and
security-header wrappers, outside Litestar's router), so it acts before any routing or
authentication work. For a request that declares a body (``Content-Length`` > 0 or chunked):

* **Deadline.** The whole body must arrive within ``BODY_READ_TIMEOUT_S`` of the request's start.
  When it does not, ``receive`` raises :class:`BodyReadTimeout` and the exception table answers
  408 problem+json; the answer carries ``Connection: close``, so the server drops the connection
  and its unread bytes instead of waiting for them.
* **Cap.** At most ``MAX_PENDING_BODIES`` bodies per process may be in their receive phase without
  an authenticated API key. The slot is taken when the application first reads the body (route
  middleware has run by then: ``AuthMiddleware`` has either authenticated the request or
  answered 401 without reading it) and freed as soon as the body is complete, the client left,
  the deadline passed or the request ended. With the cap reached, ``receive`` raises
  :class:`PendingBodiesFull`: 503 problem+json with ``Retry-After`` at once, instead of holding
  one more worker slot. While the cap is reached, a request with a body and no credentials
  header at all gets that 503 here already, before routing (the cheap path under attack).
  Requests with a verified key, and C2S webhooks whose token (``X-Webhook-Token``) the webhook
  guard verified from the headers before the body is read (:func:`mark_authenticated`), are
  bounded by the deadline and their rate limits only; webhooks signed over their body
  (``X-C2S-Signature``) can only be verified with the body, so they are capped.
* **Client gone.** An ``http.disconnect`` while the body is received raises
  :class:`ClientClosedRequest`, answered as status 499 (nginx's "client closed request"), which
  nobody receives: the metrics and the access log record the outcome as 499 at info level, not
  as a server error.

Any response started before the body was fully received gets ``Connection: close``. Should one
of the exceptions escape the application without a response, this middleware answers it itself
with the same problem document.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from litestar.enums import ScopeType
from litestar.exceptions import HTTPException

from app.http.middleware.headers import request_has_body
from app.http.problems import send_problem

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

__all__ = [
    "CLIENT_CLOSED_REQUEST",
    "BodyGuardMiddleware",
    "BodyReadTimeout",
    "BodyRejected",
    "ClientClosedRequest",
    "PendingBodiesFull",
    "mark_authenticated",
]

CLIENT_CLOSED_REQUEST: Final = 499
SHED_RETRY_AFTER_S: Final = 1
_CONNECTION: Final = b"connection"
_CLOSE: Final = (_CONNECTION, b"close")
# Set in the scope's state by app.http.middleware.auth.AuthMiddleware once an API key is verified.
_AUTHENTICATED_KEY: Final = "api_key_id"
# Set by mark_authenticated: a sender verified from the headers alone (a webhook token).
_AUTHENTICATED_SENDER: Final = "sender_authenticated"
_CREDENTIAL_HEADERS: Final = frozenset({b"authorization", b"x-api-key", b"x-webhook-token"})


def mark_authenticated(scope: Scope) -> None:
    """Record that this request's sender was verified from its headers, before its body is read
    (the C2S webhook token): its body does not take one of the ``MAX_PENDING_BODIES`` slots."""
    scope.setdefault("state", {})[_AUTHENTICATED_SENDER] = True


def _presents_credentials(headers: Any) -> bool:  # Any: ASGI header pairs
    return any(name in _CREDENTIAL_HEADERS for name, _ in headers)


class BodyRejected(HTTPException):
    """A request whose body was not received (base of the three outcomes below)."""


class BodyReadTimeout(BodyRejected):
    """The body did not arrive within ``BODY_READ_TIMEOUT_S``."""

    status_code = 408


class PendingBodiesFull(BodyRejected):
    """``MAX_PENDING_BODIES`` unauthenticated bodies are being received already."""

    status_code = 503

    def __init__(self, detail: str) -> None:
        super().__init__(detail=detail, headers={"Retry-After": str(SHED_RETRY_AFTER_S)})


class ClientClosedRequest(BodyRejected):
    """The client disconnected before its body was complete."""

    status_code = CLIENT_CLOSED_REQUEST


class BodyGuardMiddleware:
    """Deadline and unauthenticated-concurrency cap on receiving request bodies.

    Args:
        app: The ASGI app to wrap (``app.asgi_handler``).
        timeout_s: ``BODY_READ_TIMEOUT_S``.
        max_pending: ``MAX_PENDING_BODIES``.
    """

    __slots__ = ("app", "max_pending", "pending", "timeout_s")

    def __init__(self, app: ASGIApp, *, timeout_s: float, max_pending: int) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self.pending = 0
        """Unauthenticated bodies being received now (this process)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or not request_has_body(scope["headers"]):
            await self.app(scope, receive, send)
            return
        body = _BodyPhase(self, scope, receive, send)
        if self.pending >= self.max_pending and not _presents_credentials(scope["headers"]):
            await _shed(scope, body.send)
            return
        try:
            await self.app(scope, body.receive, body.send)
        except BodyRejected as exc:
            if body.started:
                raise
            if isinstance(exc, PendingBodiesFull):
                await _shed(scope, body.send)
            else:
                await send_problem(scope, body.send, exc.status_code, str(exc.detail))
        finally:
            body.release()


_SHED_DETAIL: Final = f"Too many request bodies in progress; retry in {SHED_RETRY_AFTER_S} s"


async def _shed(scope: Scope, send: Send) -> None:
    await send_problem(scope, send, 503, _SHED_DETAIL, retry_after=SHED_RETRY_AFTER_S)


class _BodyPhase:
    """One request's body: its deadline, its slot, and how far it and the response got."""

    __slots__ = (
        "_deadline",
        "_guard",
        "_receive",
        "_rejected",
        "_scope",
        "_send",
        "holding",
        "received",
        "started",
    )

    def __init__(
        self, guard: BodyGuardMiddleware, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self._guard = guard
        self._scope = scope
        self._receive = receive
        self._send = send
        self._deadline = asyncio.get_running_loop().time() + guard.timeout_s
        self._rejected: BodyRejected | None = None
        self.holding = False
        self.received = False
        self.started = False

    def release(self) -> None:
        """Give the slot back (idempotent)."""
        if self.holding:
            self.holding = False
            self._guard.pending -= 1

    def _authenticated(self) -> bool:
        state: dict[str, Any] | None = self._scope.get("state")  # Any: the scope's state
        return bool(state and (state.get(_AUTHENTICATED_KEY) or state.get(_AUTHENTICATED_SENDER)))

    def _reject(self, exc: BodyRejected) -> BodyRejected:
        self._rejected = exc
        self.release()
        return exc

    async def receive(self) -> ReceiveMessage:
        if self.received:
            return await self._receive()
        if self._rejected is not None:
            raise self._rejected
        guard = self._guard
        if not self.holding and not self._authenticated():
            if guard.pending >= guard.max_pending:
                raise self._reject(PendingBodiesFull(_SHED_DETAIL))
            guard.pending += 1
            self.holding = True
        remaining = self._deadline - asyncio.get_running_loop().time()
        try:
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                message = await self._receive()
        except TimeoutError:
            detail = f"Request body not received within {guard.timeout_s:g} s"
            raise self._reject(BodyReadTimeout(detail=detail)) from None
        if message["type"] == "http.disconnect":
            raise self._reject(ClientClosedRequest(detail="Client closed the request"))
        if not message.get("more_body", False):
            self.received = True
            self.release()
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            if not self.received:
                # Unread body bytes may still be on the wire: do not reuse the connection.
                headers = [
                    pair for pair in message.get("headers", ()) if pair[0].lower() != _CONNECTION
                ]
                headers.append(_CLOSE)
                message["headers"] = headers
        await self._send(message)
