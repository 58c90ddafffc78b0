"""Request plumbing shared by the sandbox routes: responses, fault injection, upstream names."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from litestar import Request, Response
from litestar.enums import MediaType

from infra.sandbox.faults import NO_FAULTS, UPSTREAMS, Upstream

if TYPE_CHECKING:
    from infra.sandbox.state import SandboxState

__all__ = ["apply_faults", "as_upstream", "json_response", "text_response"]

_JSON = MediaType.JSON
_TEXT = MediaType.TEXT


def json_response(body: bytes, status: int = 200) -> Response[bytes]:
    return Response(body, status_code=status, media_type=_JSON)


def text_response(body: str, status: int) -> Response[str]:
    return Response(body, status_code=status, media_type=_TEXT)


async def hang(request: Request[Any, Any, Any], seconds: float) -> None:
    """Hold the request until the client disconnects or ``seconds`` pass."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    return
    except TimeoutError:
        return


async def apply_faults(
    state: SandboxState, upstream: Upstream, route: str, request: Request[Any, Any, Any]
) -> tuple[Response[Any] | None, bool]:
    """Count the call and apply the upstream's faults.

    Returns:
        ``(response, soft_error)``: a response to send instead of the real answer (or None), and
        whether a Work API soft error was drawn.
    """
    state.counters.hit(upstream, route)
    config = state.faults.get(upstream)
    if config is NO_FAULTS:
        return None, False
    decision = state.faults.decide(config)
    if decision.delay_s:
        await asyncio.sleep(decision.delay_s)
    if decision.action == "hang":
        await hang(request, config.hang_s)
        return text_response("upstream timed out", 504), False
    if decision.action == "error":
        headers = (
            {"Retry-After": str(config.retry_after_s)}
            if config.error_status in (429, 503)
            else None
        )
        response = Response(
            "Simulated upstream failure",
            status_code=config.error_status,
            media_type=_TEXT,
            headers=headers,
        )
        return response, False
    return None, decision.action == "soft_error"


def as_upstream(name: str) -> Upstream | None:
    """The upstream called ``name``, or None when there is none."""
    for upstream in UPSTREAMS:
        if upstream == name:
            return upstream
    return None
