"""Unauthenticated flood: one client floods random keys while a legitimate client keeps working.

The app (Granian, one worker) runs on a PostgreSQL database of its own, created for the scenario
on the machine's server, so that its API-key look-ups can be counted (scans of
``core.api_keys`` in ``pg_stat_user_tables``, read once the app is gone and its backends have
flushed their statistics); Redis is the machine's (own key prefix). Both clients reach the app
from 127.0.0.1, a trusted proxy by default, and name themselves in ``X-Forwarded-For``: the
flooder puts a fresh random address left of its own on every request (the spoofing the
right-most rule ignores), and sends a fresh well-formed random key each time, so neither the
negative key cache nor a per-key limit can help.

Proves: the flooder gets 429 with ``Retry-After`` once past ``AUTH_FAILURE_LIMIT``; the
legitimate client (another address, a valid key, the read mix) is answered 2xx throughout; the
flood costs a bounded number of PostgreSQL key look-ups, not one per request.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from typing import TYPE_CHECKING

import asyncpg
import pytest

from domain.keys import generate_key
from infra.db.migrate import migrate
from tests.support.chaos.load import LoadRun, Request, figures
from tests.support.chaos.scenario import make_workload, report, scenario_env, warm_up
from tests.support.db import REDIS_BASE_URL, create_database, drop_database
from tests.support.factories import issue_key

if TYPE_CHECKING:
    from tests.support.chaos.scenario import Processes, Profile
    from tests.support.sandbox import SandboxAdmin as Sandbox

pytestmark = [pytest.mark.chaos]

AUTH_QUOTA = 20  # AUTH_FAILURE_LIMIT=20/minute, the default
KEY_CACHE_TTL_S = 2.0  # API_KEY_CACHE_TTL_S default: the legitimate key is looked up again after it
FLOODER = "203.0.113.66"
LEGITIMATE = "198.51.100.20"
_SCANS = """
SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0)
  FROM pg_stat_user_tables WHERE schemaname = 'core' AND relname = 'api_keys'
"""
_OTHER_SESSIONS = """
SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()
"""


async def _key_scans(url: str, database: str) -> int:
    """Scans of ``core.api_keys`` once nothing else is connected to ``database`` (bounded wait)."""
    conn = await asyncpg.connect(url, timeout=5)
    try:
        deadline = time.monotonic() + 10
        while await conn.fetchval(_OTHER_SESSIONS, database):
            if time.monotonic() > deadline:
                pytest.fail(f"sessions on {database} did not end")
            await asyncio.sleep(0.1)
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        return int(await conn.fetchval(_SCANS))
    finally:
        await conn.close()


def _flood(i: int) -> Request:
    spoofed = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    return Request(
        "flood",
        "GET",
        "/api/v1/work/modules/all?documento=52998224725",
        {"X-API-Key": generate_key().plaintext, "X-Forwarded-For": f"{spoofed}, {FLOODER}"},
    )


async def test_unauthenticated_flood_is_refused_while_a_legitimate_client_is_served(
    profile: Profile,
    processes: Processes,
    sandbox: Sandbox,
    sandbox_url: str,
    chaos_prefix: str,
) -> None:
    name = f"c2s_chaos_flood_{uuid.uuid4().hex[:8]}"
    database = await create_database(name)
    try:
        await migrate(database)
        key, _ = await issue_key(database, tenant="chaos", scopes="read,enrich", name="legit")
        workload = await make_workload(sandbox, key, first_person=6000, leads=1)
        baseline = await _key_scans(database, name)
        env = scenario_env(
            database_url=database,
            redis_url=REDIS_BASE_URL,
            prefix=chaos_prefix,
            upstreams_url=sandbox_url,
            AUTH_FAILURE_LIMIT=f"{AUTH_QUOTA}/minute",
        )
        started = time.monotonic()
        app = processes.app(env)
        await app.wait_healthy()
        await warm_up(app.url, workload)

        def legitimate(i: int) -> Request:
            request = workload.reads_only(i)
            headers = {**request.headers, "X-Forwarded-For": LEGITIMATE}
            return Request(request.kind, request.method, request.path, headers)

        duration = profile.seconds(10, 30)
        flood_rate = 600.0 if profile.long else 300.0
        legit_run = LoadRun(
            app.url, legitimate, rate_per_s=profile.rate_per_s, duration_s=duration, timeout_s=10
        )
        flood_run = LoadRun(
            app.url,
            _flood,
            rate_per_s=flood_rate,
            duration_s=duration,
            concurrency=64,
            timeout_s=10,
            origin=legit_run.origin,
        )
        legit, flood = await asyncio.gather(legit_run.run(), flood_run.run())
        app.stop()  # its connections close: the backends flush their statistics
        elapsed = time.monotonic() - started
        lookups = await _key_scans(database, name) - baseline
    finally:
        await drop_database(name)

    # The flood: the quota per window (a run may straddle two), plus the look-ups under way when
    # the block is learnt (they run four at a time). The legitimate key: one look-up per cache
    # TTL, one last_used_at write per minute.
    bound = 2 * AUTH_QUOTA + 4 + math.ceil(elapsed / KEY_CACHE_TTL_S) + math.ceil(elapsed / 60)
    flooded = figures(flood)
    served = figures(legit)
    block = report(
        "Unauthenticated flood",
        {"legitimate": legit, "flood": flood},
        f"flood: {flooded.requests} requests at {flood_rate:.0f}/s with random keys from "
        f"{FLOODER} (random spoofed X-Forwarded-For entries), AUTH_FAILURE_LIMIT "
        f"{AUTH_QUOTA}/minute",
        f"PostgreSQL key look-ups (core.api_keys scans) over {elapsed:.1f}s: {lookups} "
        f"(bound {bound}; without the limit at least {flooded.requests})",
    )

    assert flooded.other_5xx == 0, block
    assert flooded.too_many > 0, block
    assert flooded.too_many >= 0.9 * flooded.requests, block
    assert all(s.retry_after for s in flood if s.status == 429), block
    assert flooded.ok == 0, block
    assert served.requests > 0, block
    assert served.ok == served.requests, block
    assert lookups <= bound, block
