"""Domain errors, and the one table of how each is answered.

Every failure the domain can report is an exception here. Each class carries the HTTP status it
is answered with (``http_status``); :func:`error_outcome` gives the status and the text a client may
see, and is the single source for both ``app/http/errors.py`` (problem+json answers) and the
per-item results of a batch. Server-side failures (5xx) are shown with the fixed texts of
:data:`SERVER_ERROR_TEXTS` only (``docs/contract.md`` §1.1): an error's own text may name
internals. Messages never carry raw personal data (CPF, phone, email, names, keys): callers pass
field names and generic descriptions only.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "SERVER_ERROR_TEXTS",
    "Conflict",
    "DependencyUnavailable",
    "DomainError",
    "ErrorOutcome",
    "Forbidden",
    "InvalidInput",
    "NotFound",
    "QuotaExceeded",
    "Unauthorized",
    "UpstreamError",
    "UpstreamSoftError",
    "error_outcome",
]

# The fixed texts of server-side failures (``docs/contract.md`` §1.1).
SERVER_ERROR_TEXTS: Final[Mapping[int, str]] = MappingProxyType(
    {
        500: "Internal server error",
        502: "External service error",
        503: "Service unavailable",
        504: "External service timeout",
    }
)


class DomainError(Exception):
    """Base of every error the domain raises on purpose.

    Attributes:
        http_status: The HTTP status the error is answered with; a class without its own is a
            bug, answered 500.
    """

    http_status: ClassVar[int] = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(DomainError):
    """A value supplied by a client breaks a domain rule (HTTP 400).

    Attributes:
        field: The name of the offending field, as the client sent it.
    """

    http_status: ClassVar[int] = 400

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field


class NotFound(DomainError):
    """The requested entity does not exist (HTTP 404)."""

    http_status: ClassVar[int] = 404


class Unauthorized(DomainError):
    """Missing, unknown, expired or revoked credentials (HTTP 401)."""

    http_status: ClassVar[int] = 401


class Forbidden(DomainError):
    """Valid credentials without the right scope or tenant (HTTP 403)."""

    http_status: ClassVar[int] = 403


class Conflict(DomainError):
    """The request collides with one in flight or with a stored state (HTTP 409)."""

    http_status: ClassVar[int] = 409


class DependencyUnavailable(DomainError):
    """A dependency (PostgreSQL, Redis, an upstream) cannot serve now (HTTP 503).

    Attributes:
        dependency: Bounded dependency name (``postgres``, ``redis``, ``work_api``...).
        retry_after: Seconds after which a retry is sensible.
    """

    http_status: ClassVar[int] = 503

    def __init__(self, dependency: str, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(detail)
        self.dependency = dependency
        self.retry_after = retry_after


class UpstreamError(DomainError):
    """An upstream answered with an error or garbage (HTTP 502).

    Attributes:
        upstream: Bounded upstream name (``c2s``, ``diretrix``, ``work_api``).
        status: The upstream's HTTP status when there was one.
    """

    http_status: ClassVar[int] = 502

    def __init__(self, upstream: str, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.upstream = upstream
        self.status = status


class UpstreamSoftError(UpstreamError):
    """The Work API reported an error inside an HTTP 200 body (expired token, no credits...).

    Attributes:
        code: The status code found in the body.
        kind: Bounded classification (``expired_token``, ``no_credits``, ``unknown_module``,
            ``not_found``, ``other``).
    """

    def __init__(self, upstream: str, detail: str, code: int | None, kind: str) -> None:
        super().__init__(upstream, detail, status=200)
        self.code = code
        self.kind = kind


class QuotaExceeded(DomainError):
    """The API key spent its daily paid-call quota: the upstream was not called (HTTP 429).

    Attributes:
        upstream: The paid upstream that was not called (``work_api``, ``diretrix``).
        retry_after: Seconds until the UTC day ends (the quota starts again).
    """

    http_status: ClassVar[int] = 429

    def __init__(self, upstream: str, retry_after: float) -> None:
        super().__init__("Daily paid-call quota of this API key exceeded; it resets at 00:00 UTC")
        self.upstream = upstream
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class ErrorOutcome:
    """How a domain error is shown to a client.

    Attributes:
        status: The HTTP status (the error class's ``http_status``).
        detail: The error's own text for client errors (4xx), the fixed text of
            :data:`SERVER_ERROR_TEXTS` for server-side failures (5xx).
        field: The offending field of an :class:`InvalidInput`, else ``None``.
    """

    status: int
    detail: str
    field: str | None = None


def error_outcome(exc: DomainError) -> ErrorOutcome:
    """The status and the client-visible text of a domain error.

    Args:
        exc: The error.

    Returns:
        Its outcome; an error of a class without its own ``http_status`` is a 500.
    """
    status = exc.http_status
    if status >= 500:
        text = SERVER_ERROR_TEXTS.get(status, SERVER_ERROR_TEXTS[500])
        return ErrorOutcome(status=status, detail=text)
    field = exc.field if isinstance(exc, InvalidInput) else None
    return ErrorOutcome(status=status, detail=exc.detail, field=field)
