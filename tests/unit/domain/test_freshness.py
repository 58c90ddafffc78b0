"""Freshness, the match threshold and the customer search against in-memory fakes."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from domain.customers import CustomerQuery, lookup_customer
from domain.errors import Forbidden, InvalidInput
from domain.freshness import check_max_age, check_min_likelihood, data_age_s
from domain.models import CpfCandidate, Party
from domain.pipeline import PipelineSettings
from domain.search import search_customers
from tests.unit.domain.test_pipeline import (
    HELENA_CPF,
    LEAD_ID,
    OTAVIO_CPF,
    two_people,
    world_with_lead,
)

NOW = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_max_age_must_be_a_finite_number_of_seconds(value: float) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_max_age(value)
    assert caught.value.field == "max_age"


@pytest.mark.parametrize("value", [-0.1, 1.01, float("nan")])
def test_min_likelihood_must_be_within_zero_and_one(value: float) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_min_likelihood(value)
    assert caught.value.field == "min_likelihood"


def test_data_age_is_whole_seconds_and_never_negative() -> None:
    assert data_age_s(None, NOW) is None
    assert data_age_s(NOW - dt.timedelta(seconds=90.9), NOW) == 90
    assert data_age_s(NOW + dt.timedelta(seconds=3), NOW) == 0


async def test_a_weak_match_is_neither_enriched_nor_messaged() -> None:
    world = world_with_lead()
    two_people(world)  # phone -> Helena (the lead's name), e-mail -> Otavio (another name)
    result = await world.enricher().process_lead(LEAD_ID, min_likelihood=0.5)
    assert result.success
    assert result.cpfs_processed == [HELENA_CPF]
    assert world.work_api.calls == [HELENA_CPF]
    [message] = world.c2s.messages[LEAD_ID]
    assert "OTAVIO" not in message.upper()
    assert result.matches is not None
    held = {p.cpf: p.match for p in result.matches}
    otavio, helena = held[OTAVIO_CPF], held[HELENA_CPF]
    assert otavio is not None
    assert otavio.matched is False
    assert otavio.reason == "below_min_likelihood"
    assert otavio.score < 0.5
    assert helena is not None
    assert helena.reason is None


async def test_every_match_below_the_setting_means_no_call_and_no_message() -> None:
    world = world_with_lead(name="Zacarias Pimentel Brandao")  # neither candidate's name
    two_people(world)
    result = await world.enricher(PipelineSettings(min_likelihood=0.9)).process_lead(LEAD_ID)
    assert not result.success
    assert result.reason == "below_min_likelihood"
    assert world.work_api.calls == []
    assert LEAD_ID not in world.c2s.messages
    # Not a success: the next request tries again (no replay of this answer).
    assert world.lead_locks is not None
    assert world.lead_locks.finished == {}


async def test_min_likelihood_out_of_range_does_nothing() -> None:
    world = world_with_lead()
    two_people(world)
    with pytest.raises(InvalidInput):
        await world.enricher().process_lead(LEAD_ID, min_likelihood=1.5)
    assert world.diretrix.calls == 0


async def test_a_cpf_given_directly_is_not_subject_to_the_threshold() -> None:
    world = world_with_lead()
    view = await lookup_customer(
        world.enricher(), CustomerQuery(cpf=HELENA_CPF), now=NOW, min_likelihood=1.0
    )
    assert view.matched
    assert view.personal_info.cpf == HELENA_CPF


async def test_lookup_by_email_below_the_threshold_says_so() -> None:
    world = world_with_lead()
    world.diretrix.by_email["someone@example.com"] = [
        CpfCandidate(name="OTAVIO RIBEIRO LACERDA", cpf=OTAVIO_CPF)
    ]
    query = CustomerQuery(email="someone@example.com", name="Helena Marques Duarte")
    view = await lookup_customer(world.enricher(), query, now=NOW, min_likelihood=0.8)
    assert not view.matched
    assert view.reason == "below_min_likelihood"
    assert view.match is not None
    assert view.match.score < 0.8
    assert view.personal_info.cpf is None
    assert world.work_api.calls == []
    assert not world.repository.rows


async def test_stored_data_older_than_max_age_is_fetched_again() -> None:
    world = world_with_lead()
    enricher = world.enricher()
    await lookup_customer(enricher, CustomerQuery(cpf=HELENA_CPF), now=NOW)
    assert world.work_api.calls == [HELENA_CPF]
    # Stored at the repository's clock (midnight): 12 h old at NOW.
    young = await lookup_customer(enricher, CustomerQuery(cpf=HELENA_CPF), now=NOW, max_age_s=86400)
    assert young.data_age_s == 12 * 3600
    assert world.work_api.calls == [HELENA_CPF]
    with pytest.raises(Forbidden):
        await lookup_customer(
            enricher, CustomerQuery(cpf=HELENA_CPF), now=NOW, may_fetch=False, max_age_s=60
        )
    # The cache entry was written at the fake clock's time, long before: not served either.
    world.dossier_cache.clock.advance(3600)
    await lookup_customer(enricher, CustomerQuery(cpf=HELENA_CPF, max_age_s=60), now=NOW)
    assert world.work_api.calls == [HELENA_CPF, HELENA_CPF]


async def test_search_pages_cover_every_hit_once_and_cursors_stay_with_their_search() -> None:
    world = world_with_lead()
    for index in range(5):
        world.repository.add_party(
            Party(
                id=uuid.UUID(int=index + 1),
                party_type="person",
                cpf_cnpj=None,
                full_name="ZEFERINO QUARTZOLINO" + (" NETO" * (index % 2)),
            )
        )
    repo = world.repository
    seen: list[str] = []
    cursor = None
    while True:
        page = await search_customers(repo, name="zeferino", cursor=cursor, limit=2, now=NOW)
        seen.extend(hit.id for hit in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
        with pytest.raises(InvalidInput) as caught:
            await search_customers(repo, name="quartzolino", cursor=cursor, now=NOW)
        assert caught.value.field == "cursor"
    assert len(seen) == len(set(seen)) == 5
    with pytest.raises(InvalidInput) as missing:
        await search_customers(repo, now=NOW)
    assert missing.value.field == "name"
