"""A hypothesis state machine over the live API, with fault rules, holding the ledger invariants.

One app and one worker (real processes) serve every example; Redis (the machine's, own prefix)
and PostgreSQL are reached through fault proxies. The machine interleaves:

* traffic: new webhook events, redeliveries (the same instant written in another of the accepted
  formats, so the dedupe key must see through the representation), concurrent duplicate bursts,
  cached reads, Work API misses, customer lookups;
* faults: Redis down (refused, reset or blackholed at the proxy) and back up; an upstream (C2S,
  Diretrix or the Work API) failing every call and healing; time jumps, either of Redis's clock
  (every key with a TTL expires at once: breaker waits, rate windows, caches) or of the CRM's
  clock (events stamped days in the past or the future); and time passing, so the worker runs
  under whatever faults are in force.

After every step: no answer other than 2xx, 4xx, a 503 with ``Retry-After``, or the documented
502 of the Work API proxy routes; no connection error, no timeout; every webhook delivery
answered 200, and each event counted ``processed`` exactly once across all its deliveries.
At the end of the run: the ledger (every event terminal, one C2S message per completed event,
nothing answered 2xx lost).

Hypothesis drives the rules from a worker thread; each rule submits its I/O to the test's event
loop. Examples are bounded (count and steps), never shrunk (a replay against live processes
would take minutes), and the failing sequence is printed as hypothesis found it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.support.chaos.ledger import check_ledger
from tests.support.chaos.load import Request, figures, send
from tests.support.chaos.proxy import FaultProxy
from tests.support.chaos.scenario import (
    LONG,
    delivery,
    fresh_cpfs,
    make_workload,
    report,
    scenario_env,
    via_port,
    warm_up,
)
from tests.support.db import REDIS_BASE_URL

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from tests.support.chaos.load import Sample
    from tests.support.chaos.scenario import Processes, Workload
    from tests.support.sandbox import SandboxAdmin

pytestmark = [pytest.mark.chaos]

STEP_TIMEOUT_S = 20.0
_BRT = dt.timezone(dt.timedelta(hours=-3))
FORMATS = ("rfc3339_z", "rfc3339_brt", "c2s", "naive_utc")
UPSTREAMS = ("c2s", "diretrix", "work_api")
# Routes whose documented answers include 502 (an upstream failing through the retries).
WORK_API_KINDS = frozenset({"hot", "miss"})


def stamp(when: dt.datetime, fmt: str) -> str:
    """``when`` in one of the ``updated_at`` formats the webhook accepts."""
    if fmt == "rfc3339_z":
        return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if fmt == "rfc3339_brt":
        return when.astimezone(_BRT).isoformat(timespec="milliseconds")
    if fmt == "c2s":
        return when.astimezone(_BRT).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " -0300"
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


class World:
    """What the rules act on: the live app, its proxies, the sandbox, and every answer so far."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        app_url: str,
        session: aiohttp.ClientSession,
        redis_proxy: FaultProxy,
        sandbox: SandboxAdmin,
        redis: aioredis.Redis,
        prefix: str,
        workload: Workload,
    ) -> None:
        self.loop = loop
        self.app_url = app_url
        self.session = session
        self.redis_proxy = redis_proxy
        self.sandbox = sandbox
        self.redis = redis
        self.prefix = prefix
        self.workload = workload
        self.origin = time.monotonic()
        self.samples: list[Sample] = []
        self.events: list[tuple[str, dt.datetime]] = []  # (lead id, instant) of every event
        self.faults: Counter[str] = Counter()
        self.misses = iter(fresh_cpfs(2000))
        self.serial = 0

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:  # Any: the coroutine's result
        """Run ``coro`` on the test's loop from hypothesis's thread, bounded."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(STEP_TIMEOUT_S)

    def send(self, *requests: Request) -> list[Sample]:
        """Send ``requests`` concurrently and keep their samples."""

        async def all_of() -> list[Sample]:
            return list(
                await asyncio.gather(
                    *(send(self.session, self.app_url, r, self.origin) for r in requests)
                )
            )

        samples: list[Sample] = self.run(all_of())
        self.samples.extend(samples)
        return samples

    async def expire_volatile_keys(self) -> int:
        """Redis's clock jumps past every TTL: each key under the prefix with a TTL goes."""
        gone = 0
        async for key in self.redis.scan_iter(match=self.prefix + "*", count=500):
            if await self.redis.pttl(key) > 0:
                gone += await self.redis.delete(key)
        return gone


