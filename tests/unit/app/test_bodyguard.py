"""BodyGuardMiddleware driven over raw ASGI with in-memory ``receive``/``send`` channels.

The application behind it is a small Litestar app with the project's exception table (so the
408/503/499 answers come from the same place as in production) or, for the fallback path, a bare
ASGI callable that lets the guard's exception escape.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Litestar, Request, get, post

from app.http.errors import exception_handlers
from app.http.middleware.bodyguard import BodyGuardMiddleware, mark_authenticated

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

TIMEOUT_S = 0.2


@post("/echo")
async def echo(request: Request[Any, Any, Any]) -> dict[str, int]:
    return {"bytes": len(await request.body())}


@get("/ping", sync_to_thread=False)
def ping() -> dict[str, str]:
    return {"ok": "yes"}


class _Authenticated:
    """Stands in front like a route middleware that verified an API key for every request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})["api_key_id"] = "key-1"
        await self.app(scope, receive, send)


def _guarded(*, max_pending: int = 8, authenticated: bool = False) -> tuple[Any, Any]:
    app = Litestar(
        route_handlers=[echo, ping],
        exception_handlers=exception_handlers(),
        middleware=[_Authenticated] if authenticated else [],
        logging_config=None,
    )
    guard = BodyGuardMiddleware(app.asgi_handler, timeout_s=TIMEOUT_S, max_pending=max_pending)
    app.asgi_handler = guard
    return app, guard


