"""One per-key quota shared by four Granian workers (Redis up): the limit holds within 5 %."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

import aiohttp
import pytest

from tests.support.factories import issue_key
from tests.support.processes import key_limited_app

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

QUOTA = 120
WORKERS = 4


@pytest.fixture(scope="module")
def four_workers(e2e_env: dict[str, str]) -> Iterator[str]:
    """The app under Granian with 4 worker processes and a per-key quota of 120 per hour."""
    with key_limited_app(e2e_env, key_limit=f"{QUOTA}/hour", workers=WORKERS, tag="rl4") as url:
        time.sleep(2)  # let every worker finish its start-up
        yield url


async def test_four_workers_enforce_one_shared_per_key_limit(
    four_workers: str, database_url: str
) -> None:
    key, _ = await issue_key(database_url, tenant="rl4", scopes="read")
    headers = {"X-API-Key": key}
    statuses: list[int] = []
    retry_after: list[str] = []
    # Many connections, so the requests spread over the four worker processes.
    connector = aiohttp.TCPConnector(limit=32, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            url = f"{four_workers}/api/v1/customers/{uuid.uuid4()}"
            async with session.get(url, headers=headers) as response:
                statuses.append(response.status)
                if response.status == 429:
                    retry_after.append(response.headers["Retry-After"])
                    assert response.headers["RateLimit"].startswith('"key";r=0;')

        await asyncio.gather(*(one() for _ in range(QUOTA * 2)))
    served = statuses.count(404)
    limited = statuses.count(429)
    assert served + limited == QUOTA * 2, sorted(set(statuses))
    assert abs(served - QUOTA) <= QUOTA * 0.05, (served, limited)
    assert all(int(value) >= 1 for value in retry_after)
