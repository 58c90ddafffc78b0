"""Malformed input: 400 problem+json on every JSON route, never 5xx; no path echo in problems.

The JSON routes are read from the application's route table (every POST/PUT/PATCH handler with
a ``data`` parameter), so a new route is covered without touching this file.
"""

from __future__ import annotations

import enum
import typing
import uuid
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from app.config import Secret
from app.http.body import MAX_JSON_DEPTH
from app.main import create_app
from tests.support.factories import issue_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from litestar import Litestar
    from litestar.handlers import HTTPRouteHandler

    from app.config import Settings

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
GOOGLE_KEY = "google-key-for-tests"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

# Bodies that are not UTF-8 JSON, or nest too deeply: 400 naming the field ``body``.
BROKEN_BODIES: dict[str, bytes] = {
    "invalid-utf8-in-string": b'{"cpf":"\xff"}',
    "invalid-utf8-outside-string": b'{"cpf":"1"}\xff',
    "overlong-utf8": b'{"cpf":"\xc0\xaf"}',
    "utf16-body": '{"cpf":"1"}'.encode("utf-16"),
    "array-1000-deep": b"[" * 1_000 + b"]" * 1_000,
    "object-1000-deep": b'{"a":' * 1_000 + b"1" + b"}" * 1_000,
    "array-100000-deep": b"[" * 100_000 + b"]" * 100_000,
    "unclosed-100000-deep": b"[" * 100_000,
    "byte-order-mark": b'\xef\xbb\xbf{"cpf":"52998224725"}',
    "nan": b'{"cpf":NaN}',
    "infinity": b'{"cpf":Infinity}',
    "truncated": b'{"cpf":',
    "trailing-garbage": b'{"cpf":"1"} x',
    "single-quotes": b"{'cpf':'1'}",
    "comment": b'{"cpf":"1" /* x */}',
    "not-json": b"cpf=52998224725",
}

# Well-formed JSON of an odd shape or with odd values: never 5xx, and a refusal is a problem.
ODD_BODIES: dict[str, bytes] = {
    "scalar-int": b"1",
    "scalar-string": b'"x"',
    "scalar-true": b"true",
    "null": b"null",
    "empty-array": b"[]",
    "empty-object": b"{}",
    "huge-integer": b"9" * 5_000,
    "huge-integer-field": b'{"cpf":' + b"9" * 5_000 + b"}",
    "huge-exponent": b'{"cpf":1e999999}',
    "duplicate-keys": b'{"cpf":"1","cpf":"2"}',
    "lone-surrogate": b'{"cpf":"\\ud800"}',
    "nul-escape": b'{"cpf":"a\\u0000b"}',
    "empty": b"",
    "whitespace": b"   ",
}


