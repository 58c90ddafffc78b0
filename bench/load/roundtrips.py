"""Count the Redis round trips of one request on the real code path, in-process.

The app is built with the run's own settings (same database, Redis prefix, sandbox) and driven
through Litestar's ASGI test client, lifespan included, while every write of a packed command
to a Redis socket is counted (``AbstractConnection.send_packed_command``: one call per command
sent alone, one per pipeline). A request's count is therefore exactly its round trips, whatever
the Lua scripts do on the server. Only this process is patched; the server under load is not.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = ["count_round_trips"]


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
