"""The customer use cases behind thin handlers: batch lookups, a stored customer, basic leads;
against the in-memory fakes."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest

from domain.customers import (
    BasicLead,
    CustomerQuery,
    get_customer,
    lookup_batch,
    process_basic_lead,
)
from domain.errors import ErrorOutcome, NotFound
from domain.flags import FeatureDisabled, Flag, StaticFlags
from domain.models import Party
from tests.support.fakes import World

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
HELENA_CPF = "39053344705"
HELENA = (GOLDEN / "dossier_helena.json").read_bytes()
NOW = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)


def helena_world() -> World:
    world = World()
    world.work_api.dossiers = {HELENA_CPF: HELENA}
    return world


# --- batch ---------------------------------------------------------------------------------------


async def test_batch_answers_each_item_in_order_with_its_own_outcome() -> None:
    world = helena_world()
    outcomes = await lookup_batch(
        world.enricher(),
        [
            CustomerQuery(cpf=HELENA_CPF),
            CustomerQuery(cpf="12345678900"),
            CustomerQuery(name="Nobody Here"),
        ],
        now=NOW,
    )
    assert outcomes[0].customer is not None
    assert outcomes[0].customer.personal_info.cpf == HELENA_CPF
    assert outcomes[0].error is None
    assert outcomes[1].customer is None
    assert outcomes[1].error is not None
    assert (outcomes[1].error.status, outcomes[1].error.field) == (400, "cpf")
    assert outcomes[2].error == ErrorOutcome(
        status=404, detail="Customer not found in database or Work API"
    )


async def test_batch_items_failing_upstream_get_the_fixed_server_texts() -> None:
    world = helena_world()
    world.work_api.failing.add(HELENA_CPF)
    outcomes = await lookup_batch(world.enricher(), [CustomerQuery(cpf=HELENA_CPF)], now=NOW)
    # The Work API answered 500: the lookup reports "not found", a 404 with its own text.
    assert outcomes[0].error is not None
    assert outcomes[0].error.status == 404
    world.work_api.down = True
    [down] = await lookup_batch(world.enricher(), [CustomerQuery(cpf=HELENA_CPF)], now=NOW)
    assert down.error == ErrorOutcome(status=503, detail="Service unavailable")


async def test_batch_with_its_flag_off_is_refused_before_any_lookup() -> None:
    world = helena_world()
    flags = StaticFlags({Flag.ENABLE_BATCH.value: False})
    with pytest.raises(FeatureDisabled):
        await lookup_batch(world.enricher(flags=flags), [CustomerQuery(cpf=HELENA_CPF)], now=NOW)
    assert world.work_api.calls == []


async def test_batch_lookups_never_exceed_the_concurrency_bound() -> None:
    world = helena_world()
    world.work_api.delay_s = 0.01
    cpfs = [HELENA_CPF] * 5
    outcomes = await lookup_batch(
        world.enricher(), [CustomerQuery(cpf=c) for c in cpfs], now=NOW, concurrency=1
    )
    assert all(o.customer is not None for o in outcomes)
    # One at a time: the first stores Helena, the others find her in the database.
    assert world.work_api.calls == [HELENA_CPF]


# --- stored customer -----------------------------------------------------------------------------


async def test_a_stored_person_is_found_by_id() -> None:
    world = helena_world()
    enricher = world.enricher()
    [outcome] = await lookup_batch(enricher, [CustomerQuery(cpf=HELENA_CPF)], now=NOW)
    assert outcome.customer is not None
    party_id = uuid.UUID(outcome.customer.metadata.party_id or "")
    found = await get_customer(enricher, party_id)
    assert found.party.cpf_cnpj == HELENA_CPF


async def test_an_unknown_id_or_a_company_is_not_found() -> None:
    world = World()
    company = Party(id=uuid.uuid4(), party_type="company", cpf_cnpj=None, full_name="ACME")
    world.repository.add_party(company)
    for party_id in (uuid.uuid4(), company.id):
        with pytest.raises(NotFound) as caught:
            await get_customer(world.enricher(), party_id)
        assert caught.value.detail == f"Customer with id {party_id} not found"


# --- basic lead ----------------------------------------------------------------------------------


async def test_a_basic_lead_is_looked_up_and_answered_with_the_stored_person() -> None:
    world = helena_world()
    result = await process_basic_lead(
        world.enricher(), BasicLead(name="Helena", cpf=HELENA_CPF), now=NOW
    )
    assert result.success
    assert result.message == "Lead processed and enriched successfully"
    assert result.customer is not None
    assert result.customer.party.cpf_cnpj == HELENA_CPF
    assert result.customer.contacts


async def test_a_basic_lead_uses_its_first_phone() -> None:
    world = helena_world()
    enricher = world.enricher()
    await process_basic_lead(enricher, BasicLead(name="Helena", cpf=HELENA_CPF), now=NOW)
    phone = next(
        c.value
        for row in world.repository.rows.values()
        for c in row.contacts
        if c.contact_type != "email"
    )
    result = await process_basic_lead(
        enricher, BasicLead(name="Zz", phones=[phone, "not a phone"]), now=NOW
    )
    assert result.success
    assert result.customer is not None
    assert result.customer.party.cpf_cnpj == HELENA_CPF


async def test_a_basic_lead_with_invalid_or_unknown_identifiers_names_the_reason() -> None:
    world = World()
    invalid = await process_basic_lead(
        world.enricher(), BasicLead(name="Helena", cpf="12345678900"), now=NOW
    )
    assert not invalid.success
    assert invalid.message.startswith("Failed to enrich lead: ")
    assert invalid.customer is None
    unknown = await process_basic_lead(world.enricher(), BasicLead(name="Nobody Here"), now=NOW)
    assert unknown.message == "Failed to enrich lead: Customer not found in database or Work API"


async def test_a_basic_lead_whose_upstream_is_down_hides_the_cause() -> None:
    world = World()
    world.work_api.down = True
    result = await process_basic_lead(
        world.enricher(), BasicLead(name="Helena", cpf=HELENA_CPF), now=NOW
    )
    assert (result.success, result.message) == (False, "Failed to enrich lead: dependency failure")


async def test_a_basic_lead_found_without_contacts_is_unsuccessful() -> None:
    world = World()
    world.repository.add_party(
        Party(id=uuid.uuid4(), party_type="person", cpf_cnpj=HELENA_CPF, full_name="Helena")
    )
    result = await process_basic_lead(
        world.enricher(), BasicLead(name="Helena", cpf=HELENA_CPF), now=NOW
    )
    assert (result.success, result.message, result.customer) == (
        False,
        "No contact data found for lead",
        None,
    )
