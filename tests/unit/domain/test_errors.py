"""The one table of how domain errors are answered (:func:`domain.errors.error_outcome`)."""

from __future__ import annotations

import pytest

from domain.errors import (
    Conflict,
    DependencyUnavailable,
    DomainError,
    ErrorOutcome,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthorized,
    UpstreamError,
    UpstreamSoftError,
    error_outcome,
)
from domain.flags import FeatureDisabled


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (InvalidInput("cpf", "bad cpf"), ErrorOutcome(400, "bad cpf", "cpf")),
        (Unauthorized("Invalid API key"), ErrorOutcome(401, "Invalid API key")),
        (Forbidden("no scope"), ErrorOutcome(403, "no scope")),
        (NotFound("nothing here"), ErrorOutcome(404, "nothing here")),
        (Conflict("in flight"), ErrorOutcome(409, "in flight")),
        (DependencyUnavailable("redis", "down"), ErrorOutcome(503, "Service unavailable")),
        (FeatureDisabled("enable_batch"), ErrorOutcome(503, "Service unavailable")),
        (UpstreamError("c2s", "boom", status=500), ErrorOutcome(502, "External service error")),
        (
            UpstreamSoftError("work_api", "token", 401, "expired_token"),
            ErrorOutcome(502, "External service error"),
        ),
        (DomainError("unmapped"), ErrorOutcome(500, "Internal server error")),
    ],
)
def test_each_error_class_has_one_status_and_client_text(
    error: DomainError, expected: ErrorOutcome
) -> None:
    assert error_outcome(error) == expected


def test_server_side_texts_never_carry_the_error_message() -> None:
    secret = "postgres://user:pw@db/x refused for 390.533.447-05"
    for error in (DependencyUnavailable("postgres", secret), UpstreamError("c2s", secret)):
        assert secret not in error_outcome(error).detail


def test_an_upstream_error_keeps_the_upstream_status_apart_from_its_own() -> None:
    error = UpstreamError("c2s", "refused", status=422)
    assert (error.status, error.http_status) == (422, 502)
