"""Contract fuzzing: schemathesis 4.x against the app's own OpenAPI document, in-process.

Every operation of ``/schema/openapi.json`` is exercised with positive and negative data (both
generation modes) through schemathesis's phases (explicit examples, coverage, fuzzing, and the
stateful phase along the document's links in its own test) and every
built-in check (documented status codes, content types and headers, response schemas, negative
data rejected, positive data accepted, unsupported methods, ``ignored_auth``...), with a valid API
key. One rule is narrowed to what the service promises: upstreams point at a closed port here, so
an upstream-dependent operation may answer its *documented* 502/503 (``status_code_conformance``
still fails an undocumented one, and a 503 must carry ``Retry-After``); any other 5xx fails.

A second run sends every operation without a key and with an unknown key: everything but the
public operations must answer 401 problem+json with ``WWW-Authenticate``.

Operations whose inputs follow domain rules no JSON Schema can state (CPF check digits) are
listed in ``SEMANTIC_RULES``: for them only ``positive_data_acceptance`` is skipped. The CLI
run (``schemathesis.toml`` at the repository root) relaxes the same operations, checked by
``test_cli_config_matches_semantic_rules``.
Bounded: 25 examples per operation, no deadline (real PostgreSQL and Redis behind it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS
from schemathesis.config._checks import NotAServerErrorConfig
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi as schemathesis_asgi

from app.main import create_app
from tests.support.factories import issue_key

if TYPE_CHECKING:
    from collections.abc import Iterator

    from litestar import Litestar

    from app.config import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

# Nothing listens on port 9 of the loopback: upstream calls fail fast with "connection refused".
UNREACHABLE = "http://127.0.0.1:9"
MAX_EXAMPLES = 25
PROBLEM = "application/problem+json"
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# Operations whose inputs obey domain rules that JSON Schema cannot state: CPF check digits and
# all-equal digit strings (``00000000000`` is 11 digits and schema-valid, and not a CPF), and
# "at least one identifier" across optional fields. Schema-valid data may therefore get a
# documented 400 (naming the field) or 404 (a valid identifier nobody has), so only the
# ``positive_data_acceptance`` check is skipped for them; every other check applies, including
# ``negative_data_rejection`` and the response-schema checks.
SEMANTIC_RULES: dict[str, tuple[str, str]] = {
    "POST /api/v1/enrich": (
        "positive_data_acceptance",
        "at least one non-empty identifier; CPF check digits",
    ),
    "GET /api/v1/contributor/customer": (
        "positive_data_acceptance",
        "at least one non-empty identifier; CPF check digits; phone numbering plan",
    ),
    "POST /api/v1/webhooks/c2s": (
        "positive_data_acceptance",
        "events are validated one by one (updated_at formats); a body with no valid event is 400",
    ),
    "GET /api/v1/work/modules/all": (
        "positive_data_acceptance",
        "documento must be a CPF with valid check digits",
    ),
    "GET /api/v1/work/modules/{module}": (
        "positive_data_acceptance",
        "the Work API decides which modules exist (400 'no such module')",
    ),
    "GET /api/v1/usage": (
        "positive_data_acceptance",
        "'from' must not be after 'to'; a period covers at most 366 days",
    ),
    "GET /api/v1/admin/audit": (
        "positive_data_acceptance",
        "subject_cpf must be a CPF with valid check digits; cursor must be one the API issued",
    ),
    "GET /api/v1/customers": (
        "positive_data_acceptance",
        "a name of 2 folded characters, a city or a uf; uf a Brazilian unit; an opaque cursor",
    ),
    "POST /api/v1/enrich/jobs": (
        "positive_data_acceptance",
        "every item: at least one non-empty identifier, CPF check digits, phone numbering plan",
    ),
    "GET /api/v1/enrich/jobs": (
        "positive_data_acceptance",
        "the cursor is opaque: only a next_cursor the API returned is valid",
    ),
    "GET /api/v1/enrich/jobs/{job_id}/results": (
        "positive_data_acceptance",
        "the cursor is opaque: only a next_cursor the API returned is valid",
    ),
    "GET /api/v1/subjects/{cpf}": ("positive_data_acceptance", "CPF check digits"),
    "DELETE /api/v1/subjects/{cpf}": ("positive_data_acceptance", "CPF check digits"),
}

schema = schemathesis.pytest.from_fixture("fuzz_schema")


@pytest.fixture(autouse=True)
def _schemathesis_node_id(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32.5's lazy loader reads and rewrites ``node._nodeid`` (only to name the
    # failing operation in reports); pytest 9 no longer has that attribute. Give it one.
    node: Any = request.node
    if not hasattr(node, "_nodeid"):
        node._nodeid = node.nodeid


@pytest.fixture(scope="module")
def fuzz_app(settings: Settings) -> Iterator[Litestar]:
    """The real app, upstreams unreachable; schemathesis runs its lifespan."""
    app = create_app(
        msgspec.structs.replace(
            settings,
            # Own Redis key space: the breakers this run opens must not reach other tests' apps.
            redis_key_prefix=f"{settings.redis_key_prefix}fuzz:",
            c2s_base_url=UNREACHABLE,
            diretrix_base_url=UNREACHABLE,
            work_api_base_url=UNREACHABLE,
            c2s_timeout_s=2.0,
            diretrix_timeout_s=2.0,
            work_api_timeout_s=2.0,
        )
    )
    yield app
    # Close the pool and Redis client schemathesis's lifespan opened for this app.
    schemathesis_asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def fuzz_key(database_url: str) -> str:
    """A key with every scope, so no 403 hides a real answer."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(
            asyncio.run, issue_key(database_url, tenant="fuzz", scopes="read,enrich,admin,dpo")
        )
        return future.result()[0]


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_app: Litestar) -> Any:  # Any: schemathesis's schema object
    loaded = schemathesis.openapi.from_asgi("/schema/openapi.json", fuzz_app)
    loaded.config.generation.update(modes=list(GenerationMode), max_examples=MAX_EXAMPLES)
    # A 502/503 is the documented answer of an operation whose upstream is down; whether the
    # operation documents it is status_code_conformance's job. Every other 5xx is a failure.
    loaded.config.checks.not_a_server_error = NotAServerErrorConfig(
        expected_statuses=["1xx", "2xx", "3xx", "4xx", "502", "503"]
    )
    return loaded


