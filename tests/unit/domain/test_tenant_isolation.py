"""``/leads/process`` dedup is per tenant: no tenant sees another's lock, replay or CPF marks."""

from __future__ import annotations

from domain.tenancy import tenant_scope
from tests.unit.domain.test_pipeline import HELENA_CPF, LEAD_ID, same_person, world_with_lead


async def test_a_finished_lead_is_not_replayed_to_another_tenant() -> None:
    world = world_with_lead()
    same_person(world)
    enricher = world.enricher()
    with tenant_scope("tenant-a"):
        first = await enricher.process_lead(LEAD_ID)
    with tenant_scope("tenant-b"):
        other = await enricher.process_lead(LEAD_ID)
    with tenant_scope("tenant-a"):
        again = await enricher.process_lead(LEAD_ID)
    assert first.success
    assert first.cpfs_processed == [HELENA_CPF]
    assert other.duplicate_request is None  # B's own processing, not A's stored answer
    assert other.success
    assert again.duplicate_request is True  # A still gets its own replay
    assert again.message == first.message


async def test_a_lead_in_flight_for_one_tenant_does_not_block_another() -> None:
    world = world_with_lead()
    same_person(world)
    enricher = world.enricher()
    assert world.lead_locks is not None
    with tenant_scope("tenant-a"):
        await world.lead_locks.acquire(LEAD_ID)  # A's worker is processing it
    with tenant_scope("tenant-b"):
        result = await enricher.process_lead(LEAD_ID)
    assert result.duplicate_request is None
    assert result.success


async def test_recent_cpfs_of_one_tenant_do_not_skip_another_tenants_lead() -> None:
    world = world_with_lead()
    same_person(world)
    enricher = world.enricher()
    assert world.recent_cpfs is not None
    with tenant_scope("tenant-a"):
        await world.recent_cpfs.mark([HELENA_CPF])
    with tenant_scope("tenant-b"):
        result = await enricher.process_lead(LEAD_ID)
    assert result.message.startswith("Successfully processed")
    assert result.entities_stored == 1
    assert len(world.c2s.messages[LEAD_ID]) == 1
