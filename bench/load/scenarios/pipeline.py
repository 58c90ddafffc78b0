"""The lead pipeline: ``/leads/process`` end to end at zero upstream latency (wrk, a fresh
virtual lead per request), and a batch of concurrent leads with 400 ms of Work API latency.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import TYPE_CHECKING, Final

from bench.load.scenarios.measure import Counts, Line, Lines, delta, http_scenario
from bench.load.settings import LEADS_BATCH, MAX_ERROR_RATE, UPSTREAM_LATENCY_MS, say

if TYPE_CHECKING:
    from bench.load.session import Run

__all__ = ["leads_400", "leads_process", "run_pipeline"]

_FRESH_LEADS_PER_SECOND: Final = 2000  # lead ids prepared per second of a /leads/process point


def run_pipeline(run: Run) -> None:
    """The selected ones of leads and leads400."""
    if "leads" in run.selected:
        leads_process(run)
    if "leads400" in run.selected:
        leads_400(run)


def leads_process(run: Run) -> None:
    """``/leads/process`` with wrk, every request a new lead; checks one message per lead."""
    http_scenario(
        run,
        "leads",
        title="/leads/process end to end, sandbox at zero latency (our own overhead)",
        path="GET /api/v1/leads/process?id=<fresh virtual lead>",
        lines=_leads_lines(run),
        mode="unique",
        headers=run.auth(),
        check=_check_leads,
    )


def _leads_lines(run: Run) -> Lines:
    def lines(tag: str, _concurrency: int) -> list[Line]:
        seconds = run.profile.warmup_s if tag == "warm" else run.duration_s
        count = int(seconds * _FRESH_LEADS_PER_SECOND) + 100
        return [("GET", f"/api/v1/leads/process?id={lead}") for lead in run.fresh_leads(count)]

    return lines


def _check_leads(before: Counts, after: Counts, total: int) -> tuple[bool, str]:
    sent = delta(before, after, "c2s", "create_message")
    fetched = delta(before, after, "work_api")
    ok = sent >= total * (1 - MAX_ERROR_RATE)
    return ok, (
        f"{'verified' if ok else 'NOT verified'}: {total:,} leads, {sent:,} C2S messages "
        f"posted, {fetched:,} Work API fetches (each lead new: no dedup, no cache)"
    )


def leads_400(run: Run) -> None:
    """Batches of concurrent fresh leads while the Work API answers after 400 ms."""
    say(f"leads400: {LEADS_BATCH} concurrent leads, Work API latency {UPSTREAM_LATENCY_MS} ms")
    run.label("leads400")
    run.sandbox.set_latency("work_api", UPSTREAM_LATENCY_MS)
    walls: list[float] = []
    latencies: list[float] = []
    succeeded: list[int] = []
    try:
        for _ in range(run.profile.leads_batches):
            wall, each, ok = asyncio.run(
                _burst(run.server.url, run.key, run.fresh_leads(LEADS_BATCH))
            )
            walls.append(wall * 1000)
            latencies += [x * 1000 for x in each]
            succeeded.append(ok)
            say(f"  batch wall {wall * 1000:,.0f} ms, {ok}/{LEADS_BATCH} succeeded")
    finally:
        run.sandbox.clear_faults()
    run.result["leads_400ms"] = {
        "status": "ok",
        "latency_ms": UPSTREAM_LATENCY_MS,
        "batch": LEADS_BATCH,
        "walls_ms": [round(w, 1) for w in walls],
        "wall_ms": round(statistics.median(walls), 1),
        "per_lead_p50_ms": round(statistics.median(latencies), 1),
        "per_lead_max_ms": round(max(latencies), 1),
        "succeeded": min(succeeded),
    }


async def _burst(base_url: str, key: str, leads: list[str]) -> tuple[float, list[float], int]:
    """Fire one request per lead at once; return (wall, per-request latencies, successes)."""
    import aiohttp

    headers = {"X-API-Key": key}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        # Open the connections first, so the batch measures requests, not TCP handshakes.
        async def ping() -> None:
            async with session.get(f"{base_url}/health") as answer:
                await answer.read()

        await asyncio.gather(*(ping() for _ in leads))

        async def one(lead: str) -> tuple[float, bool]:
            started = time.perf_counter()
            async with session.get(
                f"{base_url}/api/v1/leads/process", params={"id": lead}, headers=headers
            ) as answer:
                body = await answer.json()
            ok = answer.status == 200 and body.get("success") and not body.get("duplicate_request")
            return time.perf_counter() - started, bool(ok)

        started = time.perf_counter()
        results = await asyncio.gather(*(one(lead) for lead in leads))
        wall = time.perf_counter() - started
    return wall, [r[0] for r in results], sum(1 for r in results if r[1])
