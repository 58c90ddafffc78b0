"""Data-subject rights against the in-memory fakes: export, erasure, the hold on re-buying an
erased person, and renewed consent (domain/subjects.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import pytest

from domain.audit import SubjectDigester
from domain.customers import CustomerQuery, lookup_batch, lookup_customer
from domain.errors import InvalidInput, NotFound, error_outcome
from domain.models import CpfCandidate, Lead, LeadCustomer
from domain.subjects import (
    ERASED_NOT_ENRICHED,
    SubjectErased,
    SubjectRecords,
    SubjectRights,
    Tombstone,
)
from domain.tenancy import Caller, caller_scope
from domain.work_modules import WorkModules
from tests.support.fakes import (
    FakeAuditTrail,
    FakeErasureHolds,
    FakeSubjectCaches,
    FakeSubjectStore,
    World,
)

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
HELENA_CPF = "39053344705"
HELENA = (GOLDEN / "dossier_helena.json").read_bytes()
LEAD_ID = "358f62821dc6cfa7cfbda19e670d6392"
NOW = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)
DIGESTER = SubjectDigester(b"unit-test-salt")
DAY = 86_400.0


def records(name: str = "HELENA") -> SubjectRecords:
    raw = msgspec.Raw(b"[]")
    return SubjectRecords(
        parties=msgspec.Raw(f'[{{"cpf_cnpj":"{HELENA_CPF}","full_name":"{name}"}}]'.encode()),
        people=raw,
        contacts=msgspec.Raw(b'[{"value":"helena@example.com"}]'),
        addresses=raw,
        enrichments=raw,
        enrichment_history=raw,
        lead_messages=raw,
        webhook_events=raw,
    )


class Rights:
    """A SubjectRights over fakes, sharing the world's clock and tombstones."""

    def __init__(self, world: World) -> None:
        self.holds = FakeErasureHolds(DIGESTER, world.clock)
        world.erasure_holds = self.holds
        self.store = FakeSubjectStore(self.holds)
        self.caches = FakeSubjectCaches()
        self.audit = FakeAuditTrail()
        self.rights = SubjectRights(
            store=self.store,
            caches=self.caches,
            digester=DIGESTER,
            clock=world.clock,
            audit=self.audit,
            hold_days=180,
        )

    def seed(self) -> None:
        self.store.records[HELENA_CPF] = records()
        self.store.contacts[HELENA_CPF] = (["helena@example.com"], ["11987654321"])
        self.caches.entries[HELENA_CPF] = {"dossier", "contact:email", "contact:phone"}


DPO = Caller(tenant="acme", key_id="key-1", request_id="req-1")


async def test_export_answers_the_stored_records_and_the_audit_records_and_is_audited() -> None:
    rights = Rights(World())
    rights.seed()
    with caller_scope(DPO):
        first = await rights.rights.export("390.533.447-05")
        second = await rights.rights.export(HELENA_CPF)
    assert first.cpf == HELENA_CPF
    assert bytes(first.records.parties) == bytes(records().parties)
    assert first.audit == []  # nothing recorded about her before the first export
    # The second export lists the first: who (tenant, key), what, when; never the CPF.
    [earlier] = second.audit
    assert (earlier.operation, earlier.tenant, earlier.key_id, earlier.request_id) == (
        "subject_export",
        "acme",
        "key-1",
        "req-1",
    )
    assert earlier.subject == DIGESTER.digest(HELENA_CPF)
    assert HELENA_CPF not in msgspec.json.encode(rights.audit.records).decode()


async def test_export_of_an_invalid_cpf_is_a_400_on_cpf_and_unknown_is_404() -> None:
    rights = Rights(World())
    with pytest.raises(InvalidInput) as invalid:
        await rights.rights.export("12345678900")
    assert invalid.value.field == "cpf"
    with pytest.raises(NotFound) as unknown:
        await rights.rights.export(HELENA_CPF)
    assert unknown.value.detail == "No data is stored about this person"
    assert rights.audit.records == []


async def test_erasure_removes_records_and_caches_leaves_a_tombstone_and_is_audited() -> None:
    world = World()
    rights = Rights(world)
    rights.seed()
    with caller_scope(DPO):
        result = await rights.rights.erase(HELENA_CPF, consent_withdrawn=True)
    assert result.removed.parties == 1
    assert result.removed.contacts == 2
    assert result.cache_entries == 3
    assert result.consent_withdrawn is True
    assert HELENA_CPF not in rights.store.records
    assert rights.caches.entries == {}
    erased_at = dt.datetime.fromtimestamp(world.clock.now(), dt.UTC)
    assert result.erased_at == erased_at.isoformat().replace("+00:00", "Z")
    assert result.hold_until == (erased_at + dt.timedelta(days=180)).isoformat().replace(
        "+00:00", "Z"
    )
    tombstone = rights.holds.tombstones[DIGESTER.digest(HELENA_CPF)]
    assert (tombstone.tenant, tombstone.key_id, tombstone.consent_withdrawn) == (
        "acme",
        "key-1",
        True,
    )
    assert [r.operation for r in rights.audit.records] == ["subject_erasure"]
    # No identifier in the answer.
    assert HELENA_CPF not in msgspec.json.encode(result).decode()
    assert "helena" not in msgspec.json.encode(result).decode()


