"""Strict JSON body decoding and the problem ``instance``."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from litestar.exceptions import ValidationException

from app.http.body import MAX_JSON_DEPTH, TOO_DEEP, decode_body, json_depth_exceeds
from app.http.problems import problem_instance
from domain.errors import InvalidInput


class Toggle(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "body",
    [
        b'{"enabled":"\xff"}',
        b'{"unknown":"\xff"}',
        b"[" * 1_000 + b"]" * 1_000,
        b'{"a":' * 1_000 + b"1" + b"}" * 1_000,
        b"\xef\xbb\xbf{}",
        b'{"enabled":NaN}',
        b'{"enabled":',
    ],
)
@pytest.mark.parametrize("body_type", [Toggle, Any])
def test_malformed_bodies_name_the_body(body: bytes, body_type: Any) -> None:
    with pytest.raises(InvalidInput) as raised:
        decode_body(body, body_type)
    assert raised.value.field == "body"
    assert str(raised.value).startswith("Request body is")


@pytest.mark.parametrize("value", [0, 1, "false", "true", None])
def test_booleans_are_strict(value: object) -> None:
    with pytest.raises(ValidationException) as raised:
        decode_body(msgspec.json.encode({"enabled": value}), Toggle)
    extra: Any = raised.value.extra
    assert [(item["key"], item["source"]) for item in extra] == [("enabled", "body")]
    assert "bool" in extra[0]["message"]


def test_a_well_formed_body_of_the_wrong_shape_names_the_body() -> None:
    with pytest.raises(ValidationException) as raised:
        decode_body(b"[1]", Toggle)
    extra: Any = raised.value.extra
    assert extra[0]["key"] == "data"


def test_free_form_depth_limit() -> None:
    assert decode_body(msgspec.json.encode(_nested(MAX_JSON_DEPTH))) is not None
    with pytest.raises(InvalidInput, match="nested too deeply"):
        decode_body(msgspec.json.encode(_nested(MAX_JSON_DEPTH + 1)))
    assert TOO_DEEP.endswith(f"{MAX_JSON_DEPTH} levels)")


def test_depth_walk() -> None:
    assert not json_depth_exceeds({"a": [1, {"b": []}]}, 4)  # four levels
    assert json_depth_exceeds({"a": [1, {"b": []}]}, 3)
    assert not json_depth_exceeds("x", 0)


class _Route:
    def __init__(self, path: str) -> None:
        self.path = path


class _App:
    def __init__(self, *paths: str) -> None:
        self.routes = [_Route(path) for path in paths]
        self.state: dict[str, Any] = {}


def test_instance_of_a_routed_request_is_its_template() -> None:
    scope: Any = {"path": "/c/MARIA", "path_template": "/c/{lead_id:str}"}
    assert problem_instance(scope) == "/c/{lead_id}"


def test_instance_of_an_unmatched_path_keeps_only_route_words() -> None:
    scope: Any = {"path": "/api/v1/x/MARIA DA SILVA", "app": _App("/api/v1/leads", "/health")}
    assert problem_instance(scope) == "/api/v1/{unknown}/{unknown}"
    bare: Any = {"path": "/a/b"}
    assert problem_instance(bare) == "/{unknown}/{unknown}"
