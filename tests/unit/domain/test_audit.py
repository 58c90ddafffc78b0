"""The audit trail's records from the use cases (lookups, leads, webhook jobs, work modules,
customers), against the in-memory fakes; and the admin search's input rules."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import msgspec
import pytest

from domain.audit import (
    AccessRecord,
    AuditCursor,
    AuditLog,
    decode_cursor,
    encode_cursor,
)
from domain.customers import CustomerQuery, get_customer, lookup_batch, lookup_customer
from domain.errors import InvalidInput, NotFound
from domain.models import CpfCandidate, Lead, LeadCustomer
from domain.tenancy import Caller, caller_scope, tenant_scope
from domain.webhooks import parse_webhook_body, run_event_job
from domain.work_modules import WorkModules
from tests.support.fakes import SUBJECTS, FakeAuditTrail, FakeEventStore, World

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
HELENA_CPF = "39053344705"
OTAVIO_CPF = "71460238001"
HELENA = (GOLDEN / "dossier_helena.json").read_bytes()
OTAVIO = (GOLDEN / "dossier_otavio.json").read_bytes()
LEAD_ID = "358f62821dc6cfa7cfbda19e670d6392"
NOW = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)
CALLER = Caller(tenant="acme", key_id="k-1", request_id="req-1")


def lead_world() -> World:
    """Helena's phone and Otávio's e-mail on one lead: two people."""
    world = World()
    world.c2s.leads[LEAD_ID] = Lead(
        id=LEAD_ID,
        customer=LeadCustomer(
            id="c1", name="Helena Marques Duarte", email="otavio@example.com", phone="11987654321"
        ),
    )
    world.work_api.dossiers = {HELENA_CPF: HELENA, OTAVIO_CPF: OTAVIO}
    world.diretrix.by_phone["11987654321"] = [CpfCandidate(name="HELENA DUARTE", cpf=HELENA_CPF)]
    world.diretrix.by_email["otavio@example.com"] = [
        CpfCandidate(name="OTAVIO RIBEIRO LACERDA", cpf=OTAVIO_CPF)
    ]
    return world


def of(world: World, cpf: str) -> list[AccessRecord]:
    return [r for r in world.audit.records if r.subject == SUBJECTS.digest(cpf)]


def modules(world: World) -> WorkModules:
    enricher = world.enricher()
    return WorkModules(
        work_api=enricher.work_api,
        cache=enricher.dossier_cache,
        flags=enricher.flags,
        single_flight=enricher.single_flight,
        audit=enricher.audit,
    )


# --- who, when, whose ---------------------------------------------------------------------------


async def test_a_record_names_the_caller_and_a_digest_never_the_cpf() -> None:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    with caller_scope(CALLER):
        await lookup_customer(world.enricher(), CustomerQuery(cpf=HELENA_CPF), now=NOW)
    [record] = world.audit.records
    assert record.subject == SUBJECTS.digest(HELENA_CPF)
    assert HELENA_CPF not in msgspec.json.encode(record).decode()
    assert (record.tenant, record.key_id, record.request_id) == ("acme", "k-1", "req-1")
    assert record.operation == "lookup"
    assert record.at == dt.datetime.fromtimestamp(world.clock.now(), dt.UTC)


async def test_without_a_caller_the_record_takes_the_current_tenant() -> None:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    with tenant_scope("worker-tenant"):
        await lookup_customer(world.enricher(), CustomerQuery(cpf=HELENA_CPF), now=NOW)
    [record] = world.audit.records
    assert (record.tenant, record.key_id, record.request_id) == ("worker-tenant", None, None)


# --- lookups ------------------------------------------------------------------------------------


async def test_a_lookup_is_paid_when_fetched_and_free_when_stored() -> None:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    enricher = world.enricher()
    await lookup_customer(enricher, CustomerQuery(cpf=HELENA_CPF), now=NOW)
    await lookup_customer(enricher, CustomerQuery(cpf=HELENA_CPF), now=NOW)  # stored now
    first, second = of(world, HELENA_CPF)
    assert (first.paid, first.upstream) == (True, "work_api")
    assert (second.paid, second.upstream) == (False, None)


async def test_a_lookup_resolved_by_diretrix_counts_both_paid_calls() -> None:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    world.diretrix.by_email["helena@example.com"] = [
        CpfCandidate(name="HELENA MARQUES DUARTE", cpf=HELENA_CPF)
    ]
    await lookup_customer(world.enricher(), CustomerQuery(email="helena@example.com"), now=NOW)
    [record] = of(world, HELENA_CPF)
    assert (record.paid, record.upstream) == (True, "diretrix,work_api")


async def test_a_lookup_that_found_nobody_records_nothing() -> None:
    world = World()
    with pytest.raises(NotFound):
        await lookup_customer(world.enricher(), CustomerQuery(name="Nobody Here"), now=NOW)
    assert world.audit.records == []


async def test_each_batch_item_found_is_one_batch_record() -> None:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA, OTAVIO_CPF: OTAVIO}
    queries = [CustomerQuery(cpf=HELENA_CPF), CustomerQuery(cpf=OTAVIO_CPF)]
    queries.append(CustomerQuery(cpf="12345678900"))  # invalid: no record
    await lookup_batch(world.enricher(), queries, now=NOW)
    assert sorted(r.operation for r in world.audit.records) == ["batch", "batch"]
    assert len(of(world, HELENA_CPF)) == len(of(world, OTAVIO_CPF)) == 1
    assert all(r.paid for r in world.audit.records)


async def test_a_stored_customer_read_by_id_is_one_free_record() -> None:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    enricher = world.enricher()
    view = await lookup_customer(enricher, CustomerQuery(cpf=HELENA_CPF), now=NOW)
    assert view.metadata.party_id is not None
    world.audit.records.clear()
    await get_customer(enricher, uuid.UUID(view.metadata.party_id))
    [record] = world.audit.records
    assert (record.operation, record.subject, record.paid) == (
        "customer",
        SUBJECTS.digest(HELENA_CPF),
        False,
    )


# --- leads --------------------------------------------------------------------------------------


async def test_process_lead_records_each_person_enriched_with_its_paid_calls() -> None:
    world = lead_world()
    world.dossier_cache.entries[f"cpf:{OTAVIO_CPF}"] = OTAVIO  # Otávio's dossier is cached
    result = await world.enricher().process_lead(LEAD_ID)
    assert result.success
    [helena] = of(world, HELENA_CPF)
    [otavio] = of(world, OTAVIO_CPF)
    assert (helena.operation, helena.paid, helena.upstream) == ("lead", True, "diretrix,work_api")
    assert (otavio.operation, otavio.paid, otavio.upstream) == ("lead", True, "diretrix")


async def test_a_replayed_lead_records_nothing_more() -> None:
    world = lead_world()
    enricher = world.enricher()
    await enricher.process_lead(LEAD_ID)
    before = len(world.audit.records)
    replay = await enricher.process_lead(LEAD_ID)
    assert replay.duplicate_request
    assert len(world.audit.records) == before == 2


async def test_enrich_lead_records_each_person_with_fresh_paid_fetches() -> None:
    world = lead_world()
    world.contact_cache.entries[("phone", "11987654321")] = [
        CpfCandidate(name="HELENA DUARTE", cpf=HELENA_CPF)
    ]
    await world.enricher().enrich_lead(LEAD_ID)
    [helena] = of(world, HELENA_CPF)
    [otavio] = of(world, OTAVIO_CPF)
    # The phone's CPF came from the contact cache: only the Work API was paid for Helena.
    assert (helena.operation, helena.upstream) == ("lead", "work_api")
    assert (otavio.operation, otavio.upstream) == ("lead", "diretrix,work_api")


async def test_a_webhook_job_records_the_people_of_its_message() -> None:
    world, store = lead_world(), FakeEventStore()
    event = {
        "id": LEAD_ID,
        "attributes": {
            "updated_at": "2025-11-26T10:00:00Z",
            "customer": {
                "name": "Helena Marques Duarte",
                "email": "otavio@example.com",
                "phone": "11987654321",
            },
        },
    }
    [event_id] = (await store.accept(parse_webhook_body(msgspec.json.encode(event)).events)).ids
    outcome = await run_event_job(event_id, events=store, enricher=world.enricher())
    assert outcome.kind == "completed"
    assert {r.operation for r in world.audit.records} == {"webhook"}
    assert len(of(world, HELENA_CPF)) == len(of(world, OTAVIO_CPF)) == 1
    assert all(r.tenant == "" and r.paid for r in world.audit.records)


# --- work modules (the hot path) ----------------------------------------------------------------


async def test_work_module_reads_are_recorded_paid_only_on_a_miss() -> None:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    proxy = modules(world)
    with caller_scope(CALLER):
        await proxy.all_modules(HELENA_CPF)  # miss: fetched
        await proxy.all_modules(HELENA_CPF)  # hit
    miss, hit = of(world, HELENA_CPF)
    assert (miss.operation, miss.paid, miss.upstream) == ("work_module", True, "work_api")
    assert (hit.operation, hit.paid, hit.upstream) == ("work_module", False, None)
    assert hit.key_id == "k-1"


async def test_concurrent_misses_pay_once() -> None:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    world.work_api.delay_s = 0.01  # the misses overlap
    proxy = modules(world)
    await asyncio.gather(*(proxy.all_modules(HELENA_CPF) for _ in range(5)))
    records = of(world, HELENA_CPF)
    assert len(records) == 5
    assert sum(r.paid for r in records) == 1


async def test_modules_of_other_documents_are_not_a_persons_data() -> None:
    world = World()
    world.dossier_cache.entries["module:cep:01001000"] = b'{"cep": "01001000"}'
    assert await modules(world).module("cep", "01001000") == b'{"cep": "01001000"}'
    assert world.audit.records == []
    assert world.audit.records == []


# --- the admin search ---------------------------------------------------------------------------


async def test_search_digests_the_cpf_and_rejects_bad_input_without_echoing_it() -> None:
    trail = FakeAuditTrail()
    log = AuditLog(trail, SUBJECTS)
    with pytest.raises(InvalidInput) as bad:
        await log.search("acme", subject_cpf="12345678900")
    assert bad.value.field == "subject_cpf"
    assert "12345678900" not in bad.value.detail
    for kwargs in ({"limit": 0}, {"limit": 1001}, {"cursor": "nope"}):
        with pytest.raises(InvalidInput):
            await log.search("acme", **kwargs)
    empty = await log.search("acme", since=NOW, until=NOW - dt.timedelta(seconds=1))
    assert empty.records == []


def test_a_cursor_round_trips_and_a_forged_one_is_refused() -> None:
    cursor = AuditCursor(at=NOW, id=42)
    assert decode_cursor(encode_cursor(cursor)) == cursor
    with pytest.raises(InvalidInput):
        decode_cursor(encode_cursor(cursor)[:-3])