def _path_value(annotation: Any) -> str:  # Any: a path parameter's annotation
    """A value that routes to the handler for a path parameter of this type."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return str(next(iter(candidate)).value)
        if candidate is uuid.UUID:
            return str(uuid.uuid4())
        if candidate is int:
            return "1"
    return "lead1"


def json_routes(app: Litestar) -> list[tuple[str, str, HTTPRouteHandler]]:
    """``(method, concrete path, handler)`` of every handler that reads a JSON body."""
    found: list[tuple[str, str, HTTPRouteHandler]] = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            parameters = handler.parsed_fn_signature.parameters
            if "data" not in parameters:
                continue
            path = route.path_format
            for name in route.path_parameters:
                value = _path_value(parameters[name].annotation)
                path = path.replace("{" + name + "}", value)
            if "/google-ads" in route.path:
                path += f"?google_key={GOOGLE_KEY}"
            for method in sorted(handler.http_methods & BODY_METHODS):
                found.append((method, path, handler))
    return found


def _route_ids() -> list[tuple[str, str]]:
    app = create_app(_settings_for_collection())
    return [(method, path) for method, path, _ in json_routes(app)]


def _settings_for_collection() -> Settings:
    from app.config import load_settings

    return load_settings({"ENVIRONMENT": "test"})


ROUTES = _route_ids()


@pytest.fixture(scope="module")
async def edge(settings: Settings, database_url: str) -> AsyncIterator[tuple[Any, str]]:
    """The real app (Google Ads key set) and a key with every scope."""
    key = (await issue_key(database_url, tenant="malformed", scopes="read,enrich,admin"))[0]
    app = create_app(
        msgspec.structs.replace(
            settings,
            google_ads_webhook_key=Secret(GOOGLE_KEY),
            # Nothing listens on port 9: no request here may reach a real upstream.
            c2s_base_url="http://127.0.0.1:9",
            diretrix_base_url="http://127.0.0.1:9",
            work_api_base_url="http://127.0.0.1:9",
        )
    )
    async with AsyncTestClient(app=app) as client:
        yield client, key


def _assert_400_problem(response: Any, label: object) -> dict[str, Any]:
    assert response.status_code == 400, (label, response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith(PROBLEM), label
    body: dict[str, Any] = response.json()
    assert body["status"] == 400
    return body


def test_every_json_route_is_found() -> None:
    """The route table yields the JSON routes (a guard against an empty parametrization)."""
    assert {path.split("?")[0] for _, path in ROUTES} >= {
        "/api/v1/enrich",
        "/api/v1/enrich/batch",
        "/api/v1/leads",
        "/api/v1/webhooks/c2s",
        "/api/v1/webhooks/google-ads",
        "/api/v1/admin/flags/send_c2s_messages",
    }


@pytest.mark.parametrize("idempotency", [False, True], ids=["plain", "idempotency-key"])
@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("name", list(BROKEN_BODIES))
async def test_malformed_json_is_400_naming_the_body(
    edge: tuple[Any, str], method: str, path: str, name: str, idempotency: bool
) -> None:
    client, key = edge
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    if idempotency:
        headers["Idempotency-Key"] = uuid.uuid4().hex
    response = await client.request(method, path, content=BROKEN_BODIES[name], headers=headers)
    body = _assert_400_problem(response, (method, path, name))
    assert body["errors"][0]["field"] == "body", body
    assert body["detail"].startswith("Request body is"), body
    assert "\\x" not in body["detail"]
    assert "52998224725" not in response.text


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("name", list(ODD_BODIES))
async def test_odd_json_is_never_5xx(
    edge: tuple[Any, str], method: str, path: str, name: str
) -> None:
    client, key = edge
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    response = await client.request(method, path, content=ODD_BODIES[name], headers=headers)
    assert response.status_code < 500, (method, path, name, response.text[:300])
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith(PROBLEM)


async def test_unauthenticated_webhook_answers_deep_json_with_400(edge: tuple[Any, str]) -> None:
    client, _ = edge
    for body in (BROKEN_BODIES["array-1000-deep"], BROKEN_BODIES["object-1000-deep"]):
        response = await client.post("/api/v1/webhooks/c2s", content=body)
        problem = _assert_400_problem(response, "webhook")
        assert "nested too deeply" in problem["detail"]


def _event(extra: object) -> bytes:
    return msgspec.json.encode(
        {
            "id": "lead-depth-1",
            "attributes": {
                "updated_at": "2026-01-01T10:00:00Z",
                "customer": {"name": "Fulano", "phone": "11987654321"},
                "extra": extra,
            },
        }
    )


async def test_free_form_body_depth_limit_is_exact(edge: tuple[Any, str]) -> None:
    """The webhook takes documents MAX_JSON_DEPTH deep and refuses one level more."""
    client, _ = edge
    # The event object and its attributes are two levels; `extra` adds the rest.
    deepest: object = []
    for _ in range(MAX_JSON_DEPTH - 3):
        deepest = [deepest]
    ok = await client.post("/api/v1/webhooks/c2s", content=_event(deepest))
    assert ok.status_code == 200, ok.text
    too_deep = await client.post("/api/v1/webhooks/c2s", content=_event([deepest]))
    problem = _assert_400_problem(too_deep, "depth + 1")
    assert problem["errors"] == [
        {"field": "body", "message": problem["detail"]},
    ]


# --- strict booleans (PUT /api/v1/admin/flags/{name}) -----------------------------------------


@pytest.mark.parametrize("value", [0, 1, "false", "true", "0", None, 0.0, [], {}])
async def test_flag_update_takes_strict_booleans_only(edge: tuple[Any, str], value: object) -> None:
    client, key = edge
    response = await client.put(
        "/api/v1/admin/flags/send_c2s_messages",
        json={"enabled": value},
        headers={"X-API-Key": key},
    )
    body = _assert_400_problem(response, value)
    assert body["errors"][0]["field"] == "enabled", body
    assert "bool" in body["errors"][0]["message"]


async def test_flag_update_accepts_true_and_false(edge: tuple[Any, str]) -> None:
    client, key = edge
    path = "/api/v1/admin/flags/send_c2s_messages"
    try:
        for value in (False, True):
            response = await client.put(path, json={"enabled": value}, headers={"X-API-Key": key})
            assert response.status_code == 200, response.text
            assert response.json()["enabled"] is value
    finally:
        await client.delete(path + "/override", headers={"X-API-Key": key})


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/enrich", {"cpf": 52998224725}),
        ("/api/v1/leads", {"lead_id": 12345, "personal_info": {"name": "Fulano"}}),
        ("/api/v1/enrich/batch", {"items": {"cpf": "52998224725"}}),
    ],
)
async def test_json_bodies_are_not_coerced(
    edge: tuple[Any, str], path: str, body: dict[str, Any]
) -> None:
    """A number where a string is declared is refused, not converted."""
    client, key = edge
    response = await client.post(path, json=body, headers={"X-API-Key": key})
    _assert_400_problem(response, path)


# --- `instance` never echoes what the client typed in the path --------------------------------

TYPED_IN_PATHS = [
    "MARIA DA SILVA",
    "maria.silva@example.com",
    "529.982.247-25",
    "52998224725",
    "(11) 98765-4321",
    "+5511987654321",
    "Joao_Souza",
]


@pytest.mark.parametrize("typed", TYPED_IN_PATHS)
@pytest.mark.parametrize(
    "template",
    [
        "/api/v1/x/{}",
        "/api/v1/{}",
        "/{}",
        "/api/v1/customers/{}/extra",
        "/api/v1/leads/{}",
        "/api/v1/admin/flags/{}",
        "/api/v1/c2s/enrich/{}",
        "/api/v1/customers/{}",
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST", "PUT"])
async def test_problem_instance_never_echoes_path_input(
    edge: tuple[Any, str], template: str, typed: str, method: str
) -> None:
    client, key = edge
    response = await client.request(
        method, template.format(typed), headers={"X-API-Key": key, "Content-Type": "text/plain"}
    )
    assert response.status_code >= 400, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    instance = response.json().get("instance", "")
    fragments = {typed, typed.split()[0], typed.split("@")[0], *typed.split("."), "98765"}
    for fragment in fragments:
        if len(fragment) >= 3:
            assert fragment.lower() not in instance.lower(), (method, template, instance)


async def test_unmatched_path_instance_keeps_known_segments(edge: tuple[Any, str]) -> None:
    client, key = edge
    response = await client.get("/api/v1/x/MARIA DA SILVA", headers={"X-API-Key": key})
    assert response.status_code == 404
    assert response.json()["instance"] == "/api/v1/{unknown}/{unknown}"


async def test_routed_problem_instance_is_the_route_template(edge: tuple[Any, str]) -> None:
    client, key = edge
    response = await client.get("/api/v1/customers/MARIA DA SILVA", headers={"X-API-Key": key})
    assert 400 <= response.status_code < 500
    assert "MARIA" not in response.text
    # An unknown key on a routed path: the 401 names the route, not the typed value.
    response = await client.post(
        "/api/v1/c2s/enrich/MARIA", headers={"X-API-Key": "c2s_abcdefgh_" + "u" * 43}
    )
    assert response.status_code == 401
    assert response.json()["instance"] == "/api/v1/c2s/enrich/{lead_id}"