def unavailable_is_a_problem_with_retry_after(
    ctx: Any, response: Any, case: Any
) -> bool | None:  # Any: schemathesis check protocol
    """A 502/503 is problem+json, and a 503 says when to retry."""
    if response.status_code not in (502, 503):
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith(PROBLEM), (case.operation.label, content_type)
    if response.status_code == 503:
        assert response.headers.get("retry-after"), (case.operation.label, "no Retry-After")
    return None


def _excluded_checks(case: Any) -> list[Any] | None:  # Any: schemathesis Case and checks
    skipped = SEMANTIC_RULES.get(case.operation.label)
    return CHECKS.get_by_names([skipped[0]]) if skipped else None


def _call_and_validate(case: Any, key: str) -> None:  # Any: Case
    case.call_and_validate(
        headers={"Authorization": f"Bearer {key}"},
        additional_checks=[unavailable_is_a_problem_with_retry_after],
        excluded_checks=_excluded_checks(case),
    )


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_honours_its_contract(case: Any, fuzz_key: str) -> None:  # Any: schemathesis Case
    """The examples, coverage and fuzzing phases (all enabled by default), every check."""
    _call_and_validate(case, fuzz_key)


def test_stateful_sequences_honour_the_contract(fuzz_schema: Any, fuzz_key: str) -> None:
    """The stateful phase: chains of calls along the document's (inferred) links."""
    base = fuzz_schema.as_state_machine()

    class Scenarios(base):  # type: ignore[valid-type,misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": {"Authorization": f"Bearer {fuzz_key}"}}

        def validate_response(
            self,
            response: Any,
            case: Any,
            additional_checks: list[Any] | None = None,
            **kwargs: Any,
        ) -> None:
            case.validate_response(
                response,
                additional_checks=[unavailable_is_a_problem_with_retry_after],
                excluded_checks=_excluded_checks(case),
                transport_kwargs=kwargs or None,
                recorder=self.recorder,
            )

    Scenarios.run(
        settings=settings(
            max_examples=15,
            stateful_step_count=4,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )


def test_cli_config_matches_semantic_rules(fuzz_app: Litestar) -> None:
    """``schemathesis.toml`` (the CLI run) relaxes exactly the operations listed here."""
    document = fuzz_app.openapi_schema.to_schema()
    ids = {
        f"{method.upper()} {path}": operation["operationId"]
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    config = tomllib.loads((ROOT / "schemathesis.toml").read_text())
    relaxed = {
        entry["include-operation-id"]
        for entry in config.get("operations", [])
        if entry.get("checks", {}).get("positive_data_acceptance", {}).get("enabled") is False
    }
    assert relaxed == {ids[label] for label in SEMANTIC_RULES}


def _public_paths(app: Litestar) -> set[str]:
    """OpenAPI path templates of the operations excluded from authentication."""
    public: set[str] = set()
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if handler.opt.get("exclude_from_auth"):
                public.add(route.path_format)
    return public


@schema.parametrize()
@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_protected_operation_refuses_missing_and_unknown_keys(
    case: Any, fuzz_app: Litestar
) -> None:
    if case.operation.path in _public_paths(fuzz_app):
        return
    if case.method.upper() != case.operation.method.upper():
        return  # an undocumented method: 405 from the router, before any route runs
    if case.meta is not None and case.meta.is_negative_at("path"):
        return  # an invalid path parameter may match no route at all (404 before auth)
    for headers in ({}, {"X-API-Key": "c2s_abcdefgh_" + "u" * 43}):
        response = case.call(headers=headers)
        label = (case.operation.label, headers, response.status_code)
        assert response.status_code == 401, (*label, response.text)
        assert response.headers["content-type"][0].startswith(PROBLEM), label
        assert response.headers["www-authenticate"][0].startswith("Bearer"), label


def test_every_protected_operation_declares_its_security(fuzz_app: Litestar) -> None:
    """Schemathesis's ``ignored_auth`` and API clients need the requirement in the document."""
    document = fuzz_app.openapi_schema.to_schema()
    public = _public_paths(fuzz_app)
    missing = [
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if path not in public and not operation.get("security", document.get("security"))
    ]
    assert not missing, f"operations without a security requirement: {missing}"
    schemes = document.get("components", {}).get("securitySchemes", {})
    assert {"ApiKey", "Bearer"} <= set(schemes)
