"""One Granian worker with its in-memory dossier cache full (default bound) stays within the
memory target: RSS <= 150 MB."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest

from app.config import Settings
from tests.support.factories import issue_key, new_cpf
from tests.support.processes import granian_server

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RSS_LIMIT_MB = 150
BOUND = int(Settings().dossier_local_cache_mb * 1024 * 1024)


@pytest.fixture(scope="module")
def one_worker(e2e_env: dict[str, str]) -> Iterator[str]:
    """The app under Granian, one worker, the default local-cache bounds."""
    env = {
        **os.environ,
        **e2e_env,
        "REDIS_KEY_PREFIX": e2e_env["REDIS_KEY_PREFIX"] + f"rss-{uuid.uuid4().hex[:6]}:",
    }
    for var in ("DOSSIER_LOCAL_CACHE_MB", "DOSSIER_LOCAL_CACHE_ENTRIES"):
        env.pop(var, None)
    with granian_server("app.main:create_app", env=env, ready_path="/health") as url:
        yield url


def _worker_rss_mb() -> dict[int, float]:
    """VmRSS of every Granian worker process of this test (children of a granian parent)."""
    found: dict[int, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        parent = Path(f"/proc/{fields['PPid'].strip()}/cmdline")
        try:
            parent_cmd = parent.read_bytes()
        except OSError:
            continue
        if b"granian" in parent_cmd and b"app.main:create_app" in parent_cmd + cmdline:
            found[int(proc.name)] = int(fields["VmRSS"].split()[0]) / 1024
    return found


async def _local_cache_bytes(session: aiohttp.ClientSession, url: str) -> float:
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith("dossier_local_cache_bytes "):
            return float(line.split()[1])
    return 0.0


async def test_a_worker_with_a_full_dossier_cache_stays_under_150_mb(
    one_worker: str, database_url: str
) -> None:
    before = _worker_rss_mb()
    key, _ = await issue_key(database_url, tenant="rss", scopes="read,enrich")
    headers = {"X-API-Key": key}
    statuses: list[int] = []
    connector = aiohttp.TCPConnector(limit=16)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def fetch(count: int) -> None:
            for _ in range(count):
                url = f"{one_worker}/api/v1/work/modules/all?documento={new_cpf()}"
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    statuses.append(response.status)

        # ~5.2 KB per realistic dossier: enough distinct ones to overflow the byte bound.
        while await _local_cache_bytes(session, one_worker) < 0.97 * BOUND:
            await asyncio.gather(*(fetch(100) for _ in range(16)))
            assert set(statuses) == {200}, sorted(set(statuses))
        held = await _local_cache_bytes(session, one_worker)
    assert held <= BOUND
    after = _worker_rss_mb()
    assert after, "no Granian worker found"
    worst = max(after.values())
    print(f"worker RSS: start {before}, full cache {after} MB; held {held / 2**20:.1f} MB")
    assert worst <= RSS_LIMIT_MB, f"worker RSS {worst:.0f} MB with a full dossier cache"