def _scope(method: str = "POST", path: str = "/echo", length: int | None = 1000) -> Scope:
    headers = [(b"host", b"test"), (b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("test", 80),
        "state": {},
    }
    return scope  # type: ignore[return-value]


class Channel:
    """In-memory ASGI channels: ``receive`` hands out queued messages, then waits."""

    def __init__(self, *messages: Any) -> None:  # Any: ASGI receive events
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        for message in messages:
            self.inbox.put_nowait(message)
        self.sent: list[Message] = []

    async def receive(self) -> Any:  # Any: an ASGI receive event
        return await self.inbox.get()

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(next(m["status"] for m in self.sent if m["type"] == "http.response.start"))

    @property
    def headers(self) -> dict[bytes, bytes]:
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return {name.lower(): value for name, value in start["headers"]}

    def json(self) -> Any:
        body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        return msgspec.json.decode(body)


def _chunk(body: bytes, more: bool) -> Any:  # Any: an ASGI receive event
    return {"type": "http.request", "body": body, "more_body": more}


async def test_a_body_that_arrives_in_time_is_served_and_frees_its_slot() -> None:
    app, guard = _guarded()
    channel = Channel(_chunk(b"[" + b" " * 498, True), _chunk(b" " * 500 + b"]", False))
    await app(_scope(), channel.receive, channel.send)
    assert channel.status == 201
    assert channel.json() == {"bytes": 1000}
    assert b"connection" not in channel.headers
    assert guard.pending == 0


async def test_a_stalled_body_gets_408_problem_with_connection_close_after_the_deadline() -> None:
    app, guard = _guarded()
    channel = Channel(_chunk(b"[", True))  # then nothing: the client stalls
    started = time.monotonic()
    await asyncio.wait_for(app(_scope(), channel.receive, channel.send), timeout=5)
    elapsed = time.monotonic() - started
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 1.0
    assert channel.status == 408
    assert channel.headers[b"content-type"] == b"application/problem+json"
    assert channel.headers[b"connection"] == b"close"
    problem = channel.json()
    assert problem["status"] == 408
    assert problem["type"].endswith("/request-timeout")
    assert guard.pending == 0


async def test_the_deadline_counts_from_the_request_start_not_per_chunk() -> None:
    app, _ = _guarded()
    channel = Channel()

    async def trickle() -> None:  # one byte every 50 ms: each chunk is quick, the body is not
        for _ in range(100):
            await asyncio.sleep(0.05)
            channel.inbox.put_nowait(_chunk(b" ", True))

    feeder = asyncio.create_task(trickle())
    try:
        await asyncio.wait_for(app(_scope(), channel.receive, channel.send), timeout=5)
    finally:
        feeder.cancel()
    assert channel.status == 408


async def test_with_the_cap_reached_an_unauthenticated_body_gets_503_at_once() -> None:
    app, guard = _guarded(max_pending=2)
    stalled = [Channel(_chunk(b"[", True)) for _ in range(2)]
    holders = [
        asyncio.create_task(app(_scope(), channel.receive, channel.send)) for channel in stalled
    ]
    await asyncio.sleep(0.05)
    assert guard.pending == 2

    shed = Channel(_chunk(b"[]", False))
    started = time.monotonic()
    await app(_scope(length=2), shed.receive, shed.send)
    assert time.monotonic() - started < TIMEOUT_S / 2
    assert shed.status == 503
    assert shed.headers[b"retry-after"] == b"1"
    assert shed.headers[b"connection"] == b"close"
    assert shed.json()["retry_after"] == 1

    # Requests without a body never queue behind the stalled ones.
    probe = Channel()
    await app(_scope("GET", "/ping", length=None), probe.receive, probe.send)
    assert probe.status == 200

    await asyncio.gather(*holders)
    assert [channel.status for channel in stalled] == [408, 408]
    assert guard.pending == 0
    again = Channel(_chunk(b"[]", False))
    await app(_scope(length=2), again.receive, again.send)
    assert again.status == 201


async def test_authenticated_bodies_are_not_capped_but_still_have_the_deadline() -> None:
    app, guard = _guarded(max_pending=1, authenticated=True)
    stalled = Channel(_chunk(b"[", True))
    holder = asyncio.create_task(app(_scope(), stalled.receive, stalled.send))
    await asyncio.sleep(0.05)
    served = Channel(_chunk(b"[]", False))
    await app(_scope(length=2), served.receive, served.send)
    assert served.status == 201
    await holder
    assert stalled.status == 408
    assert guard.pending == 0


async def test_a_client_that_hangs_up_mid_body_is_499_not_500() -> None:
    app, guard = _guarded()
    channel = Channel(_chunk(b"[", True), {"type": "http.disconnect"})
    await app(_scope(), channel.receive, channel.send)
    assert channel.status == 499
    assert channel.json()["title"] == "Client Closed Request"
    assert guard.pending == 0


async def test_the_guard_answers_itself_when_its_exception_escapes_the_application() -> None:
    async def bare(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    guard = BodyGuardMiddleware(bare, timeout_s=TIMEOUT_S, max_pending=1)
    stalled = Channel(_chunk(b"[", True))
    await guard(_scope(), stalled.receive, stalled.send)
    assert stalled.status == 408
    assert stalled.json()["status"] == 408
    assert stalled.headers[b"connection"] == b"close"
    assert guard.pending == 0


class _WebhookToken:
    """Stands in front like the webhook guard: a right token is verified from the headers and
    marked before the body is read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (b"x-webhook-token", b"right") in scope["headers"]:
            mark_authenticated(scope)
        await self.app(scope, receive, send)


async def test_a_webhook_verified_by_its_token_is_not_capped_a_signed_one_is() -> None:
    app = Litestar(
        route_handlers=[echo],
        exception_handlers=exception_handlers(),
        middleware=[_WebhookToken],
        logging_config=None,
    )
    guard = BodyGuardMiddleware(app.asgi_handler, timeout_s=TIMEOUT_S, max_pending=1)
    app.asgi_handler = guard
    stalled = Channel(_chunk(b"[", True))
    holder = asyncio.create_task(app(_scope(), stalled.receive, stalled.send))
    await asyncio.sleep(0.05)
    assert guard.pending == 1

    def webhook(header: tuple[bytes, bytes]) -> Scope:
        scope = _scope(length=2)
        scope["headers"] = [*scope["headers"], header]
        return scope

    token = Channel(_chunk(b"[]", False))
    await app(webhook((b"x-webhook-token", b"right")), token.receive, token.send)
    assert token.status == 201
    # A signature covers the body: nothing is verified before it arrives, so the cap applies.
    signed = Channel(_chunk(b"[]", False))
    await app(webhook((b"x-c2s-signature", b"t=1,v1=00")), signed.receive, signed.send)
    assert signed.status == 503
    # A wrong token is not verified: it is capped too (and the guard answers it 401 anyway).
    wrong = Channel(_chunk(b"[]", False))
    await app(webhook((b"x-webhook-token", b"wrong")), wrong.receive, wrong.send)
    assert wrong.status == 503
    await holder
    assert guard.pending == 0
