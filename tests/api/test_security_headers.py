"""Security headers, strict Content-Type, body limits and CORS (the edge middlewares)."""

from __future__ import annotations

import tracemalloc
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import msgspec
import pytest
from litestar import get, post
from litestar.params import JSONBody
from litestar.testing import AsyncTestClient
from litestar.types import HTTPRequestEvent

from app.http.middleware.headers import API_CSP, DOCS_CSP, is_json_content_type
from app.main import create_app
from tests.support.factories import issue_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from litestar import Litestar
    from litestar.types import Message, Scope

    from app.config import Settings

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
MIB = 1024 * 1024


class Payload(msgspec.Struct, frozen=True, kw_only=True):
    value: int


@post("/probe/echo", include_in_schema=False, status_code=200, sync_to_thread=False)
def probe_echo(data: JSONBody[Payload]) -> dict[str, int]:
    return {"value": data.value}


@post(
    "/probe/webhook",
    include_in_schema=False,
    status_code=200,
    opt={"exclude_from_auth": True, "lenient_content_type": True},
    sync_to_thread=False,
)
def probe_webhook(data: JSONBody[Payload]) -> dict[str, int]:
    return {"value": data.value}


@get("/probe/crash", include_in_schema=False, sync_to_thread=False)
def probe_crash() -> None:
    raise RuntimeError("boom")


def _app(settings: Settings) -> Litestar:
    app = create_app(settings)
    for handler in (probe_echo, probe_webhook, probe_crash):
        app.register(handler)
    return app


@pytest.fixture(scope="module")
async def api_key(database_url: str) -> str:
    """A key allowed to read and enrich."""
    return (await issue_key(database_url, scopes="read,enrich"))[0]


@pytest.fixture(scope="module")
async def probe_app(
    settings: Settings,
) -> AsyncIterator[tuple[Litestar, AsyncTestClient[Litestar]]]:
    """The real app plus probe routes, with its lifespan running."""
    app = _app(settings)
    async with AsyncTestClient(app=app) as client:
        yield app, client


@pytest.fixture(scope="module")
def probe_client(
    probe_app: tuple[Litestar, AsyncTestClient[Litestar]],
) -> AsyncTestClient[Litestar]:
    return probe_app[1]


def assert_security_headers(response: Any, *, docs: bool = False) -> None:
    headers = response.headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["content-security-policy"] == (DOCS_CSP if docs else API_CSP)
    if not docs:
        assert headers["cache-control"] == "no-store"
    assert "strict-transport-security" not in headers  # not in development/test


# --- headers on every response ------------------------------------------------------------------


