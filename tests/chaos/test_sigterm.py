"""SIGTERM under load: the app and the worker stop the way an orchestrator expects.

The app (Granian, ``--workers-kill-timeout`` = the grace) and a worker run with tracing exported
over OTLP/HTTP to a receiver in the test; the batch processor is set never to export on its own
(huge batch, 10 min delay), so every span the receiver gets was flushed at shutdown. The Work API
answers after 3 s, so Work API-bound requests and the jobs (each lead is a person nothing has
looked up yet) are in flight when both processes get SIGTERM together (the load stops sending at
that moment, as a load balancer would).

Proves: every request sent before the signal is answered, none reset, within the grace; the worker
gives its jobs back (or their leases expire) and a second worker finishes every event, once;
spans are flushed; both processes exit within grace + 5 s. Prometheus metrics are pulled, not
pushed: there is nothing to flush, and the last scrape before the signal is checked instead.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import asyncpg
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from tests.support.chaos.ledger import check_ledger
from tests.support.chaos.load import LoadRun, Request, figures, max_in_flight
from tests.support.chaos.proxy import FaultProxy
from tests.support.chaos.scenario import (
    fresh_cpfs,
    make_workload,
    metric,
    report,
    scenario_env,
    scrape_metrics,
    via_port,
    warm_up,
)
from tests.support.db import REDIS_BASE_URL
from tests.support.http_servers import Receiver
from tests.support.polling import seconds_until

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.chaos.scenario import Processes, Profile, Workload
    from tests.support.processes import ChildProcess
    from tests.support.sandbox import SandboxAdmin

pytestmark = [pytest.mark.chaos]

APP_GRACE_S = 10
WORKER_GRACE_S = 2.0
EXIT_MARGIN_S = 5.0
# Longer than the worker's drain (0.75 x grace): jobs caught mid-fetch must be given back.
WORK_API_LATENCY_MS = 3000
LEASE_TIMEOUT_S = 5.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An OTLP/HTTP trace receiver on a free port, in a thread."""
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class _Mix:
    """Of 20 requests: 9 cached reads, 4 slow Work API misses, 3 lookups, 4 webhook events."""

    workload: Workload
    slow_cpfs: list[str]

    def request(self, i: int) -> Request:
        slot = i % 20
        if slot < 4:
            cpf = self.slow_cpfs[i % len(self.slow_cpfs)]  # never cached: a Work API call
            path = f"/api/v1/work/modules/all?documento={cpf}"
            return Request("slow", "GET", path, self.workload.auth)
        if slot < 13:
            return self.workload.hot(i)
        if slot < 16:
            return self.workload.lookup(i)
        return self.workload.webhook(i)


async def _next_batch_done(database_url: str, workload: Workload, timeout_s: float) -> bool:
    """Wait until the count of completed events of ``workload`` goes up (bounded)."""
    leads = [lead["lead_id"] for lead in workload.leads]
    conn = await asyncpg.connect(database_url, timeout=5)
    try:

        async def completed() -> int:
            count: int = await conn.fetchval(
                "SELECT count(*) FROM core.webhook_events "
                "WHERE lead_id = ANY($1::text[]) AND status = 'completed'",
                leads,
            )
            return count

        start = await completed()

        async def advanced() -> bool:
            return await completed() > start

        return await seconds_until(advanced, timeout_s) is not None
    finally:
        await conn.close()


def _spans(receiver: Receiver) -> list[PbSpan]:
    with receiver.lock:
        return list(receiver.spans)


