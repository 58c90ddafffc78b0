"""Fixtures for the upstream layer: the real sandbox under Granian, real clients, real Redis.

The sandbox runs as a subprocess on a free loopback port for the whole session (state is reset
before every test). Clients are built per test through :func:`make_clients` so each test chooses
its timeouts and breakers. Redis keys live under a prefix unique to the session (and to the test)
and are deleted afterwards; nothing else in Redis is touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import pytest
import redis.asyncio as aioredis
import stamina

from infra.breaker import BreakerConfig, BreakerRegistry
from infra.sandbox.people import SyntheticPeople
from infra.upstream import (
    DEFAULT_RETRY,
    C2SConfig,
    DiretrixConfig,
    RetryPolicy,
    UpstreamClients,
    WorkApiConfig,
    create_session,
    create_upstream_clients,
)
from tests.processes import free_port, granian_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

ROOT = Path(__file__).resolve().parents[3]
SANDBOX_SEED = 4242
C2S_TOKEN = "it-c2s-token"
DIRETRIX_USER = "it-user"
DIRETRIX_PASS = "it-pass"
WORK_API_TOKEN = "it-work-token-s3cr3t"
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RETRY_ATTEMPTS = 3
# Breakers of the route tests never trip: those tests are about wire formats, not breaking.
LENIENT = BreakerConfig(minimum_calls=1000, window_size=1000)

# Sandbox settings, also used in-process to compute the values the sandbox must serve.
PEOPLE = SyntheticPeople(SANDBOX_SEED, registry_size=2000)


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    """Base URL of the sandbox, served by Granian in a subprocess for the whole session."""
    env = {
        **os.environ,
        "SANDBOX_SEED": str(SANDBOX_SEED),
        "SANDBOX_C2S_TOKEN": C2S_TOKEN,
        "SANDBOX_DIRETRIX_USER": DIRETRIX_USER,
        "SANDBOX_DIRETRIX_PASS": DIRETRIX_PASS,
        "SANDBOX_WORK_API_TOKEN": WORK_API_TOKEN,
        "SANDBOX_REGISTRY_SIZE": "2000",
    }
    with granian_server(
        "infra.sandbox.app:create_sandbox_app", env=env, ready_path="/_sandbox/health"
    ) as url:
        yield url


class SandboxAdmin:
    """Calls to the sandbox's ``/_sandbox`` helpers."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(method, self.base_url + path, json=body) as resp:
            if resp.status == 204:
                return None
            assert resp.status < 300, (resp.status, await resp.text())
            return await resp.json()

    async def reset(self) -> None:
        """Forget leads, messages, faults and counters."""
        await self._json("POST", "/_sandbox/reset")

    async def set_faults(self, upstream: str, **knobs: Any) -> dict[str, Any]:
        """Replace the faults of ``upstream``."""
        result: dict[str, Any] = await self._json("POST", f"/_sandbox/faults/{upstream}", knobs)
        return result

    async def clear_faults(self) -> None:
        """No faults anywhere."""
        await self._json("DELETE", "/_sandbox/faults")

    async def counters(self) -> dict[str, dict[str, int]]:
        """Calls received per upstream and route."""
        result: dict[str, dict[str, int]] = await self._json("GET", "/_sandbox/counters")
        return result

    async def count(self, upstream: str, route: str) -> int:
        """Calls received by one route."""
        return (await self.counters()).get(upstream, {}).get(route, 0)

    async def create_lead(self, **body: Any) -> dict[str, Any]:
        """``POST /_sandbox/leads``."""
        result: dict[str, Any] = await self._json("POST", "/_sandbox/leads", body)
        return result

    async def messages(self, lead_id: str) -> list[dict[str, Any]]:
        """Messages a lead received."""
        result = await self._json("GET", f"/_sandbox/leads/{lead_id}/messages")
        messages: list[dict[str, Any]] = result["messages"]
        return messages


@pytest.fixture(scope="session")
async def _admin_session(sandbox_url: str) -> AsyncIterator[SandboxAdmin]:
    async with aiohttp.ClientSession() as session:
        yield SandboxAdmin(session, sandbox_url)


