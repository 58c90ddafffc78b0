"""JSON request bodies: one strict decoder per body type, every malformed body a 400.

Litestar decodes a body schemaless and then converts it to the handler's ``data`` type in lax
mode (``"false"`` and ``0`` become ``False``, ``"12"`` becomes ``12``). :class:`JsonRequest`, the
application's request class, decodes the bytes straight into that type instead, with msgspec's
strict rules, so the API accepts exactly what its OpenAPI document describes. A body declared as
``Any`` (the C2S webhook, validated event by event further in) may be any JSON value whose
arrays and objects nest at most :data:`MAX_JSON_DEPTH` levels.

Every failure is :class:`~domain.errors.InvalidInput` on the field ``body`` (or a
:class:`~litestar.exceptions.ValidationException` naming the field, for a well-formed body of the
wrong shape), answered 400 problem+json by the error table:

* bytes that are not UTF-8 (msgspec raises ``UnicodeDecodeError``), a byte order mark, syntax
  errors, ``NaN``/``Infinity`` literals, numbers out of range: "Request body is not valid UTF-8
  JSON";
* nesting deeper than the limit (``RecursionError`` from msgspec near the interpreter's recursion
  limit, whatever the type; :data:`MAX_JSON_DEPTH` for a free-form body): "Request body is nested
  too deeply".

Messages name positions and types, never the submitted values.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any, Final

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException
from litestar.types import Empty

from domain.errors import InvalidInput

if TYPE_CHECKING:
    from litestar.handlers import HTTPRouteHandler

__all__ = [
    "MAX_JSON_DEPTH",
    "JsonRequest",
    "decode_body",
    "decoder_for",
    "json_depth_exceeds",
]

MAX_JSON_DEPTH: Final = 64
BODY_FIELD: Final = "body"
NOT_JSON: Final = "Request body is not valid UTF-8 JSON"
TOO_DEEP: Final = f"Request body is nested too deeply (more than {MAX_JSON_DEPTH} levels)"
_BOM: Final = b"\xef\xbb\xbf"
_PATH: Final = re.compile(r"`\$\.(.+)`$")


@functools.lru_cache(maxsize=64)
def decoder_for(body_type: Any) -> msgspec.json.Decoder[Any]:  # Any: a handler's annotation
    """The strict decoder of a body declared as ``body_type`` (``Any``: any JSON value)."""
    return msgspec.json.Decoder(type=body_type, strict=True)


def json_depth_exceeds(value: object, limit: int) -> bool:
    """Whether arrays and objects in a decoded JSON ``value`` nest more than ``limit`` levels."""
    pending: list[tuple[object, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()  # Any: JSON values
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def decode_body(body: bytes, body_type: Any = Any) -> Any:  # Any: the decoded value
    """Decode a JSON request body strictly into ``body_type``.

    A body that is not JSON at all is reported as such even when its first bytes already have
    the wrong shape (``{"unknown": "\xff"}``): the shape error is only reported for JSON.

    Args:
        body: The raw request body (not empty).
        body_type: The handler's ``data`` annotation; ``Any`` for a free-form document.

    Raises:
        InvalidInput: The body is not UTF-8 JSON or is nested too deeply (field ``body``).
        ValidationException: Well-formed JSON of the wrong shape, naming the offending field.
    """
    try:
        value = decoder_for(body_type).decode(body)
    except msgspec.ValidationError as exc:
        if body_type is not Any:
            _check_well_formed(body)
        raise _shape_error(str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise _malformed(body, exc) from None
    if body_type is Any:
        _check_depth(body, value)
    return value


def _check_well_formed(body: bytes) -> None:
    """Raise the malformed-body error if ``body`` is not JSON (any shape) within the depth."""
    try:
        value = decoder_for(Any).decode(body)
    except msgspec.ValidationError:  # JSON, with a number out of range: a shape error
        return
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise _malformed(body, exc) from None
    _check_depth(body, value)


def _check_depth(body: bytes, value: object) -> None:
    # Walked only when the body holds more containers than the limit (counting brackets runs at
    # C speed; brackets inside strings may inflate the count, never hide a level).
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and json_depth_exceeds(
        value, MAX_JSON_DEPTH
    ):
        raise InvalidInput(BODY_FIELD, TOO_DEEP)


def _malformed(body: bytes, exc: Exception) -> InvalidInput:
    if isinstance(exc, RecursionError):
        return InvalidInput(BODY_FIELD, TOO_DEEP)
    if isinstance(exc, UnicodeDecodeError):
        return InvalidInput(BODY_FIELD, f"{NOT_JSON}: invalid byte at {exc.start}")
    if body.startswith(_BOM):
        return InvalidInput(BODY_FIELD, f"{NOT_JSON}: remove the byte order mark")
    return InvalidInput(BODY_FIELD, f"{NOT_JSON}: {exc}")


def _shape_error(message: str) -> ValidationException:
    """Litestar's own shape of a body validation error: the field path, or ``data`` for the body."""
    path = _PATH.search(message)
    return ValidationException(
        detail="Invalid request body",
        extra=[
            {
                "key": path[1] if path else "data",
                "message": message.split(" - ", maxsplit=1)[0],
                "source": "body",
            }
        ],
    )


def _body_type(handler: HTTPRouteHandler) -> Any:  # Any: a handler's annotation
    data = handler.parsed_fn_signature.parameters.get("data")
    return data.annotation if data is not None else Any


class JsonRequest(Request[Any, Any, Any]):
    """The application's request class: :meth:`json` decodes strictly (see the module)."""

    __slots__ = ()

    async def json(self) -> Any:  # Any: the decoded body
        """The body decoded into the route handler's ``data`` type (strict msgspec rules)."""
        if self._json is not Empty:
            return self._json
        if (state := self._connection_state.json) is not Empty:
            self._json = state
            return state
        body = await self.body()
        value = decode_body(body, _body_type(self.route_handler)) if body else None
        self._json = self._connection_state.json = value
        return value