async def test_a_second_erasure_and_an_export_of_the_erased_are_404_with_the_date() -> None:
    world = World()
    rights = Rights(world)
    rights.seed()
    first = await rights.rights.erase(HELENA_CPF)
    world.clock.advance(3600)
    with pytest.raises(NotFound) as again:
        await rights.rights.erase(HELENA_CPF)
    assert first.erased_at in again.value.detail
    assert HELENA_CPF not in again.value.detail
    with pytest.raises(NotFound) as export:
        await rights.rights.export(HELENA_CPF)
    assert first.erased_at in export.value.detail


# --- the hold on re-buying an erased person -----------------------------------------------


def erased_world() -> tuple[World, FakeErasureHolds]:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    holds = FakeErasureHolds(DIGESTER, world.clock)
    erased_at = dt.datetime.fromtimestamp(world.clock.now(), dt.UTC)
    holds.tombstones[DIGESTER.digest(HELENA_CPF)] = Tombstone(
        subject=DIGESTER.digest(HELENA_CPF),
        erased_at=erased_at,
        hold_until=erased_at + dt.timedelta(days=180),
    )
    world.erasure_holds = holds
    return world, holds


async def test_a_lookup_of_an_erased_person_is_refused_without_a_work_api_call() -> None:
    world, _holds = erased_world()
    with pytest.raises(SubjectErased) as refused:
        await lookup_customer(world.enricher(), CustomerQuery(cpf=HELENA_CPF), now=NOW)
    assert world.work_api.calls == []
    outcome = error_outcome(refused.value)
    assert outcome.status == 451
    assert HELENA_CPF not in outcome.detail
    assert "consent=true" in outcome.detail
    # A batch item is refused alone, with the same status.
    [item] = await lookup_batch(world.enricher(), [CustomerQuery(cpf=HELENA_CPF)], now=NOW)
    assert item.error is not None
    assert item.error.status == 451
    assert world.work_api.calls == []


async def test_renewed_consent_lifts_the_hold_and_the_person_is_fetched_again() -> None:
    world, holds = erased_world()
    found = await lookup_customer(
        world.enricher(), CustomerQuery(cpf=HELENA_CPF, consent=True), now=NOW
    )
    assert found.personal_info.cpf == HELENA_CPF
    assert world.work_api.calls == [HELENA_CPF]
    assert holds.tombstones[DIGESTER.digest(HELENA_CPF)].lifted_at is not None
    assert await holds.held(HELENA_CPF) is None


async def test_the_hold_ends_after_its_days() -> None:
    world, _holds = erased_world()
    world.clock.advance(181 * DAY)
    await lookup_customer(world.enricher(), CustomerQuery(cpf=HELENA_CPF), now=NOW)
    assert world.work_api.calls == [HELENA_CPF]


async def test_a_lead_of_an_erased_person_is_processed_without_their_enrichment() -> None:
    world, _holds = erased_world()
    world.c2s.leads[LEAD_ID] = Lead(
        id=LEAD_ID,
        customer=LeadCustomer(id="c1", name="Helena Duarte", phone="+55 11 98765-4321"),
    )
    world.diretrix.by_phone["11987654321"] = [CpfCandidate(name="HELENA DUARTE", cpf=HELENA_CPF)]
    result = await world.enricher().process_lead(LEAD_ID)
    assert result.success is False
    assert result.message == ERASED_NOT_ENRICHED
    assert world.work_api.calls == []
    assert world.c2s.messages == {}
    assert world.repository.rows == {}
    # The webhook job's preparation fails for good (not an outage to retry).
    with pytest.raises(SubjectErased):
        await world.enricher().prepare_event(world.c2s.leads[LEAD_ID])
    with pytest.raises(SubjectErased):
        await world.enricher().enrich_lead(LEAD_ID)
    assert world.work_api.calls == []


async def test_a_cached_dossier_is_served_without_asking_for_the_hold() -> None:
    # The hot path: a cache hit makes no tombstone round trip (the erasure emptied the cache;
    # only a consented fetch fills it again).
    world, holds = erased_world()
    world.dossier_cache.entries["cpf:" + HELENA_CPF] = HELENA
    modules = WorkModules(
        work_api=world.work_api,
        cache=world.dossier_cache,
        flags=world.enricher().flags,
        single_flight=world.enricher().single_flight,
        erasure_holds=holds,
    )
    assert await modules.all_modules(HELENA_CPF) == HELENA
    assert holds.checks == 0
    del world.dossier_cache.entries["cpf:" + HELENA_CPF]
    with pytest.raises(SubjectErased):
        await modules.all_modules(HELENA_CPF)
    assert holds.checks == 1
    assert world.work_api.calls == []
