"""The local view of the rate limits and its sync, on a fake clock and an in-memory store.

The store below does what the Redis sync script does (push what was spent, renew the caller's
grant out of room neither counted nor granted to another holder, split fairly between holders),
so several :class:`LocalAdmission` sharing it behave like several processes sharing Redis.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pytest

from infra.local_admission import Grant, LocalAdmission, SyncItem

if TYPE_CHECKING:
    from collections.abc import Sequence

SYNC_S = 0.05
KEY = "t:{rl}:key:k:100/1000"


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


class MemoryGrantStore:
    """The sync script's arithmetic over dictionaries; server time is the fake clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.counts: dict[tuple[str, int], int] = {}
        self.grants: dict[str, dict[str, tuple[int, int]]] = {}
        self.calls = 0
        self.down = False

    async def sync(
        self, holder: str, ttl_ms: int, items: Sequence[SyncItem]
    ) -> tuple[int, list[Grant]]:
        self.calls += 1
        if self.down:
            raise ConnectionError("store down")
        now = int(self.clock() * 1000)
        out: list[Grant] = []
        for item in items:
            idx = now // item.window_ms
            for at, units in item.spent:
                if at >= idx - 1:
                    self.counts[item.key, at] = self.counts.get((item.key, at), 0) + units
            prev = self.counts.get((item.key, idx - 1), 0)
            cur = self.counts.get((item.key, idx), 0)
            elapsed = now - idx * item.window_ms
            weighted = prev * (item.window_ms - elapsed) // item.window_ms + cur
            live = {
                h: g for h, g in self.grants.get(item.key, {}).items() if h != holder and g[1] > now
            }
            held = sum(units for units, _ in live.values())
            room = item.quota - weighted
            grant = max(0, min(item.want, room - held, math.ceil(room / (len(live) + 1))))
            if grant:
                live[holder] = (grant, now + ttl_ms)
            self.grants[item.key] = live
            out.append(Grant(grant, prev, cur, held))
        return now, out

    def counted(self, key: str = KEY) -> int:
        return sum(units for (k, _), units in self.counts.items() if k == key)


class Failures:
    def __init__(self) -> None:
        self.failures = 0
        self.successes = 0

    def failed(self, exc: BaseException) -> None:
        self.failures += 1

    def ok(self) -> None:
        self.successes += 1


def view(store: MemoryGrantStore, clock: Clock, *, max_entries: int = 1000) -> LocalAdmission:
    failures = Failures()
    return LocalAdmission(
        store,
        sync_s=SYNC_S,
        max_entries=max_entries,
        clock=clock,
        on_failure=failures.failed,
        on_success=failures.ok,
    )


async def allowed(local: LocalAdmission, cost: int = 1, key: str = KEY) -> bool:
    states = await local.admit([(key, 100, 1000, cost)])
    assert states is not None
    return not any(s.refused for s in states)


async def test_a_single_process_gets_its_whole_quota_then_refusals_cost_no_store_call() -> None:
    clock = Clock()
    store = MemoryGrantStore(clock)
    local = view(store, clock)
    results = [await allowed(local) for _ in range(150)]
    assert results.count(True) == 100
    assert results[100:] == [False] * 50
    calls = store.calls
    for _ in range(500):  # a client hammering past its quota: answered from the view
        assert not await allowed(local)
    assert store.calls == calls


async def test_steady_state_admission_makes_no_store_call_but_the_periodic_sync() -> None:
    clock = Clock()
    store = MemoryGrantStore(clock)
    local = view(store, clock)
    flow = "t:{rl}:global:all:1000000/1000"
    for _ in range(5):  # warm up: the demand of a period is learned
        for _ in range(20):
            states = await local.admit([(flow, 1_000_000, 1000, 1)])
            assert states is not None
        clock.t += SYNC_S
        await local.sync_once()
    calls = store.calls
    for _ in range(20):
        for _ in range(20):
            states = await local.admit([(flow, 1_000_000, 1000, 1)])
            assert states is not None
            assert not any(s.refused for s in states)
        clock.t += SYNC_S
        await local.sync_once()
    assert store.calls - calls == 20  # one batched call per period, none per request
    assert store.counted(flow) == 500


async def test_four_processes_hammering_one_quota_stay_within_it() -> None:
    clock = Clock()
    store = MemoryGrantStore(clock)
    views = [view(store, clock) for _ in range(4)]
    admitted = 0
    seconds = 20
    ticks = int(seconds / 0.005)
    for tick in range(ticks):  # every 5 ms each process gets 3 requests: 2,400/s offered
        for local in views:
            for _ in range(3):
                admitted += await allowed(local)
        clock.t += 0.005
        if tick % 10 == 9:
            for local in views:
                await local.sync_once()
    assert admitted / seconds <= 105
    assert admitted / seconds >= 80  # and the quota is not wasted either


