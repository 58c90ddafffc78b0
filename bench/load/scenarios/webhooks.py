"""Webhook intake and the queue worker: acceptance of ``POST /api/v1/webhooks/c2s`` (a durable
event and job per request) and the worker's drain rate over events of fresh leads.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from bench.load.fixtures import (
    count_events,
    drain,
    enqueue_http,
    enqueue_store,
    event,
    http_request,
    now_iso,
    register_leads,
    truncate_events,
)
from bench.load.procs import python
from bench.load.scenarios.measure import Counts, Line, bare_point, http_scenario
from bench.load.settings import say
from bench.load.stack import SANDBOX_SEED
from infra.sandbox.people import lead_id_for

if TYPE_CHECKING:
    from bench.load.session import Run

__all__ = ["run_webhooks", "webhook_acceptance", "webhook_available", "worker_drain"]


def run_webhooks(run: Run) -> None:
    """The selected ones of webhook and worker (the events of the first are removed)."""
    if "webhook" in run.selected:
        webhook_acceptance(run)
        asyncio.run(truncate_events(run.db.url))
    if "worker" in run.selected:
        worker_drain(run)


def webhook_available(run: Run) -> bool:
    """Whether the app serves the webhook route (one probe event of a fresh lead)."""
    index = run.fresh_indices(1)[0]
    body = json.dumps(event(f"probe{run.run_id}", index, now_iso())).encode()
    status, answer = http_request(
        "POST",
        f"{run.server.url}/api/v1/webhooks/c2s",
        headers={"Content-Type": "application/json"},
        body=body,
    )
    if status in (404, 405):
        return False
    if status != 200:
        raise RuntimeError(f"webhook probe answered {status}: {answer[:300]!r}")
    return True


def webhook_acceptance(run: Run) -> None:
    """wrk posting a new event per request; checks every answer stored its event."""
    if not webhook_available(run):
        run.result["scenarios"]["webhook"] = {
            "title": "Webhook acceptance (durable insert)",
            "path": "POST /api/v1/webhooks/c2s",
            "status": "pending: POST /api/v1/webhooks/c2s is not registered in the app yet",
        }
        say("webhook: pending (route not registered)")
        return
    index = run.fresh_indices(1)[0]
    template = json.dumps(event("@N@", index, "2026-01-01T12:00:00Z"), separators=(",", ":"))

    def lines(_tag: str, _concurrency: int) -> list[Line]:
        return [("POST", "/api/v1/webhooks/c2s", template)]

    def check(before: Counts, after: Counts, total: int) -> tuple[bool, str]:
        stored = asyncio.run(count_events(run.db.url))
        ok = stored >= total
        return ok, (
            f"{'verified' if ok else 'NOT verified'}: {total:,} requests, {stored:,} events "
            "stored with their jobs"
        )

    http_scenario(
        run,
        "webhook",
        title="Webhook acceptance (durable insert of event + job)",
        path="POST /api/v1/webhooks/c2s",
        lines=lines,
        mode="counter",
        headers={"Content-Type": "application/json"},
        check=check,
    )


def worker_drain(run: Run) -> None:
    """Events of fresh leads enqueued, then one worker process drains them, per concurrency."""
    say(f"worker: drain {run.profile.worker_jobs} jobs, zero-latency upstreams")
    via = (
        "POST /api/v1/webhooks/c2s"
        if webhook_available(run)
        else ("PgEventStore.accept (the webhook route is not registered yet)")
    )
    runs = [_drain_once(run, concurrency, via) for concurrency in run.profile.worker_concurrency]
    asyncio.run(truncate_events(run.db.url))
    # The machine's speed right now, for the worker's ratio (jobs/s per bare req/s).
    bare = bare_point(run, 16)
    # The target is about the worker as it ships: its default concurrency, run first.
    first = runs[0]
    run.result["worker"] = {
        "status": "ok"
        if first["completed"] + first["failed"] == first["jobs"]
        else (f"timeout: {first['completed'] + first['failed']} of {first['jobs']} jobs done"),
        "enqueued_via": via,
        "concurrency": first["concurrency"],
        "jobs_per_s": first["jobs_per_s"],
        "completed": first["completed"],
        "failed": first["failed"],
        "runs": runs,
        "bare_rps_c16": bare.rps,
    }


def _drain_once(run: Run, concurrency: int, via: str) -> dict[str, Any]:
    """Enqueue ``worker_jobs`` events, start a worker at ``concurrency``, time its drain."""
    asyncio.run(truncate_events(run.db.url))
    indices = list(run.fresh_indices(run.profile.worker_jobs))
    leads = [lead_id_for(SANDBOX_SEED, i) for i in indices]
    # Serving a virtual lead registers its person's contacts with the sandbox's
    # Diretrix, as a real lead's contacts are known there.
    asyncio.run(register_leads(run.sandbox.url, leads))
    stamp = now_iso()
    events = [event(lead, i, stamp) for lead, i in zip(leads, indices, strict=True)]
    if via.startswith("POST"):
        asyncio.run(enqueue_http(run.server.url, events))
    else:
        asyncio.run(enqueue_store(run.db.url, events))
    run.label("worker")
    proc = run.procs.start(
        f"worker-{concurrency}",
        [python(), "-m", "bench.load.worker_proc", "--concurrency", str(concurrency)],
        env=run.env,
        cpus=run.cores.server,
    )
    try:
        drained = asyncio.run(drain(run.db.url, len(events), timeout_s=30 + len(events) / 20))
    finally:
        run.procs.stop(proc)
    drained["concurrency"] = concurrency
    say(
        f"  concurrency {concurrency}: {drained['jobs_per_s']:,.0f} jobs/s "
        f"({drained['completed']} completed, {drained['failed']} failed, "
        f"{drained['seconds']:.2f} s)"
    )
    return drained
