"""Redis killed mid-load and restarted (``docs/chaos.md``, first scenario).

The app and the worker reach a throwaway ``redis-server`` through a fault proxy; PostgreSQL is the
machine's (through a proxy in ``pass`` mode). Under the steady mix, Redis is SIGKILLed (its data
is gone), left dead for a while, then started again empty on the same port.

Proves: no 5xx but documented 503s with ``Retry-After``; the rate limiter and the breakers switch
to their per-process fallbacks (the limiter still refuses a burst over quota: degraded, never
unlimited) and go back to Redis within 10 s of its return; nothing accepted is lost.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tests.support.chaos.ledger import check_ledger
from tests.support.chaos.load import LoadRun, figures, recovery_time
from tests.support.chaos.proxy import FaultProxy
from tests.support.chaos.scenario import (
    make_workload,
    metric,
    rate_limit_probe,
    report,
    scenario_env,
    scrape_metrics,
    via_port,
    warm_up,
)
from tests.support.polling import seconds_until

if TYPE_CHECKING:
    from tests.support.chaos.load import Sample
    from tests.support.chaos.scenario import Processes, Profile, RedisServer
    from tests.support.sandbox import SandboxAdmin

pytestmark = [pytest.mark.chaos]

RECOVERY_BOUND_S = 10.0
NO_HANG_S = 1.0  # REDIS_TIMEOUT_S is 0.25 s: a dead Redis must never become a slow API
BREAKERS = ("work_api", "diretrix", "c2s")
# The app's limiter and its Work API breaker (cache misses), the worker's C2S breaker (each job
# sends a message) must each be seen on their fallback during the outage.
EXPECTED_DEGRADED = frozenset({"rate_limiter", "app:work_api", "worker:c2s"})


async def _degraded(app_url: str, worker_url: str) -> set[str]:
    """What runs on its per-process fallback now: ``rate_limiter`` (app) and
    ``<process>:<breaker>`` for each breaker whose storage gauge reads 1."""
    out: set[str] = set()
    for process, url in (("app", app_url), ("worker", worker_url)):
        metrics = await scrape_metrics(url)
        if process == "app" and metric(metrics, "rate_limit_degraded") == 1:
            out.add("rate_limiter")
        out.update(
            f"{process}:{name}"
            for name in BREAKERS
            if metric(metrics, "circuit_breaker_storage_degraded", name=name) == 1
        )
    return out


async def test_redis_killed_mid_load_sheds_nothing_degrades_locally_and_recovers(
    profile: Profile,
    processes: Processes,
    redis_server: RedisServer,
    sandbox: SandboxAdmin,
    sandbox_url: str,
    database_url: str,
    chaos_key: str,
    probe_key: str,
) -> None:
    pg_port = urlsplit(database_url).port or 5432
    with (
        FaultProxy("postgres", "127.0.0.1", pg_port) as pg_proxy,
        FaultProxy("redis", "127.0.0.1", redis_server.port) as redis_proxy,
    ):
        env = scenario_env(
            database_url=via_port(database_url, pg_proxy.port),
            redis_url=via_port(redis_server.url, redis_proxy.port),
            prefix="chaos:redis:",
            upstreams_url=sandbox_url,
            RATE_LIMIT_KEY="100/second",
        )
        app = processes.app(env)
        worker = processes.worker(env)
        workload = await make_workload(sandbox, chaos_key, first_person=1000)
        await asyncio.gather(app.wait_healthy(), worker.wait_started())
        await warm_up(app.url, workload)

        baseline = profile.seconds(5, 20)
        outage = profile.seconds(6, 20)
        after = profile.seconds(12, 20)
        run = LoadRun(
            app.url,
            workload.request,
            rate_per_s=profile.rate_per_s,
            duration_s=baseline + outage + after,
            timeout_s=10,
        )
        load = asyncio.create_task(run.run())
        try:
            await asyncio.sleep(baseline)
            probe_before = await rate_limit_probe(app.url, probe_key)

            redis_server.kill()
            t_kill = run.now()
            seen_degraded: set[str] = set()

            async def degraded_during_outage() -> bool:
                seen_degraded.update(await _degraded(app.url, worker.metrics_url))
                return seen_degraded >= EXPECTED_DEGRADED

            await seconds_until(degraded_during_outage, timeout_s=outage / 2)
            probe_during = await rate_limit_probe(app.url, probe_key)
            await asyncio.sleep(max(0.0, t_kill + outage - run.now()))

            await asyncio.to_thread(redis_server.start)
            t_back = run.now()

            still_degraded: set[str] = set()

            async def recovered() -> bool:
                still_degraded.clear()
                still_degraded.update(await _degraded(app.url, worker.metrics_url))
                return not still_degraded

            recovery_s = await seconds_until(recovered, timeout_s=RECOVERY_BOUND_S + 5)
            probe_after = await rate_limit_probe(app.url, probe_key)
            samples = await load
        finally:
            run.stop()
            if not load.done():
                await asyncio.wait({load}, timeout=30)
        ledger = await check_ledger(
            database_url, sandbox, samples, drain_timeout_s=profile.seconds(30, 60)
        )

    before = [s for s in samples if s.start < t_kill]
    during = [s for s in samples if t_kill <= s.start < t_back]
    later = [s for s in samples if s.start >= t_back]
    served_recovery = recovery_time(samples, t_back)
    probes: list[Sample] = [*probe_before, *probe_during, *probe_after]
    block = report(
        "Redis killed mid-load and restarted",
        {"all": samples, "before": before, "outage": during, "after": later, "probes": probes},
        f"redis killed at t={t_kill:.1f}s, back at t={t_back:.1f}s (outage {t_back - t_kill:.1f}s)",
        f"degraded during the outage: {sorted(seen_degraded) or 'nothing seen'}",
        "recovery (limiter and breakers of app and worker back on Redis): "
        + (
            f"{recovery_s:.1f}s"
            if recovery_s is not None
            else f"> {RECOVERY_BOUND_S + 5:.0f}s, still degraded: {sorted(still_degraded)}"
        ),
        f"recovery (last non-2xx answer after Redis came back): {served_recovery:.1f}s",
        "rate-limit probes 429 before/during/after: "
        f"{figures(probe_before).too_many}/{figures(probe_during).too_many}/"
        f"{figures(probe_after).too_many} of {len(probe_before)} each",
        f"proxy redis: {redis_proxy.stats}",
        *ledger.lines(),
    )

    overall = figures([*samples, *probes])
    assert overall.other_5xx == 0, block
    assert overall.unavailable == overall.unavailable_with_retry_after, block
    assert overall.connection_errors == 0, block
    assert overall.timeouts == 0, block
    # Degraded, never unlimited: the burst over quota is refused in every phase.
    for probe in (probe_before, probe_during, probe_after):
        assert figures(probe).too_many > 0, block
    assert seen_degraded >= EXPECTED_DEGRADED, block
    assert figures(during).max_ms < NO_HANG_S * 1000, block
    assert recovery_s is not None, block
    assert recovery_s <= RECOVERY_BOUND_S, block
    assert not ledger.problems(), block
    assert ledger.answered_2xx > 0, block
