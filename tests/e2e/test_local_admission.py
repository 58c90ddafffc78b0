"""Local admission across four Granian workers: a per-key quota of 100/s, hammered for 20 s by
concurrent clients spread over the processes, admits no more than 105/s on average, and every
429 says when to retry."""

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

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUOTA = 100
SECONDS = 20.0
WORKERS = 4
CLIENTS = 24


@pytest.fixture(scope="module")
def four_workers(e2e_env: dict[str, str]) -> Iterator[str]:
    """The app under Granian with 4 worker processes and a per-key quota of 100 per second."""
    with key_limited_app(
        e2e_env, key_limit=f"{QUOTA}/second", workers=WORKERS, tag="la4", RATE_LIMIT_SYNC_MS="50"
    ) as url:
        yield url


async def test_four_workers_hold_a_per_second_quota_under_sustained_load(
    four_workers: str, database_url: str
) -> None:
    key, _ = await issue_key(database_url, tenant="la4", scopes="read")
    headers = {"X-API-Key": key}
    served = 0
    limited = 0
    bad_retry: list[str | None] = []
    other: set[int] = set()
    # A fresh connection per request, so the requests spread over the four worker processes.
    connector = aiohttp.TCPConnector(limit=CLIENTS, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.monotonic() + SECONDS

        async def client() -> None:
            nonlocal served, limited
            while time.monotonic() < deadline:
                url = f"{four_workers}/api/v1/customers/{uuid.uuid4()}"
                async with session.get(url, headers=headers) as response:
                    if response.status == 404:
                        served += 1
                    elif response.status == 429:
                        limited += 1
                        retry = response.headers.get("Retry-After")
                        if retry is None or int(retry) < 1:
                            bad_retry.append(retry)
                    else:
                        other.add(response.status)

        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(CLIENTS)))
        elapsed = time.monotonic() - started
    assert not other, other
    assert limited > 0, "the load did not exceed the quota: nothing was measured"
    assert served / elapsed <= QUOTA * 1.05, (served, limited, elapsed)
    assert served / elapsed >= QUOTA * 0.5, (served, limited, elapsed)  # and not starved
    assert not bad_retry
