"""Deprecating an operation: headers on every answer, the OpenAPI flag."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import pytest
from litestar import Controller, Litestar, get, post
from litestar.exceptions import ImproperlyConfiguredException, NotFoundException
from litestar.params import FromPath
from litestar.testing import AsyncTestClient

from app.http.middleware import deprecation as versioning
from app.http.middleware.deprecation import (
    Deprecation,
    DeprecationMiddleware,
    DeprecationPlugin,
    deprecation_headers,
    deprecation_of,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

OLD = Deprecation(
    since=dt.date(2027, 1, 1),
    sunset=dt.date(2027, 6, 30),
    link="https://c2s-api.dev/docs/changelog#old-lookup",
    successor="https://c2s-api.dev/docs/api#getCustomer",
)


@get("/v1/old/{item:int}", operation_id="getOld", summary="Old lookup", opt={"deprecated": OLD})
async def old(item: FromPath[int]) -> dict[str, int]:
    if item == 0:
        raise NotFoundException("no such item")
    return {"item": item}


@post(
    "/v1/legacy",
    operation_id="postLegacy",
    summary="Legacy write",
    description="Writes the legacy way.",
    status_code=200,
    # The dict form, as a route may declare it.
    opt={"deprecated": {"since": "2026-12-01", "sunset": "2027-03-31", "link": "https://x.dev/m"}},
)
async def legacy() -> dict[str, bool]:
    return {"ok": True}


@get("/v1/current", operation_id="getCurrent", summary="Current")
async def current() -> dict[str, bool]:
    return {"ok": True}


class OldController(Controller):
    path = "/v1/whole"
    opt = {"deprecated": OLD}  # noqa: RUF012 - Litestar reads class attributes

    @get("/a", operation_id="getWholeA", summary="A")
    async def a(self) -> dict[str, str]:
        return {"a": "a"}


def _app(*handlers: Any) -> Litestar:
    return Litestar(
        route_handlers=list(handlers or (old, legacy, current, OldController)),
        middleware=[DeprecationMiddleware],
        plugins=[DeprecationPlugin()],
    )


@pytest.fixture
async def client() -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=_app()) as client:
        yield client


async def test_a_deprecated_operation_announces_itself(
    client: AsyncTestClient[Litestar],
) -> None:
    response = await client.get("/v1/old/7")
    assert response.status_code == 200
    # RFC 9745: a Structured Field Date; 2027-01-01T00:00:00Z.
    assert response.headers["deprecation"] == "@1798761600"
    # RFC 8594: an IMF-fixdate HTTP-date.
    assert response.headers["sunset"] == "Wed, 30 Jun 2027 00:00:00 GMT"
    assert response.headers.get_list("link") == [
        '<https://c2s-api.dev/docs/changelog#old-lookup>; rel="deprecation"; type="text/html"',
        '<https://c2s-api.dev/docs/api#getCustomer>; rel="successor-version"',
    ]


async def test_errors_of_a_deprecated_operation_announce_it_too(
    client: AsyncTestClient[Litestar],
) -> None:
    response = await client.get("/v1/old/0")
    assert response.status_code == 404
    assert response.headers["deprecation"] == "@1798761600"
    assert "sunset" in response.headers


async def test_the_dict_form_and_controller_level_declarations_work(
    client: AsyncTestClient[Litestar],
) -> None:
    response = await client.post("/v1/legacy")
    assert response.headers["deprecation"] == "@1796083200"  # 2026-12-01
    assert response.headers["sunset"] == "Wed, 31 Mar 2027 00:00:00 GMT"
    assert response.headers["link"] == '<https://x.dev/m>; rel="deprecation"; type="text/html"'
    whole = await client.get("/v1/whole/a")
    assert whole.headers["deprecation"] == "@1798761600"


async def test_other_operations_are_untouched(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/v1/current")
    assert response.status_code == 200
    for header in ("deprecation", "sunset", "link"):
        assert header not in response.headers


async def test_the_openapi_document_marks_the_operation(
    client: AsyncTestClient[Litestar],
) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    paths = document["paths"]
    operation = paths["/v1/old/{item}"]["get"]
    assert operation["deprecated"] is True
    assert "2027-06-30" in operation["description"]
    assert "https://c2s-api.dev/docs/api#getCustomer" in operation["description"]
    headers = operation["responses"]["200"]["headers"]
    assert {"Deprecation", "Sunset", "Link"} <= set(headers)
    legacy_op = paths["/v1/legacy"]["post"]
    assert legacy_op["deprecated"] is True
    assert legacy_op["description"].startswith("Writes the legacy way.\n\n**Deprecated** since")
    assert paths["/v1/whole/a"]["get"]["deprecated"] is True
    assert not paths["/v1/current"]["get"].get("deprecated", False)


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ({"since": "2027-07-01", "sunset": "2027-06-30", "link": "https://x.dev"}, "sunset"),
        ({"since": "2027-01-01", "sunset": "2027-06-30"}, "link"),
        ({"since": "2027-01-01", "sunset": "2027-06-30", "link": "https://x.dev/a b"}, "link"),
        ({"since": "soon", "sunset": "2027-06-30", "link": "https://x.dev"}, "since"),
        ("2027-06-30", "deprecation"),
    ],
)
def test_a_bad_declaration_stops_the_app_at_start(declaration: object, message: str) -> None:
    @get("/bad", opt={"deprecated": declaration})
    async def bad() -> None:
        return None

    with pytest.raises(ImproperlyConfiguredException, match=message):
        _app(bad)


def test_headers_are_computed_once_per_declaration() -> None:
    first = deprecation_headers(deprecation_of(OLD))
    assert deprecation_headers(OLD) is first


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))


async def test_use_of_a_deprecated_operation_is_logged_once_per_key_and_hour(
    client: AsyncTestClient[Litestar], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    monkeypatch.setattr(versioning, "log", recorder)
    monkeypatch.setattr(versioning, "_logged", {})
    for _ in range(3):
        await client.get("/v1/old/7")
    await client.get("/v1/current")
    assert recorder.events == [
        (
            "deprecated_operation_used",
            {"route": "/v1/old/{item}", "api_key_id": "anonymous", "sunset": "2027-06-30"},
        )
    ]
