"""Count the Redis and PostgreSQL round trips of requests on the real code path.

Two ways, both counting where the client writes, so a count is exactly the round trips whatever
the Lua scripts or SQL do on the server:

* :func:`count_round_trips` (set-up, in the runner's process): the app is built with the run's
  own settings (same database, Redis prefix, sandbox) and driven through Litestar's ASGI test
  client, lifespan included, while every write of a packed command to a Redis socket is counted
  (``AbstractConnection.send_packed_command``: one call per command sent alone, one per
  pipeline): a quick check of a single request;
* :func:`install_counters` (under load, in the Granian worker): the bench factory
  (``bench.baseline_app``) installs it, and the runner reads :func:`counters` through
  ``GET /_bench/round-trips`` before and after every point, so each point reports its Redis and
  PostgreSQL round trips per request in steady state, and the background ones per second.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = [
    "count_round_trips",
    "counters",
    "enter_request",
    "install_counters",
    "leave_request",
    "uninstall_counters",
]


@contextlib.contextmanager
def _counting() -> Iterator[list[int]]:
    from redis.asyncio.connection import AbstractConnection

    calls = [0]
    original = AbstractConnection.send_packed_command

    async def counted(
        self: AbstractConnection, *args: Any, **kwargs: Any
    ) -> None:  # Any: passthrough
        calls[0] += 1
        await original(self, *args, **kwargs)

    AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


async def count_round_trips(
    env: Mapping[str, str], requests: Mapping[str, str], api_key: str, repeat: int = 20
) -> dict[str, float]:
    """Mean Redis round trips per request, per named path.

    Each path is requested a few times first (API-key cache, script load, connections), then
    ``repeat`` times while counting.

    Args:
        env: The app's environment for the run.
        requests: Name -> path (GET) to measure.
        api_key: The key to send.
        repeat: Requests counted per path.
    """
    from litestar.testing import AsyncTestClient

    from app.config import load_settings
    from app.main import create_app

    app = create_app(load_settings(dict(env)))
    out: dict[str, float] = {}
    headers = {"X-API-Key": api_key}
    async with AsyncTestClient(app=app, base_url="http://127.0.0.1") as client:
        for name, path in requests.items():
            for _ in range(3):
                warm = await client.get(path, headers=headers)
                if warm.status_code != 200:
                    raise RuntimeError(f"{name}: {path} answered {warm.status_code}")
            with _counting() as calls:
                for _ in range(repeat):
                    await client.get(path, headers=headers)
            out[name] = round(calls[0] / repeat, 2)
    return out


# --- counting inside the server under load -------------------------------------------------------
#
# The Granian worker that serves a benchmark run installs :func:`install_counters` (see
# ``bench.baseline_app``), so every Redis command and every PostgreSQL round trip the worker
# makes is counted where it happens, whatever else uses the machine's Redis and PostgreSQL.
# A round trip sent while a request is being served (``request_scope``; tasks a request spawns
# inherit it) counts as the request's; the rest (start-up, periodic syncs, background tasks)
# counts as background and is reported per second, not per request.

_IN_REQUEST: ContextVar[bool] = ContextVar("bench_in_request", default=False)
_COUNTS: Final[dict[str, int]] = {
    "redis_request": 0,
    "redis_background": 0,
    "postgres_request": 0,
    "postgres_background": 0,
}
_ORIGINALS: Final[dict[str, Any]] = {}  # what install_counters replaced, for uninstall
# asyncpg's protocol methods that each send one request and wait for its answer.
_PG_ROUND_TRIPS: Final = (
    "query",
    "prepare",
    "bind_execute",
    "bind_execute_many",
    "bind",
    "execute",
    "close_statement",
    "copy_in",
    "copy_out",
)


def _count(backend: str) -> None:
    _COUNTS[f"{backend}_request" if _IN_REQUEST.get() else f"{backend}_background"] += 1


def enter_request() -> Token[bool]:
    """Mark the current context as serving a request; pass the token to :func:`leave_request`."""
    return _IN_REQUEST.set(True)


def leave_request(token: Token[bool]) -> None:
    """End the mark set by :func:`enter_request`."""
    _IN_REQUEST.reset(token)


def counters() -> dict[str, int]:
    """The counts so far (a copy): ``redis_request``, ``redis_background``, ``postgres_*``."""
    return dict(_COUNTS)


class _CountingProtocol:
    """Wraps one asyncpg protocol: counts the methods that make a round trip, delegates the rest.

    Only the round-trip methods are wrapped (a plain call, no extra coroutine frame); every
    other attribute is looked up once on the wrapped protocol and, when callable, kept.
    """

    def __init__(self, wrapped: Any) -> None:  # Any: asyncpg's Cython protocol
        self._wrapped = wrapped
        for name in _PG_ROUND_TRIPS:
            method = getattr(wrapped, name)

            def counted(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
                _count("postgres")
                return _method(*args, **kwargs)

            setattr(self, name, counted)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._wrapped, name)
        if callable(value):
            setattr(self, name, value)
        return value


def install_counters() -> None:
    """Count every Redis command and PostgreSQL round trip of this process from now on.

    Redis: one ``send_packed_command`` per command sent alone or per pipeline. PostgreSQL: each
    connection's protocol is wrapped when the connection is made (asyncpg ``Connection``), so
    statements, prepares, transaction control and the pool's reset on release all count.
    Idempotent.
    """
    from asyncpg.connection import Connection
    from redis.asyncio.connection import AbstractConnection

    if _ORIGINALS:
        return
    send = AbstractConnection.send_packed_command
    _ORIGINALS.update(send=send, init=Connection.__init__)

    def send_counted(self: AbstractConnection, *args: Any, **kwargs: Any) -> Any:
        _count("redis")
        return send(self, *args, **kwargs)

    AbstractConnection.send_packed_command = send_counted  # type: ignore[method-assign]

    init = Connection.__init__

    def init_counted(self: Connection, protocol: Any, *args: Any, **kwargs: Any) -> None:
        counting: Any = _CountingProtocol(protocol)  # Any: stands in for asyncpg's protocol
        init(self, counting, *args, **kwargs)

    Connection.__init__ = init_counted  # type: ignore[method-assign,assignment]


def uninstall_counters() -> None:
    """Undo :func:`install_counters` (connections made meanwhile keep counting) and zero the
    counts."""
    from asyncpg.connection import Connection
    from redis.asyncio.connection import AbstractConnection

    if not _ORIGINALS:
        return
    AbstractConnection.send_packed_command = _ORIGINALS.pop("send")  # type: ignore[method-assign]
    Connection.__init__ = _ORIGINALS.pop("init")  # type: ignore[method-assign]
    for name in _COUNTS:
        _COUNTS[name] = 0
