"""The sandbox's fault and call-counter routes: ``/_sandbox/faults`` and ``/_sandbox/counters``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, Response, delete, get, post

from infra.sandbox.faults import NO_FAULTS, UPSTREAMS, FaultConfig
from infra.sandbox.routes.common import as_upstream, json_response

if TYPE_CHECKING:
    from litestar.handlers import HTTPRouteHandler

    from infra.sandbox.state import SandboxState

__all__ = ["FaultRoutes"]


def _unknown_upstream() -> Response[Any]:
    body = {"error": f"unknown upstream, use one of {list(UPSTREAMS)}"}
    return json_response(msgspec.json.encode(body), 404)


class FaultRoutes:
    """Read, set and clear the faults of each upstream; read and clear the call counters."""

    def __init__(self, state: SandboxState) -> None:
        self._state = state

    def route_handlers(self) -> list[HTTPRouteHandler]:
        """The fault and counter route handlers, bound to this state."""
        return [
            get("/_sandbox/faults", include_in_schema=False)(self.get_all_faults),
            get("/_sandbox/faults/{upstream:str}", include_in_schema=False)(self.get_faults),
            post("/_sandbox/faults/{upstream:str}", status_code=200, include_in_schema=False)(
                self.set_faults
            ),
            delete("/_sandbox/faults", include_in_schema=False)(self.reset_faults),
            get("/_sandbox/counters", include_in_schema=False)(self.get_counters),
            delete("/_sandbox/counters", include_in_schema=False)(self.reset_counters),
        ]

    async def get_all_faults(self) -> Response[Any]:
        """``GET /_sandbox/faults``: every upstream's fault config."""
        return json_response(msgspec.json.encode(self._state.faults.all()))

    async def get_faults(self, upstream: str) -> Response[Any]:
        """``GET /_sandbox/faults/{upstream}``: one upstream's fault config."""
        name = as_upstream(upstream)
        if name is None:
            return _unknown_upstream()
        return json_response(msgspec.json.encode(self._state.faults.get(name)))

    async def set_faults(self, request: Request[Any, Any, Any], upstream: str) -> Response[Any]:
        """``POST /_sandbox/faults/{upstream}``: replace its config (omitted fields: defaults)."""
        name = as_upstream(upstream)
        if name is None:
            return _unknown_upstream()
        raw = await request.body()
        try:
            config = msgspec.json.decode(raw or b"{}", type=FaultConfig)
        except msgspec.DecodeError as exc:
            return json_response(msgspec.json.encode({"error": str(exc)}), 400)
        self._state.faults.set(name, config)
        return json_response(msgspec.json.encode(config))

    async def reset_faults(self) -> None:
        """``DELETE /_sandbox/faults``: no faults anywhere."""
        for name in UPSTREAMS:
            self._state.faults.set(name, NO_FAULTS)

    async def get_counters(self) -> Response[Any]:
        """``GET /_sandbox/counters``: calls per upstream and route."""
        return json_response(msgspec.json.encode(self._state.counters.snapshot()))

    async def reset_counters(self) -> None:
        """``DELETE /_sandbox/counters``: start counting again."""
        self._state.counters.reset()
