"""The restore drill (docs/dr.md): back up a seeded database, restore it into a new one, compare.

Everything runs against the session's real PostgreSQL with the real ``pg_dump``/``pg_restore``:
a source database is created, migrated and seeded with 2,000 synthetic parties (plus rows in the
other tables), backed up, and restored into fresh databases; the restored tables must match the
source row for row (counts and content checksums) and the schema must be the migrated one.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import stat
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import msgspec
import pytest

from app.cli import main
from infra.backup import (
    EXIT_OK,
    EXIT_REFUSED,
    IntegrityError,
    Manifest,
    TargetNotEmpty,
    VerificationFailed,
    backup,
    compare_databases,
    database_fingerprint,
    restore,
    verify_checksums,
    with_database,
)
from infra.db.migrate import migrate, migrate_status
from infra.db.seed import seed
from tests.support.db import PG_ADMIN_URL, RUN_ID, create_database, drop_database
from tests.support.factories import issue_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.integration

PARTIES = 2000


def _name(kind: str) -> str:
    return f"c2s_drill_{kind}_{RUN_ID}_{uuid.uuid4().hex[:6]}"


async def _exists(name: str) -> bool:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def _tools() -> None:
    """pg_dump and pg_restore are part of the bootstrap (Debian postgresql); never skip."""
    missing = [tool for tool in ("pg_dump", "pg_restore") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not installed: `bash scripts/bootstrap.sh` installs them "
            "(Debian package postgresql / postgresql-client-15)",
            pytrace=False,
        )


@pytest.fixture(scope="module")
async def source(_tools: None) -> AsyncIterator[str]:
    """A migrated database with 2,000 seeded parties, an API key and idempotency records."""
    name = _name("src")
    url = await create_database(name)
    try:
        await migrate(url)
        await seed(url, PARTIES, seed=7, progress=lambda _line: None)
        await issue_key(url, tenant="tenant-q7", scopes="read,admin")
        conn = await asyncpg.connect(url)
        try:
            await conn.executemany(
                "INSERT INTO core.idempotency_records (tenant, key, request_hash, status_code, "
                "response_body, expires_at) VALUES ('drill', $1, $2, 200, $3, "
                "now() + interval '1 day')",
                [(f"k{i}", bytes([i]) * 32, b'{"ok":true}') for i in range(50)],
            )
        finally:
            await conn.close()
        yield url
    finally:
        await drop_database(name)


@pytest.fixture(scope="module")
async def backup_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backups")


@pytest.fixture(scope="module")
async def dump(source: str, backup_dir: Path) -> Path:
    """One backup of the source, shared by the tests that only read it."""
    result = await backup(source, backup_dir)
    return Path(result.dump)


@pytest.fixture
async def target(source: str) -> AsyncIterator[tuple[str, str]]:
    """A database name (not created) and its URL, dropped after the test."""
    name = _name("dst")
    yield name, with_database(source, name)
    await drop_database(name)


def _copy_backup(dump: Path, into: Path) -> Path:
    """Copy one backup's three files into ``into`` (tests that tamper work on a copy)."""
    into.mkdir(parents=True, exist_ok=True)
    stem = dump.name.removesuffix(".dump")
    for path in dump.parent.iterdir():
        if path.name.startswith(stem):
            shutil.copy2(path, into / path.name)
    return into / dump.name


async def test_backup_writes_a_private_dump_manifest_and_checksums(
    source: str, backup_dir: Path, dump: Path
) -> None:
    stem = dump.name.removesuffix(".dump")
    manifest_path = backup_dir / f"{stem}.manifest.json"
    checksums = backup_dir / f"{stem}.dump.sha256"
    for path in (dump, manifest_path, checksums):
        assert path.is_file()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path  # dumps hold personal data
    assert (await asyncio.to_thread(dump.read_bytes))[:5] == b"PGDMP"  # pg_dump's custom format
    verified = verify_checksums(dump)
    assert set(verified) == {dump.name, manifest_path.name}
    manifest = msgspec.json.decode(manifest_path.read_bytes(), type=Manifest)
    assert manifest.dump_sha256 == verified[dump.name]
    assert manifest.fingerprint.tables["core.parties"].rows == PARTIES
    assert manifest.fingerprint.tables["core.idempotency_records"].rows == 50
    assert manifest.fingerprint.tables["core.api_keys"].rows == 1
    # The manifest was taken in the dumped snapshot: it matches the (idle) source now.
    assert manifest.fingerprint == await database_fingerprint(source)
    # Counts and checksums only: no personal data in the manifest.
    text = manifest_path.read_text()
    assert "@" not in text
    assert "tenant-q7" not in text


