"""PgSubjectStore (``infra/db/subjects.py``) on the session database: erasure scoped like the
lookups (another tenant's party is neither exported nor erased), the tombstone's hold and its
lifting, addresses kept while another party lives there."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import msgspec
import pytest

from domain.audit import SubjectDigester
from domain.dossier import decode_dossier
from domain.subjects import Tombstone
from domain.tenancy import tenant_scope
from infra.db.repository import PgPartyRepository
from infra.db.subjects import PgSubjectStore
from tests.support.factories import dossier_payload, encode, new_cpf, new_mobile, new_token

pytestmark = pytest.mark.integration

DIGESTER = SubjectDigester(b"subjects-test-salt")


def _tombstone(cpf: str, *, hold_days: int = 180) -> Tombstone:
    now = dt.datetime.now(dt.UTC)
    return Tombstone(
        subject=DIGESTER.digest(cpf),
        erased_at=now,
        hold_until=now + dt.timedelta(days=hold_days),
        tenant="acme",
        key_id="key-1",
    )


async def _store(repo: PgPartyRepository, cpf: str, street: str) -> None:
    address = {
        "logradouro": street,
        "logradouroNumero": "1",
        "cidade": "SAO PAULO",
        "uf": "SP",
        "cep": "01310100",
    }
    raw = encode(
        dossier_payload(
            cpf,
            emails=(f"{new_token()}@example.com",),
            phones=((new_mobile(), True),),
            addresses=(address,),
        )
    )
    await repo.store_dossier(cpf, decode_dossier(raw), raw, None)


async def test_erasure_is_scoped_to_the_parties_the_tenant_sees(db_pool: asyncpg.Pool) -> None:
    repo = PgPartyRepository(db_pool)
    store = PgSubjectStore(db_pool, DIGESTER, acquire_timeout=2)
    cpf = new_cpf()
    with tenant_scope("tenant-a"):
        await _store(repo, cpf, f"RUA {new_token()}")
    with tenant_scope("tenant-b"):
        assert await store.export(cpf) is None
        assert await store.erase(cpf, _tombstone(cpf)) is None
    assert await store.tombstone(DIGESTER.digest(cpf)) is None  # nothing written
    with tenant_scope("tenant-a"):
        exported = await store.export(cpf)
        assert exported is not None
        erased = await store.erase(cpf, _tombstone(cpf))
    assert erased is not None
    assert erased.counts.parties == 1
    assert erased.counts.contacts == 2
    assert erased.counts.addresses == 1
    assert erased.counts.enrichments == 1
    assert erased.counts.enrichment_history == 1
    assert "" in erased.tenants  # the per-tenant caches of internal callers too
    assert await db_pool.fetchval("SELECT count(*) FROM core.parties WHERE cpf_cnpj = $1", cpf) == 0


async def test_a_shared_address_stays_while_another_party_lives_there(
    db_pool: asyncpg.Pool,
) -> None:
    repo = PgPartyRepository(db_pool)
    store = PgSubjectStore(db_pool, DIGESTER, acquire_timeout=2)
    street = f"RUA COMUM {new_token()}"
    erased_cpf, neighbour = new_cpf(), new_cpf()
    await _store(repo, erased_cpf, street)
    await _store(repo, neighbour, street)
    erased = await store.erase(erased_cpf, _tombstone(erased_cpf))
    assert erased is not None
    assert erased.counts.addresses == 0
    assert (
        await db_pool.fetchval("SELECT count(*) FROM core.addresses WHERE street = $1", street) == 1
    )
    # The neighbour goes too: now nobody lives there, the address goes with them.
    last = await store.erase(neighbour, _tombstone(neighbour))
    assert last is not None
    assert last.counts.addresses == 1


async def test_the_hold_is_held_until_lifted_or_over(db_pool: asyncpg.Pool) -> None:
    repo = PgPartyRepository(db_pool)
    store = PgSubjectStore(db_pool, DIGESTER, acquire_timeout=2)
    cpf, short = new_cpf(), new_cpf()
    for person in (cpf, short):
        await _store(repo, person, f"RUA {new_token()}")
    await store.erase(cpf, _tombstone(cpf))
    await store.erase(short, _tombstone(short, hold_days=0))
    held = await store.held(cpf)
    assert held is not None
    assert (held.tenant, held.key_id) == ("acme", "key-1")
    assert await store.held(short) is None  # a hold of 0 days is over at once
    assert await store.lift(cpf) is True
    assert await store.held(cpf) is None
    assert await store.lift(cpf) is False
    lifted = await store.tombstone(DIGESTER.digest(cpf))
    assert lifted is not None
    assert lifted.lifted_at is not None  # kept as a record
    # A later erasure (the person re-enriched with consent) starts a new hold.
    await _store(repo, cpf, f"RUA {new_token()}")
    assert await store.erase(cpf, _tombstone(cpf)) is not None
    assert await store.held(cpf) is not None


async def test_bulk_job_items_naming_the_person_are_exported_and_cleared(
    scratch_database: tuple[str, str],
) -> None:
    from infra.db.migrate import migrate
    from tests.support.db import create_database

    name, url = scratch_database
    await create_database(name)
    await migrate(url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        repo = PgPartyRepository(pool)
        store = PgSubjectStore(pool, DIGESTER, acquire_timeout=2)
        cpf, other = new_cpf(), new_cpf()
        await _store(repo, cpf, f"RUA {new_token()}")
        email = await pool.fetchval(
            "SELECT c.value FROM core.party_contacts c JOIN core.parties p ON p.id = c.party_id "
            "WHERE p.cpf_cnpj = $1 AND c.contact_type = 'email'",
            cpf,
        )
        job = uuid.uuid4()
        await pool.execute(
            "INSERT INTO core.enrich_jobs (id, tenant, may_fetch, total, open_items) "
            "VALUES ($1, 'acme', true, 4, 1)",
            job,
        )
        await pool.executemany(
            "INSERT INTO core.enrich_job_items (job_id, seq, cpf, email, state, result, "
            "subject_cpf) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)",
            [
                (job, 1, cpf, None, "done", f'{{"cpf": "{cpf}"}}', cpf),  # asked by CPF
                (job, 2, None, email.upper(), "done", f'{{"cpf": "{cpf}"}}', cpf),  # by e-mail
                (job, 3, None, None, "queued", None, None),
                (job, 4, other, None, "done", f'{{"cpf": "{other}"}}', other),  # someone else
            ],
        )
        await pool.execute(
            "UPDATE core.enrich_job_items SET email = $2 WHERE job_id = $1 AND seq = 3",
            job,
            email,
        )
        exported = await store.export(cpf)
        assert exported is not None
        assert exported.enrich_job_items is not None
        items = msgspec.json.decode(exported.enrich_job_items)
        assert sorted(i["seq"] for i in items) == [1, 2, 3]
        erased = await store.erase(cpf, _tombstone(cpf))
        assert erased is not None
        assert erased.counts.enrich_job_items == 3
        rows = {
            r["seq"]: r
            for r in await pool.fetch(
                "SELECT seq, state, cpf, email, result::text AS result, subject_cpf "
                "FROM core.enrich_job_items ORDER BY seq"
            )
        }
        for seq in (1, 2, 3):
            assert cpf not in str(dict(rows[seq]))
            assert email not in str(dict(rows[seq])).lower()
        assert rows[3]["state"] == "queued"  # left to fail in the worker: no identifier left
        assert rows[4]["cpf"] == other  # untouched
    finally:
        await pool.close()
