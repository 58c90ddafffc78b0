"""What Granian serves under the benchmark: the real app plus a bare, middleware-free route.

Every ratio the benchmark reports has a denominator measured in the same run, by the same
server, in the same worker process: ``GET /_bench/bare``, a Litestar route returning a small
msgspec Struct from an application with no middleware, no dependencies, no lifespan work, no
observability. :func:`create_bench_app` (the Granian ``--factory`` target) returns an ASGI
callable that sends that one path to the bare application and everything else to the real
application built by :func:`app.main.create_app` (lifespan included), so both share the
worker's core, event loop, GC and Granian's Rust side. Ratios therefore cancel what is
machine- or load-dependent (CPU speed, noisy neighbours, turbo) and keep what is ours.

The dispatch itself costs one dictionary lookup and one string comparison per request (well
under 1 us), paid by the real app's requests too; it is the only difference from production.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec
from litestar import Litestar, get
from litestar.enums import ScopeType

from app.main import create_app

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

__all__ = ["BARE_PATH", "BenchDispatch", "create_bare_app", "create_bench_app"]

BARE_PATH: Final = "/_bench/bare"


class BareAnswer(msgspec.Struct, frozen=True):
    """The bare route's body: the same shape and size class as ``/health``'s."""

    status: str
    service: str


_ANSWER: Final = BareAnswer(status="ok", service="bench")


@get(BARE_PATH, sync_to_thread=False, include_in_schema=False)
def bare() -> BareAnswer:
    """The denominator: routing, a Struct encoded by Litestar, nothing of ours."""
    return _ANSWER


def create_bare_app() -> Litestar:
    """A Litestar application with the bare route only: no middleware, no plugins, no OpenAPI."""
    return Litestar(route_handlers=[bare], openapi_config=None, debug=False, logging_config=None)


class BenchDispatch:
    """ASGI callable: ``BARE_PATH`` to the bare app, all else (lifespan too) to the real one."""

    __slots__ = ("_bare", "_real")

    def __init__(self, real: ASGIApp, bare_app: ASGIApp) -> None:
        self._real = real
        self._bare = bare_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Lifespan and websockets go to the real app: the bare app needs no start-up.
        if scope["type"] == ScopeType.HTTP and scope["path"] == BARE_PATH:
            await self._bare(scope, receive, send)
            return
        await self._real(scope, receive, send)


def create_bench_app() -> BenchDispatch:
    """Granian factory: the real app (settings from the environment) and the bare route."""
    return BenchDispatch(create_app(), create_bare_app())
