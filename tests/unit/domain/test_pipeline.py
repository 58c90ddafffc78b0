"""The enrichment pipeline against in-memory fakes of its ports."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import pytest

from domain.customers import CustomerQuery, lookup_customer
from domain.errors import DependencyUnavailable, InvalidInput, NotFound, UpstreamError
from domain.models import CpfCandidate, Lead, LeadCustomer
from domain.pipeline import ProcessResult
from tests.support.fakes import World

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
HELENA_CPF = "39053344705"
OTAVIO_CPF = "71460238001"
HELENA = (GOLDEN / "dossier_helena.json").read_bytes()
OTAVIO = (GOLDEN / "dossier_otavio.json").read_bytes()
LEAD_ID = "358f62821dc6cfa7cfbda19e670d6392"
NOW = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)


def world_with_lead(
    *,
    phone: str | None = "+55 11 98765-4321",
    email: str | None = "helena@example.com",
    name: str = "Helena Marques Duarte",
) -> World:
    world = World()
    world.c2s.leads[LEAD_ID] = Lead(
        id=LEAD_ID, customer=LeadCustomer(id="c1", name=name, email=email, phone=phone)
    )
    world.work_api.dossiers = {HELENA_CPF: HELENA, OTAVIO_CPF: OTAVIO}
    return world


def same_person(world: World) -> None:
    world.diretrix.by_phone["11987654321"] = [CpfCandidate(name="HELENA M DUARTE", cpf=HELENA_CPF)]
    world.diretrix.by_email["helena@example.com"] = [
        CpfCandidate(name="HELENA MARQUES DUARTE", cpf=HELENA_CPF)
    ]


def two_people(world: World) -> None:
    world.diretrix.by_phone["11987654321"] = [CpfCandidate(name="HELENA DUARTE", cpf=HELENA_CPF)]
    world.diretrix.by_email["helena@example.com"] = [
        CpfCandidate(name="OTAVIO RIBEIRO LACERDA", cpf=OTAVIO_CPF)
    ]


async def test_same_person_is_enriched_stored_and_messaged_once() -> None:
    world = world_with_lead()
    same_person(world)
    result = await world.enricher().process_lead(LEAD_ID)
    assert result.success
    assert result.cpfs_processed == [HELENA_CPF]
    assert result.entities_stored == 1
    assert (
        result.message == "Successfully processed and enriched lead. Stored 1 entities in database."
    )
    [message] = world.c2s.messages[LEAD_ID]
    assert message.startswith("📞📧 Telefone e e-mail da mesma pessoa\n\n✅ DADOS PESSOAIS\n")
    assert result.matches is not None
    assert result.matches[0].via == "both"


async def test_two_people_get_two_blocks_in_the_process_layout() -> None:
    world = world_with_lead()
    two_people(world)
    result = await world.enricher().process_lead(LEAD_ID)
    assert result.cpfs_processed == [HELENA_CPF, OTAVIO_CPF]
    assert result.entities_stored == 2
    [message] = world.c2s.messages[LEAD_ID]
    assert "\n---\n\n" in message
    assert message.index("HELENA") < message.index("OTAVIO")


async def test_a_failed_first_dossier_never_shifts_the_second_onto_its_cpf() -> None:
    world = world_with_lead()
    two_people(world)
    world.work_api.failing = {HELENA_CPF}
    result = await world.enricher().process_lead(LEAD_ID)
    assert result.success
    assert result.entities_stored == 1
    [row] = world.repository.rows.values()
    assert row.party.cpf_cnpj == OTAVIO_CPF
    assert row.party.full_name == "OTAVIO RIBEIRO LACERDA"


async def test_duplicate_while_in_flight_is_blocked_with_elapsed_seconds() -> None:
    world = world_with_lead()
    same_person(world)
    enricher = world.enricher()
    assert world.lead_locks is not None
    await world.lead_locks.acquire(LEAD_ID)  # another worker holds it
    world.clock.t += 42
    result = await enricher.process_lead(LEAD_ID)
    assert result.duplicate_request is True
    assert result.success is True
    assert result.message == (
        "Lead already being processed (started 42 seconds ago). Duplicate request blocked."
    )
    assert LEAD_ID not in world.c2s.messages


async def test_finished_answer_is_replayed_to_a_repeat() -> None:
    world = world_with_lead()
    same_person(world)
    enricher = world.enricher()
    first = await enricher.process_lead(LEAD_ID)
    second = await enricher.process_lead(LEAD_ID)
    assert second == msgspec.structs.replace(first, duplicate_request=True)
    assert len(world.c2s.messages[LEAD_ID]) == 1


async def test_a_crash_releases_the_lead_lock() -> None:
    world = world_with_lead()
    same_person(world)
    world.repository.down = True

    class Boom(Exception):
        pass

    async def explode(lead_id: str, body: str) -> None:
        raise Boom

    world.c2s.send_message = explode  # type: ignore[method-assign]
    enricher = world.enricher()
    with pytest.raises(Boom):
        await enricher.process_lead(LEAD_ID)
    assert world.lead_locks is not None
    assert LEAD_ID not in world.lead_locks.held


async def test_recently_processed_cpfs_are_not_paid_for_again() -> None:
    world = world_with_lead()
    same_person(world)
    enricher = world.enricher()
    assert world.recent_cpfs is not None
    await world.recent_cpfs.mark([HELENA_CPF])
    world.dossier_cache.entries["cpf:" + HELENA_CPF] = HELENA  # enriched moments ago
    result = await enricher.process_lead(LEAD_ID)
    assert result == ProcessResult(
        success=True,
        message="CPFs already recently processed (deduplication)",
        lead_id=LEAD_ID,
        cpfs_processed=[HELENA_CPF],
        entities_stored=0,
        matches=result.matches,
    )
    assert world.work_api.calls == []
    assert len(world.c2s.messages[LEAD_ID]) == 1  # the lead still gets its message


async def test_no_cpf_found_is_an_unsuccessful_answer() -> None:
    world = world_with_lead()
    result = await world.enricher().process_lead(LEAD_ID)
    assert not result.success
    assert result.message == "Could not find CPF from phone or email"


async def test_unknown_lead_is_an_unsuccessful_answer() -> None:
    world = World()
    result = await world.enricher().process_lead("deadbeef")
    assert not result.success
    assert result.message.startswith("Failed to fetch lead from C2S")


async def test_failed_send_keeps_the_stored_data() -> None:
    world = world_with_lead()
    same_person(world)
    world.c2s.fail_send = UpstreamError("c2s", "C2S answered 500", status=500)
    result = await world.enricher().process_lead(LEAD_ID)
    assert not result.success
    assert result.message == "Enriched data but failed to send to C2S: C2S answered 500"
    assert len(world.repository.rows) == 1


async def test_one_contact_resolves_while_diretrix_fails_for_nothing_else() -> None:
    world = world_with_lead(email=None)
    world.diretrix.by_phone["11987654321"] = [CpfCandidate(name="HELENA", cpf=HELENA_CPF)]
    result = await world.enricher().process_lead(LEAD_ID)
    assert result.success
    [message] = world.c2s.messages[LEAD_ID]
    assert "PESSOAS DIFERENTES" not in message


async def test_invalid_phone_never_reaches_diretrix() -> None:
    world = world_with_lead(phone="1234", email=None)
    result = await world.enricher().process_lead(LEAD_ID)
    assert not result.success
    assert world.diretrix.calls == 0


async def test_best_matching_candidate_wins_over_the_first() -> None:
    world = world_with_lead(email=None)
    world.diretrix.by_phone["11987654321"] = [
        CpfCandidate(name="OTAVIO RIBEIRO LACERDA", cpf=OTAVIO_CPF),
        CpfCandidate(name="HELENA MARQUES DUARTE", cpf=HELENA_CPF),
    ]
    result = await world.enricher().process_lead(LEAD_ID)
    assert result.cpfs_processed == [HELENA_CPF]
    assert result.matches is not None
    match = result.matches[0].match
    assert match is not None
    assert match.score == 1.0
    assert match.source == "diretrix"


async def test_contact_resolution_is_cached_including_not_found() -> None:
    world = world_with_lead()
    enricher = world.enricher()
    await enricher.resolve(LeadCustomer(name="X", phone="11987654321", email="a@example.com"))
    await enricher.resolve(LeadCustomer(name="X", phone="11987654321", email="a@example.com"))
    assert world.diretrix.calls == 2  # one per contact, the second resolution came from cache


async def test_upstream_errors_are_never_cached() -> None:
    world = world_with_lead()
    same_person(world)
    world.work_api.failing = {HELENA_CPF}
    result = await world.enricher().process_lead(LEAD_ID)
    assert result.message == "Failed to enrich any CPFs"
    assert world.dossier_cache.entries == {}


async def test_direct_enrich_raises_not_found_without_cpf() -> None:
    world = world_with_lead()
    with pytest.raises(NotFound):
        await world.enricher().enrich_lead(LEAD_ID)


async def test_direct_enrich_raises_upstream_error_when_every_dossier_fails() -> None:
    world = world_with_lead()
    same_person(world)
    world.work_api.failing = {HELENA_CPF}
    with pytest.raises(UpstreamError):
        await world.enricher().enrich_lead(LEAD_ID)


async def test_direct_enrich_reports_what_it_did() -> None:
    world = world_with_lead()
    two_people(world)
    result = await world.enricher().enrich_lead(LEAD_ID)
    assert result.stored_in_db == 2
    assert result.cpfs_enriched == [HELENA_CPF, OTAVIO_CPF]
    assert result.same_person is False
    [message] = world.c2s.messages[LEAD_ID]
    assert message.startswith("⚠️ Telefone e e-mail relacionados a PESSOAS DIFERENTES!")


async def test_webhook_job_reuses_a_recently_stored_dossier() -> None:
    world = world_with_lead()
    same_person(world)
    enricher = world.enricher()
    await enricher.enrich_lead(LEAD_ID)
    world.work_api.calls.clear()
    world.dossier_cache.entries.clear()
    world.clock.t = world.repository.now.timestamp() + 3600
    result, _ = await enricher.prepare_event(world.c2s.leads[LEAD_ID])
    assert result.used_stored_data
    assert world.work_api.calls == []
    assert "HELENA MARQUES DUARTE" in result.message


async def test_steps_are_observed() -> None:
    world = world_with_lead()
    same_person(world)
    await world.enricher().process_lead(LEAD_ID)
    names = [name for name, _ in world.observer.steps]
    for step in ("fetch_lead", "resolve_cpf", "fetch_dossier", "store", "format", "send_message"):
        assert step in names


# --- customer lookup -------------------------------------------------------------------------


async def test_customer_lookup_by_cpf_enriches_from_the_work_api_and_stores() -> None:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    view = await lookup_customer(world.enricher(), CustomerQuery(cpf="390.533.447-05"), now=NOW)
    assert view.personal_info.cpf == HELENA_CPF
    assert view.personal_info.name == "HELENA MARQUES DUARTE"
    assert view.personal_info.birth_date == "1988-09-07"
    assert view.metadata.sources == ["work_api"]
    assert view.financial_info is not None
    assert view.financial_info.quality_score == 0.9
    assert view.contact_info.emails
    assert view.addresses
    assert len(world.repository.rows) == 1


async def test_customer_lookup_prefers_the_database() -> None:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    enricher = world.enricher()
    await lookup_customer(enricher, CustomerQuery(cpf=HELENA_CPF), now=NOW)
    world.work_api.calls.clear()
    view = await lookup_customer(enricher, CustomerQuery(cpf=HELENA_CPF), now=NOW)
    assert view.metadata.sources == ["local_db"]
    assert view.metadata.enriched
    assert world.work_api.calls == []


async def test_customer_by_unknown_email_resolves_its_cpf_with_a_match() -> None:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    world.diretrix.by_email["helena@example.com"] = [
        CpfCandidate(name="HELENA MARQUES DUARTE", cpf=HELENA_CPF)
    ]
    view = await lookup_customer(
        world.enricher(), CustomerQuery(email="Helena@Example.com"), now=NOW
    )
    assert view.personal_info.cpf == HELENA_CPF
    assert view.match is not None
    assert view.match.source == "diretrix"


async def test_customer_only_by_unknown_name_is_not_found() -> None:
    world = World()
    with pytest.raises(NotFound):
        await lookup_customer(world.enricher(), CustomerQuery(name="Nobody Here"), now=NOW)


async def test_customer_lookup_rejects_a_bad_cpf_naming_the_field() -> None:
    world = World()
    with pytest.raises(InvalidInput) as info:
        await lookup_customer(world.enricher(), CustomerQuery(cpf="12345678900"), now=NOW)
    assert info.value.field == "cpf"


async def test_customer_lookup_needs_an_identifier() -> None:
    world = World()
    with pytest.raises(InvalidInput):
        await lookup_customer(world.enricher(), CustomerQuery(), now=NOW)


async def test_customer_lookup_reports_an_outage_as_unavailable() -> None:
    world = World()
    world.work_api.down = True
    with pytest.raises(DependencyUnavailable):
        await lookup_customer(world.enricher(), CustomerQuery(cpf=HELENA_CPF), now=NOW)


async def test_every_enrichment_reports_a_bounded_outcome() -> None:
    # /leads/process always answers 200: the outcome is what tells a failure from a success.
    world = world_with_lead()
    same_person(world)
    enricher = world.enricher()
    await enricher.process_lead(LEAD_ID)
    await enricher.process_lead(LEAD_ID)  # replayed
    await enricher.process_lead("deadbeef")  # no such lead
    assert world.observer.enrichments == [
        ("leads_process", "enriched"),
        ("leads_process", "duplicate"),
        ("leads_process", "not_found"),
    ]

    no_cpf = world_with_lead()
    await no_cpf.enricher().process_lead(LEAD_ID)
    assert no_cpf.observer.enrichments == [("leads_process", "not_found")]

    diretrix_down = world_with_lead()
    diretrix_down.diretrix.down = True
    await diretrix_down.enricher().process_lead(LEAD_ID)
    assert diretrix_down.observer.enrichments == [("leads_process", "failed")]

    send_fails = world_with_lead()
    same_person(send_fails)
    send_fails.c2s.fail_send = UpstreamError("c2s", "C2S answered 500", status=500)
    await send_fails.enricher().process_lead(LEAD_ID)
    assert send_fails.observer.enrichments == [("leads_process", "failed")]

    direct = world_with_lead()
    same_person(direct)
    direct.work_api.failing = {HELENA_CPF}
    with pytest.raises(UpstreamError):
        await direct.enricher().enrich_lead(LEAD_ID)
    direct.work_api.failing = set()
    await direct.enricher().enrich_lead(LEAD_ID)
    with pytest.raises(NotFound):
        await direct.enricher().enrich_lead("deadbeef")
    assert direct.observer.enrichments == [
        ("c2s_enrich", "failed"),
        ("c2s_enrich", "enriched"),
        ("c2s_enrich", "not_found"),
    ]