async def test_restore_drill_reproduces_every_table_row_and_sequence(
    source: str, dump: Path, target: tuple[str, str]
) -> None:
    _, url = target
    report = await restore(dump, url)
    assert report.created
    assert not report.replaced
    assert report.verified
    source_print = await database_fingerprint(source)
    assert report.tables == len(source_print.tables) >= 10
    assert report.rows == source_print.rows
    # Independently of the restore's own verification: counts and checksums, table by table.
    assert await compare_databases(source, url) == []
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM core.parties") == PARTIES
        indexes = await conn.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE schemaname IN ('core', 'queue')"
        )
    finally:
        await conn.close()
    conn = await asyncpg.connect(source)
    try:
        assert indexes == await conn.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE schemaname IN ('core', 'queue')"
        )
    finally:
        await conn.close()
    # The restored database is at the latest migration: the service can start on it.
    assert (await migrate_status(url)).up_to_date


async def test_a_changed_row_is_caught_by_the_content_checksum(
    source: str, dump: Path, target: tuple[str, str]
) -> None:
    _, url = target
    await restore(dump, url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "UPDATE core.party_contacts SET value = value || 'x' "
            "WHERE contact_id = (SELECT contact_id FROM core.party_contacts ORDER BY 1 LIMIT 1)"
        )
    finally:
        await conn.close()
    rows = (await database_fingerprint(source)).tables["core.party_contacts"].rows
    assert await compare_databases(source, url) == [
        f"core.party_contacts: content checksum differs ({rows} rows)"
    ]


async def test_a_tampered_dump_is_refused_before_anything_is_created(
    dump: Path, target: tuple[str, str], tmp_path: Path
) -> None:
    name, url = target
    copy = _copy_backup(dump, tmp_path / "tampered")
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the middle of the table data
    copy.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match its SHA-256"):
        await restore(copy, url)
    assert not await _exists(name)


async def test_a_tampered_manifest_or_a_missing_checksum_file_is_refused(
    dump: Path, target: tuple[str, str], tmp_path: Path
) -> None:
    name, url = target
    copy = _copy_backup(dump, tmp_path / "manifest")
    manifest = copy.with_name(copy.name.removesuffix(".dump") + ".manifest.json")
    manifest.write_text(manifest.read_text().replace('"rows": 2000', '"rows": 1999'))
    with pytest.raises(IntegrityError):
        await restore(copy, url)
    bare = _copy_backup(dump, tmp_path / "bare")
    bare.with_name(bare.name.removesuffix(".dump") + ".dump.sha256").unlink()
    with pytest.raises(IntegrityError, match="no checksum file"):
        await restore(bare, url)
    assert not await _exists(name)


async def test_a_non_empty_database_is_replaced_only_with_force(
    source: str, dump: Path, target: tuple[str, str]
) -> None:
    _, url = target
    await restore(dump, url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE core.local_change (id int)")
    finally:
        await conn.close()
    with pytest.raises(TargetNotEmpty, match="--force"):
        await restore(dump, url)
    conn = await asyncpg.connect(url)
    try:  # untouched by the refused restore
        assert await conn.fetchval("SELECT to_regclass('core.local_change')") is not None
    finally:
        await conn.close()
    report = await restore(dump, url, force=True)
    assert report.replaced
    assert await compare_databases(source, url) == []


async def test_an_existing_empty_database_is_filled(
    source: str, dump: Path, target: tuple[str, str]
) -> None:
    name, url = target
    await create_database(name)  # as a managed provider hands it out
    report = await restore(dump, url)
    assert not report.created
    assert await compare_databases(source, url) == []


async def test_the_backup_is_consistent_while_the_service_writes(
    source: str, tmp_path: Path, target: tuple[str, str]
) -> None:
    """Rows written during the backup are either in both the dump and the manifest or in
    neither: both read one exported snapshot."""
    _, url = target
    stop = asyncio.Event()

    async def writer() -> int:
        conn = await asyncpg.connect(source)
        written = 0
        try:
            while not stop.is_set():
                await conn.execute(
                    "INSERT INTO core.idempotency_records (tenant, key, request_hash, "
                    "expires_at) VALUES ('busy', $1, '\\x00', now() + interval '1 day')",
                    uuid.uuid4().hex,
                )
                written += 1
                await asyncio.sleep(0)
        finally:
            await conn.close()
        return written

    task = asyncio.create_task(writer())
    await asyncio.sleep(0.05)
    try:
        result = await backup(source, tmp_path)
    finally:
        stop.set()
        written = await task
    assert written > 0
    report = await restore(result.dump, url)  # verification against the manifest passes
    assert report.verified
    conn = await asyncpg.connect(source)
    try:  # and the source went on changing meanwhile: the dump is a point in time
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM core.idempotency_records WHERE tenant = 'busy'"
            )
            == written
        )
        await conn.execute("DELETE FROM core.idempotency_records WHERE tenant = 'busy'")
    finally:
        await conn.close()


