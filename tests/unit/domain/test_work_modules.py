"""The Work API proxy use case (:func:`domain.work_modules.fetch_work_module`) over the fakes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from domain.errors import InvalidInput, NotFound, UpstreamError
from domain.flags import StaticFlags
from domain.work_modules import fetch_work_module, work_module_key
from tests.support.fakes import World

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
HELENA_CPF = "39053344705"
HELENA = (GOLDEN / "dossier_helena.json").read_bytes()


def test_dossiers_and_other_modules_have_their_own_cache_keys() -> None:
    assert work_module_key("cpf", HELENA_CPF) == f"cpf:{HELENA_CPF}"
    assert work_module_key("cep", "01310100") == "module:cep:01310100"


async def test_a_miss_is_fetched_verbatim_and_cached() -> None:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    assert await fetch_work_module(world.enricher(), "cpf", HELENA_CPF) == HELENA
    assert world.dossier_cache.entries[f"cpf:{HELENA_CPF}"] == HELENA
    assert await fetch_work_module(world.enricher(), "cpf", HELENA_CPF) == HELENA
    assert world.work_api.calls == [HELENA_CPF]


async def test_concurrent_misses_share_one_upstream_call() -> None:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    world.work_api.delay_s = 0.02
    enricher = world.enricher()
    bodies = await asyncio.gather(*(fetch_work_module(enricher, "cpf", HELENA_CPF) for _ in "abc"))
    assert bodies == [HELENA] * 3
    assert world.work_api.calls == [HELENA_CPF]


async def test_a_body_the_caller_already_read_is_served_without_any_call() -> None:
    world = World()
    body = await fetch_work_module(
        world.enricher(), "cpf", HELENA_CPF, prefetched=b'{"x":1}', cache_read=True
    )
    assert body == b'{"x":1}'
    assert world.work_api.calls == []


async def test_a_miss_the_caller_already_saw_is_not_read_again() -> None:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    world.dossier_cache.entries[f"cpf:{HELENA_CPF}"] = b"stale"
    body = await fetch_work_module(world.enricher(), "cpf", HELENA_CPF, cache_read=True)
    assert body == HELENA
    assert world.work_api.calls == [HELENA_CPF]


async def test_with_the_cache_flag_off_even_a_prefetched_body_is_ignored() -> None:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    enricher = world.enricher(flags=StaticFlags({"use_dossier_cache": False}))
    body = await fetch_work_module(enricher, "cpf", HELENA_CPF, prefetched=b"{}", cache_read=True)
    assert body == HELENA
    assert world.dossier_cache.entries == {}


async def test_soft_errors_are_answered_as_errors_never_as_data() -> None:
    world = World()
    with pytest.raises(NotFound):
        await fetch_work_module(world.enricher(), "cpf", HELENA_CPF)
    with pytest.raises(InvalidInput) as caught:
        await fetch_work_module(world.enricher(), "cep", "01310100")
    assert caught.value.field == "module"
    world.work_api.failing.add(HELENA_CPF)
    with pytest.raises(UpstreamError):
        await fetch_work_module(world.enricher(), "cpf", HELENA_CPF)
    assert world.dossier_cache.entries == {}
