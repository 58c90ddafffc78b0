"""Single-flight of cache misses against the in-memory fakes (processes played by fill locks)."""

from __future__ import annotations

import asyncio

import pytest

from domain.errors import UpstreamError
from domain.pipeline import PipelineSettings
from tests.support.fakes import FakeFillLocks, World
from tests.unit.domain.test_pipeline import HELENA, HELENA_CPF, OTAVIO, OTAVIO_CPF

KEY = f"cpf:{HELENA_CPF}"


def slow_world(fill_locks: FakeFillLocks | None = None) -> World:
    world = World(fill_locks=fill_locks)
    world.work_api.dossiers = {HELENA_CPF: HELENA, OTAVIO_CPF: OTAVIO}
    world.work_api.delay_s = 0.05
    return world


async def test_thirty_concurrent_misses_of_one_cpf_make_one_work_api_call() -> None:
    world = slow_world()
    enricher = world.enricher()
    results = await asyncio.gather(
        *(enricher.fetch_dossier(HELENA_CPF, use_cache=True) for _ in range(30))
    )
    assert world.work_api.calls == [HELENA_CPF]
    assert all(raw == HELENA for _, raw in results)
    assert world.dossier_cache.entries[KEY] == HELENA
    assert enricher.single_flight.in_flight == 0


async def test_different_cpfs_are_not_coalesced() -> None:
    world = slow_world()
    enricher = world.enricher()
    await asyncio.gather(
        *(enricher.fetch_dossier(cpf, use_cache=True) for cpf in [HELENA_CPF, OTAVIO_CPF] * 5)
    )
    assert sorted(world.work_api.calls) == [HELENA_CPF, OTAVIO_CPF]


async def test_a_failure_is_shared_by_the_waiters_and_not_cached() -> None:
    world = slow_world()
    world.work_api.failing.add(HELENA_CPF)
    enricher = world.enricher()
    results = await asyncio.gather(
        *(enricher.fetch_dossier(HELENA_CPF, use_cache=True) for _ in range(10)),
        return_exceptions=True,
    )
    assert all(isinstance(r, UpstreamError) for r in results)
    assert world.work_api.calls == [HELENA_CPF]
    assert KEY not in world.dossier_cache.entries
    world.work_api.failing.clear()  # the next miss calls again
    await enricher.fetch_dossier(HELENA_CPF, use_cache=True)
    assert world.work_api.calls == [HELENA_CPF, HELENA_CPF]


async def test_a_caller_that_goes_away_does_not_cancel_the_shared_call() -> None:
    world = slow_world()
    enricher = world.enricher()
    first = asyncio.ensure_future(enricher.fetch_dossier(HELENA_CPF, use_cache=True))
    second = asyncio.ensure_future(enricher.fetch_dossier(HELENA_CPF, use_cache=True))
    await asyncio.sleep(0.01)
    first.cancel()
    _, raw = await second
    assert raw == HELENA
    assert world.work_api.calls == [HELENA_CPF]
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_fresh_fetches_are_not_coalesced() -> None:
    world = slow_world()
    enricher = world.enricher()
    await asyncio.gather(*(enricher.fetch_dossier(HELENA_CPF, use_cache=False) for _ in range(3)))
    assert world.work_api.calls == [HELENA_CPF] * 3


async def test_another_process_filling_the_key_is_waited_for() -> None:
    locks = FakeFillLocks(holders={KEY: "other-process"})
    world = slow_world(locks)
    enricher = world.enricher()

    async def other_process_fills() -> None:
        await asyncio.sleep(0.1)
        world.dossier_cache.entries[KEY] = HELENA
        del locks.holders[KEY]

    filler = asyncio.ensure_future(other_process_fills())
    _, raw = await enricher.fetch_dossier(HELENA_CPF, use_cache=True)
    await filler
    assert raw == HELENA
    assert world.work_api.calls == []  # the other process paid
    assert locks.refused >= 1


async def test_a_dead_holder_is_replaced_once_its_lock_expires() -> None:
    locks = FakeFillLocks(holders={KEY: "dead-process"})
    world = slow_world(locks)
    enricher = world.enricher()

    async def lock_expires() -> None:
        await asyncio.sleep(0.1)
        del locks.holders[KEY]  # expired without a cached value

    expiry = asyncio.ensure_future(lock_expires())
    _, raw = await enricher.fetch_dossier(HELENA_CPF, use_cache=True)
    await expiry
    assert raw == HELENA
    assert world.work_api.calls == [HELENA_CPF]
    assert KEY not in locks.holders  # released after filling


async def test_the_wait_for_a_slow_holder_is_bounded() -> None:
    locks = FakeFillLocks(holders={KEY: "stuck-process"})
    world = slow_world(locks)
    enricher = world.enricher(PipelineSettings(fill_wait_s=0.2))
    loop = asyncio.get_running_loop()
    started = loop.time()
    _, raw = await enricher.fetch_dossier(HELENA_CPF, use_cache=True)
    assert raw == HELENA
    assert world.work_api.calls == [HELENA_CPF]
    assert loop.time() - started < 1.0
    assert locks.holders[KEY] == "stuck-process"  # never released by us
