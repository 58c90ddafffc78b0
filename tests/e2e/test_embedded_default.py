"""``c2s-api serve`` on its embedded default, as a new user runs it (``make run``).

With no upstream URL and ``ENVIRONMENT=development``, one command must give the whole service:
migrations, a development key printed once, the sandbox upstreams and a worker beside the API,
so that a bulk job (or a webhook event) submitted on a laptop is processed, and nothing is left
running when the command ends, however it ends.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import uuid
from typing import TYPE_CHECKING

import httpx
import pytest

from app.config import Settings
from infra.sandbox.people import SyntheticPeople
from infra.sandbox.settings import SandboxSettings
from tests.support.db import REDIS_BASE_URL, create_database, delete_redis_keys, drop_database
from tests.support.polling import wait_until, wait_until_sync
from tests.support.processes import ChildProcess, free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.integration

_KEY = re.compile(r"^\s+(c2s_[A-Za-z0-9_-]{20,})$", re.MULTILINE)
_SETTINGS = {name.upper() for name in Settings.__struct_fields__}


class Serve:
    """One ``c2s-api serve`` with its own database, Redis prefix and ports."""

    def __init__(self, database_url: str, prefix: str) -> None:
        self.port = free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in _SETTINGS and not k.startswith("SANDBOX_")
        }
        env |= {
            "ENVIRONMENT": "development",
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_BASE_URL,
            "REDIS_KEY_PREFIX": prefix,
            "PORT": str(self.port),
            "SANDBOX_PORT": str(free_port()),
            "WORKER_METRICS_PORT": str(free_port()),
            "WORKER_GRACE_S": "5",
            "LOG_LEVEL": "INFO",
        }
        self.child = ChildProcess("serve", [sys.executable, "-m", "app.cli", "serve"], env)
        self.url = f"http://127.0.0.1:{self.port}"

    def key(self) -> str | None:
        match = _KEY.search(self.child.output())
        return match.group(1) if match else None

    def worker_pid(self) -> int | None:
        for line in self.child.output().splitlines():
            if '"embedded_worker_started"' in line:
                return int(json.loads(line)["pid"])
        return None

    async def healthy(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=1) as client:
                return (await client.get(f"{self.url}/health")).status_code == 200
        except httpx.HTTPError:
            return False


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone too (its parent has not reaped it yet).
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


@pytest.fixture
async def fresh() -> AsyncIterator[tuple[str, str]]:
    """A database of its own (the command migrates it) and a Redis prefix of its own."""
    name = f"c2s_test_embedded_{uuid.uuid4().hex[:8]}"
    prefix = f"c2s:test:embedded:{uuid.uuid4().hex[:8]}:"
    url = await create_database(name)
    try:
        yield url, prefix
    finally:
        await drop_database(name)
        await delete_redis_keys(prefix)


async def started(database_url: str, prefix: str) -> tuple[Serve, int]:
    serve = Serve(database_url, prefix)
    try:
        await wait_until(serve.healthy, 60, what="serve answering /health")
        await wait_until(lambda: serve.worker_pid() is not None, 10, what="the worker's pid")
    except BaseException:
        print(serve.child.output(tail=40))
        serve.child.stop()
        raise
    pid = serve.worker_pid()
    assert pid is not None
    return serve, pid


async def test_a_bulk_job_is_processed_and_sigterm_stops_the_worker_too(
    fresh: tuple[str, str],
) -> None:
    serve, worker = await started(*fresh)
    try:
        key = serve.key()
        assert key, "the development key is printed once on stdout"
        cpf = SyntheticPeople(SandboxSettings().seed).cpf_for(7)
        async with httpx.AsyncClient(base_url=serve.url, timeout=10) as client:
            headers = {"X-API-Key": key}
            submitted = await client.post(
                "/api/v1/enrich/jobs", json={"items": [{"cpf": cpf, "ref": "r1"}]}, headers=headers
            )
            assert submitted.status_code == 202, submitted.text
            job = submitted.headers["location"]

            async def done() -> bool:
                response = await client.get(job, headers=headers)
                assert response.status_code == 200, response.text
                return bool(response.json()["state"] == "done")

            # Polled gently: the development limits (20 requests per 2 s per address) apply.
            await wait_until(done, 30, what="the job done by the embedded worker", interval_s=0.5)
            results = (await client.get(f"{job}/results", headers=headers)).json()
            assert [(i["ref"], i["state"]) for i in results["items"]] == [("r1", "done")]
            assert results["items"][0]["customer"]["personal_info"]["cpf"] == cpf

        serve.child.signal(signal.SIGTERM)
        assert await serve.child.wait(30) == 0, serve.child.output(tail=40)
        wait_until_sync(lambda: gone(worker), 10, what="the worker stopped with serve")
    finally:
        serve.child.stop()


async def test_a_killed_serve_leaves_no_worker_behind(fresh: tuple[str, str]) -> None:
    serve, worker = await started(*fresh)
    try:
        serve.child.kill()  # SIGKILL: no cleanup in serve itself
        # The worker gets SIGTERM when serve dies, drains (WORKER_GRACE_S=5) and exits.
        wait_until_sync(lambda: gone(worker), 15, what="the orphaned worker to stop")
    finally:
        serve.child.stop()
        if not gone(worker):
            os.kill(worker, signal.SIGKILL)
