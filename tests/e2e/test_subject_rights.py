"""Data-subject rights end to end (docs/security.md, "LGPD"): a person seeded through the real
pipeline and the sandbox is exported, erased from every table and from Redis, not bought again
during the hold (no Work API call), and bought again with renewed consent.

The app here has its own Redis key prefix, so "the whole keyspace" is this module's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from app.config import load_settings
from app.main import create_app
from domain.documents import format_cpf
from tests.support.db import REDIS_BASE_URL
from tests.support.factories import issue_key
from tests.support.polling import wait_until
from tests.support.sandbox import PEOPLE, WEBHOOK_SECRET

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import asyncpg
    from litestar import Litestar

    from tests.support.sandbox import SandboxAdmin

pytestmark = pytest.mark.integration

PERSON = 377  # used by no other test
TEXT_TYPES = ("text", "character varying", "character", "json", "jsonb", "ARRAY")


@pytest.fixture(scope="module")
def prefix(e2e_env: dict[str, str]) -> str:
    return e2e_env["REDIS_KEY_PREFIX"] + "subjects:"


@pytest.fixture(scope="module")
async def app_client(e2e_env: dict[str, str], prefix: str) -> AsyncIterator[Any]:
    settings = load_settings({**e2e_env, "REDIS_KEY_PREFIX": prefix})
    async with AsyncTestClient(app=create_app(settings), timeout=30) as test_client:
        yield test_client


@pytest.fixture(scope="module")
async def redis(prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_BASE_URL)
    try:
        yield client
    finally:
        await client.aclose()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def work_api_calls(sandbox: SandboxAdmin) -> int:
    return sum((await sandbox.counters()).get("work_api", {}).values())


async def tables_naming(db: asyncpg.Pool, needles: list[str]) -> list[str]:
    """Every ``schema.table.column`` (text, json, arrays, bytea) holding one of ``needles``."""
    columns = await db.fetch(
        """
        SELECT c.table_schema, c.table_name, c.column_name, c.data_type
          FROM information_schema.columns AS c
          JOIN information_schema.tables AS t
            ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE t.table_type = 'BASE TABLE'
           AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
           AND c.data_type = ANY($1::text[] || ARRAY['bytea'])
        """,
        list(TEXT_TYPES),
    )
    assert columns
    patterns = [f"%{n.lower()}%" for n in needles]
    found: list[str] = []
    for col in columns:
        where = f'"{col["table_schema"]}"."{col["table_name"]}"'
        name = f'"{col["column_name"]}"'
        if col["data_type"] == "bytea":
            query = f"SELECT count(*) FROM {where} WHERE " + " OR ".join(  # noqa: S608
                f"position(${i + 1}::bytea in {name}) > 0" for i in range(len(needles))
            )
            hits = await db.fetchval(query, *(n.encode() for n in needles))
        else:
            query = f"SELECT count(*) FROM {where} WHERE lower({name}::text) LIKE ANY($1)"  # noqa: S608
            hits = await db.fetchval(query, patterns)
        if hits:
            found.append(f"{col['table_schema']}.{col['table_name']}.{col['column_name']}")
    return found


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


async def redis_naming(client: aioredis.Redis, prefix: str, needles: list[str]) -> list[str]:
    """Every key under ``prefix`` whose name or value holds one of ``needles``."""
    wanted = [n.lower().encode() for n in needles]
    found: list[str] = []
    async for name in client.scan_iter(match=f"{prefix}*", count=1000):
        kind = _bytes(await client.type(name)).decode()
        parts: list[object] = [name]
        if kind == "string":
            parts.append(await client.get(name) or b"")
        elif kind == "hash":
            for field, value in (await client.hgetall(name)).items():
                parts += [field, value]
        elif kind == "set":
            parts += list(await client.smembers(name))
        elif kind == "zset":
            parts += list(await client.zrange(name, 0, -1))
        elif kind == "list":
            parts += list(await client.lrange(name, 0, -1))
        text = b"\x00".join(_bytes(part) for part in parts).lower()
        if any(n in text for n in wanted):
            found.append(_bytes(name).decode())
    return found


class Seeded(msgspec.Struct, frozen=True):
    cpf: str
    lead_id: str
    needles: list[str]


async def seed(
    client: AsyncTestClient[Litestar],
    sandbox: SandboxAdmin,
    db: asyncpg.Pool,
    enrich: dict[str, str],
) -> Seeded:
    """The person through the real pipeline: a webhook event (queued), then the lead processed."""
    cpf = PEOPLE.cpf_for(PERSON)
    lead = await sandbox.create_lead(person_index=PERSON)
    event = {
        "id": lead["lead_id"],
        "hook_action": "on_update_lead",
        "attributes": {"updated_at": "2026-12-01 07:00:00.000 -0300", "customer": lead["customer"]},
    }
    accepted = await client.post(
        "/api/v1/webhooks/c2s", json=event, headers={"X-Webhook-Token": WEBHOOK_SECRET}
    )
    assert accepted.status_code == 200, accepted.text
    processed = await client.get(
        "/api/v1/leads/process", params={"id": lead["lead_id"]}, headers=enrich
    )
    assert processed.json()["success"] is True, processed.text
    assert processed.json()["cpfs_processed"] == [cpf]
    contacts = await db.fetch(
        "SELECT c.value FROM core.party_contacts c JOIN core.parties p ON p.id = c.party_id "
        "WHERE p.cpf_cnpj = $1",
        cpf,
    )
    values = [r["value"] for r in contacts]
    assert values
    customer = lead["customer"]
    needles = [cpf, format_cpf(cpf), *values]
    needles += [v for v in (customer.get("email"), customer.get("phone")) if v]
    return Seeded(cpf=cpf, lead_id=lead["lead_id"], needles=needles)


STORED = {
    "parties": "SELECT to_json(p)::text AS j FROM core.parties p WHERE cpf_cnpj = $1",
    "people": "SELECT to_json(x)::text AS j FROM core.people x JOIN core.parties p "
    "ON p.id = x.party_id WHERE p.cpf_cnpj = $1",
    "contacts": "SELECT to_json(x)::text AS j FROM core.party_contacts x JOIN core.parties p "
    "ON p.id = x.party_id WHERE p.cpf_cnpj = $1",
    "enrichments": "SELECT to_json(x)::text AS j FROM core.party_enrichments x "
    "JOIN core.parties p ON p.id = x.party_id WHERE p.cpf_cnpj = $1",
    "enrichment_history": "SELECT to_json(x)::text AS j FROM core.party_enrichment_history x "
    "JOIN core.parties p ON p.id = x.party_id WHERE p.cpf_cnpj = $1",
}


async def assert_export_has_every_stored_field(
    db: asyncpg.Pool, seeded: Seeded, body: dict[str, Any]
) -> None:
    assert body["cpf"] == seeded.cpf
    records = body["records"]
    for section, query in STORED.items():
        rows = [msgspec.json.decode(r["j"]) for r in await db.fetch(query, seeded.cpf)]
        assert rows, section
        for row in rows:
            assert row in records[section], section  # every column, every value
    addresses = await db.fetch(
        "SELECT to_json(a)::text AS j FROM core.addresses a JOIN core.party_addresses l "
        "ON l.address_id = a.id JOIN core.parties p ON p.id = l.party_id WHERE p.cpf_cnpj = $1",
        seeded.cpf,
    )
    assert addresses
    exported_addresses = [a["address"] for a in records["addresses"]]
    for row in addresses:
        assert msgspec.json.decode(row["j"]) in exported_addresses
    # The raw upstream payload is exported (source and time with it).
    [current] = records["enrichments"]
    assert current["provider"] == "work_api"
    assert current["enriched_at"]
    assert current["raw_payload"]
    assert [m["lead_id"] for m in records["lead_messages"]] == [seeded.lead_id]
    assert [e["lead_id"] for e in records["webhook_events"]] == [seeded.lead_id]
    assert isinstance(body["audit"], list)


async def test_export_erase_hold_and_consent(
    app_client: AsyncTestClient[Litestar],
    sandbox: SandboxAdmin,
    db: asyncpg.Pool,
    redis: aioredis.Redis,
    prefix: str,
    database_url: str,
) -> None:
    enrich = auth((await issue_key(database_url, tenant="lgpd", scopes="read,enrich"))[0])
    dpo = auth((await issue_key(database_url, tenant="lgpd", scopes="dpo"))[0])
    admin = auth((await issue_key(database_url, tenant="lgpd", scopes="admin"))[0])
    seeded = await seed(app_client, sandbox, db, enrich)
    cpf, needles = seeded.cpf, seeded.needles
    assert await tables_naming(db, needles)  # the scan sees the seeded person
    assert await redis_naming(redis, prefix, [cpf])  # dossier and contact caches name the CPF

    # --- the dpo scope alone may export or erase; admin does not grant it ---
    assert (await app_client.get(f"/api/v1/subjects/{cpf}", headers=admin)).status_code == 403
    assert (await app_client.get(f"/api/v1/subjects/{cpf}", headers=enrich)).status_code == 403
    allowed = await app_client.options(f"/api/v1/subjects/{cpf}")
    assert allowed.headers["allow"] == "DELETE, GET, OPTIONS"
    invalid = await app_client.get("/api/v1/subjects/12345678900", headers=dpo)
    assert invalid.status_code == 400
    assert "12345678900" not in invalid.text

    # --- export: every stored field of the person, and the audit records about them ---
    async def exported_with_audit() -> Any:
        answer = await app_client.get(f"/api/v1/subjects/{format_cpf(cpf)}", headers=dpo)
        assert answer.status_code == 200, answer.text
        operations = {r["operation"] for r in answer.json()["audit"]}
        return answer if "lead" in operations else None  # the lead processing, once flushed

    exported: Any = await wait_until(exported_with_audit, 10, what="the lead's audit record")
    await assert_export_has_every_stored_field(db, seeded, exported.json())

    # --- erasure ---
    erased = await app_client.delete(
        f"/api/v1/subjects/{cpf}", params={"consent_withdrawn": "true"}, headers=dpo
    )
    assert erased.status_code == 200, erased.text
    result = erased.json()
    assert result["removed"]["parties"] == 1
    assert result["removed"]["webhook_events"] == 1
    assert result["removed"]["lead_messages"] == 1
    assert result["cache_entries"] >= 2
    assert result["consent_withdrawn"] is True
    assert cpf not in erased.text
    assert await tables_naming(db, needles) == []
    assert await redis_naming(redis, prefix, needles) == []
    # The queued webhook event is terminal now: its job will not process the person.
    status = await db.fetchval(
        "SELECT status FROM core.webhook_events WHERE lead_id = $1", seeded.lead_id
    )
    assert status == "failed"
    tombstone = await db.fetchrow("SELECT * FROM core.erasures WHERE consent_withdrawn")
    assert tombstone is not None
    assert cpf not in str(dict(tombstone))
    # The export and the erasure are in the audit trail, under the person's digest.
    subject = tombstone["subject"]

    async def audited() -> bool:
        rows = await db.fetch(
            "SELECT DISTINCT operation FROM audit.access_log WHERE subject = $1 AND tenant = $2",
            subject,
            "lgpd",
        )
        return {"subject_export", "subject_erasure"} <= {r["operation"] for r in rows}

    await wait_until(audited, 10, what="the export and erasure audit records")

    # --- a second erasure, and an export, are 404 with the erasure's date ---
    again = await app_client.delete(f"/api/v1/subjects/{cpf}", headers=dpo)
    assert again.status_code == 404
    assert result["erased_at"] in again.json()["detail"]
    assert cpf not in again.text
    gone = await app_client.get(f"/api/v1/subjects/{cpf}", headers=dpo)
    assert gone.status_code == 404
    assert result["erased_at"] in gone.json()["detail"]

    await assert_held_then_consented(app_client, sandbox, db, seeded, enrich)
    # Clean up for other tests of the session database.
    assert (await app_client.delete(f"/api/v1/subjects/{cpf}", headers=dpo)).status_code == 200


async def assert_held_then_consented(
    client: AsyncTestClient[Litestar],
    sandbox: SandboxAdmin,
    db: asyncpg.Pool,
    seeded: Seeded,
    enrich: dict[str, str],
) -> None:
    """During the hold nothing buys the person again; renewed consent lifts it."""
    cpf = seeded.cpf
    before = await work_api_calls(sandbox)
    refused = await client.get("/api/v1/contributor/customer", params={"cpf": cpf}, headers=enrich)
    assert refused.status_code == 451, refused.text
    assert refused.json()["type"] == "https://c2s-api.dev/problems/subject-erased"
    assert cpf not in refused.text
    module = await client.get("/api/v1/work/modules/all", params={"documento": cpf}, headers=enrich)
    assert module.status_code == 451
    lead_again = await client.get(
        "/api/v1/leads/process", params={"id": seeded.lead_id}, headers=enrich
    )
    assert lead_again.json()["success"] is False
    assert "erased" in lead_again.json()["message"]
    assert await work_api_calls(sandbox) == before
    assert await db.fetchval("SELECT count(*) FROM core.parties WHERE cpf_cnpj = $1", cpf) == 0

    consented = await client.get(
        "/api/v1/contributor/customer", params={"cpf": cpf, "consent": "true"}, headers=enrich
    )
    assert consented.status_code == 200, consented.text
    assert await work_api_calls(sandbox) == before + 1
    assert await db.fetchval("SELECT count(*) FROM core.parties WHERE cpf_cnpj = $1", cpf) == 1
    lifted = await db.fetchval("SELECT lifted_at FROM core.erasures WHERE consent_withdrawn")
    assert lifted is not None
