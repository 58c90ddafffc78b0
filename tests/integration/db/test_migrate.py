"""dbmate migrations against a real PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from infra.db.migrate import MIGRATIONS_DIR, MigrationError, migrate, migrate_status, run_dbmate
from tests.support.db import create_database

pytestmark = pytest.mark.integration

# The tables of the party model and of the features built on it; later migrations may add more.
EXPECTED_TABLES = {
    "addresses",
    "api_keys",
    "companies",
    "idempotency_records",
    "parties",
    "party_addresses",
    "party_contacts",
    "party_enrichment_history",
    "party_enrichments",
    "people",
    "webhook_events",
}


def _migration_files() -> list[str]:
    return sorted(path.name for path in MIGRATIONS_DIR.glob("*.sql"))


def test_migration_files_are_named_for_dbmate() -> None:
    files = _migration_files()
    assert files
    for name in files:
        version, _, rest = name.partition("_")
        assert len(version) == 14, name
        assert version.isdigit(), name
        assert rest.endswith(".sql"), name
        text = (MIGRATIONS_DIR / name).read_text()
        assert "-- migrate:up" in text, name
        assert "-- migrate:down" in text, name


async def test_migrate_creates_missing_database_and_is_idempotent(
    scratch_database: tuple[str, str],
) -> None:
    _, url = scratch_database

    await migrate(url)  # the database does not exist yet: dbmate creates it
    await migrate(url)  # nothing pending: a no-op

    status = await migrate_status(url)
    assert status.up_to_date
    assert list(status.applied) == _migration_files()
    conn = await asyncpg.connect(url)
    try:
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'core'")
        }
        versions = await conn.fetchval("SELECT count(*) FROM public.schema_migrations")
    finally:
        await conn.close()
    assert tables >= EXPECTED_TABLES
    assert versions == len(_migration_files())


async def test_status_of_an_empty_database_lists_everything_pending(
    scratch_database: tuple[str, str],
) -> None:
    name, url = scratch_database
    await create_database(name)

    status = await migrate_status(url)

    assert status.applied == ()
    assert list(status.pending) == _migration_files()
    assert not status.up_to_date


async def test_session_database_is_fully_migrated(database_url: str) -> None:
    status = await migrate_status(database_url)

    assert status.up_to_date
    assert list(status.applied) == _migration_files()


def test_unreachable_server_fails_fast_without_leaking_the_password() -> None:
    url = "postgresql://postgres:s3cr3t-pw@127.0.0.1:1/nothing"

    with pytest.raises(MigrationError) as caught:
        run_dbmate(["status"], url, wait_timeout_s=1)

    assert "s3cr3t-pw" not in str(caught.value)


async def test_concurrent_migrations_wait_for_each_other(
    scratch_database: tuple[str, str],
) -> None:
    name, url = scratch_database
    await create_database(name)

    await asyncio.gather(migrate(url), migrate(url), migrate(url))

    assert (await migrate_status(url)).up_to_date