async def test_verification_failure_keeps_the_database_for_inspection(
    source: str, dump: Path, target: tuple[str, str], tmp_path: Path
) -> None:
    """A manifest that disagrees with its (consistently checksummed) dump is reported, not
    hidden; the restored database stays for the operator to look at."""
    name, url = target
    copy = _copy_backup(dump, tmp_path / "lying")
    stem = copy.name.removesuffix(".dump")
    manifest_path = copy.with_name(f"{stem}.manifest.json")
    manifest = msgspec.json.decode(manifest_path.read_bytes(), type=Manifest)
    tables = dict(manifest.fingerprint.tables)
    tables["core.parties"] = msgspec.structs.replace(tables["core.parties"], rows=PARTIES + 1)
    lying = msgspec.structs.replace(
        manifest, fingerprint=msgspec.structs.replace(manifest.fingerprint, tables=tables)
    )
    body = msgspec.json.encode(lying)
    manifest_path.write_bytes(body)
    sums = copy.with_name(f"{stem}.dump.sha256")
    lines = sums.read_text().splitlines()
    lines[1] = f"{hashlib.sha256(body).hexdigest()}  {manifest_path.name}"
    sums.write_text("\n".join(lines) + "\n")
    with pytest.raises(VerificationFailed) as failure:
        await restore(copy, url)
    assert failure.value.mismatches == [f"core.parties: {PARTIES} rows, expected {PARTIES + 1}"]
    assert await _exists(name)


# --- the commands -------------------------------------------------------------------------------


async def test_cli_backup_and_restore_run_the_drill(
    source: str, target: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, url = target
    monkeypatch.setenv("DATABASE_URL", source)
    monkeypatch.delenv("BACKUP_DIR", raising=False)
    out = tmp_path / "cli"
    # The commands run their own event loop (asyncio.run): call them from a thread.
    assert await asyncio.to_thread(main, ["backup", "--out", str(out)]) == EXIT_OK
    assert stat.S_IMODE(out.stat().st_mode) == 0o700  # created private
    [dump_file] = sorted(out.glob("*.dump"))
    assert await asyncio.to_thread(main, ["restore", str(dump_file), "--target-db", name]) == 0
    assert await compare_databases(source, url) == []
    # Again into the same (now non-empty) database: refused, exit status 3, nothing changed.
    status = await asyncio.to_thread(main, ["restore", str(dump_file), "--target-db", name])
    assert status == EXIT_REFUSED


async def test_cli_backup_needs_an_output_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BACKUP_DIR", raising=False)
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    assert await asyncio.to_thread(main, ["backup"]) == 2
    assert "--out" in err.getvalue()


def test_password_never_reaches_the_command_line() -> None:
    from infra.backup.pgtools import client_env

    dsn, env = client_env("postgresql://app:s3cr%40t@db.internal:5432/c2s?sslmode=require")
    assert "s3cr" not in dsn
    assert dsn == "postgresql://app@db.internal:5432/c2s?sslmode=require"
    assert env["PGPASSWORD"] == "s3cr@t"
    assert os.environ.get("PGPASSWORD") != "s3cr@t"
