"""The Work API proxy use case (:class:`domain.work_modules.WorkModules`) over the fakes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from domain.admission import Prefetched
from domain.errors import InvalidInput, NotFound, UpstreamError
from domain.flags import StaticFlags
from domain.work_modules import WorkModules
from tests.support.fakes import World

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
HELENA_CPF = "39053344705"
HELENA = (GOLDEN / "dossier_helena.json").read_bytes()


def _modules(world: World, *, cache_on: bool = True) -> WorkModules:
    flags = None if cache_on else StaticFlags({"use_dossier_cache": False})
    enricher = world.enricher() if flags is None else world.enricher(flags=flags)
    return WorkModules(
        work_api=enricher.work_api,
        cache=enricher.dossier_cache,
        flags=enricher.flags,
        single_flight=enricher.single_flight,
    )


async def test_dossiers_and_other_modules_have_their_own_cache_keys() -> None:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    modules = _modules(world)
    assert modules.read_ahead(HELENA_CPF) == f"cpf:{HELENA_CPF}"
    assert modules.read_ahead("not a cpf") is None
    await modules.module("cpf", HELENA_CPF)
    assert set(world.dossier_cache.entries) == {f"cpf:{HELENA_CPF}"}


async def test_a_miss_is_fetched_verbatim_and_cached() -> None:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    modules = _modules(world)
    assert await modules.all_modules(HELENA_CPF) == HELENA
    assert world.dossier_cache.entries[f"cpf:{HELENA_CPF}"] == HELENA
    assert await modules.all_modules(HELENA_CPF) == HELENA
    assert world.work_api.calls == [HELENA_CPF]


async def test_concurrent_misses_share_one_upstream_call() -> None:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    world.work_api.delay_s = 0.02
    modules = _modules(world)
    bodies = await asyncio.gather(*(modules.all_modules(HELENA_CPF) for _ in "abc"))
    assert bodies == [HELENA] * 3
    assert world.work_api.calls == [HELENA_CPF]


async def test_a_body_the_caller_already_read_is_served_without_any_call() -> None:
    world = World()
    prefetched = Prefetched(key=f"cpf:{HELENA_CPF}", body=b'{"x":1}')
    body = await _modules(world).all_modules(HELENA_CPF, prefetched)
    assert body == b'{"x":1}'
    assert world.work_api.calls == []


async def test_a_miss_the_caller_already_saw_is_not_read_again() -> None:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    world.dossier_cache.entries[f"cpf:{HELENA_CPF}"] = b"stale"
    prefetched = Prefetched(key=f"cpf:{HELENA_CPF}", body=None)
    body = await _modules(world).all_modules(HELENA_CPF, prefetched)
    assert body == HELENA
    assert world.work_api.calls == [HELENA_CPF]


async def test_with_the_cache_flag_off_even_a_prefetched_body_is_ignored() -> None:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    prefetched = Prefetched(key=f"cpf:{HELENA_CPF}", body=b"{}")
    body = await _modules(world, cache_on=False).all_modules(HELENA_CPF, prefetched)
    assert body == HELENA
    assert world.dossier_cache.entries == {}


async def test_soft_errors_are_answered_as_errors_never_as_data() -> None:
    world = World()
    modules = _modules(world)
    with pytest.raises(NotFound):
        await modules.all_modules(HELENA_CPF)
    with pytest.raises(InvalidInput) as caught:
        await modules.module("cep", "01310100")
    assert caught.value.field == "module"
    world.work_api.failing.add(HELENA_CPF)
    with pytest.raises(UpstreamError):
        await modules.all_modules(HELENA_CPF)
    assert world.dossier_cache.entries == {}


async def test_an_empty_or_invalid_document_is_invalid_input() -> None:
    modules = _modules(World())
    with pytest.raises(InvalidInput, match="Missing 'documento' parameter"):
        await modules.all_modules("  ")
    with pytest.raises(InvalidInput):
        await modules.all_modules("12345678900")
