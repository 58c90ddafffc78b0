"""The benchmark's PostgreSQL database: created once, seeded once, reused, reset between runs.

Seeding a million parties takes about two minutes, so the seeded database is kept and
recognised by its comment (``c2s-bench parties=N seed=S seeded_at=T``): a database whose
comment names another size is dropped and rebuilt. Migrations run every time (``c2s-api
migrate`` is idempotent), so a database seeded before a new migration still gets it.

What a run adds (parties stored by ``/leads/process`` and the worker, webhook events, jobs, API
keys) is removed before and after every run, so each run starts from the same million parties
(seeded rows carry creation dates before ``seeded_at``; everything the app writes is newer).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from typing import TYPE_CHECKING, Final

import asyncpg
import msgspec

from bench.load.procs import python

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "BENCH_TENANT",
    "Database",
    "Identifiers",
    "create_api_key",
    "drop_database",
    "ensure_database",
    "reset_run_state",
    "sample_identifiers",
]

BENCH_TENANT: Final = "bench"
_COMMENT: Final = re.compile(r"^c2s-bench parties=(\d+) seed=(\d+) seeded_at=(\d+)$")
_NAME: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Database(msgspec.Struct, frozen=True, kw_only=True):
    """A ready benchmark database.

    Attributes:
        name: Database name.
        url: Its URL.
        parties: Seeded parties.
        seed: Seed of the synthetic data.
        seeded_at: Unix time of the seeding; rows created later are the runs' own.
        reused: Found already seeded (no seeding in this run).
        seed_seconds: Time spent seeding in this run (0 when reused).
    """

    name: str
    url: str
    parties: int
    seed: int
    seeded_at: int
    reused: bool
    seed_seconds: float


class Identifiers(msgspec.Struct, frozen=True, kw_only=True):
    """Seeded, enriched parties to look up: each found in PostgreSQL with no upstream call."""

    cpfs: list[str]
    emails: list[str]
    phones: list[str]


def _url(admin_url: str, name: str) -> str:
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


def _env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "LOG_LEVEL": "WARNING",
        "OTEL_SDK_DISABLED": "true",
    }


def _migrate(url: str) -> None:
    # The project's own command, as an operator runs it.
    subprocess.run(
        [python(), "-m", "app.cli", "migrate"],
        env=_env(url),
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=300,
    )


def _seed(url: str, parties: int, seed: int, say: Callable[[str], None]) -> float:
    started = time.perf_counter()
    say(f"seeding {parties:,} parties (seed {seed}); about 2 minutes per million")
    subprocess.run(
        [
            python(),
            "-m",
            "infra.db.seed",
            "--url",
            url,
            "--parties",
            str(parties),
            "--seed",
            str(seed),
        ],
        env=_env(url),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=1800,
    )
    return time.perf_counter() - started


async def ensure_database(
    admin_url: str, name: str, parties: int, seed: int, say: Callable[[str], None]
) -> Database:
    """A migrated database named ``name`` holding exactly the seeded ``parties``.

    Reuses the database when its comment says it was seeded with the same size and seed;
    otherwise drops it, creates, migrates and seeds it.
    """
    if not _NAME.match(name):
        raise ValueError(f"invalid database name {name!r}")
    url = _url(admin_url, name)
    admin = await asyncpg.connect(admin_url)
    try:
        comment = await admin.fetchval(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            name,
        )
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        found = _COMMENT.match(comment or "")
        if found and int(found[1]) == parties and int(found[2]) == seed:
            say(f"reusing database {name} ({parties:,} parties)")
            _migrate(url)
            return Database(
                name=name,
                url=url,
                parties=parties,
                seed=seed,
                seeded_at=int(found[3]),
                reused=True,
                seed_seconds=0.0,
            )
        if exists:
            say(f"database {name} has another size or seed: rebuilding it")
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
        _migrate(url)
        seeded_at = int(time.time()) + 1
        seconds = _seed(url, parties, seed, say)
        await admin.execute(
            f'COMMENT ON DATABASE "{name}" IS \'c2s-bench parties={parties} seed={seed} '
            f"seeded_at={seeded_at}'"
        )
        return Database(
            name=name,
            url=url,
            parties=parties,
            seed=seed,
            seeded_at=seeded_at,
            reused=False,
            seed_seconds=round(seconds, 1),
        )
    finally:
        await admin.close()


async def drop_database(admin_url: str, name: str) -> None:
    """Drop a benchmark database (``--drop-db``)."""
    if not _NAME.match(name):
        raise ValueError(f"invalid database name {name!r}")
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def reset_run_state(db: Database) -> dict[str, int]:
    """Remove what benchmark runs wrote: new parties, events, jobs, keys of the bench tenant.

    Returns:
        Rows removed per table, for the log.
    """
    conn = await asyncpg.connect(db.url)
    removed: dict[str, int] = {}
    try:
        since = await conn.fetchval("SELECT to_timestamp($1::double precision)", db.seeded_at)
        for table, sql in (
            # Cascades to people, contacts, enrichments (and their history), party_addresses.
            ("parties", "DELETE FROM core.parties WHERE created_at >= $1"),
            (
                "addresses",
                "DELETE FROM core.addresses AS a WHERE a.created_at >= $1 AND NOT EXISTS "
                "(SELECT 1 FROM core.party_addresses AS pa WHERE pa.address_id = a.id)",
            ),
        ):
            status = await conn.execute(sql, since)
            removed[table] = int(status.rsplit(" ", 1)[1])
        status = await conn.execute("DELETE FROM core.api_keys WHERE tenant = $1", BENCH_TENANT)
        removed["api_keys"] = int(status.rsplit(" ", 1)[1])
        for table in (
            "core.webhook_events",
            "core.idempotency_records",
            "queue.pgqueuer",
            "queue.pgqueuer_log",
        ):
            exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
            if exists:
                # The table names are the constants above, never input.
                count_sql = f"SELECT count(*) FROM {table}"  # noqa: S608
                removed[table] = int(await conn.fetchval(count_sql))
                await conn.execute(f"TRUNCATE {table}")
        if await conn.fetchval("SELECT to_regclass('core.enrich_jobs') IS NOT NULL"):
            removed["core.enrich_jobs"] = int(
                await conn.fetchval("SELECT count(*) FROM core.enrich_jobs")
            )
            await conn.execute("TRUNCATE core.enrich_job_items, core.enrich_jobs")
        # The lookups must see the same statistics and visibility every run.
        await conn.execute("VACUUM (ANALYZE) core.parties")
    finally:
        await conn.close()
    return removed


def create_api_key(db: Database, name: str) -> str:
    """Create an API key of the bench tenant with ``c2s-api keys create``; return the key."""
    out = subprocess.run(
        [
            python(),
            "-m",
            "app.cli",
            "keys",
            "create",
            "--name",
            name,
            "--tenant",
            BENCH_TENANT,
            "--scopes",
            "read,enrich",
        ],
        env=_env(db.url),
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for line in out.splitlines():
        if line.startswith("key:"):
            return line.split(None, 1)[1].strip()
    raise RuntimeError("c2s-api keys create printed no key")


_SAMPLE_SQL: Final = """
WITH sample AS (
    SELECT p.id, p.cpf_cnpj
      FROM core.parties AS p TABLESAMPLE BERNOULLI ($2) REPEATABLE (7)
     WHERE p.enriched AND p.tenant IS NULL AND p.created_at < $3
       AND EXISTS (SELECT 1 FROM core.party_enrichments AS e WHERE e.party_id = p.id)
     LIMIT $1
)
SELECT s.cpf_cnpj AS cpf,
       (SELECT c.value FROM core.party_contacts AS c
         WHERE c.party_id = s.id AND c.contact_type = 'email'
         ORDER BY c.is_primary DESC, c.contact_id LIMIT 1) AS email,
       -- A phone owned by this party only: the newest owner of a shared number might be a
       -- party without enrichment, whose lookup would call the Work API.
       (SELECT c.value FROM core.party_contacts AS c
         WHERE c.party_id = s.id AND c.contact_type IN ('phone', 'whatsapp')
           AND NOT EXISTS (SELECT 1 FROM core.party_contacts AS o
                            WHERE o.value = c.value AND o.party_id <> c.party_id
                              AND o.contact_type IN ('phone', 'whatsapp'))
         ORDER BY c.is_primary DESC, c.contact_id LIMIT 1) AS phone
  FROM sample AS s
"""


async def sample_identifiers(db: Database, count: int) -> Identifiers:
    """``count`` seeded parties with an enrichment: their CPF, an e-mail and a phone each.

    Spread over the whole table (Bernoulli sample, fixed seed: the same parties every run).
    """
    percent = min(100.0, max(0.01, 400.0 * count / max(1, db.parties)))
    conn = await asyncpg.connect(db.url)
    try:
        since = await conn.fetchval("SELECT to_timestamp($1::double precision)", db.seeded_at)
        rows = await conn.fetch(_SAMPLE_SQL, count, percent, since)
    finally:
        await conn.close()
    if len(rows) < min(count, 10):
        raise RuntimeError(f"only {len(rows)} enriched parties found: is the database seeded?")
    return Identifiers(
        cpfs=[r["cpf"] for r in rows],
        emails=[r["email"] for r in rows if r["email"]],
        phones=[r["phone"] for r in rows if r["phone"]],
    )
