"""``Idempotency-Key`` on POST endpoints (draft-ietf-httpapi-idempotency-key-header).

The first response to a key is stored in Redis (per tenant, 24 h) and replayed to every retry with
the same key and the same request; a retry while the first is still running gets 409; the same key
with a different request (method, path, query or body) gets 422. Bodies are compared as the
requests they stand for: JSON is decoded and re-encoded canonically (sorted keys, no whitespace),
so a retry that spells the same JSON differently is the same request. 5xx answers are not
stored, so a retry after a failure runs again. Without Redis the guarantee cannot be kept, so a
request that asks for it gets 503 with ``Retry-After`` rather than a silent duplicate side effect.

Records are scoped per client: the tenant and the API key id of an authenticated request, a
keyed digest of the client IP (behind a trusted proxy, its first forwarded hop) for anonymous
routes such as the webhooks; one client's key never reaches another client's record. Records are
encrypted (AES-GCM, the Redis key name as associated data): the stored answers carry personal
data.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from litestar.enums import ScopeType
from litestar.types.asgi_types import HTTPDisconnectEvent, HTTPRequestEvent
from redis.exceptions import RedisError

from app.http.problems import send_problem
from infra.redisclient import REDIS_ERRORS
from observability.metrics import record_cache

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from app.bootstrap import ServicesHandle
    from app.http.middleware.ratelimit import ClientAddress
    from infra.redisclient import RedisClient
    from infra.sealing import AeadEnvelope

__all__ = ["IdempotencyMiddleware", "IdempotencyStore", "canonical_body", "request_fingerprint"]

log = structlog.get_logger(__name__)

_HEADER = b"idempotency-key"
_MAX_KEY_LENGTH = 255

# Claim the key, or return what is stored under it. KEYS[1]; ARGV[1] pending record, ARGV[2] ttl.
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
"""


_CANONICAL = msgspec.json.Encoder(order="sorted")


def canonical_body(body: bytes) -> bytes:
    """The request a body stands for, independent of its JSON spelling.

    A JSON body is decoded and re-encoded with sorted keys and no insignificant whitespace, so
    ``{ "cpf": "1" }`` and ``{"cpf":"1"}`` are the same request (parameters are compared, not
    bytes). Anything that is not JSON (or too deep to decode) is compared byte for byte.
    """
    if not body.strip():
        return b""
    try:
        return _CANONICAL.encode(msgspec.json.decode(body))
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError, ValueError):
        return body


def request_fingerprint(scope: Scope, body: bytes) -> str:
    """What makes two requests with one ``Idempotency-Key`` "the same": method, path, query and
    the canonical body (:func:`canonical_body`)."""
    return hashlib.sha256(
        b"\x00".join(
            (
                str(scope.get("method", "")).encode(),
                scope["path"].encode(),
                scope["query_string"],
                canonical_body(body),
            )
        )
    ).hexdigest()


class _Record(msgspec.Struct, frozen=True, kw_only=True):
    state: str  # "pending" or "done"
    fingerprint: str
    status: int = 0
    content_type: str = ""
    body: bytes = b""
    location: str = ""  # a 201/202's Location, replayed with the answer


