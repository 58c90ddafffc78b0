"""The scope of each operation, stated in the OpenAPI document (docs/security.md).

Every operation behind an API key gets ``security: [{ApiKey: [scope]}, {Bearer: [scope]}]``, the
``x-required-scope`` extension and a sentence in its description naming the scope, read from the
same rule the middleware enforces (:func:`domain.keys.required_scope` over ``opt["scope"]``).
A route whose answer depends on a further scope says so through ``opt["scope_note"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from litestar.openapi.spec import Operation
from litestar.routes import HTTPRoute

from domain.keys import grants, required_scope

if TYPE_CHECKING:
    from litestar import Litestar

__all__ = ["ScopedOperation", "state_operation_scopes"]

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@dataclass
class ScopedOperation(Operation):
    """An operation with the ``x-required-scope`` extension."""

    required_scope: str | None = field(default=None, metadata={"alias": "x-required-scope"})


def _scopes_by_operation(app: Litestar) -> dict[str, tuple[str, str | None]]:
    """operation id -> (required scope, note) for every authenticated handler."""
    found: dict[str, tuple[str, str | None]] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            opt: dict[str, Any] = handler.opt or {}
            operation_id = handler.operation_id
            if opt.get("exclude_from_auth") or not isinstance(operation_id, str):
                continue
            for method in handler.http_methods:
                scope = required_scope(method, opt.get("scope"))
                found[operation_id] = (scope, opt.get("scope_note"))
    return found


def state_operation_scopes(app: Litestar) -> None:
    """Write each operation's scope into ``app.openapi_schema`` (call once, after building)."""
    scopes = _scopes_by_operation(app)
    for path_item in (app.openapi_schema.paths or {}).values():
        for method in _METHODS:
            operation = getattr(path_item, method, None)
            if not isinstance(operation, Operation) or operation.operation_id not in scopes:
                continue
            scope, note = scopes[operation.operation_id]
            sentence = f"Requires an API key with the `{scope}` scope (or `admin`)."
            if not grants(("admin",), scope):  # dpo: granted by itself only
                sentence = (
                    f"Requires an API key with the `{scope}` scope (`admin` does not grant it)."
                )
            if note:
                sentence = f"{sentence} {note}"
            values = {f.name: getattr(operation, f.name) for f in fields(Operation)}
            values["security"] = [{"ApiKey": [scope]}, {"Bearer": [scope]}]
            values["description"] = (
                f"{operation.description}\n\n{sentence}" if operation.description else sentence
            )
            setattr(path_item, method, ScopedOperation(**values, required_scope=scope))