async def test_one_process_hammered_while_three_idle_cannot_exceed_the_quota() -> None:
    clock = Clock()
    store = MemoryGrantStore(clock)
    views = [view(store, clock) for _ in range(4)]
    for local in views[1:]:  # the others hold grants from an earlier trickle
        assert await allowed(local)
    admitted = 0
    for tick in range(2000):  # 10 s, 1,200 req/s on one process
        for _ in range(6):
            admitted += await allowed(views[0])
        clock.t += 0.005
        if tick % 10 == 9:
            for local in views:
                await local.sync_once()
    assert admitted / 10 <= 105


async def test_a_refused_request_takes_nothing_from_its_other_limits() -> None:
    clock = Clock()
    store = MemoryGrantStore(clock)
    local = view(store, clock)
    tight = "t:{rl}:ip:a:2/60000"
    loose = "t:{rl}:global:all:100/60000"
    decided = [
        await local.admit([(tight, 2, 60_000, 1), (loose, 100, 60_000, 1)]) for _ in range(4)
    ]
    assert [not any(s.refused for s in d or []) for d in decided] == [True, True, False, False]
    last = decided[-1]
    assert last is not None
    assert [s.refused for s in last] == [True, False]
    assert last[0].remaining == 0
    assert 0 < last[0].reset_s <= 60
    assert last[1].remaining == 98  # only the two served requests count
    await local.release()
    assert store.counted(loose) == 2


async def test_a_costed_request_takes_its_units_and_is_refused_past_the_quota() -> None:
    clock = Clock()
    store = MemoryGrantStore(clock)
    local = view(store, clock)
    assert await allowed(local, cost=60)
    assert await allowed(local, cost=40)
    assert not await allowed(local, cost=5)
    await local.release()
    assert store.counted() == 100


async def test_the_local_view_is_bounded_and_evicted_units_are_pushed() -> None:
    clock = Clock()
    store = MemoryGrantStore(clock)
    local = view(store, clock, max_entries=100)
    for i in range(1000):
        assert await allowed(local, key=f"t:{{rl}}:ip:{i}:100/1000")
    assert len(local) == 100
    await local.sync_once()
    assert sum(store.counts.values()) == 1000


async def test_idle_limits_are_forgotten() -> None:
    clock = Clock()
    store = MemoryGrantStore(clock)
    local = view(store, clock)
    assert await allowed(local)
    await local.sync_once()  # pushes, gives the grant back (no demand since)
    clock.t += 5
    await local.sync_once()
    assert len(local) == 0
    assert store.counted() == 1


async def test_a_store_failure_is_reported_and_the_view_recovers() -> None:
    clock = Clock()
    store = MemoryGrantStore(clock)
    failures = Failures()
    local = LocalAdmission(
        store,
        sync_s=SYNC_S,
        max_entries=10,
        clock=clock,
        on_failure=failures.failed,
        on_success=failures.ok,
    )
    assert await local.admit([(KEY, 100, 1000, 1)]) is not None
    store.down = True
    clock.t += SYNC_S
    await local.sync_once()  # the background sync notices, not a request
    assert failures.failures == 1
    assert await local.admit([(KEY, 100, 1000, 1)]) is None  # the caller falls back
    store.down = False
    assert await local.admit([(KEY, 100, 1000, 1)]) is not None
    await local.sync_once()
    assert store.counted() == 2  # what was spent before the failure is pushed after it


@pytest.mark.parametrize("processes", [2, 4])
async def test_grants_given_back_on_release_let_another_process_spend_them(
    processes: int,
) -> None:
    clock = Clock()
    store = MemoryGrantStore(clock)
    views = [view(store, clock) for _ in range(processes)]
    for local in views:
        assert await allowed(local, cost=10)
    for local in views[1:]:
        await local.release()
    results = [await allowed(views[0]) for _ in range(100)]
    assert results.count(True) == 100 - 10 * processes


class StarvedStore(MemoryGrantStore):
    """Counts what is pushed but never grants anything: every grant went to other requests
    (what a loop stalled between syncs looks like to one request)."""

    async def sync(
        self, holder: str, ttl_ms: int, items: Sequence[SyncItem]
    ) -> tuple[int, list[Grant]]:
        now, grants = await super().sync(holder, ttl_ms, items)
        self.grants.clear()
        return now, [Grant(0, g.prev, g.cur, g.held) for g in grants]


async def test_a_request_whose_grants_went_to_others_borrows_room_instead_of_a_false_429() -> None:
    clock = Clock()
    store = StarvedStore(clock)
    local = view(store, clock)
    # The shared view shows the whole quota free: no request is refused for want of a grant...
    results = [await allowed(local) for _ in range(100)]
    assert results == [True] * 100
    # ...and borrowing never goes past the room: the quota is still the quota.
    assert not await allowed(local)
    clock.t += 2 * SYNC_S
    await local.sync_once()
    assert store.counted() == 100
    assert not await allowed(local)
