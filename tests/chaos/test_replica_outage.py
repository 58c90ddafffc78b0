"""The PostgreSQL read replica stopped under load, then started again (ADR 0015).

The app and the worker run with ``DATABASE_READ_URL`` on a streaming replica of the session's
server (``pg_replica``); the primary and Redis are the machine's. Under the steady mix (hot
reads, customer lookups, webhook deliveries and redeliveries):

1. the replica serves the lookups;
2. it is stopped at once (``pg_ctl stop -m immediate``), mid-load, and left down;
3. it is started again and catches up by streaming.

Proves: no request fails because of the replica (no 5xx at all, no 503: its reads move to the
primary, a read cut mid-query is retried there); ``db_replica_serving`` goes to 0 while it is
down and back to 1, reads follow (``db_reads_total{target}``); every webhook answered 2xx is
processed, once, and no lead gets a duplicate C2S message.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from tests.support.chaos.ledger import check_ledger
from tests.support.chaos.load import LoadRun, figures
from tests.support.chaos.scenario import (
    make_workload,
    metric,
    report,
    scenario_env,
    scrape_metrics,
    warm_up,
)
from tests.support.db import REDIS_BASE_URL
from tests.support.polling import seconds_until

if TYPE_CHECKING:
    from tests.support.chaos.scenario import Processes, Profile
    from tests.support.pg_replica import PgReplica
    from tests.support.sandbox import SandboxAdmin

pytestmark = [pytest.mark.chaos]

BACK_BOUND_S = 15.0  # replica restarted -> serving again (start, catch-up, next check)
READS_BACK_BOUND_S = 5.0  # serving again -> lookups answered by it again


async def _replica_state(app_url: str) -> tuple[float | None, float, float]:
    """``db_replica_serving`` and the reads by target, from the app's /metrics."""
    scraped = await scrape_metrics(app_url)
    return (
        metric(scraped, "db_replica_serving"),
        metric(scraped, "db_reads_total", target="replica") or 0.0,
        metric(scraped, "db_reads_total", target="primary") or 0.0,
    )


async def test_replica_stopped_mid_load_fails_no_request_and_serves_again_when_back(
    profile: Profile,
    processes: Processes,
    pg_replica: PgReplica,
    sandbox: SandboxAdmin,
    sandbox_url: str,
    database_url: str,
    chaos_key: str,
    chaos_prefix: str,
) -> None:
    if not pg_replica.running():
        await asyncio.to_thread(pg_replica.start)
    await pg_replica.resume_replay()
    await pg_replica.wait_caught_up()
    env = scenario_env(
        database_url=database_url,
        redis_url=REDIS_BASE_URL,
        prefix=chaos_prefix,
        upstreams_url=sandbox_url,
        DATABASE_READ_URL=pg_replica.url_for(database_url),
        REPLICA_CHECK_S="0.2",
    )
    app = processes.app(env)
    worker = processes.worker(env)
    workload = await make_workload(sandbox, chaos_key, first_person=7000)
    await asyncio.gather(app.wait_healthy(), worker.wait_started())
    await warm_up(app.url, workload)
    await pg_replica.wait_caught_up()

    async def serving() -> bool:
        return (await _replica_state(app.url))[0] == 1

    async def not_serving() -> bool:
        return (await _replica_state(app.url))[0] == 0

    assert await seconds_until(serving, timeout_s=10) is not None, "replica never served"

    baseline = profile.seconds(4, 15)
    down = profile.seconds(5, 15)
    after = profile.seconds(6, 15)
    run = LoadRun(
        app.url,
        workload.request,
        rate_per_s=profile.rate_per_s,
        duration_s=baseline + down + after,
        timeout_s=10,
    )
    load = asyncio.create_task(run.run())
    try:
        await asyncio.sleep(baseline)
        _, replica_before, primary_before = await _replica_state(app.url)
        t_kill = run.now()
        await asyncio.to_thread(pg_replica.kill)
        fallback_s = await seconds_until(not_serving, timeout_s=5)
        await asyncio.sleep(max(0.0, t_kill + down - run.now()))
        _, replica_down, primary_down = await _replica_state(app.url)
        t_start = run.now()
        await asyncio.to_thread(pg_replica.start)
        back_s = await seconds_until(serving, timeout_s=BACK_BOUND_S)

        async def replica_reads_again() -> bool:
            return (await _replica_state(app.url))[1] > replica_down

        # The workload's lookups come in bursts (5 of every 20 requests, one cycle per 0.8 s at
        # 25 requests/s): wait for the next ones, bounded, rather than a fixed second.
        reads_back_s = await seconds_until(replica_reads_again, timeout_s=READS_BACK_BOUND_S)
        _, replica_back, _ = await _replica_state(app.url)
        samples = await load
    finally:
        run.stop()
        if not load.done():
            await asyncio.wait({load}, timeout=30)
        if not pg_replica.running():
            await asyncio.to_thread(pg_replica.start)
    ledger = await check_ledger(
        database_url, sandbox, samples, drain_timeout_s=profile.seconds(30, 60)
    )

    before = [s for s in samples if s.start < t_kill]
    outage = [s for s in samples if t_kill <= s.start < t_start]
    later = [s for s in samples if s.start >= t_start]
    block = report(
        "PostgreSQL read replica stopped under load, then started again",
        {"all": samples, "before": before, "replica down": outage, "after": later},
        f"replica killed at t={t_kill:.1f}s; reads on the primary after "
        f"{fallback_s if fallback_s is None else round(fallback_s, 1)}s; started at "
        f"t={t_start:.1f}s, serving again after {back_s if back_s is None else round(back_s, 1)}s, "
        f"its reads again after "
        f"{reads_back_s if reads_back_s is None else round(reads_back_s, 1)}s",
        f"reads replica/primary: before {replica_before:.0f}/{primary_before:.0f}, "
        f"down {replica_down:.0f}/{primary_down:.0f}, back {replica_back:.0f}",
        *ledger.lines(),
    )

    everything = figures(samples)
    assert everything.other_5xx == 0, block
    assert everything.unavailable == 0, block
    assert everything.connection_errors == 0, block
    assert everything.timeouts == 0, block
    assert figures(outage).ok > 0, block
    assert replica_before > 0, block  # the replica served the lookups
    assert fallback_s is not None, block
    assert primary_down > primary_before, block  # lookups moved to the primary
    assert back_s is not None, block + "\n" + app.output(tail=40)
    assert reads_back_s is not None, block  # and came back
    assert replica_back > replica_down, block
    assert not ledger.problems(), block
    assert ledger.answered_2xx > 0, block
