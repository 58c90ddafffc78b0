"""The lead-message record in PostgreSQL (docs/contract.md §2, "One message per lead")."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import pytest

from domain.tenancy import current_tenant
from infra.db.lead_messages import PgLeadMessages

if TYPE_CHECKING:
    import asyncpg

pytestmark = pytest.mark.integration

CONTACT = "phone:11987654321\nemail:helena@example.com"
OTHER = "phone:11987654321\nemail:helena2@example.com"


@pytest.fixture
def record(db_pool: asyncpg.Pool) -> PgLeadMessages:
    return PgLeadMessages(db_pool, salt=b"test-salt")


async def test_one_of_many_concurrent_claims_wins_and_the_contacts_are_not_stored(
    record: PgLeadMessages, db_pool: asyncpg.Pool
) -> None:
    lead_id = uuid.uuid4().hex
    assert not await record.messaged(lead_id, CONTACT)
    won = await asyncio.gather(*(record.claim(lead_id, CONTACT, ["39053344705"]) for _ in range(8)))
    assert sorted(won) == [False] * 7 + [True]
    assert await record.messaged(lead_id, CONTACT)
    row = await db_pool.fetchrow(
        "SELECT contact_digest, cpfs FROM core.lead_messages WHERE lead_id = $1", lead_id
    )
    assert row is not None
    assert "helena" not in row["contact_digest"]
    assert row["cpfs"] == ["39053344705"]


async def test_a_changed_contact_claims_again_and_release_forgets_only_its_own(
    record: PgLeadMessages,
) -> None:
    lead_id = uuid.uuid4().hex
    assert await record.claim(lead_id, CONTACT, ["39053344705"])
    assert await record.claim(lead_id, OTHER, ["71460238001"])
    assert not await record.messaged(lead_id, CONTACT)
    await record.release(lead_id, CONTACT)  # not the recorded one: no effect
    assert await record.messaged(lead_id, OTHER)
    await record.release(lead_id, OTHER)
    assert not await record.messaged(lead_id, OTHER)


async def test_records_are_per_tenant(record: PgLeadMessages) -> None:
    lead_id = uuid.uuid4().hex
    token = current_tenant.set("tenant-a")
    try:
        assert await record.claim(lead_id, CONTACT, [])
    finally:
        current_tenant.reset(token)
    assert not await record.messaged(lead_id, CONTACT)
    assert await record.claim(lead_id, CONTACT, [])
