"""The webhook path end to end: real app, PostgreSQL, Redis, sandbox upstreams, worker processes.

The two properties ADR 0004 promises: concurrent redeliveries of one event give one row, one job
and one C2S message; a worker killed mid-job loses nothing and its job is finished, once, by
another worker.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.polling import wait_until
from tests.support.sandbox import WEBHOOK_SECRET, SandboxAdmin

if TYPE_CHECKING:
    from collections.abc import Callable

    import asyncpg
    from litestar import Litestar
    from litestar.testing import AsyncTestClient

    from tests.support.processes import ChildProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WEBHOOK = "/api/v1/webhooks/c2s"


def webhook_body(lead: dict[str, Any], updated_at: str) -> dict[str, Any]:
    """A C2S webhook event for a sandbox lead (the customer C2S would send)."""
    return {
        "id": lead["lead_id"],
        "hook_action": "on_update_lead",
        "attributes": {"updated_at": updated_at, "customer": lead["customer"]},
    }


async def event_row(db: asyncpg.Pool, lead_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT id, status, attempts, error_message, message_sent_at "
        "FROM core.webhook_events WHERE source = 'c2s' AND lead_id = $1",
        lead_id,
    )


async def has_status(db: asyncpg.Pool, lead_id: str, *statuses: str) -> bool:
    row = await event_row(db, lead_id)
    return row is not None and row["status"] in statuses


async def test_100_concurrent_deliveries_give_one_row_one_job_and_one_message(
    client: AsyncTestClient[Litestar],
    sandbox: SandboxAdmin,
    db: asyncpg.Pool,
    start_worker: Callable[..., ChildProcess],
) -> None:
    lead = await sandbox.create_lead(person_index=11)
    lead_id = lead["lead_id"]
    body = webhook_body(lead, "2025-11-26 07:00:00.000 -0300")
    answers = await asyncio.gather(
        *(
            client.post(WEBHOOK, json=body, headers={"X-Webhook-Token": WEBHOOK_SECRET})
            for _ in range(100)
        )
    )
    assert {a.status_code for a in answers} == {200}
    payloads = [a.json() for a in answers]
    assert sum(p["processed"] for p in payloads) == 1
    assert sum(p["duplicates"] for p in payloads) == 99
    assert all(p["received"] == 1 and p["status"] == "received" for p in payloads)
    rows = await db.fetch("SELECT id FROM core.webhook_events WHERE lead_id = $1", lead_id)
    assert len(rows) == 1
    jobs = await db.fetchval(
        "SELECT count(*) FROM queue.pgqueuer WHERE payload = $1", str(rows[0]["id"]).encode()
    )
    assert jobs == 1
    row = await event_row(db, lead_id)
    assert row is not None
    assert row["status"] == "queued"  # durable before the answer, nothing processed inline

    worker = start_worker(concurrency=2)
    await wait_until(
        lambda: has_status(db, lead_id, "completed", "failed"),
        timeout_s=45,
        what=f"the worker to finish the event\n{worker.output()}",
    )
    done = await event_row(db, lead_id)
    assert done is not None
    assert done["status"] == "completed", (done["error_message"], worker.output())
    messages = await sandbox.messages(lead_id)
    assert len(messages) == 1
    assert "DADOS PESSOAIS" in messages[0]["body"]
    # A redelivery after completion is a duplicate and sends nothing more.
    late = await client.post(WEBHOOK, json=body, headers={"X-Webhook-Token": WEBHOOK_SECRET})
    assert late.json()["duplicates"] == 1
    assert worker.terminate(timeout_s=15) == 0
    assert len(await sandbox.messages(lead_id)) == 1


async def test_a_worker_killed_mid_job_is_replaced_and_the_lead_gets_one_message(
    client: AsyncTestClient[Litestar],
    sandbox: SandboxAdmin,
    db: asyncpg.Pool,
    start_worker: Callable[..., ChildProcess],
) -> None:
    lead = await sandbox.create_lead(person_index=23)
    lead_id = lead["lead_id"]
    # The Work API answers after 6 s: the first worker is surely mid-job when it is killed.
    await sandbox.set_faults("work_api", latency_ms=6000)
    stamp = dt.datetime(2025, 11, 26, 10, 0, tzinfo=dt.UTC).isoformat()
    answer = await client.post(
        WEBHOOK, json=webhook_body(lead, stamp), headers={"X-Webhook-Token": WEBHOOK_SECRET}
    )
    assert answer.json()["processed"] == 1

    first = start_worker(concurrency=1, lease_timeout_s=3.0)

    async def first_is_fetching() -> bool:
        counters = await sandbox.counters()
        return await has_status(db, lead_id, "processing") and bool(
            counters.get("work_api", {}).get("GET /api", 0)
        )

    await wait_until(
        first_is_fetching, timeout_s=30, what=f"the first worker's Work API call\n{first.output()}"
    )
    first.kill()
    await sandbox.set_faults("work_api")  # healthy again for the next worker
    assert await has_status(db, lead_id, "processing")  # the killed run left it claimed

    second = start_worker(concurrency=1, lease_timeout_s=3.0)
    await wait_until(
        lambda: has_status(db, lead_id, "completed", "failed"),
        timeout_s=40,
        what=f"the second worker to take the job over\n{second.output()}",
    )
    row = await event_row(db, lead_id)
    assert row is not None
    assert row["status"] == "completed", (row["error_message"], second.output())
    assert row["attempts"] == 2
    assert len(await sandbox.messages(lead_id)) == 1

    async def job_gone() -> bool:
        # pgqueuer deletes a finished job when it flushes its status log, just after the run.
        jobs: int = await db.fetchval(
            "SELECT count(*) FROM queue.pgqueuer WHERE dedupe_key = 'webhook_event:' || $1",
            str(row["id"]),
        )
        return jobs == 0

    await wait_until(job_gone, timeout_s=10, what="the finished job to leave the queue")
    assert second.terminate(timeout_s=15) == 0
