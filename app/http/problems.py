"""RFC 9457 problem details: the one error body every endpoint returns.

The legacy ``error`` member keeps existing clients, which read ``{"error": "..."}``, working
(docs/contract.md §1.1); ``request_id`` and ``trace_id`` let an SRE find the request.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any

import msgspec
from litestar.openapi import ResponseSpec

from app.http.middleware.request_id import request_id_of
from observability.tracing import current_trace_id

if TYPE_CHECKING:
    from collections.abc import Sequence

    from litestar.types import Scope, Send

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "FieldError",
    "Problem",
    "problem_instance",
    "problem_responses",
    "send_problem",
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
    408: ("request-timeout", "Request Timeout"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Payload Too Large"),
    415: ("unsupported-media-type", "Unsupported Media Type"),
    422: ("unprocessable-content", "Unprocessable Content"),
    429: ("rate-limited", "Too Many Requests"),
    451: ("subject-erased", "Unavailable For Legal Reasons"),
    499: ("client-closed-request", "Client Closed Request"),
    500: ("internal", "Internal Server Error"),
    502: ("upstream-error", "Bad Gateway"),
    503: ("unavailable", "Service Unavailable"),
    504: ("upstream-timeout", "Gateway Timeout"),
}


# Problem types more specific than their status's (``kind`` of :func:`problem_type`).
_KINDS: dict[str, str] = {
    "quota-exceeded": "Paid-Call Quota Exceeded",
}


def problem_type(status: int, kind: str | None = None) -> tuple[str, str]:
    """Return ``(type URI, title)`` for a status code, or for a specific ``kind`` of it
    (``quota-exceeded``: a 429 that is the key's daily paid-call quota, not a rate limit)."""
    if kind is not None and kind in _KINDS:
        return PROBLEM_TYPE_BASE + kind, _KINDS[kind]
    slug, title = _TITLES.get(status, ("http-" + str(status), "HTTP " + str(status)))
    return PROBLEM_TYPE_BASE + slug, title


_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request: the body names the offending field.",
    401: "Missing, unknown, expired or revoked credentials.",
    403: "Credentials lack the required scope.",
    404: "Not found.",
    408: "The request body did not arrive within BODY_READ_TIMEOUT_S.",
    409: "Conflicts with a request in flight.",
    413: "Request body larger than the configured limit.",
    415: "Unsupported Content-Type.",
    422: "Well-formed but semantically invalid request.",
    429: "Rate limit (rate-limited) or the key's daily paid-call quota (quota-exceeded) "
    "exceeded; see Retry-After.",
    451: "The person's data was erased at their request (LGPD); not fetched again during the "
    "hold unless the request carries their renewed consent.",
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


UNKNOWN_SEGMENT = "{unknown}"
_PARAM_TYPE = re.compile(r"\{(\w+):[^}]*\}")


def problem_instance(scope: Scope) -> str:
    """The ``instance`` member: where the problem occurred, without any client-typed value.

    Paths can carry a CPF, phone, e-mail or name typed by a client (``/customers/52998224725``,
    a mistyped ``/api/v1/x/MARIA DA SILVA``); the problem body must not echo them, as it ends up
    in client logs and tickets. A routed request is named by its route template
    (``/api/v1/customers/{customer_id}``); any other path keeps only the segments that are
    literal segments of the application's routes, each other one becoming ``{unknown}``.
    """
    template = scope.get("path_template")
    if template:
        return _route_template(template)
    path: str = scope.get("path", "")
    app = scope.get("app")
    vocabulary = _vocabulary(app) if app is not None else frozenset()
    return "/".join(
        segment if not segment or segment in vocabulary else UNKNOWN_SEGMENT
        for segment in path.split("/")
    )


@functools.lru_cache(maxsize=256)
def _route_template(template: str) -> str:
    """``/customers/{customer_id:uuid}`` -> ``/customers/{customer_id}``."""
    return _PARAM_TYPE.sub(r"{\1}", template)


@functools.lru_cache(maxsize=8)  # one application per process; a few more in tests
def _vocabulary(app: Any) -> frozenset[str]:  # Any: the Litestar application
    """The literal path segments of ``app``'s routes (never a parameter), computed once per app."""
    return frozenset(
        segment
        for route in app.routes
        for segment in route.path.split("/")
        if segment and not segment.startswith("{")
    )


def encode_problem(problem: Problem) -> bytes:
    """Serialise a problem document."""
    return msgspec.json.encode(problem)


def as_dict(problem: Problem) -> dict[str, Any]:  # Any: JSON document
    """Return the problem as a plain JSON-able dict."""
    return msgspec.to_builtins(problem)  # type: ignore[no-any-return]


async def send_problem(
    scope: Scope,
    send: Send,
    status: int,
    detail: str,
    *,
    retry_after: int | None = None,
    dependency: str | None = None,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Answer a problem+json from raw ASGI middleware (outside Litestar's exception table).

    The one sender of every middleware's problem answers. A 503 carries the generic ``error``
    text of the exception table (``docs/contract.md`` §1.1); ``retry_after`` sets both the member
    and the ``Retry-After`` header; ``headers`` are added as given.
    """
    type_uri, title = problem_type(status)
    body = encode_problem(
        Problem(
            type=type_uri,
            title=title,
            status=status,
            detail=detail,
            error="Service unavailable" if status == 503 else detail,
            # The path may carry a CPF or an e-mail (a mistyped URL): never echo it raw.
            instance=problem_instance(scope),
            request_id=request_id_of(scope),
            trace_id=current_trace_id(),
            dependency=dependency,
            retry_after=retry_after,
        )
    )
    out = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    if retry_after is not None:
        out.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body, "more_body": False})