class ChaosMachine(RuleBasedStateMachine):
    """Rules over the live API; the world is injected as a class attribute per test run."""

    world: World

    def __init__(self) -> None:
        super().__init__()
        self.redis_down = False
        self.failing: set[str] = set()
        self.delivered = 0  # events of this example (preconditions see only the machine's state)

    # -- traffic ---------------------------------------------------------------------------

    def _new_event(self, lead_index: int, when: dt.datetime, fmt: str, copies: int = 1) -> None:
        world = self.world
        lead = world.workload.leads[lead_index % len(world.workload.leads)]
        world.events.append((lead["lead_id"], when))
        self.delivered += 1
        world.send(*(delivery(lead, when, stamp(when, fmt)) for _ in range(copies)))

    def _next_instant(self) -> dt.datetime:
        self.world.serial += 1
        return self.world.workload.base_time + dt.timedelta(seconds=self.world.serial)

    @rule(lead=st.integers(0, 63), fmt=st.sampled_from(FORMATS))
    def deliver_new_event(self, lead: int, fmt: str) -> None:
        self._new_event(lead, self._next_instant(), fmt)

    @rule(lead=st.integers(0, 63), copies=st.integers(2, 6))
    def deliver_duplicates_at_once(self, lead: int, copies: int) -> None:
        self._new_event(lead, self._next_instant(), "rfc3339_z", copies)

    @precondition(lambda self: self.delivered > 0)
    @rule(which=st.integers(0, 10_000), fmt=st.sampled_from(FORMATS))
    def redeliver_an_event(self, which: int, fmt: str) -> None:
        world = self.world
        lead_id, when = world.events[which % len(world.events)]
        lead = next(lead for lead in world.workload.leads if lead["lead_id"] == lead_id)
        world.send(delivery(lead, when, stamp(when, fmt)))

    @rule(kind=st.sampled_from(["hot", "miss", "lookup"]), i=st.integers(0, 1000))
    def read(self, kind: str, i: int) -> None:
        world = self.world
        if kind == "hot":
            request = world.workload.hot(i)
        elif kind == "lookup":
            request = world.workload.lookup(i)
        else:
            cpf = next(world.misses)
            path = f"/api/v1/work/modules/all?documento={cpf}"
            request = Request("miss", "GET", path, world.workload.auth)
        world.send(request)

    @rule(seconds=st.sampled_from([0.2, 0.5, 1.0]))
    def time_passes(self, seconds: float) -> None:
        """Let the worker run under the current faults (retries, breaker waits, leases)."""
        self.world.run(asyncio.sleep(seconds))

    # -- faults ----------------------------------------------------------------------------

    @precondition(lambda self: not self.redis_down)
    @rule(mode=st.sampled_from(["refuse", "reset", "blackhole"]))
    def redis_goes_down(self, mode: str) -> None:
        self.world.run(self.world.redis_proxy.set_mode(mode))  # type: ignore[arg-type]
        self.world.faults[f"redis {mode}"] += 1
        self.redis_down = True

    @precondition(lambda self: self.redis_down)
    @rule()
    def redis_comes_back(self) -> None:
        self.world.run(self.world.redis_proxy.set_mode("pass"))
        self.redis_down = False

    @rule(upstream=st.sampled_from(UPSTREAMS), status=st.sampled_from([500, 503]))
    def upstream_fails(self, upstream: str, status: int) -> None:
        self.world.run(self.world.sandbox.set_faults(upstream, error_rate=1.0, error_status=status))
        self.world.faults[f"{upstream} {status}"] += 1
        self.failing.add(upstream)

    @precondition(lambda self: bool(self.failing))
    @rule(upstream=st.sampled_from(UPSTREAMS))
    def upstream_heals(self, upstream: str) -> None:
        self.world.run(self.world.sandbox.set_faults(upstream))
        self.failing.discard(upstream)

    @rule(jump=st.sampled_from(["redis_ttls", "crm_back", "crm_forward"]), days=st.integers(1, 400))
    def time_jumps(self, jump: str, days: int) -> None:
        world = self.world
        self.world.faults[f"time jump {jump}"] += 1
        if jump == "redis_ttls":
            if not self.redis_down:
                world.run(world.expire_volatile_keys())
            return
        shift = dt.timedelta(days=days if jump == "crm_forward" else -days)
        self._new_event(days, self._next_instant() + shift, "c2s")

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def answers_are_documented(self) -> None:
        for s in self.world.samples:
            assert s.error is None, f"{s.kind} got no answer: {s.error}"
            assert s.status is not None
            if s.status == 503:
                assert s.retry_after, f"{s.kind} 503 without Retry-After"
            elif s.status == 502:
                assert s.kind in WORK_API_KINDS, f"{s.kind} answered 502"
            else:
                assert s.status < 500, f"{s.kind} answered {s.status}"
            if s.kind == "webhook":
                assert s.status == 200, f"webhook answered {s.status}"

    @invariant()
    def each_event_is_processed_once(self) -> None:
        processed: Counter[str] = Counter()
        answered: set[str] = set()
        for s in self.world.samples:
            body = s.json() if s.kind == "webhook" and s.ok else None
            if body is not None and s.tag is not None:
                answered.add(s.tag)
                processed[s.tag] += body["processed"]
                assert body["received"] == 1, body
                assert body["processed"] + body["duplicates"] == 1, body
        for tag in answered:
            assert processed[tag] == 1, f"{tag} processed {processed[tag]} times"

    def teardown(self) -> None:
        # Every example starts from a healthy world.
        if self.redis_down:
            self.world.run(self.world.redis_proxy.set_mode("pass"))
        for upstream in self.failing:
            self.world.run(self.world.sandbox.set_faults(upstream))