async def test_headers_on_success_and_framework_errors(
    probe_client: AsyncTestClient[Litestar], api_key: str
) -> None:
    auth = {"Authorization": f"Bearer {api_key}"}
    cases = [
        (await probe_client.get("/health"), 200),
        (await probe_client.get("/schema/openapi.json"), 200),
        (await probe_client.get("/no/such/path"), 404),
        (await probe_client.post("/health"), 405),
        (await probe_client.post("/probe/echo", json={"value": 1}), 401),
        (await probe_client.post("/probe/echo", content=b"{}", headers=auth), 415),
        (await probe_client.post("/probe/echo", json={"value": "x"}, headers=auth), 400),
        (await probe_client.get("/probe/crash", headers=auth), 500),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert_security_headers(response)


async def test_docs_get_a_csp_allowing_only_same_origin_assets(
    probe_client: AsyncTestClient[Litestar],
) -> None:
    page = await probe_client.get("/docs")
    assert page.status_code == 200
    assert_security_headers(page, docs=True)
    csp = page.headers["content-security-policy"]
    assert "'unsafe-inline'" not in csp
    assert "script-src 'self'" in csp
    assert "<script>" not in page.text  # no inline script for the CSP to allow
    asset = await probe_client.get("/docs/static/swagger-ui.css")
    assert asset.status_code == 200
    assert_security_headers(asset, docs=True)


async def test_hsts_only_in_production(settings: Settings) -> None:
    production = msgspec.structs.replace(settings, environment="production")
    async with AsyncTestClient(app=create_app(production)) as client:
        for response in (await client.get("/health"), await client.get("/nope")):
            assert response.headers["strict-transport-security"].startswith("max-age=")
            assert "includeSubDomains" in response.headers["strict-transport-security"]


async def test_handler_cache_control_is_kept(probe_client: AsyncTestClient[Litestar]) -> None:
    response = await probe_client.get("/health")
    assert response.headers.get_list("cache-control") == ["no-store"]


# --- Content-Type ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "strict", "lenient"),
    [
        (b"application/json", True, True),
        (b"Application/JSON", True, True),
        (b"application/json; charset=utf-8", True, True),
        (b'application/json;charset="UTF-8"', True, True),
        (b"application/json; charset=latin-1", False, True),
        (b"application/json; boundary=x", False, True),
        (b"text/plain", False, True),
        (b"text/plain; charset=utf-8", False, True),
        (b"application/vnd.c2s+json", False, True),
        (b"application/x-www-form-urlencoded", False, False),
        (b"multipart/form-data; boundary=x", False, False),
        (b"text/html", False, False),
        (None, False, True),
    ],
)
def test_content_type_rules(value: bytes | None, strict: bool, lenient: bool) -> None:
    assert is_json_content_type(value) is strict
    assert is_json_content_type(value, lenient=True) is lenient


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1", None],
)
async def test_post_with_non_json_body_is_415(
    probe_client: AsyncTestClient[Litestar], api_key: str, content_type: str | None
) -> None:
    headers = {"Authorization": f"Bearer {api_key}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await probe_client.post("/probe/echo", content=b'{"value": 1}', headers=headers)
    assert response.status_code == 415, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.headers["accept"] == "application/json"
    body = response.json()
    assert body["status"] == 415
    assert body["request_id"] == response.headers["x-request-id"]


async def test_json_with_utf8_charset_is_accepted(
    probe_client: AsyncTestClient[Litestar], api_key: str
) -> None:
    response = await probe_client.post(
        "/probe/echo",
        content=b'{"value": 3}',
        headers={
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json; charset=utf-8",
        },
    )
    assert response.status_code == 200
    assert response.json() == {"value": 3}


async def test_post_without_body_is_not_a_content_type_error(
    probe_client: AsyncTestClient[Litestar], api_key: str
) -> None:
    response = await probe_client.post(
        "/probe/echo", headers={"Authorization": f"Bearer {api_key}"}
    )
    assert response.status_code == 400  # "body required", from validation, not 415


async def test_lenient_routes_accept_json_ish_content_types(
    probe_client: AsyncTestClient[Litestar],
) -> None:
    for content_type in ("text/plain", "application/json", "text/plain; charset=utf-8"):
        response = await probe_client.post(
            "/probe/webhook", content=b'{"value": 5}', headers={"Content-Type": content_type}
        )
        assert response.status_code == 200, (content_type, response.text)
    response = await probe_client.post(
        "/probe/webhook",
        content=b"value=5",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415


# --- body size -----------------------------------------------------------------------------------


async def test_body_over_the_limit_with_content_length_is_413(
    probe_client: AsyncTestClient[Litestar], api_key: str, settings: Settings
) -> None:
    assert settings.max_body_bytes == 5 * MIB
    body = b'{"value": "' + b"x" * (6 * MIB) + b'"}'
    response = await probe_client.post(
        "/probe/echo",
        content=body,
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["status"] == 413
    assert_security_headers(response)


async def test_chunked_body_over_the_limit_is_refused_without_reading_it_all(
    probe_app: tuple[Litestar, AsyncTestClient[Litestar]], api_key: str
) -> None:
    app, client = probe_app
    chunk_size = 64 * 1024
    offered = 64 * MIB  # what a hostile client would stream if the app kept reading
    delivered = 0
    sent: list[Message] = []

    async def receive() -> HTTPRequestEvent:
        nonlocal delivered
        if delivered >= offered:
            return HTTPRequestEvent(type="http.request", body=b"", more_body=False)
        delivered += chunk_size
        # A fresh object per chunk, so memory held by the app is really allocated.
        return HTTPRequestEvent(type="http.request", body=b"x" * chunk_size, more_body=True)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/probe/echo",
        "raw_path": b"/probe/echo",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"transfer-encoding", b"chunked"),
            (b"authorization", f"Bearer {api_key}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        # The test client runs the app (and its pool) on its own portal loop: call it there.
        client.blocking_portal.call(partial(app, cast("Scope", scope), receive, send))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    headers = dict(start["headers"])
    assert headers[b"content-type"].startswith(PROBLEM.encode())
    # Reading stopped right after the limit: the rest of the 64 MiB was never pulled...
    assert delivered <= 5 * MIB + 2 * chunk_size
    # ...and memory stayed bounded (the limit plus overhead, nowhere near the 64 MiB offered).
    assert peak < 20 * MIB, peak


# --- CORS -----------------------------------------------------------------------------------------


async def test_cors_is_off_by_default(client: AsyncTestClient[Litestar]) -> None:
    response = await client.options(
        "/health",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in response.headers
    simple = await client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


async def test_cors_allows_only_the_configured_origins(settings: Settings) -> None:
    configured = msgspec.structs.replace(settings, cors_allow_origins=("https://crm.example.com",))
    async with AsyncTestClient(app=create_app(configured)) as client:
        allowed = await client.options(
            "/api/v1/enrich",
            headers={
                "Origin": "https://crm.example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert allowed.status_code in (200, 204)
        assert allowed.headers["access-control-allow-origin"] == "https://crm.example.com"
        assert "*" not in allowed.headers.get("access-control-allow-origin", "")
        denied = await client.options(
            "/api/v1/enrich",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert denied.headers.get("access-control-allow-origin") in (None, "")
        simple = await client.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in simple.headers
        ok = await client.get("/health", headers={"Origin": "https://crm.example.com"})
        assert ok.headers["access-control-allow-origin"] == "https://crm.example.com"
        assert "x-request-id" in ok.headers.get("access-control-expose-headers", "").lower()
