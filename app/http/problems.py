"""RFC 9457 problem details: the one error body every endpoint returns.

The legacy ``error`` member keeps existing clients, which read ``{"error": "..."}``, working
(docs/contract.md §1.1); ``request_id`` and ``trace_id`` let an SRE find the request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from litestar.openapi import ResponseSpec

from observability.pii import scrub_text

if TYPE_CHECKING:
    from litestar.types import Scope

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "FieldError",
    "Problem",
    "problem_instance",
    "problem_responses",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://c2s-api.dev/problems/"


class FieldError(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One invalid field of a request."""

    field: str
    message: str
    source: str | None = None


class Problem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    error: str
    instance: str | None = None
    request_id: str | None = None
    trace_id: str | None = None
    errors: list[FieldError] | None = None
    dependency: str | None = None
    retry_after: int | None = None


_TITLES: dict[int, tuple[str, str]] = {
    400: ("bad-request", "Bad Request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not Found"),
    405: ("method-not-allowed", "Method Not Allowed"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Payload Too Large"),
    415: ("unsupported-media-type", "Unsupported Media Type"),
    422: ("unprocessable-content", "Unprocessable Content"),
    429: ("rate-limited", "Too Many Requests"),
    500: ("internal", "Internal Server Error"),
    502: ("upstream-error", "Bad Gateway"),
    503: ("unavailable", "Service Unavailable"),
    504: ("upstream-timeout", "Gateway Timeout"),
}


def problem_type(status: int) -> tuple[str, str]:
    """Return ``(type URI, title)`` for a status code."""
    slug, title = _TITLES.get(status, ("http-" + str(status), "HTTP " + str(status)))
    return PROBLEM_TYPE_BASE + slug, title


_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request: the body names the offending field.",
    401: "Missing, unknown, expired or revoked credentials.",
    403: "Credentials lack the required scope.",
    404: "Not found.",
    409: "Conflicts with a request in flight.",
    413: "Request body larger than the configured limit.",
    415: "Unsupported Content-Type.",
    422: "Well-formed but semantically invalid request.",
    429: "Rate limit exceeded; see Retry-After.",
    502: "An upstream service failed.",
    503: "A dependency is unavailable; see Retry-After.",
}


def problem_responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI response specs for the given error status codes."""
    return {
        code: ResponseSpec(
            data_container=Problem,
            description=_DESCRIPTIONS.get(code, "Error"),
            media_type=PROBLEM_MEDIA_TYPE,
            generate_examples=False,
        )
        for code in codes
    }


def problem_instance(scope: Scope) -> str:
    """The ``instance`` member: the request path with anything PII-shaped masked.

    Paths can carry a CPF, phone or e-mail typed by a client (``/customers/52998224725``); the
    problem body must not echo it, as it ends up in client logs and tickets.
    """
    return scrub_text(scope.get("path", ""))


def encode_problem(problem: Problem) -> bytes:
    """Serialise a problem document."""
    return msgspec.json.encode(problem)


def as_dict(problem: Problem) -> dict[str, Any]:  # Any: JSON document
    """Return the problem as a plain JSON-able dict."""
    return msgspec.to_builtins(problem)  # type: ignore[no-any-return]