async def test_stateful_api_with_faults_keeps_the_ledger(
    processes: Processes,
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
            WORK_API_TIMEOUT_S="2",
        )
        app = processes.app(env)
        worker = processes.worker(env, concurrency=8)
        workload = await make_workload(sandbox, chaos_key, first_person=5000, hot=8, leads=8)
        await asyncio.gather(app.wait_healthy(), worker.wait_started())
        await warm_up(app.url, workload)

        redis = aioredis.Redis.from_url(REDIS_BASE_URL)
        timeout = aiohttp.ClientTimeout(total=STEP_TIMEOUT_S - 5)
        started = time.monotonic()
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                world = World(
                    asyncio.get_running_loop(),
                    app.url,
                    session,
                    redis_proxy,
                    sandbox,
                    redis,
                    chaos_prefix,
                    workload,
                )
                ChaosMachine.world = world
                machine_settings = settings(
                    max_examples=15 if LONG else 5,
                    stateful_step_count=50 if LONG else 20,
                    deadline=None,
                    phases=[Phase.generate],
                    database=None,
                    suppress_health_check=list(HealthCheck),
                    print_blob=False,
                )
                failure: BaseException | None = None
                try:
                    await asyncio.to_thread(
                        run_state_machine_as_test, ChaosMachine, settings=machine_settings
                    )
                except BaseException as exc:  # reported with the figures below
                    failure = exc
                await redis_proxy.set_mode("pass")
                for upstream in UPSTREAMS:
                    await sandbox.set_faults(upstream)
        finally:
            await redis.aclose()
        machine_s = time.monotonic() - started
        ledger = await check_ledger(
            database_url,
            sandbox,
            world.samples,
            leads=[lead["lead_id"] for lead in workload.leads],
            drain_timeout_s=90 if LONG else 45,
        )

    block = report(
        "hypothesis state machine over the API, with faults",
        {"all": world.samples},
        f"{len(world.samples)} requests in {machine_s:.1f}s; {len(world.events)} events",
        "faults injected: "
        + (", ".join(f"{name} x{n}" for name, n in sorted(world.faults.items())) or "none"),
        f"webhook answers: {figures([s for s in world.samples if s.kind == 'webhook']).line()}",
        f"proxy redis: {redis_proxy.stats}",
        *ledger.lines(),
    )
    if failure is not None:
        raise AssertionError(f"{block}\napp output:\n{app.output()}") from failure
    assert not ledger.problems(), block
    assert ledger.events > 0, block
