"""The HTTP edge: health, readiness, documents, problem+json and request ids."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import pytest
from litestar import Litestar, get
from litestar.params import FromPath, FromQuery, HeaderParameter, QueryParameter
from litestar.testing import AsyncTestClient
from openapi_spec_validator import validate

from app.config import load_settings
from app.http.errors import exception_handlers
from app.http.middleware.request_id import RequestIdMiddleware
from app.main import create_app
from domain.errors import DependencyUnavailable, InvalidInput, UpstreamError

if TYPE_CHECKING:
    from app.config import Settings

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """Assert ``response`` is an RFC 9457 problem with every member we promise."""
    assert response.status_code == status
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    for member in ("type", "title", "status", "detail", "error", "request_id"):
        assert member in body, member
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_health_answers_the_reference_body(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "service": "c2s-api", "version": "0.1.0"}


async def test_ready_reports_each_dependency_ok(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"postgres": "ok", "redis": "ok"},
        "degraded": [],
    }


async def test_ready_names_the_failing_dependency_with_503(settings: Settings) -> None:
    broken = msgspec.structs.replace(
        settings,
        database_url="postgresql://postgres@127.0.0.1:1/none",
        ready_timeout_s=0.5,
        db_connect_timeout_s=0.3,
    )
    async with AsyncTestClient(app=create_app(broken)) as client:
        response = await client.get("/health/ready")
    body = assert_problem(response, 503)
    assert body["dependency"] == "postgres"
    assert "postgres" in body["detail"]
    assert "redis" not in body["dependency"]
    assert int(response.headers["retry-after"]) >= 1


async def test_ready_stays_ready_with_redis_unreachable_and_reports_it_degraded(
    settings: Settings,
) -> None:
    # Readiness gates traffic: with Redis down every instance still serves (per-process limits,
    # breakers and flags, caches bypassed), so failing readiness would take them all out at once.
    # Redis is reported in the body and in dependency_degraded, never as a 503.
    broken = msgspec.structs.replace(
        settings, redis_url="redis://127.0.0.1:1/0", ready_timeout_s=0.5
    )
    async with AsyncTestClient(app=create_app(broken)) as client:
        response = await client.get("/health/ready")
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["postgres"] == "ok"
    assert body["checks"]["redis"] in ("timeout", "unavailable")
    assert body["degraded"] == ["redis"]
    assert 'dependency_degraded{dependency="redis"} 1.0' in metrics
    assert 'dependency_ready{dependency="redis"} 0.0' in metrics


async def test_ready_with_redis_back_clears_the_degraded_gauge(
    client: AsyncTestClient[Litestar],
) -> None:
    assert (await client.get("/health/ready")).json()["degraded"] == []
    metrics = (await client.get("/metrics")).text
    assert 'dependency_degraded{dependency="redis"} 0.0' in metrics


async def test_openapi_document_is_valid_openapi_3_1(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    validate(document)


async def test_every_operation_has_an_id_a_summary_and_documented_errors(
    client: AsyncTestClient[Litestar],
) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    operations = [
        (path, method, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
    ]
    assert operations
    ids = [op["operationId"] for _, _, op in operations]
    assert len(ids) == len(set(ids))
    for path, method, op in operations:
        assert op.get("summary"), (path, method)
        if path != "/health":  # liveness never fails while the process answers
            errors = [code for code in op["responses"] if code.startswith(("4", "5"))]
            assert errors, (path, method)
            for code in errors:
                assert PROBLEM in op["responses"][code]["content"], (path, method, code)


# docs/security.md, "Scopes per operation".
EXPECTED_SCOPES = {
    ("/api/v1/leads/process", "get"): "enrich",
    ("/api/v1/c2s/enrich/{lead_id}", "post"): "enrich",
    ("/api/v1/contributor/customer", "get"): "read",
    ("/api/v1/enrich", "post"): "enrich",
    ("/api/v1/enrich/batch", "post"): "enrich",
    ("/api/v1/customers/{customer_id}", "get"): "read",
    ("/api/v1/leads", "post"): "enrich",
    ("/api/v1/work/modules/all", "get"): "read",
    ("/api/v1/work/modules/{module}", "get"): "read",
    ("/api/v1/admin/flags", "get"): "admin",
    ("/api/v1/admin/flags/{name}", "put"): "admin",
    ("/api/v1/admin/flags/{name}/override", "delete"): "admin",
    ("/api/v1/enrich/jobs", "post"): "enrich",
    ("/api/v1/enrich/jobs/{job_id}", "get"): "read",
    ("/api/v1/enrich/jobs/{job_id}/results", "get"): "read",
    ("/api/v1/enrich/jobs/{job_id}", "delete"): "enrich",
    ("/api/v1/subjects/{cpf}", "get"): "dpo",
    ("/api/v1/subjects/{cpf}", "delete"): "dpo",
}


async def test_openapi_states_the_scope_of_every_operation(
    client: AsyncTestClient[Litestar],
) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    for (path, method), scope in EXPECTED_SCOPES.items():
        op = document["paths"][path][method]
        assert op["x-required-scope"] == scope, (path, method)
        assert op["security"] == [{"ApiKey": [scope]}, {"Bearer": [scope]}], (path, method)
        assert f"the `{scope}` scope" in op["description"], (path, method)
    subjects = document["paths"]["/api/v1/subjects/{cpf}"]["delete"]["description"]
    assert "`admin` does not grant it" in subjects
    lookup = document["paths"]["/api/v1/contributor/customer"]["get"]["description"]
    assert "`enrich`" in lookup  # the read/enrich split is stated where it applies
    for path in ("/api/v1/webhooks/c2s", "/api/v1/webhooks/google-ads"):
        assert "x-required-scope" not in document["paths"][path]["post"]


async def test_yaml_document_is_served_at_the_reference_path(
    client: AsyncTestClient[Litestar],
) -> None:
    import yaml

    response = await client.get("/api-docs/openapi.yml")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/yaml")
    as_json = (await client.get("/schema/openapi.json")).json()
    assert yaml.safe_load(response.text) == as_json


async def test_swagger_ui_loads_no_external_resource(client: AsyncTestClient[Litestar]) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in page.text
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert refs
    for ref in refs:
        assert ref.startswith("/"), ref  # same origin only: no CDN
        asset = await client.get(ref)
        assert asset.status_code == 200, ref
        assert len(asset.content) > 0
    init = (await client.get("/docs/static/c2s-init.js")).text
    assert "/schema/openapi.json" in init
    assert "http" not in init


async def test_unknown_path_is_a_problem_with_request_id(
    client: AsyncTestClient[Litestar],
) -> None:
    body = assert_problem(await client.get("/no/such/path"), 404)
    assert body["error"] == body["detail"]
    # Unknown segments are not echoed (they may be a name typed by the client).
    assert body["instance"] == "/{unknown}/{unknown}/{unknown}"


async def test_wrong_method_is_a_problem(client: AsyncTestClient[Litestar]) -> None:
    assert_problem(await client.post("/health"), 405)


async def test_caller_request_id_is_echoed(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "abc-123.def"})
    assert response.headers["x-request-id"] == "abc-123.def"


async def test_unsafe_request_id_is_replaced(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


# --- the exception table, exercised through a small app with the same handlers ---------------


@get("/boom/invalid", sync_to_thread=False)
def _invalid() -> None:
    raise InvalidInput("cpf", "CPF check digits do not match")


@get("/boom/down", sync_to_thread=False)
def _down() -> None:
    raise DependencyUnavailable("work_api", "breaker open", retry_after=7.2)


@get("/boom/upstream", sync_to_thread=False)
def _upstream() -> None:
    raise UpstreamError("c2s", "C2S said 500 for lead 52998224725", status=500)


@get("/boom/crash", sync_to_thread=False)
def _crash() -> None:
    raise RuntimeError("secret 52998224725 in message")


@get("/boom/typed/{count:int}", sync_to_thread=False)
def _typed(count: FromPath[int], limit: FromQuery[int]) -> dict[str, int]:
    return {"count": count, "limit": limit}


@get("/boom/aliased", sync_to_thread=False)
def _aliased(
    lead_id: Annotated[str, QueryParameter(name="id", pattern=r"^[a-z]{1,8}$")],
    trace: Annotated[str | None, HeaderParameter(name="X-Trace-Tag", max_length=4)] = None,
) -> dict[str, str | None]:
    return {"lead_id": lead_id, "trace": trace}


@pytest.fixture
async def boom_client() -> Any:
    app = Litestar(
        route_handlers=[_invalid, _down, _upstream, _crash, _typed, _aliased],
        exception_handlers=exception_handlers(),
    )
    app.asgi_handler = RequestIdMiddleware(app.asgi_handler)
    async with AsyncTestClient(app=app) as client:
        yield client


async def test_invalid_input_names_the_field(boom_client: Any) -> None:
    body = assert_problem(await boom_client.get("/boom/invalid"), 400)
    assert body["errors"] == [{"field": "cpf", "message": "CPF check digits do not match"}]


async def test_dependency_down_is_503_with_retry_after(boom_client: Any) -> None:
    response = await boom_client.get("/boom/down")
    body = assert_problem(response, 503)
    assert response.headers["retry-after"] == "8"
    assert body["dependency"] == "work_api"


async def test_upstream_error_is_502_with_generic_text(boom_client: Any) -> None:
    body = assert_problem(await boom_client.get("/boom/upstream"), 502)
    assert body["error"] == "External service error"
    assert "52998224725" not in str(body)


async def test_unhandled_exception_is_500_without_its_message(boom_client: Any) -> None:
    body = assert_problem(await boom_client.get("/boom/crash"), 500)
    assert body["error"] == "Internal server error"
    assert "52998224725" not in str(body)
    assert "secret" not in str(body)


async def test_validation_error_names_the_query_parameter(boom_client: Any) -> None:
    body = assert_problem(await boom_client.get("/boom/typed/3?limit=abc"), 400)
    assert body["errors"][0]["field"] == "limit"
    assert "limit" in body["detail"]


async def test_missing_query_parameter_is_named(boom_client: Any) -> None:
    body = assert_problem(await boom_client.get("/boom/typed/3"), 400)
    assert body["errors"][0]["field"] == "limit"


async def test_blank_aliased_query_parameter_is_missing_under_its_wire_name(
    boom_client: Any,
) -> None:
    # Like GET /leads/process?id=: the handler's `lead_id` is `id` on the wire.
    body = assert_problem(await boom_client.get("/boom/aliased?id="), 400)
    assert body["detail"] == "Missing 'id' parameter"
    assert body["errors"] == [
        {"field": "id", "message": "Missing 'id' parameter", "source": "query"}
    ]


async def test_invalid_parameters_name_the_wire_alias_and_a_plain_source(
    boom_client: Any,
) -> None:
    body = assert_problem(await boom_client.get("/boom/aliased?id=NOT-OK"), 400)
    assert [(e["field"], e["source"]) for e in body["errors"]] == [("id", "query")]
    assert body["detail"].startswith("Invalid field 'id' (query): ")
    header = assert_problem(
        await boom_client.get("/boom/aliased?id=ok", headers={"X-Trace-Tag": "too-long"}), 400
    )
    assert [(e["field"].lower(), e["source"]) for e in header["errors"]] == [
        ("x-trace-tag", "header")
    ]
    typed = assert_problem(await boom_client.get("/boom/typed/3?limit=abc"), 400)
    assert typed["errors"][0]["source"] == "query"


async def test_bad_path_parameter_is_4xx(boom_client: Any) -> None:
    response = await boom_client.get("/boom/typed/notanint?limit=1")
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"].startswith(PROBLEM)


def test_settings_default_port_is_8080() -> None:
    assert load_settings({}).port == 8080
