"""Floods and costs through the real app factory, on real PostgreSQL and Redis.

* A flood of random well-formed keys from one client gets 429s past ``AUTH_FAILURE_LIMIT``, and
  the PostgreSQL key look-ups it causes are counted on a database of its own: the scans of
  ``core.api_keys`` in ``pg_stat_user_tables``, read after the app's connections have closed
  (a backend flushes its statistics when it exits), so nothing else contributes.
* ``POST /api/v1/enrich/batch`` takes one unit of the per-key limits per item.
* With Redis unreachable every failed limiter call is counted in
  ``rate_limit_storage_errors_total`` and the failed-authentication limit holds per process.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from app.main import create_app
from domain.keys import generate_key
from infra.db.migrate import migrate
from tests.support.db import create_database, drop_database
from tests.support.factories import issue_key

if TYPE_CHECKING:
    from app.config import Settings

pytestmark = pytest.mark.integration

AUTH_QUOTA = 10
FLOOD = 300

_OTHER_SESSIONS = """
SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()
"""
_KEY_TABLE_SCANS = """
SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0)
  FROM pg_stat_user_tables WHERE schemaname = 'core' AND relname = 'api_keys'
"""


async def _key_table_scans(url: str, database: str) -> int:
    """Scans of ``core.api_keys`` once no other session is connected to ``database``."""
    conn = await asyncpg.connect(url)
    try:
        for _ in range(100):
            if await conn.fetchval(_OTHER_SESSIONS, database) == 0:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"connections to {database} did not close")
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        return int(await conn.fetchval(_KEY_TABLE_SCANS))
    finally:
        await conn.close()


def _scraped(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    return float(match[1]) if match else 0.0


async def test_random_key_flood_gets_429s_and_bounded_key_lookups(
    settings: Settings, redis_prefix: str, redis_cleanup: None
) -> None:
    name = f"c2s_flood_{uuid.uuid4().hex[:10]}"
    url = await create_database(name)
    try:
        await migrate(url)
        before = await _key_table_scans(url, name)
        flooded = msgspec.structs.replace(
            settings,
            database_url=url,
            redis_key_prefix=f"{redis_prefix}flood-{uuid.uuid4().hex[:6]}:",
            auth_failure_limit=f"{AUTH_QUOTA}/minute",
        )
        statuses: list[int] = []
        retry_after: list[int] = []
        async with AsyncTestClient(app=create_app(flooded)) as client:
            for _ in range(FLOOD):
                response = await client.get(
                    f"/api/v1/customers/{uuid.uuid4()}",
                    headers={"X-API-Key": generate_key().plaintext},
                )
                statuses.append(response.status_code)
                if response.status_code == 429:
                    retry_after.append(int(response.headers["retry-after"]))
                    assert response.headers["content-type"].startswith("application/problem+json")
        lookups = await _key_table_scans(url, name) - before
    finally:
        await drop_database(name)
    assert statuses[:AUTH_QUOTA] == [401] * AUTH_QUOTA
    assert statuses.count(429) == FLOOD - AUTH_QUOTA, sorted(set(statuses))
    assert all(1 <= value <= 60 for value in retry_after)
    # Without the limit every request is one look-up (300); with it, the quota and the one
    # look-up whose failure found the client over it.
    assert 0 < lookups <= AUTH_QUOTA + 1, lookups


async def test_batch_takes_one_unit_of_the_key_limit_per_item(
    settings: Settings, database_url: str, redis_prefix: str, redis_cleanup: None
) -> None:
    tight = msgspec.structs.replace(
        settings,
        redis_key_prefix=f"{redis_prefix}cost-{uuid.uuid4().hex[:6]}:",
        rate_limit_key="30/minute",
        rate_limit_ip="",
        rate_limit_global="",
    )
    key, _ = await issue_key(database_url, tenant="cost", scopes="read,enrich")
    other, _ = await issue_key(database_url, tenant="cost", scopes="read,enrich")

    def batch(n: int) -> dict[str, Any]:
        return {"items": [{"cpf": "123"} for _ in range(n)]}  # each item answers 400 at once

    async with AsyncTestClient(app=create_app(tight)) as client:

        async def post(api_key: str, n: int) -> Any:  # Any: the test client's response
            return await client.post(
                "/api/v1/enrich/batch", json=batch(n), headers={"X-API-Key": api_key}
            )

        first = await post(key, 10)
        assert first.status_code == 200, first.text
        assert first.json()["failed"] == 10
        assert first.headers["x-ratelimit-remaining"] == "20"
        assert (await post(key, 10)).headers["x-ratelimit-remaining"] == "10"
        refused = await post(key, 15)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        # The refused batch took nothing: a single request still fits.
        single = await client.get(f"/api/v1/customers/{uuid.uuid4()}", headers={"X-API-Key": key})
        assert single.status_code == 404
        assert single.headers["x-ratelimit-remaining"] == "9"

        # A batch larger than the quota is served alone in an empty window, then nothing fits.
        big = await post(other, 40)
        assert big.status_code == 200
        assert big.headers["x-ratelimit-remaining"] == "0"
        assert (await post(other, 1)).status_code == 429


async def test_with_redis_unreachable_storage_errors_are_counted_and_the_auth_limit_holds(
    settings: Settings, database_url: str
) -> None:
    key, _ = await issue_key(database_url, tenant="noredis", scopes="read")
    broken = msgspec.structs.replace(
        settings,
        redis_url="redis://127.0.0.1:1/0",
        auth_failure_limit="5/minute",
        rate_limit_key="1000/minute",
    )
    async with AsyncTestClient(app=create_app(broken)) as client:
        scrape = (await client.get("/metrics")).text
        before = _scraped(scrape, "rate_limit_storage_errors_total")
        served = await client.get(f"/api/v1/customers/{uuid.uuid4()}", headers={"X-API-Key": key})
        assert served.status_code == 404, served.text
        assert "x-ratelimit-remaining" in served.headers  # limited, per process
        scrape = (await client.get("/metrics")).text
        assert _scraped(scrape, "rate_limit_storage_errors_total") >= before + 1
        assert _scraped(scrape, "rate_limit_degraded") == 1

        statuses = [
            (
                await client.get(
                    f"/api/v1/customers/{uuid.uuid4()}",
                    headers={"X-API-Key": generate_key().plaintext},
                )
            ).status_code
            for _ in range(12)
        ]
    assert statuses == [401] * 5 + [429] * 7
