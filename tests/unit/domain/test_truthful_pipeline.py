"""A pipeline that tells the truth: outages are not "not found", failures are not replayed, one
message per lead and contacts, a second lead of the same person gets its message.

Against the in-memory fakes of the ports (``tests/support/fakes.py``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import pytest

from domain.errors import DependencyUnavailable, UpstreamError, error_outcome
from domain.lead_messages import ALREADY_MESSAGED, contact_fingerprint
from domain.models import CpfCandidate, Lead, LeadCustomer
from domain.pipeline import CPF_LOOKUP_UNAVAILABLE, REASON_UPSTREAM_UNAVAILABLE
from domain.webhooks import RetryPolicy, parse_webhook_body, run_event_job
from tests.support.fakes import FakeEventStore, World

if TYPE_CHECKING:
    import uuid

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
HELENA_CPF = "39053344705"
OTAVIO_CPF = "71460238001"
HELENA = (GOLDEN / "dossier_helena.json").read_bytes()
OTAVIO = (GOLDEN / "dossier_otavio.json").read_bytes()
LEAD_ID = "358f62821dc6cfa7cfbda19e670d6392"
SECOND_LEAD = "9a1c0e5b7d3f4a2e8b6c1d0f9e8a7b6c"
PHONE = "+55 11 98765-4321"
EMAIL = "helena@example.com"
FAST = RetryPolicy(max_attempts=3, base_delay_s=1.0, max_delay_s=10.0)


def helena_world(*lead_ids: str) -> World:
    """Leads whose phone and e-mail both lead to Helena, whose dossier exists."""
    world = World()
    for lead_id in lead_ids or (LEAD_ID,):
        world.c2s.leads[lead_id] = Lead(
            id=lead_id,
            customer=LeadCustomer(id="c1", name="Helena Marques Duarte", email=EMAIL, phone=PHONE),
        )
    world.work_api.dossiers = {HELENA_CPF: HELENA, OTAVIO_CPF: OTAVIO}
    world.diretrix.by_phone["11987654321"] = [CpfCandidate(name="HELENA M DUARTE", cpf=HELENA_CPF)]
    world.diretrix.by_email[EMAIL] = [CpfCandidate(name="HELENA MARQUES DUARTE", cpf=HELENA_CPF)]
    return world


def phone_lookup_fails(world: World) -> None:
    """Diretrix answers 500 to phone lookups (after its retries); e-mail lookups work."""

    async def failing(national_phone: str) -> list[CpfCandidate]:
        world.diretrix.calls += 1
        raise UpstreamError("diretrix", "Diretrix answered 500", status=500)

    world.diretrix.search_by_phone = failing  # type: ignore[method-assign]


# --- point 1: an outage is not "not found" ---------------------------------------------------


async def test_a_diretrix_outage_is_answered_as_unavailable_not_as_no_cpf() -> None:
    world = helena_world()
    world.diretrix.down = True
    result = await world.enricher().process_lead(LEAD_ID)
    assert result.success is False
    assert result.message == CPF_LOOKUP_UNAVAILABLE
    assert result.reason == REASON_UPSTREAM_UNAVAILABLE
    assert world.contact_cache.entries == {}  # nothing remembered as "no CPF"
    assert LEAD_ID not in world.c2s.messages


async def test_a_failed_lookup_with_the_other_contact_unknown_is_still_an_outage() -> None:
    world = helena_world()
    world.diretrix.by_email.clear()  # the e-mail is genuinely unknown
    phone_lookup_fails(world)
    result = await world.enricher().process_lead(LEAD_ID)
    assert (result.success, result.reason) == (False, REASON_UPSTREAM_UNAVAILABLE)
    # The e-mail's real "not found" is cached; the phone's failure is not.
    assert list(world.contact_cache.entries) == [("email", EMAIL)]


async def test_a_real_not_found_keeps_the_reference_text_and_no_reason() -> None:
    world = helena_world()
    world.diretrix.by_phone.clear()
    world.diretrix.by_email.clear()
    result = await world.enricher().process_lead(LEAD_ID)
    assert result.message == "Could not find CPF from phone or email"
    assert result.reason is None


async def test_direct_enrich_answers_a_diretrix_outage_with_503_and_retry_after() -> None:
    world = helena_world()
    world.diretrix.down = True
    with pytest.raises(DependencyUnavailable) as caught:
        await world.enricher().enrich_lead(LEAD_ID)
    assert caught.value.dependency == "diretrix"
    assert error_outcome(caught.value).status == 503
    assert caught.value.retry_after >= 1


async def test_direct_enrich_answers_a_diretrix_error_status_with_503() -> None:
    world = helena_world()
    world.diretrix.by_email.clear()
    phone_lookup_fails(world)
    with pytest.raises(DependencyUnavailable) as caught:
        await world.enricher().enrich_lead(LEAD_ID)
    assert caught.value.retry_after >= 1
    assert world.contact_cache.entries.get(("phone", "11987654321")) is None


async def test_the_webhook_job_retries_a_diretrix_outage_and_caches_nothing() -> None:
    world, store = helena_world(), FakeEventStore()
    world.diretrix.by_email.clear()
    phone_lookup_fails(world)
    event_id = await stored_event(store, updated_at="2025-11-26T10:00:00Z")
    outcome = await run_event_job(event_id, events=store, enricher=world.enricher(), policy=FAST)
    assert (outcome.kind, outcome.reason) == ("retry", "diretrix unavailable")
    assert world.contact_cache.entries.get(("phone", "11987654321")) is None
    assert world.lead_messages.records == {}


# --- point 2: failures are not replayed as duplicates ----------------------------------------


async def test_a_failed_answer_is_not_replayed_and_the_recovered_upstream_is_tried_again() -> None:
    world = helena_world()
    enricher = world.enricher()
    world.diretrix.down = True
    failed = await enricher.process_lead(LEAD_ID)
    assert failed.success is False
    world.diretrix.down = False  # the upstream recovered
    again = await enricher.process_lead(LEAD_ID)
    assert again.duplicate_request is None
    assert again.success is True, again
    assert again.cpfs_processed == [HELENA_CPF]
    assert len(world.c2s.messages[LEAD_ID]) == 1
    # A success is still replayed.
    replay = await enricher.process_lead(LEAD_ID)
    assert replay == msgspec.structs.replace(again, duplicate_request=True)


async def test_a_failed_send_is_not_replayed_either() -> None:
    world = helena_world()
    enricher = world.enricher()
    world.c2s.fail_send = UpstreamError("c2s", "C2S answered 500", status=500)
    failed = await enricher.process_lead(LEAD_ID)
    assert failed.message == "Enriched data but failed to send to C2S: C2S answered 500"
    world.c2s.fail_send = None
    again = await enricher.process_lead(LEAD_ID)
    assert again.success is True
    assert again.duplicate_request is None
    assert len(world.c2s.messages[LEAD_ID]) == 1
    assert world.work_api.calls == [HELENA_CPF]  # the retry reused the dossier


# --- point 3: one message per lead and contacts ----------------------------------------------


def event_json(updated_at: str, hook_action: str, email: str = EMAIL) -> dict[str, object]:
    return {
        "id": LEAD_ID,
        "hook_action": hook_action,
        "attributes": {
            "updated_at": updated_at,
            "customer": {"name": "Helena Marques Duarte", "email": email, "phone": PHONE},
        },
    }


async def stored_event(
    store: FakeEventStore,
    *,
    updated_at: str,
    hook_action: str = "on_update_lead",
    email: str = EMAIL,
) -> uuid.UUID:
    raw = msgspec.json.encode(event_json(updated_at, hook_action, email))
    [event_id] = (await store.accept(parse_webhook_body(raw).events)).ids
    return event_id


async def test_three_events_of_one_lead_post_one_message() -> None:
    world, store = helena_world(), FakeEventStore()
    enricher = world.enricher()
    ids = [
        await stored_event(store, updated_at="2025-11-26T10:00:00Z", hook_action="on_create_lead"),
        await stored_event(store, updated_at="2025-11-26T10:00:05Z"),
        await stored_event(store, updated_at="2025-11-26T10:00:09Z"),
    ]
    outcomes = [await run_event_job(i, events=store, enricher=enricher) for i in ids]
    assert [o.kind for o in outcomes] == ["completed"] * 3
    assert [o.sent for o in outcomes] == [True, False, False]
    assert [o.reason for o in outcomes[1:]] == [ALREADY_MESSAGED] * 2
    assert len(world.c2s.messages[LEAD_ID]) == 1
    assert {r.status for r in store.rows.values()} == {"completed"}
    assert [store.rows[i].message_sent_at is not None for i in ids] == [True, False, False]
    assert world.work_api.calls == [HELENA_CPF]  # the later events did no work at all


async def test_concurrent_events_of_one_lead_post_one_message() -> None:
    world, store = helena_world(), FakeEventStore()
    world.work_api.delay_s = 0.05  # both runs are mid-enrichment together
    enricher = world.enricher()
    first = await stored_event(store, updated_at="2025-11-26T10:00:00Z")
    second = await stored_event(store, updated_at="2025-11-26T10:00:01Z")
    outcomes = await asyncio.gather(
        run_event_job(first, events=store, enricher=enricher),
        run_event_job(second, events=store, enricher=enricher),
    )
    assert sorted(o.sent for o in outcomes) == [False, True]
    assert len(world.c2s.messages[LEAD_ID]) == 1
    assert {r.status for r in store.rows.values()} == {"completed"}


async def test_a_changed_contact_enriches_and_messages_again() -> None:
    world, store = helena_world(), FakeEventStore()
    world.diretrix.by_email["otavio@example.com"] = [
        CpfCandidate(name="OTAVIO RIBEIRO LACERDA", cpf=OTAVIO_CPF)
    ]
    enricher = world.enricher()
    first = await stored_event(store, updated_at="2025-11-26T10:00:00Z")
    changed = await stored_event(
        store, updated_at="2025-11-26T11:00:00Z", email="Otavio@Example.com"
    )
    assert (await run_event_job(first, events=store, enricher=enricher)).sent
    assert (await run_event_job(changed, events=store, enricher=enricher)).sent
    assert len(world.c2s.messages[LEAD_ID]) == 2
    [(contact, cpfs)] = world.lead_messages.records.values()
    assert "otavio@example.com" in contact
    assert cpfs == [HELENA_CPF, OTAVIO_CPF]


async def test_a_provably_unsent_message_releases_the_lead_for_the_retry() -> None:
    world, store = helena_world(), FakeEventStore()
    world.c2s.fail_send = UpstreamError("c2s", "C2S answered 503", status=503)
    enricher = world.enricher()
    event_id = await stored_event(store, updated_at="2025-11-26T10:00:00Z")
    first = await run_event_job(event_id, events=store, enricher=enricher, policy=FAST)
    assert first.kind == "retry"
    assert world.lead_messages.records == {}
    world.c2s.fail_send = None
    second = await run_event_job(event_id, events=store, enricher=enricher, policy=FAST)
    assert second.sent
    assert len(world.c2s.messages[LEAD_ID]) == 1


def test_the_fingerprint_is_the_normalised_contacts() -> None:
    one = LeadCustomer(name="A", phone="(11) 98765-4321", email="Helena@Example.COM")
    same = LeadCustomer(name="B", phone="+55 11 98765 4321", email="helena@example.com")
    other = LeadCustomer(name="A", phone="(11) 98765-4321", email="helena2@example.com")
    assert contact_fingerprint(one) == contact_fingerprint(same)
    assert contact_fingerprint(one) != contact_fingerprint(other)


# --- point 4: a second lead of the same person gets its message ------------------------------


async def test_a_second_lead_of_the_same_person_gets_its_message_without_a_second_fetch() -> None:
    world = helena_world(LEAD_ID, SECOND_LEAD)
    enricher = world.enricher()
    first = await enricher.process_lead(LEAD_ID)
    second = await enricher.process_lead(SECOND_LEAD)
    assert first.success
    assert second.success
    assert second.message == "CPFs already recently processed (deduplication)"
    assert second.entities_stored == 0
    assert second.cpfs_processed == [HELENA_CPF]
    [message] = world.c2s.messages[SECOND_LEAD]
    assert message == world.c2s.messages[LEAD_ID][0]
    assert world.work_api.calls == [HELENA_CPF]  # paid once


async def test_the_second_lead_is_served_from_the_database_when_the_cache_lost_the_dossier() -> (
    None
):
    world = helena_world(LEAD_ID, SECOND_LEAD)
    enricher = world.enricher()
    await enricher.process_lead(LEAD_ID)
    world.dossier_cache.entries.clear()
    second = await enricher.process_lead(SECOND_LEAD)
    assert second.success
    assert "HELENA MARQUES DUARTE" in world.c2s.messages[SECOND_LEAD][0]
    assert world.work_api.calls == [HELENA_CPF]


async def test_the_same_lead_after_its_replay_window_gets_no_second_message() -> None:
    world = helena_world()
    enricher = world.enricher()
    await enricher.process_lead(LEAD_ID)
    assert world.lead_locks is not None
    world.lead_locks.finished.clear()  # the replay window ended; the CPF is still recent
    again = await enricher.process_lead(LEAD_ID)
    assert again.success
    assert again.duplicate_request is None
    assert again.message == "CPFs already recently processed (deduplication)"
    assert len(world.c2s.messages[LEAD_ID]) == 1


async def test_a_recent_cpf_of_a_second_person_is_reused_next_to_a_fresh_one() -> None:
    world = helena_world(LEAD_ID, SECOND_LEAD)
    world.c2s.leads[SECOND_LEAD] = Lead(
        id=SECOND_LEAD,
        customer=LeadCustomer(name="Helena Duarte", email="otavio@example.com", phone=PHONE),
    )
    world.diretrix.by_email["otavio@example.com"] = [
        CpfCandidate(name="OTAVIO RIBEIRO LACERDA", cpf=OTAVIO_CPF)
    ]
    enricher = world.enricher()
    await enricher.process_lead(LEAD_ID)
    second = await enricher.process_lead(SECOND_LEAD)
    assert second.success
    assert second.entities_stored == 1  # Otávio only: Helena's dossier was reused
    [message] = world.c2s.messages[SECOND_LEAD]
    assert "HELENA" in message
    assert "OTAVIO" in message
    assert world.work_api.calls == [HELENA_CPF, OTAVIO_CPF]
