"""End-to-end fixtures: the real app in-process, the sandbox and workers as real processes.

* The sandbox (simulated C2S, Diretrix and Work API) runs under Granian in a subprocess for the
  session, on a free loopback port; its state is reset before each test.
* The app is ``create_app(settings)`` driven by ``AsyncTestClient`` (lifespan included), with
  upstream URLs pointing at the sandbox, the session's PostgreSQL database and Redis prefix.
* Workers are ``run_worker`` in subprocesses, so a test can SIGKILL one mid-job.

Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import IO, TYPE_CHECKING, Any

import aiohttp
import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from app.config import Settings, load_settings
from tests.processes import ROOT, granian_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from litestar import Litestar

SANDBOX_SEED = 5151
C2S_TOKEN = "e2e-c2s-token"
DIRETRIX_USER = "e2e-user"
DIRETRIX_PASS = "e2e-pass"
WORK_API_TOKEN = "e2e-work-token"
WEBHOOK_SECRET = "e2e-webhook-secret"


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float, what: str, interval_s: float = 0.1
) -> None:
    """Wait until ``check()`` is true, failing the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    """The sandbox, served by Granian in a subprocess for the whole session."""
    env = {
        **os.environ,
        "SANDBOX_SEED": str(SANDBOX_SEED),
        "SANDBOX_C2S_TOKEN": C2S_TOKEN,
        "SANDBOX_DIRETRIX_USER": DIRETRIX_USER,
        "SANDBOX_DIRETRIX_PASS": DIRETRIX_PASS,
        "SANDBOX_WORK_API_TOKEN": WORK_API_TOKEN,
        "SANDBOX_REGISTRY_SIZE": "500",
    }
    with granian_server(
        "infra.sandbox.app:create_sandbox_app", env=env, ready_path="/_sandbox/health"
    ) as url:
        yield url


class Sandbox:
    """The sandbox's ``/_sandbox`` admin API."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    async def _json(self, method: str, path: str, body: Any = None) -> Any:  # Any: JSON
        async with self.session.request(method, self.base_url + path, json=body) as resp:
            if resp.status == 204:
                return None
            assert resp.status < 300, (resp.status, await resp.text())
            return await resp.json()

    async def reset(self) -> None:
        """Forget leads, messages, faults and counters."""
        await self._json("POST", "/_sandbox/reset")

    async def create_lead(self, person_index: int) -> dict[str, Any]:
        """A C2S lead for a synthetic person whose phone and e-mail Diretrix knows."""
        result: dict[str, Any] = await self._json(
            "POST", "/_sandbox/leads", {"person_index": person_index}
        )
        return result

    async def messages(self, lead_id: str) -> list[dict[str, Any]]:
        """The messages a lead received."""
        result = await self._json("GET", f"/_sandbox/leads/{lead_id}/messages")
        messages: list[dict[str, Any]] = result["messages"]
        return messages

    async def set_faults(self, upstream: str, **knobs: Any) -> None:
        """Replace the faults of one upstream."""
        await self._json("POST", f"/_sandbox/faults/{upstream}", knobs)

    async def counters(self) -> dict[str, dict[str, int]]:
        """Calls received per upstream and route."""
        result: dict[str, dict[str, int]] = await self._json("GET", "/_sandbox/counters")
        return result


@pytest.fixture
async def sandbox(sandbox_url: str) -> AsyncIterator[Sandbox]:
    """The sandbox admin API, reset for this test."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        admin = Sandbox(session, sandbox_url)
        await admin.reset()
        yield admin


@pytest.fixture(scope="session")
def e2e_env(base_env: dict[str, str], sandbox_url: str) -> dict[str, str]:
    """Environment of the app and the workers: session services + the sandbox upstreams."""
    return {
        **base_env,
        # Own Redis key space (breakers, caches, locks) apart from the other test tiers' apps.
        "REDIS_KEY_PREFIX": base_env["REDIS_KEY_PREFIX"] + "e2e:",
        "C2S_BASE_URL": sandbox_url,
        "C2S_TOKEN": C2S_TOKEN,
        "DIRETRIX_BASE_URL": sandbox_url,
        "DIRETRIX_USER": DIRETRIX_USER,
        "DIRETRIX_PASS": DIRETRIX_PASS,
        "WORK_API_BASE_URL": sandbox_url,
        "WORK_API_TOKEN": WORK_API_TOKEN,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        # The tests fire 100 deliveries at once from one address: no per-client limit here.
        "RATE_LIMIT_IP": "",
        "RATE_LIMIT_KEY": "",
        "RATE_LIMIT_GLOBAL": "",
        "DB_POOL_MAX": "30",
    }


@pytest.fixture(scope="session")
def e2e_settings(e2e_env: dict[str, str]) -> Settings:
    """Settings of the in-process app."""
    return load_settings(e2e_env)


@pytest.fixture(scope="session")
async def client(e2e_settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The real app (lifespan included) for the session."""
    from app.main import create_app

    app = create_app(e2e_settings)
    async with AsyncTestClient(app=app, timeout=30) as test_client:
        yield test_client


@pytest.fixture(scope="session")
async def _db_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def db(_db_pool: asyncpg.Pool) -> asyncpg.Pool:
    """A pool for the tests' own reads; the queue starts empty (no other test's leftovers
    for this test's workers to pick up)."""
    await _db_pool.execute("TRUNCATE queue.pgqueuer")
    return _db_pool


class WorkerProcess:
    """``run_worker`` in a subprocess."""

    def __init__(self, proc: subprocess.Popen[bytes], log: IO[bytes]) -> None:
        self.proc = proc
        self.log = log

    def output(self) -> str:
        """Everything the worker printed so far."""
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no lease released."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout_s: float) -> int:
        """SIGTERM and wait for the exit status (killed if it overruns ``timeout_s``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            pytest.fail(f"worker did not exit within {timeout_s}s:\n{self.output()}")


@pytest.fixture
def start_worker(e2e_env: dict[str, str]) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``run_worker`` processes; any still alive at the end of the test is killed."""
    started: list[WorkerProcess] = []

    def start(
        *, concurrency: int = 2, lease_timeout_s: float = 30.0, grace_s: float = 5.0
    ) -> WorkerProcess:
        code = (
            "import sys\n"
            "from app.config import load_settings\n"
            "from app.cli.worker import run_worker\n"
            f"sys.exit(run_worker(load_settings(), concurrency={concurrency}, "
            f"lease_timeout_s={lease_timeout_s}, grace_s={grace_s}, metrics_port=0))\n"
        )
        log = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the worker
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**os.environ, **e2e_env, "LOG_LEVEL": "INFO"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        worker = WorkerProcess(proc, log)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait(timeout=10)
        worker.log.close()
