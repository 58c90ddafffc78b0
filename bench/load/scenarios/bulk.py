"""Bulk enrichment jobs: the items per second one ``c2s-api worker`` process runs, and its CPU
per item, on the sandbox at zero upstream latency.

One job of ``Profile.bulk_items`` fresh people (never stored, never cached: each item is a
lookup miss, a Work API fetch and a store) is submitted through ``POST /api/v1/enrich/jobs``;
then one worker process (``bench.load.worker_proc``, its bulk slots and the tenant's bound at
16) runs it. Items/s is the job's items over the time from its first item's start to its end
(``started_at`` to ``finished_at``, PostgreSQL's clock); CPU per item is the worker's user +
system time over the same span (sampled from ``/proc`` when the first item starts and when the
job ends), divided by the items.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any, Final

import asyncpg

from bench.load.fixtures import http_request
from bench.load.procs import cpu_seconds, python
from bench.load.settings import say
from bench.load.stack import SANDBOX_SEED
from infra.sandbox.people import SyntheticPeople

if TYPE_CHECKING:
    from bench.load.session import Run

__all__ = ["BULK_SLOTS", "bulk_drain"]

BULK_SLOTS: Final = 16
_POLL_S: Final = 0.05


def bulk_drain(run: Run) -> None:
    """Submit one job, run it with one worker process, record ``result["bulk"]``."""
    items = run.profile.bulk_items
    say(f"bulk: {items} items, one worker ({BULK_SLOTS} bulk slots), zero-latency upstreams")
    people = SyntheticPeople(SANDBOX_SEED)
    body = json.dumps(
        {"items": [{"cpf": people.cpf_for(i), "ref": str(i)} for i in run.fresh_indices(items)]}
    ).encode()
    status, answer = http_request(
        "POST",
        f"{run.server.url}/api/v1/enrich/jobs",
        headers={**run.auth(), "Content-Type": "application/json"},
        body=body,
        timeout_s=60,
    )
    if status == 404:
        run.result["bulk"] = {"status": "pending: POST /api/v1/enrich/jobs is not registered"}
        return
    if status != 202:
        raise RuntimeError(f"bulk job answered {status}: {answer[:300]!r}")
    job_id = json.loads(answer)["id"]
    run.label("bulk")
    env = {
        **run.env,
        "BULK_CONCURRENCY": str(BULK_SLOTS),
        "BULK_TENANT_CONCURRENCY": str(BULK_SLOTS),
        "BULK_POLL_INTERVAL_S": "0.1",
    }
    proc = run.procs.start(
        "bulk-worker",
        [python(), "-m", "bench.load.worker_proc", "--concurrency", "4"],
        env=env,
        cpus=run.cores.server,
    )
    try:
        measured = asyncio.run(_measure(run.db.url, job_id, proc.pid, items))
    finally:
        run.procs.stop(proc)
    run.result["bulk"] = measured
    say(
        f"  {measured.get('items_per_s', 0):,.0f} items/s, "
        f"{measured.get('cpu_us_per_item', 0):,.0f} us CPU per item ({measured['status']})"
    )


async def _measure(url: str, job_id: str, pid: int, items: int) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + 60 + items / 10
        cpu_start: float | None = None
        row: Any = None  # Any: an asyncpg record
        while time.monotonic() < deadline:
            row = await conn.fetchrow(
                "SELECT state, started_at, finished_at, n_done, n_failed, n_not_found, "
                "extract(epoch FROM finished_at - started_at)::float8 AS seconds "
                "FROM core.enrich_jobs WHERE id = $1::uuid",
                job_id,
            )
            if cpu_start is None and row["started_at"] is not None:
                cpu_start = cpu_seconds([pid])
            if row["state"] == "done":
                break
            await asyncio.sleep(_POLL_S)
        cpu_end = cpu_seconds([pid])
    finally:
        await conn.close()
    done = row is not None and row["state"] == "done"
    result: dict[str, Any] = {
        "status": "ok" if done else f"timeout: job {row['state'] if row else 'missing'}",
        "items": items,
        "slots": BULK_SLOTS,
        "done": row["n_done"] if row else 0,
        "failed": row["n_failed"] if row else 0,
        "not_found": row["n_not_found"] if row else 0,
    }
    if done and row["seconds"]:
        result["seconds"] = round(row["seconds"], 3)
        result["items_per_s"] = round(items / row["seconds"], 1)
        result["cpu_us_per_item"] = round((cpu_end - (cpu_start or cpu_end)) / items * 1e6, 1)
    return result
