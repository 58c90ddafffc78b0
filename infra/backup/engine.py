"""The backup and restore engine: ``pg_dump -Fc`` in one snapshot with its manifest, and
verified restores into a new (or empty) database.

**Consistency.** The manifest is computed inside the very snapshot pg_dump dumps: a
``REPEATABLE READ`` transaction exports its snapshot and ``pg_dump --snapshot`` imports it, so the
counts and checksums describe exactly the dumped rows even while the service keeps writing.

**Restores refuse rather than guess.** :func:`restore` checks the SHA-256 of the dump and the
manifest first (a corrupted or tampered file is refused before anything is created), restores
only into a new database (created from ``template0``) or an empty existing one, and replaces a
non-empty database only with ``force=True``. A failed ``pg_restore`` drops the database it
created. Afterwards the restored tables are fingerprinted and compared with the manifest.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
import time
from pathlib import Path
from typing import Final

import asyncpg
import structlog

from infra.backup.files import BackupFiles, load_manifest, verify_checksums
from infra.backup.fingerprint import (
    TABLES_SQL,
    compare_fingerprints,
    database_fingerprint,
    fingerprint,
)
from infra.backup.model import (
    MANIFEST_FORMAT,
    BackupError,
    BackupResult,
    IntegrityError,
    Manifest,
    RestoreReport,
    TargetNotEmpty,
    VerificationFailed,
)
from infra.backup.pgtools import (
    client_env,
    database_name,
    find_binary,
    ident,
    literal,
    run_tool,
    with_database,
)

__all__ = ["backup", "restore"]

log = structlog.get_logger(__name__)

# pg_dump waits at most this long for a lock (an ALTER or a seed holding ACCESS EXCLUSIVE) instead
# of hanging the backup job behind it.
_LOCK_WAIT_TIMEOUT: Final = "60s"


async def backup(database_url: str, out_dir: Path | str) -> BackupResult:
    """Dump ``database_url`` into ``out_dir`` with its manifest and checksum file.

    Args:
        database_url: The source database.
        out_dir: Where to write (created ``0700`` when missing).

    Returns:
        The written files and what they hold.

    Raises:
        BackupError: pg_dump is missing or failed, or the database is unreachable.
    """
    started = time.perf_counter()
    pg_dump = find_binary("pg_dump")
    name = database_name(database_url)
    now = dt.datetime.now(dt.UTC)
    files = await asyncio.to_thread(BackupFiles.plan, Path(out_dir), f"{name}-{now:%Y%m%dT%H%M%SZ}")
    partial = files.partial
    dsn, env = client_env(database_url)
    version = await run_tool([pg_dump, "--version"], env=env, url=database_url, step="pg_dump")
    try:
        conn = await asyncpg.connect(database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BackupError(f"cannot connect to the source database: {type(exc).__name__}") from exc
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            server_version = str(await conn.fetchval("SHOW server_version"))
            encoding = str(await conn.fetchval("SHOW server_encoding"))
            # pg_dump imports the snapshot while this transaction holds it open; the manifest
            # is computed in the same snapshot meanwhile, so both describe the same rows.
            dumping = asyncio.ensure_future(
                run_tool(
                    [
                        pg_dump,
                        "--format=custom",
                        f"--snapshot={snapshot}",
                        f"--lock-wait-timeout={_LOCK_WAIT_TIMEOUT}",
                        f"--file={partial}",
                        f"--dbname={dsn}",
                    ],
                    env=env,
                    url=database_url,
                    step="pg_dump",
                )
            )
            try:
                # One connection: the source is the live primary, already serving pg_dump;
                # the restore side verifies with several (nothing else runs there yet).
                source = await fingerprint(conn)
            except BaseException:
                dumping.cancel()  # _run kills pg_dump
                await asyncio.wait([dumping])
                if not dumping.cancelled():
                    dumping.exception()  # retrieved: the fingerprint's error is the one to report
                raise
            await dumping  # BackupError when pg_dump failed
    except BaseException:
        await asyncio.to_thread(partial.unlink, missing_ok=True)
        raise
    finally:
        await conn.close()

    def describe(digest: str, size: int) -> Manifest:
        return Manifest(
            format=MANIFEST_FORMAT,
            created_at=now.isoformat(),
            database=name,
            server_version=server_version,
            encoding=encoding,
            pg_dump_version=version.strip(),
            dump_file=files.dump.name,
            dump_bytes=size,
            dump_sha256=digest,
            fingerprint=source,
        )

    digest, size = await asyncio.to_thread(files.seal, describe)
    seconds = time.perf_counter() - started
    log.info(
        "backup_written",
        database=name,
        dump=files.dump.name,
        bytes=size,
        tables=len(source.tables),
        rows=source.rows,
        seconds=round(seconds, 3),
    )
    return BackupResult(
        dump=str(files.dump),
        manifest=str(files.manifest),
        checksum_file=str(files.checksum),
        sha256=digest,
        bytes=size,
        tables=len(source.tables),
        rows=source.rows,
        seconds=seconds,
    )


async def _user_tables(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return len(await conn.fetch(TABLES_SQL))
    finally:
        await conn.close()


async def _prepare_target(
    admin_url: str, target_url: str, name: str, *, encoding: str, force: bool
) -> tuple[bool, bool]:
    """Create the target database, or check that it may be restored into.

    Returns:
        ``(created, replaced)``.
    """
    admin = await asyncpg.connect(admin_url)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        replaced = False
        if exists:
            if await _user_tables(target_url) == 0:
                return False, False  # e.g. created empty by a managed provider: fine to fill
            if not force:
                raise TargetNotEmpty(
                    f"database {name!r} already holds tables: restore into a new database, or "
                    "pass --force to DROP and replace it"
                )
            log.warning("restore_replacing_database", database=name)
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            await admin.execute(f"DROP DATABASE {ident(name)}")
            replaced = True
        # template0: template1 may carry local extras (extensions) that would clash with the dump.
        await admin.execute(
            f"CREATE DATABASE {ident(name)} TEMPLATE template0 ENCODING {literal(encoding)}"
        )
        return True, replaced
    finally:
        await admin.close()


async def _drop(admin_url: str, name: str) -> None:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        await admin.execute(f"DROP DATABASE IF EXISTS {ident(name)}")
    finally:
        await admin.close()


def _restore_list(toc: str) -> str:
    """The archive's table of contents minus ``COMMENT ON EXTENSION`` entries.

    Only an extension's owner may comment on it, so on a managed server (no superuser) those
    entries fail the restore under ``--exit-on-error`` while being worthless to restore.
    """
    return "\n".join(line for line in toc.splitlines() if " COMMENT - EXTENSION " not in line)


async def restore(
    dump: Path | str,
    target_url: str,
    *,
    admin_url: str | None = None,
    force: bool = False,
    jobs: int = 2,
    verify: bool = True,
) -> RestoreReport:
    """Restore a backup into a new (or empty) database and verify it against the manifest.

    Args:
        dump: The ``.dump`` file (its ``.dump.sha256`` and ``.manifest.json`` beside it).
        target_url: The database to restore into; created when it does not exist.
        admin_url: A database on the same server to run ``CREATE``/``DROP DATABASE`` from
            (default: ``postgres`` there).
        force: Drop and replace the target when it already holds tables.
        jobs: Parallel ``pg_restore`` jobs.
        verify: Compare the restored tables with the manifest (needs the manifest).

    Returns:
        What was done.

    Raises:
        IntegrityError: Checksums do not match (nothing was created or changed).
        TargetNotEmpty: The target holds tables and ``force`` is false (nothing was changed).
        BackupError: pg_restore failed (a database created for it is dropped again), or the
            manifest is missing while ``verify`` is set.
        VerificationFailed: The restored data differs from the manifest (the database is kept
            for inspection).
    """
    started = time.perf_counter()
    dump = Path(dump)
    if not dump.is_file():
        raise BackupError(f"{dump} does not exist")
    verified = await asyncio.to_thread(verify_checksums, dump)
    manifest = load_manifest(dump, verified)
    if verify and manifest is None:
        raise BackupError("no manifest listed beside the dump: cannot verify (pass verify=False)")
    if manifest is not None and manifest.dump_sha256 != verified[dump.name]:
        raise IntegrityError(f"the manifest beside {dump.name} describes another dump: refusing")
    pg_restore = find_binary("pg_restore")
    name = database_name(target_url)
    admin = admin_url or with_database(target_url, "postgres")
    if name == database_name(admin):
        raise BackupError(f"cannot restore into {name!r}: it is the maintenance database")
    dsn, env = client_env(target_url)
    toc = await run_tool(
        [pg_restore, "--list", str(dump)], env=env, url=target_url, step="pg_restore"
    )
    encoding = manifest.encoding if manifest is not None else "UTF8"
    created, replaced = await _prepare_target(
        admin, target_url, name, encoding=encoding, force=force
    )
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".list", encoding="utf-8") as listing:
            listing.write(_restore_list(toc))
            listing.flush()
            await run_tool(
                [
                    pg_restore,
                    "--exit-on-error",
                    # Roles and grants differ between servers (a managed provider's roles, a
                    # drill on a laptop): objects belong to whoever restores them.
                    "--no-owner",
                    "--no-privileges",
                    f"--jobs={max(1, jobs)}",
                    f"--use-list={listing.name}",
                    f"--dbname={dsn}",
                    str(dump),
                ],
                env=env,
                url=target_url,
                step="pg_restore",
            )
    except BaseException:
        if created:
            await _drop(admin, name)
        raise
    conn = await asyncpg.connect(target_url)
    try:
        # pg_restore loads no planner statistics (the first queries would plan badly), and every
        # restored row still lacks its hint bits and visibility-map bit: VACUUM ANALYZE sets all
        # three once, instead of the first readers (and the verification) paying for them.
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()
    tables = rows = 0
    problems: list[str] = []
    if verify and manifest is not None:
        restored = await database_fingerprint(target_url, workers=max(1, jobs))
        problems = compare_fingerprints(manifest.fingerprint, restored, exact_sequences=False)
        tables, rows = len(restored.tables), restored.rows
    report = RestoreReport(
        database=name,
        created=created,
        replaced=replaced,
        seconds=time.perf_counter() - started,
        tables=tables,
        rows=rows,
        verified=verify and manifest is not None,
    )
    if problems:
        log.error("restore_verification_failed", database=name, mismatches=len(problems))
        raise VerificationFailed(problems, report)
    log.info(
        "restore_completed",
        database=name,
        created=created,
        replaced=replaced,
        tables=tables,
        rows=rows,
        seconds=round(report.seconds, 3),
    )
    return report