class IdempotencyStore:
    """Encrypted records in Redis under ``<prefix>idem:<keyed digest of client and key>``."""

    def __init__(
        self,
        client: RedisClient,
        prefix: str,
        ttl_s: int,
        lock_ttl_s: int,
        *,
        envelope: AeadEnvelope,
        salt: bytes,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._lock_ttl_s = lock_ttl_s
        self._envelope = envelope
        self._salt = salt[:64]
        self._claim = client.register_script(_CLAIM)

    def owner_of_ip(self, address: str) -> str:
        """The owner of an anonymous client's keys: a keyed digest of its address."""
        digest = hashlib.blake2b(address.encode(), key=self._salt, digest_size=16).hexdigest()
        return f"ip:{digest}"

    def name(self, owner: str, key: str) -> str:
        """The Redis key of ``key`` for ``owner`` (tenant and key id, or a client digest)."""
        digest = hashlib.blake2b(
            f"{owner}\x00{key}".encode(), key=self._salt, digest_size=20
        ).hexdigest()
        return f"{self._prefix}idem:{{{digest}}}"  # hash tag: one Cluster slot per record

    async def claim(self, name: str, fingerprint: str) -> _Record | None:
        """Take the key (None) or return the record already there.

        A record that does not decrypt (tampered, or sealed under a retired key) is dropped and
        the key claimed afresh.
        """
        pending = self._seal(name, _Record(state="pending", fingerprint=fingerprint))
        for _ in range(2):
            raw = await self._claim(keys=[name], args=[pending, self._lock_ttl_s])
            if raw is None:
                return None
            opened = self._envelope.open(name, bytes(raw))
            if opened is not None:
                return msgspec.json.decode(opened, type=_Record)
            log.warning("idempotency_record_unreadable")
            record_cache("idempotency", "integrity_failure")
            await self._client.delete(name)
        raise RedisError("idempotency record keeps failing to decrypt")

    def _seal(self, name: str, record: _Record) -> bytes:
        return self._envelope.seal(name, msgspec.json.encode(record))

    async def complete(self, name: str, record: _Record) -> None:
        """Store the final response."""
        await self._client.set(name, self._seal(name, record), ex=self._ttl_s)

    async def release(self, name: str) -> None:
        """Forget the key (the request failed in a way a retry may fix)."""
        await self._client.delete(name)


def _owner(scope: Scope, store: IdempotencyStore, client_address: ClientAddress) -> str:
    """Whose namespace the request's key lives in: its API key, else its client address."""
    state = scope.get("state", {})
    tenant = state.get("tenant")
    key_id = state.get("api_key_id")
    if tenant is not None or key_id is not None:
        return f"key:{tenant or ''}\x00{key_id or ''}"
    return store.owner_of_ip(client_address.of(scope))


async def _answer(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class IdempotencyMiddleware:
    """Route-level middleware: applies to POST requests carrying ``Idempotency-Key``.

    Built with ``DefineMiddleware(IdempotencyMiddleware, services=handle)`` (ADR 0008).
    """

    __slots__ = ("_handle", "app")

    def __init__(self, app: ASGIApp, *, services: ServicesHandle) -> None:
        self.app = app
        self._handle = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        key = next((v for n, v in scope["headers"] if n == _HEADER), None)
        handler = scope.get("route_handler")
        opt: dict[str, Any] = handler.opt if handler is not None else {}
        if key is None or opt.get("exclude_from_idempotency"):
            await self.app(scope, receive, send)
            return
        text = key.decode("latin-1").strip()
        if not text or len(text) > _MAX_KEY_LENGTH:
            await send_problem(scope, send, 400, "Idempotency-Key must be 1-255 characters")
            return
        await self._idempotent(scope, receive, send, text)

    async def _idempotent(self, scope: Scope, receive: Receive, send: Send, key: str) -> None:
        services = self._handle.services
        store = services.idempotency
        # Read the body once (Litestar's size limit applies below us, so bound it here too).
        chunks: list[bytes] = []
        # The route's own limit when it has one (bulk jobs take more than MAX_BODY_BYTES).
        handler = scope.get("route_handler")
        resolve = getattr(handler, "resolve_request_max_body_size", None)
        route_limit = resolve() if resolve is not None else None
        limit = route_limit or services.settings.max_body_bytes
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message["body"]
            size += len(chunk)
            if size > limit:
                await send_problem(scope, send, 413, "Request body too large")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        request_body = b"".join(chunks)
        fingerprint = request_fingerprint(scope, request_body)
        name = store.name(_owner(scope, store, services.client_address), key)
        try:
            existing = await store.claim(name, fingerprint)
        except REDIS_ERRORS as exc:
            log.warning("idempotency_storage_error", error_type=type(exc).__name__)
            record_cache("idempotency", "error")
            detail = "Idempotency store unavailable; retry later"
            await send_problem(scope, send, 503, detail, retry_after=1, dependency="redis")
            return
        if existing is not None:
            record_cache("idempotency", "hit")
            await self._conflict_or_replay(scope, send, existing, fingerprint)
            return
        record_cache("idempotency", "miss")
        await self._run_and_store(scope, send, store, name, fingerprint, request_body)

    async def _conflict_or_replay(
        self, scope: Scope, send: Send, existing: _Record, fingerprint: str
    ) -> None:
        if existing.fingerprint != fingerprint:
            detail = "Idempotency-Key was already used with a different request"
            await send_problem(scope, send, 422, detail)
        elif existing.state == "pending":
            detail = "A request with this Idempotency-Key is in progress"
            await send_problem(scope, send, 409, detail, retry_after=1)
        else:
            extra = [(b"idempotent-replayed", b"true")]
            if existing.location:
                extra.append((b"location", existing.location.encode("latin-1")))
            await _answer(send, existing.status, existing.body, existing.content_type, extra)

    async def _run_and_store(
        self,
        scope: Scope,
        send: Send,
        store: IdempotencyStore,
        name: str,
        fingerprint: str,
        request_body: bytes,
    ) -> None:
        delivered = False

        async def replay_receive() -> HTTPRequestEvent | HTTPDisconnectEvent:
            nonlocal delivered
            if delivered:
                return HTTPDisconnectEvent(type="http.disconnect")
            delivered = True
            return HTTPRequestEvent(type="http.request", body=request_body, more_body=False)

        status = 500
        content_type = ""
        location = ""
        parts: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status, content_type, location
            if message["type"] == "http.response.start":
                status = message["status"]
                for header, value in message.get("headers", ()):
                    if header.lower() == b"content-type":
                        content_type = value.decode("latin-1")
                    elif header.lower() == b"location":
                        location = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay_receive, capture)
        finally:
            try:
                if status < 500:
                    record = _Record(
                        state="done",
                        fingerprint=fingerprint,
                        status=status,
                        content_type=content_type,
                        body=b"".join(parts),
                        location=location,
                    )
                    await store.complete(name, record)
                else:
                    await store.release(name)
            except REDIS_ERRORS as exc:
                log.warning("idempotency_storage_error", error_type=type(exc).__name__)
