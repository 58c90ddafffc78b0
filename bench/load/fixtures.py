"""The data a run feeds the app and reads back: C2S events of sandbox leads, blocking HTTP
calls, and PostgreSQL and Redis helpers (count, truncate, enqueue, drain, clean).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import urllib.error
import urllib.request
from typing import Any, Final

import asyncpg

from bench.load.settings import REDIS_URL
from bench.load.stack import SANDBOX_C2S_TOKEN, SANDBOX_SEED
from infra.sandbox.people import SyntheticPeople

__all__ = [
    "clean_redis",
    "count_events",
    "drain",
    "enqueue_http",
    "enqueue_store",
    "event",
    "http_request",
    "now_iso",
    "register_leads",
    "truncate_events",
]


def http_request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout_s: float = 30,
) -> tuple[int, bytes]:
    """One blocking request; return (status, body), also for an error status."""
    request = urllib.request.Request(  # noqa: S310 - loopback URL
        url, data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def event(lead_id: str, person_index: int, updated_at: str) -> dict[str, Any]:
    """A C2S ``on_create_lead`` event for the sandbox's person (Any: JSON)."""
    person = SyntheticPeople(SANDBOX_SEED).person(person_index)
    return {
        "id": lead_id,
        "hook_action": "on_create_lead",
        "attributes": {
            "updated_at": updated_at,
            "customer": {
                "name": person.name.title(),
                "email": person.email,
                "phone": person.mobile_e164,
            },
        },
    }


def now_iso() -> str:
    """The current UTC time as ISO 8601 with milliseconds and a ``Z``."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def clean_redis(prefix: str) -> None:
    """Delete every Redis key under ``prefix`` (the run's own keys)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


async def count_events(url: str) -> int:
    """How many webhook events are stored."""
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM core.webhook_events"))
    finally:
        await conn.close()


async def truncate_events(url: str) -> None:
    """Remove every webhook event and queued job (and the queue's log)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE core.webhook_events, queue.pgqueuer, queue.pgqueuer_log")
    finally:
        await conn.close()


async def register_leads(sandbox_url: str, leads: list[str]) -> None:
    """Fetch each lead from the sandbox's C2S once, 32 at a time (serving a virtual lead
    registers its person's contacts with the sandbox's Diretrix)."""
    import aiohttp

    gate = asyncio.Semaphore(32)
    headers = {"Authorization": f"Bearer {SANDBOX_C2S_TOKEN}"}
    async with aiohttp.ClientSession() as session:

        async def one(lead: str) -> None:
            async with (
                gate,
                session.get(f"{sandbox_url}/integration/leads/{lead}", headers=headers) as answer,
            ):
                if answer.status != 200:
                    raise RuntimeError(f"sandbox lead {lead} answered {answer.status}")
                await answer.read()

        await asyncio.gather(*(one(lead) for lead in leads))


async def enqueue_http(base_url: str, events: list[dict[str, Any]]) -> None:
    """Post the events to the webhook route, 100 per request."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for start in range(0, len(events), 100):
            chunk = events[start : start + 100]
            async with session.post(f"{base_url}/api/v1/webhooks/c2s", json=chunk) as answer:
                body = await answer.json()
                if answer.status != 200 or body.get("processed") != len(chunk):
                    raise RuntimeError(f"webhook answered {answer.status}: {body}")


async def enqueue_store(url: str, events: list[dict[str, Any]]) -> None:
    """Store the events (and their jobs) directly with ``PgEventStore``, 100 at a time."""
    from domain.webhooks import parse_webhook_document
    from infra.db.events import PgEventStore

    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        store = PgEventStore(pool)
        for start in range(0, len(events), 100):
            parsed = parse_webhook_document(events[start : start + 100])
            await store.accept(parsed.events)
    finally:
        await pool.close()


_DRAIN_SQL: Final = """
SELECT count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status NOT IN ('received', 'queued')) AS started,
       count(*) AS total
  FROM core.webhook_events
"""


async def drain(url: str, jobs: int, *, timeout_s: float) -> dict[str, Any]:
    """Poll the events until all are completed or failed; time from first pick to last end."""
    conn = await asyncpg.connect(url)
    try:
        first: float | None = None
        deadline = time.monotonic() + timeout_s
        row: Any = None
        while time.monotonic() < deadline:
            row = await conn.fetchrow(_DRAIN_SQL)
            now = time.monotonic()
            if first is None and row["started"] > 0:
                first = now
            if row["completed"] + row["failed"] >= jobs:
                break
            await asyncio.sleep(0.05)
        last = time.monotonic()
        reasons = await conn.fetch(
            "SELECT error_message, count(*) AS n FROM core.webhook_events WHERE status = 'failed'"
            " GROUP BY 1 ORDER BY 2 DESC LIMIT 3"
        )
    finally:
        await conn.close()
    seconds = last - (first if first is not None else last)
    done = (row["completed"] + row["failed"]) if row is not None else 0
    return {
        "jobs": jobs,
        "completed": row["completed"] if row is not None else 0,
        "failed": row["failed"] if row is not None else 0,
        "seconds": round(seconds, 3),
        "jobs_per_s": round(done / seconds, 1) if seconds > 0 else 0.0,
        "failure_reasons": {r["error_message"]: r["n"] for r in reasons},
    }
