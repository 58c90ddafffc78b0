"""HTTP plumbing shared by the upstream clients: every upstream call goes through it.

* :func:`create_session`: the one ``aiohttp.ClientSession`` of a worker (bounded connector).
* :class:`UpstreamTransport`: one upstream's calls: per-upstream ``ClientTimeout``, a named
  circuit breaker around every attempt, and, for idempotent reads only, a bounded jittered retry
  (stamina) on network errors, timeouts, 5xx and 429 (``Retry-After`` honoured up to a cap).
* Error mapping: network error/timeout -> ``DependencyUnavailable``; unexpected status ->
  ``UpstreamError`` (:class:`RetryableUpstreamError` for 5xx/429).
* :func:`redact_url` / :func:`mask`: secrets and personal data never reach logs or exceptions;
  exceptions never carry URLs (the Work API token is a query parameter).

What the breaker counts as a failure is :func:`is_upstream_failure`: network errors, timeouts,
5xx, 429, auth rejections (401/403), garbage bodies, and the Work API's "expired token" / "no
credits" soft errors. A 404 (or Diretrix's empty answer) is a correct answer, not a failure.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import aiohttp
import msgspec
import stamina
import structlog
from yarl import URL

from domain.errors import DependencyUnavailable, NotFound, UpstreamError, UpstreamSoftError
from infra.breaker.state import BreakerOpen
from observability.metrics import observe_upstream, record_upstream_retry
from observability.tracing import upstream_call

if TYPE_CHECKING:
    from infra.breaker.circuit import CircuitBreaker

__all__ = [
    "DEFAULT_RETRY",
    "NO_RETRY",
    "PII_PARAMS",
    "SECRET_PARAMS",
    "RetryPolicy",
    "RetryableUpstreamError",
    "UpstreamResponse",
    "UpstreamTransport",
    "client_timeout",
    "create_session",
    "decode_json",
    "error_type",
    "is_upstream_failure",
    "mask",
    "parse_retry_after",
    "redact_url",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")

SECRET_PARAMS = frozenset(
    {
        "token",
        "access_token",
        "api_key",
        "apikey",
        "key",
        "password",
        "pass",
        "senha",
        "secret",
        "signature",
        "sig",
    }
)
PII_PARAMS = frozenset({"consulta", "cpf", "documento", "phone", "telefone", "email"})
_REDACTED = "***"
# Digit runs this long in a path are phones or documents, not ids worth showing.
_MIN_PII_DIGITS = 8

# Soft errors that will not heal by themselves: they open the breaker (fast 503s instead of
# paid calls that fail), while "not found" is a correct answer about a person.
_FAILING_SOFT_KINDS = frozenset({"expired_token", "no_credits"})
_AUTH_STATUSES = frozenset({401, 403})
_TOO_MANY_REQUESTS = 429
_SERVER_ERROR = 500
_OK_LOW, _OK_HIGH = 200, 300


def mask(value: str, keep: int = 2) -> str:
    """Mask personal data for logs, keeping the last ``keep`` characters.

    Args:
        value: A CPF, phone, e-mail...
        keep: Trailing characters left visible.

    Returns:
        ``*********25`` for ``52998224725``; all stars when the value is that short.
    """
    if len(value) <= keep:
        return "*" * len(value)
    return "*" * (len(value) - keep) + value[-keep:]


def _mask_segment(segment: str) -> str:
    text = unquote(segment)
    digits = text.lstrip("+")
    if "@" in text or (digits.isdigit() and len(digits) >= _MIN_PII_DIGITS):
        return mask(text)
    return segment


def redact_url(url: str | URL) -> str:
    """Return ``url`` safe for logs and span attributes: secrets hidden, personal data masked.

    Secrets are the userinfo password and query parameters named in :data:`SECRET_PARAMS`
    (the Work API ``token``): replaced by ``***``. Personal data are the parameters in
    :data:`PII_PARAMS` (the Work API ``consulta``) and path segments that look like a phone, a
    CPF or an e-mail (Diretrix puts them in the path): masked by :func:`mask`. Unparsable input
    is replaced entirely. Suitable as the OpenTelemetry aiohttp instrumentation's URL filter.

    Args:
        url: An absolute or relative URL.

    Returns:
        The redacted URL.
    """
    try:
        parts = urlsplit(str(url))
        netloc = parts.netloc
        if parts.password is not None:
            host = netloc.rsplit("@", 1)[1]
            netloc = f"{parts.username or ''}:{_REDACTED}@{host}"
        path = "/".join(_mask_segment(seg) for seg in parts.path.split("/"))
        query = parts.query
        if query:
            pairs = []
            for name, value in parse_qsl(query, keep_blank_values=True):
                lowered = name.lower()
                if lowered in SECRET_PARAMS:
                    value = _REDACTED
                elif lowered in PII_PARAMS:
                    value = mask(value)
                pairs.append((name, value))
            query = urlencode(pairs, safe="*")
        return urlunsplit(parts._replace(netloc=netloc, path=path, query=query))
    except ValueError:
        return "<unparsable url>"


def create_session(
    max_connections: int = 100,
    *,
    limit_per_host: int = 0,
    keepalive_timeout_s: float = 30.0,
    trace_configs: list[aiohttp.TraceConfig] | None = None,
) -> aiohttp.ClientSession:
    """The worker's HTTP session for every upstream (call inside the running event loop).

    Args:
        max_connections: Connector limit across all upstreams (``UPSTREAM_MAX_CONNECTIONS``).
        limit_per_host: Per-host limit (0 = only the global limit).
        keepalive_timeout_s: Idle keep-alive of pooled connections.
        trace_configs: aiohttp tracing hooks (OpenTelemetry instrumentation). Configure its
            URL filter with :func:`redact_url`: the Work API token is in the query string.

    Returns:
        A session; the caller closes it (``await session.close()``) at shutdown.
    """
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=limit_per_host,
        ttl_dns_cache=300,
        keepalive_timeout=keepalive_timeout_s,
    )
    return aiohttp.ClientSession(
        connector=connector,
        # Each request passes its upstream's timeout; this only guards a forgotten one.
        timeout=aiohttp.ClientTimeout(total=30.0, sock_connect=2.0),
        raise_for_status=False,
        # No cookies across upstream calls: nothing needs them and they could leak state.
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        headers={"User-Agent": "c2s-api/0.1", "Accept": "application/json"},
        trace_configs=trace_configs,
    )


def client_timeout(total_s: float, connect_s: float) -> aiohttp.ClientTimeout:
    """Per-upstream timeout: ``total_s`` for the whole call, ``connect_s`` to open a socket."""
    return aiohttp.ClientTimeout(total=total_s, sock_connect=connect_s)


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """A bounded, jittered retry for idempotent reads (stamina parameters).

    Attributes:
        attempts: Total tries, the first included (1 = no retry).
        timeout_s: No new attempt starts after this many seconds since the first.
        wait_initial_s: First backoff.
        wait_max_s: Cap of one backoff.
        wait_jitter_s: Up to this much random jitter added to each backoff.
        wait_exp_base: Backoff growth factor.
        max_retry_after_s: A ``Retry-After`` longer than this stops retrying (fail fast
            instead of holding the caller); shorter ones are waited exactly.
    """

    attempts: int = 3
    timeout_s: float = 10.0
    wait_initial_s: float = 0.1
    wait_max_s: float = 2.0
    wait_jitter_s: float = 0.2
    wait_exp_base: float = 2.0
    max_retry_after_s: float = 3.0


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)


class RetryableUpstreamError(UpstreamError):
    """A 5xx or 429 answer: worth retrying for idempotent reads.

    Attributes:
        retry_after: The upstream's ``Retry-After`` in seconds, when it sent one.
    """

    def __init__(
        self, upstream: str, detail: str, status: int, retry_after: float | None = None
    ) -> None:
        super().__init__(upstream, detail, status)
        self.retry_after = retry_after


def is_upstream_failure(exc: BaseException) -> bool:
    """Whether an exception raised during an upstream call counts against its breaker.

    Args:
        exc: The exception.

    Returns:
        True for network errors, timeouts, 5xx, 429, 401/403, garbage bodies (status 200),
        expired-token and no-credits soft errors, and unexpected exception types; False for
        correct answers such as ``NotFound``, other 4xx, and the other soft errors.
    """
    if isinstance(exc, UpstreamSoftError):
        return exc.kind in _FAILING_SOFT_KINDS
    if isinstance(exc, NotFound):
        return False
    if isinstance(exc, UpstreamError):
        status = exc.status
        return (
            status is None
            or status >= _SERVER_ERROR
            or status == _TOO_MANY_REQUESTS
            or status in _AUTH_STATUSES
            or status < _OK_HIGH  # a 2xx whose body was unusable
        )
    return True


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), else None."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


class _Unavailable(DependencyUnavailable):
    """A network failure or timeout of one attempt; ``error_type`` names it for the metrics."""

    def __init__(self, upstream: str, detail: str, error_type: str) -> None:
        super().__init__(upstream, detail)
        self.error_type = error_type


class UpstreamResponse(msgspec.Struct, frozen=True):
    """A response the client must interpret (2xx, or a status it declared acceptable)."""

    status: int
    body: bytes


Validator = Callable[[UpstreamResponse], None]


class UpstreamTransport:
    """Calls to one upstream: base URL, credentials, timeout, breaker, retry policy.

    Args:
        name: Bounded upstream name (``c2s``, ``diretrix``, ``work_api``).
        session: The worker's shared session (not owned).
        base_url: Scheme, host, optional port and path prefix.
        timeout: Per-attempt timeout.
        breaker: The upstream's breaker (create it with ``is_failure=is_upstream_failure``).
        retry: Policy for idempotent reads.
        headers: Headers of every request (credentials); never logged.
    """

    def __init__(
        self,
        name: str,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        timeout: aiohttp.ClientTimeout,
        breaker: CircuitBreaker,
        retry: RetryPolicy = DEFAULT_RETRY,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.breaker = breaker
        self.retry = retry
        self._session = session
        self._base = base_url.rstrip("/")
        self._timeout = timeout
        self._headers = dict(headers or {})
        self._redacted_base = redact_url(self._base)
        self._server_address = urlsplit(self._base).hostname or ""

    async def request(
        self,
        method: str,
        path: str,
        *,
        route: str,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        idempotent: bool,
        accept: Collection[int] = (),
        validate: Validator | None = None,
    ) -> UpstreamResponse:
        """Make one logical call (several attempts only when ``idempotent``).

        Args:
            method: HTTP method.
            path: Path after the base URL, already percent-encoded.
            route: Bounded route template for logs (``GET /Consultas/Pessoa/Telefone/{phone}``).
            params: Query parameters (encoded by aiohttp; may hold secrets, never logged raw).
            body: JSON body.
            idempotent: Safe to retry (reads). Writes are never retried.
            accept: Non-2xx statuses returned to the caller instead of raised (e.g. 404).
            validate: Checks a 2xx response inside the breaker's guard, so the errors it raises
                (soft errors, garbage) are classified by :func:`is_upstream_failure`.

        Raises:
            BreakerOpen: The breaker rejected the call (never retried).
            DependencyUnavailable: Network error or timeout (after retries when allowed).
            UpstreamError: Unexpected status, or what ``validate`` raised.
        """
        url = URL(self._base + path, encoded=True)
        policy = self.retry
        if not idempotent or policy.attempts <= 1:
            return await self._attempt(method, url, route, params, body, accept, validate)
        # The first attempt runs without the retry machinery (almost every call succeeds at
        # once, and entering it costs more than the rest of our side of a call); a retryable
        # failure is then handed to stamina as its first attempt, so backoff, Retry-After and
        # the attempt count are stamina's, with its window cut by the time already spent.
        started = time.monotonic()
        try:
            return await self._attempt(method, url, route, params, body, accept, validate)
        except Exception as exc:
            remaining = policy.timeout_s - (time.monotonic() - started)
            if remaining <= 0 or not self._should_retry(exc):
                raise
            first_failure = exc
        last_error = error_type(first_failure)
        async for attempt in stamina.retry_context(
            on=self._should_retry,
            attempts=policy.attempts,
            timeout=remaining,
            wait_initial=policy.wait_initial_s,
            wait_max=policy.wait_max_s,
            wait_jitter=policy.wait_jitter_s,
            wait_exp_base=policy.wait_exp_base,
        ):
            with attempt:
                if attempt.num == 1:
                    raise first_failure
                record_upstream_retry(self.name, last_error)
                try:
                    return await self._attempt(method, url, route, params, body, accept, validate)
                except Exception as exc:
                    last_error = error_type(exc)
                    raise
        raise AssertionError("stamina.retry_context ended without an outcome")  # unreachable

    def _should_retry(self, exc: Exception) -> bool | float:
        if isinstance(exc, BreakerOpen):
            return False
        if isinstance(exc, RetryableUpstreamError):
            if exc.retry_after is None:
                return True
            if exc.retry_after > self.retry.max_retry_after_s:
                return False
            return exc.retry_after
        return isinstance(exc, DependencyUnavailable)

    async def _attempt(
        self,
        method: str,
        url: URL,
        route: str,
        params: Mapping[str, str] | None,
        body: bytes | None,
        accept: Collection[int],
        validate: Validator | None,
    ) -> UpstreamResponse:
        async with self.breaker.guard() as permit:
            try:
                return await self._exchange(method, url, route, params, body, accept, validate)
            except Exception as exc:
                # Classified here rather than by the breaker's predicate, so a breaker built
                # without ``is_failure`` still counts a 404 as the correct answer it is.
                if is_upstream_failure(exc):
                    permit.mark_failure()
                else:
                    permit.mark_success()
                raise

    async def _exchange(
        self,
        method: str,
        url: URL,
        route: str,
        params: Mapping[str, str] | None,
        body: bytes | None,
        accept: Collection[int],
        validate: Validator | None,
    ) -> UpstreamResponse:
        headers = self._headers
        if body is not None:
            headers = {**headers, "Content-Type": "application/json"}
        start = time.perf_counter()
        status: int | None = None
        error = ""
        try:
            # The client span is named "{method} {upstream}" (GET diretrix), not just "GET".
            with upstream_call(self.name):
                async with self._session.request(
                    method,
                    url,
                    params=params,
                    data=body,
                    headers=headers,
                    timeout=self._timeout,
                    allow_redirects=False,
                ) as resp:
                    payload = await resp.read()
                    status = resp.status
                    retry_after_header = resp.headers.get("Retry-After")
            response = UpstreamResponse(status, payload)
            if _OK_LOW <= status < _OK_HIGH:
                if validate is not None:
                    validate(response)
                return response
            if status in accept:
                return response
            self._log_failure(route, start, status=status)
            detail = f"{self.name} answered HTTP {status}"
            if status >= _SERVER_ERROR or status == _TOO_MANY_REQUESTS:
                raise RetryableUpstreamError(
                    self.name, detail, status, parse_retry_after(retry_after_header)
                )
            raise UpstreamError(self.name, detail, status)
        except TimeoutError:
            # aiohttp's ServerTimeoutError is both a TimeoutError and a ClientError.
            error = "timeout"
            self._log_failure(route, start, error=error)
            raise _Unavailable(self.name, f"{self.name} did not answer in time", error) from None
        except (aiohttp.ClientError, OSError) as exc:
            # Chained exceptions are dropped on purpose: aiohttp's carry the URL.
            error = type(exc).__name__
            self._log_failure(route, start, error=error)
            raise _Unavailable(self.name, f"{self.name} is unreachable", error) from None
        except Exception as exc:
            error = error_type(exc)
            raise
        finally:
            observe_upstream(
                self.name,
                self._server_address,
                method,
                status,
                error,
                time.perf_counter() - start,
            )

    def _log_failure(
        self, route: str, start: float, *, status: int | None = None, error: str | None = None
    ) -> None:
        log.warning(
            "upstream_call_failed",
            upstream=self.name,
            base_url=self._redacted_base,
            route=route,
            status=status,
            error=error,
            duration_ms=round((time.perf_counter() - start) * 1000, 1),
        )


def error_type(exc: BaseException) -> str:
    """The bounded ``error_type`` label of a failed upstream attempt.

    ``""`` for correct answers (``NotFound``, a 404 the client accepts), the status code for an
    unexpected status, ``soft_error`` for a Work API error inside an HTTP 200, ``invalid_body``
    for an unusable 2xx body, ``breaker_open``, ``timeout``/``unavailable`` for network
    failures, else the exception's class name.
    """
    if isinstance(exc, NotFound):
        return ""
    if isinstance(exc, UpstreamSoftError):
        return "soft_error"
    if isinstance(exc, UpstreamError):
        status = exc.status
        if status is None:
            return "unavailable"
        return "invalid_body" if _OK_LOW <= status < _OK_HIGH else str(status)
    if isinstance(exc, BreakerOpen):
        return "breaker_open"
    if isinstance(exc, _Unavailable):
        return exc.error_type
    if isinstance(exc, DependencyUnavailable):
        return "unavailable"
    return type(exc).__name__


def decode_json(upstream: str, body: bytes, type_: type[T]) -> T:
    """Decode ``body`` as ``type_`` or raise ``UpstreamError`` (status 200: garbage body)."""
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.DecodeError:
        raise UpstreamError(upstream, f"{upstream} sent an unparsable body", 200) from None
