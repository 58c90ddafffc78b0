"""A Redis Cluster master SIGKILLed mid-load; its replica is promoted (``docs/chaos.md``, ADR 0014).

The app and the worker use a throwaway 6-node cluster (3 masters, 3 replicas, node timeout 1 s)
through ``REDIS_URL=redis+cluster://...``; PostgreSQL is the machine's. Under the steady mix, the
master serving the rate limiter's slot (``{rl}``: every limiter key) is killed; the cluster
promotes its replica after the node timeout.

Proves: the failover costs at most the degraded mode of a Redis outage (no 5xx but documented
503s with ``Retry-After``, no hung request, the limiter on its per-process fallback while the slot
has no master), the limiter is back on the cluster within the recovery bound after the
promotion, and nothing accepted is lost nor messaged twice (the ledger).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from tests.support.chaos.ledger import check_ledger
from tests.support.chaos.load import LoadRun, figures, recovery_time
from tests.support.chaos.scenario import (
    make_workload,
    metric,
    report,
    scenario_env,
    scrape_metrics,
    warm_up,
)
from tests.support.polling import seconds_until
from tests.support.topology import redis_cluster

if TYPE_CHECKING:
    from tests.support.chaos.scenario import Processes, Profile
    from tests.support.sandbox import SandboxAdmin

pytestmark = [pytest.mark.chaos]

RECOVERY_BOUND_S = 10.0  # after the promotion, as for a restarted Redis
NO_HANG_S = 1.5  # REDIS_TIMEOUT_S 0.25 s x (1 + REDIS_CLUSTER_RETRIES 2) + backoff


async def test_a_master_killed_mid_load_fails_over_within_the_degraded_mode(
    profile: Profile,
    processes: Processes,
    sandbox: SandboxAdmin,
    sandbox_url: str,
    database_url: str,
    chaos_key: str,
) -> None:
    with redis_cluster() as cluster:
        env = scenario_env(
            database_url=database_url,
            redis_url=cluster.url,
            prefix="chaos:cluster:",
            upstreams_url=sandbox_url,
        )
        app = processes.app(env)
        worker = processes.worker(env)
        workload = await make_workload(sandbox, chaos_key, first_person=3000)
        await asyncio.gather(app.wait_healthy(), worker.wait_started())
        await warm_up(app.url, workload)

        baseline = profile.seconds(4, 15)
        after = profile.seconds(14, 30)
        run = LoadRun(
            app.url,
            workload.request,
            rate_per_s=profile.rate_per_s,
            duration_s=baseline + after,
            timeout_s=10,
        )
        load = asyncio.create_task(run.run())
        victim = cluster.owner_of("chaos:cluster:{rl}")
        try:
            await asyncio.sleep(baseline)
            cluster.kill(victim)
            t_kill = run.now()
            promotion = asyncio.ensure_future(asyncio.to_thread(cluster.wait_ok, 20.0))
            seen_degraded = False
            while not promotion.done():  # the limiter's syncs hit the dead master: fallback
                metrics = await scrape_metrics(app.url)
                seen_degraded = seen_degraded or metric(metrics, "rate_limit_degraded") == 1
                await asyncio.sleep(0.1)
            promoted_s = await promotion
            t_promoted = run.now()

            async def limiter_on_cluster() -> bool:
                metrics = await scrape_metrics(app.url)
                return metric(metrics, "rate_limit_degraded") in (0, None)

            recovery_s = await seconds_until(limiter_on_cluster, timeout_s=RECOVERY_BOUND_S + 5)
            samples = await load
        finally:
            run.stop()
            if not load.done():
                await asyncio.wait({load}, timeout=30)
        ledger = await check_ledger(
            database_url, sandbox, samples, drain_timeout_s=profile.seconds(30, 60)
        )

    before = [s for s in samples if s.start < t_kill]
    during = [s for s in samples if t_kill <= s.start < t_promoted]
    later = [s for s in samples if s.start >= t_promoted]
    block = report(
        "Redis Cluster master killed mid-load (replica promoted)",
        {"all": samples, "before": before, "failover": during, "after": later},
        f"master :{victim} killed at t={t_kill:.1f}s, cluster ok again after {promoted_s:.1f}s",
        f"limiter seen on its per-process fallback during the failover: {seen_degraded}",
        "recovery (limiter back on the cluster after the promotion): "
        + (f"{recovery_s:.1f}s" if recovery_s is not None else f"> {RECOVERY_BOUND_S + 5:.0f}s"),
        f"recovery (last non-2xx answer after the promotion): "
        f"{recovery_time(samples, t_promoted):.1f}s",
        *ledger.lines(),
    )

    overall = figures(samples)
    assert overall.other_5xx == 0, block
    assert overall.unavailable == overall.unavailable_with_retry_after, block
    assert overall.connection_errors == 0, block
    assert overall.timeouts == 0, block
    assert figures(during).max_ms < NO_HANG_S * 1000, block
    assert seen_degraded, block  # the kill did hit the limiter's slot
    assert recovery_s is not None, block
    assert recovery_s <= RECOVERY_BOUND_S, block
    assert not ledger.problems(), block
    assert ledger.answered_2xx > 0, block
