"""Exceptions to responses.

Every error leaving the API is ``application/problem+json`` (RFC 9457) built here. A domain error's
status and client-visible text come from :func:`domain.errors.error_outcome` (the same table the
batch results use). 5xx bodies carry the fixed texts of :data:`domain.errors.SERVER_ERROR_TEXTS`
only (never exception messages), so no personal data can leak through them.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    NotFoundException,
    ValidationException,
)

from app.http.middleware.bodyguard import BodyRejected, PendingBodiesFull
from app.http.middleware.request_id import request_id_of
from app.http.problems import (
    PROBLEM_MEDIA_TYPE,
    FieldError,
    Problem,
    problem_instance,
    problem_type,
)
from domain.errors import (
    SERVER_ERROR_TEXTS,
    DependencyUnavailable,
    DomainError,
    InvalidInput,
    QuotaExceeded,
    UpstreamError,
    error_outcome,
)
from domain.flags import FeatureDisabled, feature_disabled_detail
from observability.tracing import current_trace_id

if TYPE_CHECKING:
    from collections.abc import Callable

    from litestar.types import ExceptionHandlersMap

__all__ = ["exception_handlers", "problem_response"]

log = structlog.get_logger("app.http.errors")

# The legacy `error` member of 5xx answers (``docs/contract.md`` §1.1).
_LEGACY_5XX = SERVER_ERROR_TEXTS


def problem_response(
    request: Request[Any, Any, Any],
    status: int,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    dependency: str | None = None,
    retry_after: float | None = None,
    headers: dict[str, str] | None = None,
    kind: str | None = None,
) -> Response[Problem]:
    """Build a problem+json response for ``request`` (``kind``: a specific problem type of the
    status, see :func:`app.http.problems.problem_type`)."""
    type_uri, title = problem_type(status, kind)
    retry = math.ceil(retry_after) if retry_after is not None else None
    body = Problem(
        type=type_uri,
        title=title,
        status=status,
        detail=detail,
        error=_LEGACY_5XX.get(status, detail),
        instance=problem_instance(request.scope),
        request_id=request_id_of(request.scope),
        trace_id=current_trace_id(),
        errors=errors,
        dependency=dependency,
        retry_after=retry,
    )
    out_headers = dict(headers or {})
    if retry is not None:
        out_headers["Retry-After"] = str(max(retry, 1))
    return Response(
        content=body,
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=out_headers,
    )


_BACKTICKED_FIELD = re.compile(r"field `([^`]+)`")
_MISSING = re.compile(r"^Missing required (\w+) parameter '([^']+)'")


_SOURCES = frozenset({"query", "path", "header", "cookie", "body"})


def _plain_source(source: object) -> str | None:
    """``ParamType.QUERY`` (Litestar's enum) -> ``query``; ``None`` stays ``None``."""
    if source is None:
        return None
    value = getattr(source, "value", source)
    text = str(value).lower()
    return text if text in _SOURCES else None


def _wire_name(request: Request[Any, Any, Any], key: str) -> str:
    """The name a parameter has on the wire (``id`` for ``lead_id``), as Litestar maps it."""
    handler = request.scope.get("route_handler")
    parsed = getattr(handler, "parsed_fn_signature", None)
    parameter = parsed.parameters.get(key) if parsed is not None else None
    definition = getattr(parameter, "kwarg_definition", None)
    if definition is None:
        return key
    for attribute in ("header", "cookie", "query", "name"):
        alias = getattr(definition, attribute, None)
        if isinstance(alias, str) and alias:
            return alias
    return key


def _sent_blank(request: Request[Any, Any, Any], source: str | None, name: str) -> bool:
    """Whether the client sent the parameter with a blank value (``?id=``)."""
    if source == "query":
        values = request.query_params.getall(name, [])
    elif source == "header":
        values = request.headers.getall(name, [])
    else:
        return False
    return bool(values) and all(not value.strip() for value in values)


def _missing(name: str, source: str | None) -> FieldError:
    # The contract's wording (docs/contract.md §1.8): "Missing 'id' parameter".
    return FieldError(field=name, message=f"Missing '{name}' parameter", source=source)


def _field_errors(request: Request[Any, Any, Any], exc: ValidationException) -> list[FieldError]:
    """Translate Litestar's validation ``extra`` (or its missing-parameter text) into field errors.

    Each error names the parameter as the client sent it (the wire alias: ``id``, not the
    handler's ``lead_id``) and its plain ``source`` (``query``, ``path``, ``header``, ``cookie``,
    ``body``). A query or header parameter sent blank is reported as missing, with the inherited
    text.
    """
    out: list[FieldError] = []
    missing = _MISSING.match(str(exc.detail))
    if missing:
        return [_missing(missing[2], _plain_source(missing[1]))]
    extra = exc.extra
    items = extra if isinstance(extra, list) else [extra] if isinstance(extra, dict) else []
    for item in items:
        if not isinstance(item, dict):
            continue
        key = str(item.get("key") or "body")
        message = str(item.get("message") or "invalid value")
        source = _plain_source(item.get("source"))
        if key == "data":  # the whole body: name the field msgspec complained about, if any
            named = _BACKTICKED_FIELD.search(message)
            key = named[1] if named else "body"
            source = "body"
            if message == "'data'":
                message = "request body is required"
        elif source in {"query", "path", "header", "cookie"}:
            key = _wire_name(request, key)
            if _sent_blank(request, source, key):
                out.append(_missing(key, source))
                continue
        out.append(FieldError(field=key, message=message, source=source))
    return out


def _validation_detail(exc: ValidationException, errors: list[FieldError]) -> str:
    if errors:
        first = errors[0]
        if first.message.startswith("Missing '"):
            return first.message
        where = f" ({first.source})" if first.source else ""
        return f"Invalid field '{first.field}'{where}: {first.message}"
    # Litestar's own text ("Validation failed for GET /x") names no PII.
    return str(exc.detail) or "Invalid request"


def _on_validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Problem]:
    errors = _field_errors(request, exc)
    return problem_response(request, 400, _validation_detail(exc, errors), errors=errors or None)


