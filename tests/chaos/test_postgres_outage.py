"""PostgreSQL connections terminated, then the server restarted, under load.

A throwaway PostgreSQL 15 cluster (``initdb`` in a temporary directory) sits behind a fault proxy;
Redis is the machine's (through a proxy in ``pass`` mode, own key prefix). Under the steady mix:

1. every connection of the app and the worker is killed server-side (``pg_terminate_backend``),
   again every 250 ms for a few seconds, under an extra burst of lookups;
2. a little later the server is stopped (``pg_ctl stop -m fast``), left down, and started again.

Proves: while PostgreSQL is gone, requests that need it get 503 with ``Retry-After`` fast (p99
of the 503s under 1 s: no hang on a dead pool) and nothing else fails; the pool recovers within
5 s of the server's return; every webhook answered 2xx is processed, once.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import asyncpg
import pytest

from infra.db.migrate import migrate
from tests.support.chaos.ledger import check_ledger
from tests.support.chaos.load import LoadRun, figures, recovery_time
from tests.support.chaos.proxy import FaultProxy
from tests.support.chaos.scenario import make_workload, report, scenario_env, via_port, warm_up
from tests.support.db import REDIS_BASE_URL
from tests.support.factories import issue_key

if TYPE_CHECKING:
    from tests.support.chaos.scenario import PostgresCluster, Processes, Profile
    from tests.support.sandbox import SandboxAdmin

pytestmark = [pytest.mark.chaos]

FAST_503_S = 1.0
TERMINATE_EVERY_S = 0.25
BURST_PER_S = 100.0  # customer lookups on top of the load while connections are being killed
RECOVERY_BOUND_S = 5.0
_TERMINATE = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
 WHERE datname = current_database() AND application_name = 'c2s-api' AND pid <> pg_backend_pid()
"""


async def _terminate_app_connections(url: str, *, for_s: float) -> int:
    """Kill every app and worker connection, again every 250 ms for ``for_s`` seconds, so that
    connections die idle, mid-query and freshly reopened. Returns how many were terminated."""
    conn = await asyncpg.connect(url, timeout=5)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + for_s
    killed = 0
    try:
        while True:
            killed += int(await conn.fetchval(_TERMINATE))
            if loop.time() >= deadline:
                return killed
            await asyncio.sleep(TERMINATE_EVERY_S)
    finally:
        await conn.close()


async def test_postgres_connections_killed_then_server_restarted_fast_503s_and_recovery(
    profile: Profile,
    processes: Processes,
    postgres_cluster: PostgresCluster,
    sandbox: SandboxAdmin,
    sandbox_url: str,
    chaos_prefix: str,
) -> None:
    database = postgres_cluster.url("chaos")
    await migrate(database)
    key, _ = await issue_key(database, tenant="chaos", scopes="read,enrich", name="chaos-pg")
    with (
        FaultProxy("postgres", "127.0.0.1", postgres_cluster.port) as pg_proxy,
        FaultProxy("redis", "127.0.0.1", urlsplit(REDIS_BASE_URL).port or 6379) as redis_proxy,
    ):
        env = scenario_env(
            database_url=via_port(database, pg_proxy.port),
            redis_url=via_port(REDIS_BASE_URL, redis_proxy.port),
            prefix=chaos_prefix,
            upstreams_url=sandbox_url,
        )
        app = processes.app(env)
        worker = processes.worker(env)
        workload = await make_workload(sandbox, key, first_person=2000)
        await asyncio.gather(app.wait_healthy(), worker.wait_started())
        await warm_up(app.url, workload)

        baseline = profile.seconds(4, 15)
        after_terminate = profile.seconds(4, 15)
        down = profile.seconds(4, 15)
        after = profile.seconds(10, 20)
        run = LoadRun(
            app.url,
            workload.request,
            rate_per_s=profile.rate_per_s,
            duration_s=baseline + after_terminate + down + after,
            timeout_s=10,
        )
        load = asyncio.create_task(run.run())
        try:
            await asyncio.sleep(baseline)
            t_terminate = run.now()
            # Extra database traffic while connections die, so some die in use.
            burst = LoadRun(
                app.url,
                workload.lookup,
                rate_per_s=BURST_PER_S,
                duration_s=after_terminate,
                concurrency=8,
                timeout_s=10,
                origin=run.origin,
            )
            killed, burst_samples = await asyncio.gather(
                _terminate_app_connections(database, for_s=after_terminate), burst.run()
            )

            t_stop = run.now()
            await asyncio.to_thread(postgres_cluster.stop, "fast")
            t_down = run.now()
            await asyncio.sleep(down)
            await asyncio.to_thread(postgres_cluster.start)
            t_up = run.now()
            samples = await load
        finally:
            run.stop()
            if not load.done():
                await asyncio.wait({load}, timeout=30)
        ledger = await check_ledger(
            database, sandbox, samples, drain_timeout_s=profile.seconds(30, 60)
        )

    before = [s for s in samples if s.start < t_terminate]
    terminated = [s for s in samples if t_terminate <= s.start < t_stop]
    samples = [*samples, *burst_samples]
    outage = [s for s in samples if t_stop <= s.start < t_up]
    later = [s for s in samples if s.start >= t_up]
    recovery_s = recovery_time(samples, t_up)
    terminate_recovery_s = recovery_time(terminated, t_terminate)
    block = report(
        "PostgreSQL connections terminated, then the server restarted",
        {
            "all": samples,
            "before": before,
            "terminated": terminated,
            "  + burst": burst_samples,
            "down": outage,
            "after": later,
        },
        f"{killed} app/worker connections terminated from t={t_terminate:.1f}s to "
        f"t={t_stop:.1f}s; last failure {terminate_recovery_s:.1f}s after the first",
        f"server stopping at t={t_stop:.1f}s (down at t={t_down:.1f}s), back at t={t_up:.1f}s",
        f"recovery (last non-2xx answer after the server came back): {recovery_s:.1f}s",
        f"proxy postgres: {pg_proxy.stats}",
        *ledger.lines(),
    )

    everything = figures(samples)
    assert killed > 0, block
    assert everything.other_5xx == 0, block
    assert everything.unavailable == everything.unavailable_with_retry_after, block
    assert everything.connection_errors == 0, block
    assert everything.timeouts == 0, block
    # Requests that need PostgreSQL fail fast while it is gone; the rest keep working.
    down_figures = figures(outage)
    assert down_figures.unavailable > 0, block
    assert down_figures.p99_503_ms < FAST_503_S * 1000, block
    assert down_figures.max_ms < FAST_503_S * 1000 + 1000, block
    assert recovery_s <= RECOVERY_BOUND_S, block
    assert not ledger.problems(), block
    assert ledger.answered_2xx > 0, block