@pytest.fixture
async def sandbox_admin(_admin_session: SandboxAdmin) -> SandboxAdmin:
    """Admin helper of the session's sandbox, reset for this test."""
    await _admin_session.reset()
    return _admin_session


@pytest.fixture(autouse=True)
def _no_retry_waits() -> Iterator[None]:
    """Retries keep their attempt count but never sleep in tests."""
    with stamina.set_testing(True, attempts=RETRY_ATTEMPTS):
        yield


class MakeClients(Protocol):
    """Builds the three clients against the sandbox."""

    def __call__(
        self,
        *,
        timeout_s: float = ...,
        breaker_config: BreakerConfig = ...,
        redis: aioredis.Redis | None = ...,
        key_prefix: str = ...,
        c2s_token: str = ...,
        diretrix_pass: str = ...,
        work_api_token: str = ...,
        base_url: str | None = ...,
        retry: RetryPolicy = ...,
    ) -> UpstreamClients: ...


@dataclass
class _Resources:
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)
    registries: list[BreakerRegistry] = field(default_factory=list)


@pytest.fixture
async def make_clients(sandbox_url: str, sandbox_admin: SandboxAdmin) -> AsyncIterator[MakeClients]:
    """Factory of clients pointed at the sandbox; everything it built is closed afterwards."""
    resources = _Resources()

    def build(
        *,
        timeout_s: float = 5.0,
        breaker_config: BreakerConfig = LENIENT,
        redis: aioredis.Redis | None = None,
        key_prefix: str = "",
        c2s_token: str = C2S_TOKEN,
        diretrix_pass: str = DIRETRIX_PASS,
        work_api_token: str = WORK_API_TOKEN,
        base_url: str | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> UpstreamClients:
        url = base_url or sandbox_url
        session = create_session(20)
        registry = BreakerRegistry(
            redis,
            key_prefix=key_prefix,
            configs={name: breaker_config for name in ("c2s", "diretrix", "work_api")},
        )
        resources.sessions.append(session)
        resources.registries.append(registry)
        return create_upstream_clients(
            session,
            registry,
            c2s=C2SConfig(base_url=url, token=c2s_token, timeout_s=timeout_s, retry=retry),
            diretrix=DiretrixConfig(
                base_url=url,
                user=DIRETRIX_USER,
                password=diretrix_pass,
                timeout_s=timeout_s,
                retry=retry,
            ),
            work_api=WorkApiConfig(
                base_url=url, token=work_api_token, timeout_s=timeout_s, retry=retry
            ),
        )

    yield build
    for registry in resources.registries:
        await registry.aclose()
    for session in resources.sessions:
        await session.close()


@pytest.fixture
async def clients(make_clients: MakeClients) -> UpstreamClients:
    """Default clients: 5 s timeouts, breakers that never trip, no Redis."""
    return make_clients()


@pytest.fixture(scope="session")
def redis_session_prefix() -> str:
    """Prefix of every Redis key this test session writes."""
    return f"c2s-test:upstream:{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def breaker_prefix(redis_session_prefix: str) -> str:
    """A Redis key prefix unique to one test."""
    return f"{redis_session_prefix}{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def redis_client(redis_session_prefix: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the test Redis; the session's keys are deleted afterwards."""
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        yield client
    finally:
        async for key in client.scan_iter(match=redis_session_prefix + "*", count=1000):
            await client.delete(key)
        await client.aclose()


class TcpProxy:
    """A loopback TCP proxy that can be cut and restored (Redis "goes away" and "returns")."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Accept and forward connections."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Refuse new connections and drop the open ones."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        # Closed sockets end the pipes; cancelling the handlers instead would make asyncio's
        # stream machinery log the cancellation as an error.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        ends = [writer]
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                return
            ends.append(up_writer)
            self._writers.update(ends)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._tasks.discard(task)
            for end in ends:
                self._writers.discard(end)
                end.close()
                with contextlib.suppress(OSError):
                    await end.wait_closed()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.close()
