"""Domain errors.

Every failure the domain can report is an exception here; ``app/http/errors.py`` maps each class to
one problem+json response in a single table. Messages never carry raw personal data (CPF, phone,
email, names, keys): callers pass field names and generic descriptions only.
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "DependencyUnavailable",
    "DomainError",
    "Forbidden",
    "InvalidInput",
    "NotFound",
    "Unauthorized",
    "UpstreamError",
    "UpstreamSoftError",
]


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(DomainError):
    """A value supplied by a client breaks a domain rule (HTTP 400).

    Attributes:
        field: The name of the offending field, as the client sent it.
    """

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field


class NotFound(DomainError):
    """The requested entity does not exist (HTTP 404)."""


class Unauthorized(DomainError):
    """Missing, unknown, expired or revoked credentials (HTTP 401)."""


class Forbidden(DomainError):
    """Valid credentials without the right scope or tenant (HTTP 403)."""


class Conflict(DomainError):
    """The request collides with one in flight or with a stored state (HTTP 409)."""


class DependencyUnavailable(DomainError):
    """A dependency (PostgreSQL, Redis, an upstream) cannot serve now (HTTP 503).

    Attributes:
        dependency: Bounded dependency name (``postgres``, ``redis``, ``work_api``...).
        retry_after: Seconds after which a retry is sensible.
    """

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
