"""Round trips counted in the benchmark's server worker: a round trip made while serving a
request is the request's, one made outside (start-up, periodic syncs) is background, and
``GET /_bench/round-trips`` reports both."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from litestar import Litestar, get
from litestar.testing import TestClient

from bench.baseline_app import COUNTERS_PATH, BenchDispatch, create_bare_app
from bench.load import roundtrips

if TYPE_CHECKING:
    from collections.abc import Iterator


class FakeProtocol:
    """Stands in for asyncpg's protocol: records calls, answers like one."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def bind_execute(self, *args: Any) -> str:
        self.calls.append("bind_execute")
        return "rows"

    def query(self, sql: str, timeout: float | None) -> str:
        self.calls.append("query")
        return "OK"

    def prepare(self, *args: Any) -> str:
        return "statement"

    def is_connected(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        if name in roundtrips._PG_ROUND_TRIPS:
            return lambda *args, **kwargs: None
        raise AttributeError(name)


@pytest.fixture
def zeroed() -> Iterator[None]:
    roundtrips.install_counters()
    roundtrips.uninstall_counters()  # zeroes the counts; nothing stays patched
    yield
    roundtrips.uninstall_counters()


def test_a_protocol_counts_its_round_trips_and_delegates_the_rest(zeroed: None) -> None:
    wrapped = FakeProtocol()
    protocol: Any = roundtrips._CountingProtocol(wrapped)

    assert protocol.bind_execute("state", [], "", 0, False, None) == "rows"
    assert protocol.query("RESET ALL", None) == "OK"
    assert protocol.is_connected() is True

    assert wrapped.calls == ["bind_execute", "query"]
    assert roundtrips.counters()["postgres_background"] == 2
    assert roundtrips.counters()["postgres_request"] == 0


def test_round_trips_during_a_request_are_the_requests_and_the_route_reports_them(
    zeroed: None,
) -> None:
    protocol: Any = roundtrips._CountingProtocol(FakeProtocol())

    @get("/api/v1/anything", sync_to_thread=False)
    def anything() -> dict[str, str]:
        protocol.bind_execute()
        protocol.query("RESET ALL", None)
        return {"status": "ok"}

    protocol.query("SELECT 1", None)  # outside any request: background
    real = Litestar(route_handlers=[anything])
    with TestClient(app=BenchDispatch(real, create_bare_app())) as client:
        assert client.get("/api/v1/anything").status_code == 200
        assert client.get("/api/v1/anything").status_code == 200
        counts = client.get(COUNTERS_PATH).json()

    assert counts == {
        "redis_request": 0,
        "redis_background": 0,
        "postgres_request": 4,
        "postgres_background": 1,
    }


def test_install_counts_redis_commands_and_uninstall_restores_the_client() -> None:
    from asyncpg.connection import Connection
    from redis.asyncio.connection import AbstractConnection

    send, init = AbstractConnection.send_packed_command, Connection.__init__
    roundtrips.install_counters()
    try:
        assert AbstractConnection.send_packed_command is not send
        assert Connection.__init__ is not init
        roundtrips.install_counters()  # idempotent
    finally:
        roundtrips.uninstall_counters()

    assert AbstractConnection.send_packed_command is send
    assert Connection.__init__ is init
    assert set(roundtrips.counters().values()) == {0}