def _on_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    status = exc.status_code
    if status >= 500:
        log.error("http_exception", status=status, error_type=type(exc).__name__)
        detail = _LEGACY_5XX.get(status, "Internal server error")
    else:
        detail = str(exc.detail)
    headers = dict(exc.headers or {})
    retry = headers.pop("Retry-After", None)
    return problem_response(
        request,
        status,
        detail,
        headers=headers,
        retry_after=float(retry) if retry is not None and retry.isdigit() else None,
    )


def _on_body_rejected(request: Request[Any, Any, Any], exc: BodyRejected) -> Response[Problem]:
    # 408 and 499 are the client's; a 503 here is load shedding, counted by the access log and
    # the request metrics. None is a server fault: nothing is logged at error level.
    retry = (exc.headers or {}).get("Retry-After") if isinstance(exc, PendingBodiesFull) else None
    return problem_response(
        request,
        exc.status_code,
        str(exc.detail),
        retry_after=float(retry) if retry is not None else None,
    )


def _on_not_found(request: Request[Any, Any, Any], exc: NotFoundException) -> Response[Problem]:
    return problem_response(request, 404, str(exc.detail) or "Not found")


def _on_domain(request: Request[Any, Any, Any], exc: DomainError) -> Response[Problem]:
    outcome = error_outcome(exc)
    if outcome.status == 500:  # a DomainError without its own status is a bug
        log.error("unmapped_domain_error", error_type=type(exc).__name__)
        return problem_response(request, 500, outcome.detail)
    if isinstance(exc, InvalidInput):
        return problem_response(
            request,
            outcome.status,
            outcome.detail,
            errors=[FieldError(field=exc.field, message=exc.detail)],
        )
    if isinstance(exc, QuotaExceeded):
        # Not a rate limit: the key's paid calls of the UTC day; retry after midnight UTC.
        return problem_response(
            request,
            outcome.status,
            outcome.detail,
            retry_after=exc.retry_after,
            kind="quota-exceeded",
        )
    if isinstance(exc, FeatureDisabled):
        # An operator's switch, not a failing dependency: say which feature is off.
        return problem_response(
            request,
            outcome.status,
            feature_disabled_detail(exc.flag),
            dependency=exc.dependency,
            retry_after=exc.retry_after,
        )
    if isinstance(exc, DependencyUnavailable):
        log.warning("dependency_unavailable", dependency=exc.dependency)
        return problem_response(
            request,
            outcome.status,
            f"Dependency unavailable: {exc.dependency}",
            dependency=exc.dependency,
            retry_after=exc.retry_after,
        )
    if isinstance(exc, UpstreamError):
        log.warning("upstream_error", upstream=exc.upstream, upstream_status=exc.status)
    return problem_response(request, outcome.status, outcome.detail)


def _on_unhandled(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    # Log the class only: exception messages may contain request data.
    log.error("unhandled_exception", error_type=type(exc).__name__, exc_info=False)
    return problem_response(request, 500, _LEGACY_5XX[500])


def exception_handlers() -> ExceptionHandlersMap:
    """The handlers to install on the application."""
    table: dict[type[Exception] | int, Callable[..., Response[Any]]] = {
        ValidationException: _on_validation,
        NotFoundException: _on_not_found,
        BodyRejected: _on_body_rejected,
        HTTPException: _on_http,
        DomainError: _on_domain,
        Exception: _on_unhandled,
    }
    return table


# re-exported for handlers that want the plain JSON media type constant
JSON = MediaType.JSON
