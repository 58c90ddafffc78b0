"""What Granian serves under the benchmark: the real app plus a bare, middleware-free route.

Every ratio the benchmark reports has a denominator measured in the same run, by the same
server, in the same worker process: ``GET /_bench/bare``, a Litestar route returning a small
msgspec Struct from an application with no middleware, no dependencies, no lifespan work, no
observability. :func:`create_bench_app` (the Granian ``--factory`` target) returns an ASGI
callable that sends that one path to the bare application and everything else to the real
application built by :func:`app.main.create_app` (lifespan included), so both share the
worker's core, event loop, GC and Granian's Rust side. Ratios therefore cancel what is
machine- or load-dependent (CPU speed, noisy neighbours, turbo) and keep what is ours.

Two more differences from production, both small and paid alike by every scenario: the dispatch
costs one dictionary lookup, one string comparison and a context variable set and reset per
request (about 1 us), and the worker counts its Redis commands and PostgreSQL round trips
(``bench.load.roundtrips.install_counters``: one counter increment per round trip) so the runner
can read them, per point, from ``GET /_bench/round-trips`` (served by the bare app).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec
from litestar import Litestar, get
from litestar.enums import ScopeType

from app.main import create_app
from bench.load.roundtrips import counters, enter_request, install_counters, leave_request

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "BARE_PATH",
    "COUNTERS_PATH",
    "BenchDispatch",
    "create_bare_app",
    "create_bench_app",
]

BARE_PATH: Final = "/_bench/bare"
COUNTERS_PATH: Final = "/_bench/round-trips"
_BENCH_PREFIX: Final = "/_bench/"


class BareAnswer(msgspec.Struct, frozen=True):
    """The bare route's body: the same shape and size class as ``/health``'s."""

    status: str
    service: str


_ANSWER: Final = BareAnswer(status="ok", service="bench")


@get(BARE_PATH, sync_to_thread=False, include_in_schema=False)
def bare() -> BareAnswer:
    """The denominator: routing, a Struct encoded by Litestar, nothing of ours."""
    return _ANSWER


@get(COUNTERS_PATH, sync_to_thread=False, include_in_schema=False)
def round_trips() -> dict[str, int]:
    """This worker's Redis and PostgreSQL round trips so far, in requests and in background."""
    return counters()


def create_bare_app() -> Litestar:
    """A Litestar application with the bench routes only: no middleware, no plugins, no OpenAPI."""
    return Litestar(
        route_handlers=[bare, round_trips], openapi_config=None, debug=False, logging_config=None
    )


class BenchDispatch:
    """ASGI callable: ``/_bench/*`` to the bare app, all else (lifespan too) to the real one,
    inside a request mark (what the round-trip counters attribute to requests)."""

    __slots__ = ("_bare", "_real")

    def __init__(self, real: ASGIApp, bare_app: ASGIApp) -> None:
        self._real = real
        self._bare = bare_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Lifespan and websockets go to the real app: the bare app needs no start-up.
        if scope["type"] != ScopeType.HTTP:
            await self._real(scope, receive, send)
            return
        if scope["path"].startswith(_BENCH_PREFIX):
            await self._bare(scope, receive, send)
            return
        token = enter_request()
        try:
            await self._real(scope, receive, send)
        finally:
            leave_request(token)


def create_bench_app() -> BenchDispatch:
    """Granian factory: the real app (settings from the environment) and the bench routes, with
    the round-trip counters installed before the app makes any connection."""
    install_counters()
    return BenchDispatch(create_app(), create_bare_app())
