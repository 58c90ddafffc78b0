"""What each flag changes in the pipeline and the Work API proxy (in-memory fakes of the ports).

The checks live where the behaviour is: ``Enricher.send`` and ``Enricher.fetch_dossier``
(domain/pipeline.py, through the ``Flags`` port), the batch handler and the Work API proxy
(``WorkModules``, domain/work_modules.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from domain.errors import DependencyUnavailable
from domain.flags import DEFAULTS, FeatureDisabled, Flag, StaticFlags, require_enabled
from domain.models import CpfCandidate, Lead, LeadCustomer
from domain.work_modules import WorkModules
from tests.support.fakes import World

if TYPE_CHECKING:
    from domain.pipeline import Enricher

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
HELENA_CPF = "39053344705"
HELENA = (GOLDEN / "dossier_helena.json").read_bytes()
LEAD_ID = "358f62821dc6cfa7cfbda19e670d6392"


def _world() -> World:
    world = World()
    world.c2s.leads[LEAD_ID] = Lead(
        id=LEAD_ID,
        customer=LeadCustomer(
            id="c1", name="Helena Marques Duarte", email="helena@example.com", phone=None
        ),
    )
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    world.diretrix.by_email["helena@example.com"] = [
        CpfCandidate(name="HELENA MARQUES DUARTE", cpf=HELENA_CPF)
    ]
    return world


def _enricher(world: World, **flags: bool) -> Enricher:
    enricher = world.enricher()
    enricher.flags = StaticFlags(flags)
    return enricher


def test_without_a_flag_store_every_flag_has_its_default() -> None:
    enricher = _world().enricher()
    assert {name: enricher.flags.enabled(name) for name in DEFAULTS} == dict(DEFAULTS)
    assert all(DEFAULTS.values())  # every flag is a kill switch that defaults to on


async def test_messages_are_sent_by_default() -> None:
    world = _world()
    result = await world.enricher().enrich_lead(LEAD_ID)
    assert result.message_sent is True
    assert len(world.c2s.messages[LEAD_ID]) == 1


async def test_send_off_formats_and_stores_but_does_not_post() -> None:
    world = _world()
    result = await _enricher(world, send_c2s_messages=False).enrich_lead(LEAD_ID)
    assert result.success
    assert result.message_sent is False
    assert result.stored_in_db == 1  # the data is still stored
    assert world.c2s.messages == {}
    assert ("format", "ok") in world.observer.steps
    assert not any(step == "send_message" for step, _ in world.observer.steps)


async def test_send_off_is_said_in_the_process_answer() -> None:
    world = _world()
    result = await _enricher(world, send_c2s_messages=False).process_lead(LEAD_ID)
    assert result.success
    assert result.message_sent is False
    assert result.message.endswith("Message not sent to C2S (send_c2s_messages is off).")
    assert world.c2s.messages == {}
    on = await _world().enricher().process_lead(LEAD_ID)
    assert on.message_sent is None  # absent from the JSON: the v1 answer is unchanged


async def test_cache_off_neither_reads_nor_writes_the_dossier_cache() -> None:
    world = _world()
    world.dossier_cache.entries[f"cpf:{HELENA_CPF}"] = HELENA
    enricher = _enricher(world, use_dossier_cache=False)
    _dossier, raw = await enricher.fetch_dossier(HELENA_CPF, use_cache=True)
    assert raw == HELENA
    assert world.work_api.calls == [HELENA_CPF]  # fetched although cached
    del world.dossier_cache.entries[f"cpf:{HELENA_CPF}"]
    await enricher.fetch_dossier(HELENA_CPF, use_cache=True)
    assert world.dossier_cache.entries == {}  # and nothing written


async def test_cache_on_serves_the_cached_dossier() -> None:
    world = _world()
    world.dossier_cache.entries[f"cpf:{HELENA_CPF}"] = HELENA
    await world.enricher().fetch_dossier(HELENA_CPF, use_cache=True)
    assert world.work_api.calls == []


def _work_modules(enricher: Enricher) -> WorkModules:
    return WorkModules(
        work_api=enricher.work_api,
        cache=enricher.dossier_cache,
        flags=enricher.flags,
        single_flight=enricher.single_flight,
    )


async def test_work_proxy_honours_the_cache_flag() -> None:
    world = _world()
    world.dossier_cache.entries[f"cpf:{HELENA_CPF}"] = HELENA
    off = _work_modules(_enricher(world, use_dossier_cache=False))
    assert await off.module("cpf", HELENA_CPF) == HELENA
    assert world.work_api.calls == [HELENA_CPF]
    assert off.read_ahead(HELENA_CPF) is None  # nothing is prefetched with the cache off
    on = _work_modules(world.enricher())
    assert await on.module("cpf", HELENA_CPF) == HELENA
    assert world.work_api.calls == [HELENA_CPF]  # served from the cache
    assert on.read_ahead(HELENA_CPF) == f"cpf:{HELENA_CPF}"


def test_a_disabled_feature_is_a_temporary_503() -> None:
    require_enabled(StaticFlags(), Flag.ENABLE_BATCH)
    with pytest.raises(FeatureDisabled) as refused:
        require_enabled(StaticFlags({"enable_batch": False}), Flag.ENABLE_BATCH)
    assert isinstance(refused.value, DependencyUnavailable)  # the error table's 503 row
    assert refused.value.dependency == "feature:enable_batch"
    assert refused.value.retry_after == 60.0


def test_static_flags_refuse_unknown_names() -> None:
    with pytest.raises(KeyError):
        StaticFlags({"no_such_flag": False})
    with pytest.raises(KeyError):
        StaticFlags().enabled("no_such_flag")