async def test_sigterm_under_load_drains_in_flight_work_and_flushes_spans(
    profile: Profile,
    processes: Processes,
    receiver: Receiver,
    sandbox: SandboxAdmin,
    sandbox_url: str,
    database_url: str,
    chaos_key: str,
    chaos_prefix: str,
) -> None:
    pg_port = urlsplit(database_url).port or 5432
    redis_port = urlsplit(REDIS_BASE_URL).port or 6379
    with (
        FaultProxy("postgres", "127.0.0.1", pg_port) as pg_proxy,
        FaultProxy("redis", "127.0.0.1", redis_port) as redis_proxy,
    ):
        env = scenario_env(
            database_url=via_port(database_url, pg_proxy.port),
            redis_url=via_port(REDIS_BASE_URL, redis_proxy.port),
            prefix=chaos_prefix,
            upstreams_url=sandbox_url,
            OTEL_SDK_DISABLED="false",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.server_address[1]}",
            OTEL_BSP_SCHEDULE_DELAY="600000",
            OTEL_BSP_MAX_QUEUE_SIZE="500000",
            OTEL_BSP_MAX_EXPORT_BATCH_SIZE="500000",
            OTEL_EXPORTER_OTLP_TIMEOUT="10",
        )
        app = processes.app(env, kill_timeout_s=APP_GRACE_S)
        first = processes.worker(
            env, concurrency=4, lease_timeout_s=LEASE_TIMEOUT_S, grace_s=WORKER_GRACE_S
        )
        workload = await make_workload(
            sandbox,
            chaos_key,
            first_person=4000,
            hot=12,
            leads=int(profile.seconds(80, 500)),
            cold_leads=True,
        )
        mix = _Mix(workload, fresh_cpfs(5000))
        await asyncio.gather(app.wait_healthy(), first.wait_started())
        await warm_up(app.url, workload)
        await sandbox.set_faults("work_api", latency_ms=WORK_API_LATENCY_MS)

        run = LoadRun(
            app.url,
            mix.request,
            rate_per_s=profile.rate_per_s,
            duration_s=profile.seconds(60, 120),
            timeout_s=APP_GRACE_S + EXIT_MARGIN_S,
        )
        load = asyncio.create_task(run.run())
        try:
            await asyncio.sleep(profile.seconds(10, 40))
            metrics = await scrape_metrics(app.url)
            # Signal just after the worker took its next jobs (a batch has just completed), so
            # they are caught mid-fetch and outlast the drain: they must be given back.
            batch_done = await _next_batch_done(database_url, workload, timeout_s=8.0)
            await asyncio.sleep(0.3)
            spans_before = len(_spans(receiver))
            run.stop()
            app.signal(signal.SIGTERM)
            first.signal(signal.SIGTERM)
            t_sig = run.now()

            async def exit_of(process: ChildProcess, timeout_s: float) -> tuple[int | None, float]:
                code = await process.wait(timeout_s)
                return code, run.now() - t_sig

            (app_exit, app_exit_s), (worker_exit, worker_exit_s) = await asyncio.gather(
                exit_of(app, APP_GRACE_S + EXIT_MARGIN_S + 5),
                exit_of(first, WORKER_GRACE_S + EXIT_MARGIN_S + 5),
            )
            await asyncio.wait({load}, timeout=APP_GRACE_S + EXIT_MARGIN_S + 10)
        finally:
            run.stop()
            await sandbox.set_faults("work_api")
        samples = load.result()
        first_log = first.output(tail=5000)
        spans = _spans(receiver)

        second = processes.worker(env, concurrency=8, lease_timeout_s=LEASE_TIMEOUT_S)
        await second.wait_started()
        ledger = await check_ledger(
            database_url, sandbox, samples, drain_timeout_s=profile.seconds(40, 90)
        )
        second_log = second.output(tail=5000)

    in_flight = [s for s in samples if s.start < t_sig]
    late = [s for s in in_flight if s.end > t_sig]
    server_spans = [s for s in spans if s.kind == PbSpan.SPAN_KIND_SERVER]
    job_spans = [s for s in spans if s.name == "enrich_event process"]
    answered = [s for s in samples if s.status is not None]
    released = first_log.count("queue_job_released")
    picked_up = second_log.count("webhook_event_done") + second_log.count("webhook_event_failed")
    scraped = metric(
        metrics,
        "http_server_request_duration_seconds_count",
        http_request_method="GET",
        http_route="/api/v1/work/modules/all",
        http_response_status_code="200",
    )
    block = report(
        "SIGTERM under load",
        {"all": samples, "in flight at SIGTERM": late},
        f"SIGTERM at t={t_sig:.1f}s with {max_in_flight(samples, t_sig, t_sig + 0.001)} "
        f"requests in flight (slowest finished {max((s.end - t_sig for s in late), default=0):.1f}s"
        f" later); app exit {app_exit} after {app_exit_s:.1f}s (grace {APP_GRACE_S}s), worker "
        f"exit {worker_exit} after {worker_exit_s:.1f}s (grace {WORKER_GRACE_S:.0f}s)",
        f"worker: signalled {'just after' if batch_done else 'without seeing'} a batch of jobs "
        f"complete; {released} jobs released at shutdown, second worker finished {picked_up} "
        "events",
        f"spans: {spans_before} exported before SIGTERM, {len(spans) - spans_before} flushed at "
        f"shutdown ({len(server_spans)} server spans for {len(answered)} answered load requests, "
        f"{len(job_spans)} job spans)",
        f"metrics: last scrape before SIGTERM counted {scraped} cached reads (pull model: "
        "nothing to flush)",
        f"proxies: postgres {pg_proxy.stats.accepted} conns, redis {redis_proxy.stats.accepted}",
        *ledger.lines(),
    )

    assert app_exit == 0, block + "\n" + app.output()
    assert app_exit_s <= APP_GRACE_S + EXIT_MARGIN_S, block
    assert worker_exit == 0, block + "\n" + first_log[-3000:]
    assert worker_exit_s <= WORKER_GRACE_S + EXIT_MARGIN_S, block
    assert late, block  # the signal did catch requests in flight
    # Every request sent before the signal was answered (no reset, no timeout), within the grace.
    caught = figures(in_flight)
    assert caught.connection_errors == 0, block
    assert caught.timeouts == 0, block
    assert caught.ok == caught.requests, block
    assert all(s.end - t_sig <= APP_GRACE_S for s in late), block
    assert released > 0, block  # jobs caught mid-fetch were given back...
    assert picked_up >= released, block  # ...and finished by the next worker
    assert spans_before == 0, block
    assert len(server_spans) >= len(answered), block
    assert job_spans, block
    assert scraped is not None, block
    assert scraped > 0, block
    assert not ledger.problems(), block
    assert ledger.answered_2xx > 0, block
