"""Logical backups of PostgreSQL: ``pg_dump -Fc``, checksummed, and verified restores.

A backup is three files in the output directory (``docs/dr.md`` has the procedure)::

    <db>-<UTC stamp>.dump            pg_dump custom format (compressed, restorable in parallel)
    <db>-<UTC stamp>.manifest.json   per-table row counts and content checksums, versions
    <db>-<UTC stamp>.dump.sha256     SHA-256 of both, in ``sha256sum -c`` format

**Consistency.** The manifest is computed inside the very snapshot pg_dump dumps: a
``REPEATABLE READ`` transaction exports its snapshot and ``pg_dump --snapshot`` imports it, so the
counts and checksums describe exactly the dumped rows even while the service keeps writing.

**Content checksums.** Per table, the sum of the first 64 bits of ``md5(row::text)`` over every
row, plus the row count. Unlike ``md5(string_agg(... ORDER BY pk))`` it needs no
sort and no single text value (PostgreSQL caps one at 1 GB, which the enrichment payloads of a
large database exceed), and it does not depend on row order. Rows are rendered under fixed
session settings (UTC, ISO dates, hex bytea), so the same data gives the same text on any server.

**Restores refuse rather than guess.** :func:`restore` checks the SHA-256 of the dump and the
manifest first (a corrupted or tampered file is refused before anything is created), restores
only into a new database (created from ``template0``) or an empty existing one, and replaces a
non-empty database only with ``force=True``. A failed ``pg_restore`` drops the database it
created. Afterwards the restored tables are fingerprinted and compared with the manifest.

The database password never appears on a command line (it goes through ``PGPASSWORD``) nor in
messages. Dumps hold personal data: files are created ``0600`` in a ``0700`` directory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg
import msgspec
import structlog

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "MANIFEST_FORMAT",
    "BackupError",
    "BackupResult",
    "Fingerprint",
    "IntegrityError",
    "Manifest",
    "RestoreReport",
    "TableFingerprint",
    "TargetNotEmpty",
    "VerificationFailed",
    "backup",
    "backup_command",
    "compare_databases",
    "compare_fingerprints",
    "database_fingerprint",
    "fingerprint",
    "restore",
    "restore_command",
    "verify_checksums",
    "with_database",
]

log = structlog.get_logger(__name__)

MANIFEST_FORMAT: Final = 1
_CHUNK: Final = 1 << 20
_DUMP_SUFFIX: Final = ".dump"
_CHECKSUM_SUFFIX: Final = ".dump.sha256"
_MANIFEST_SUFFIX: Final = ".manifest.json"
_CHECKSUM_LINE: Final = re.compile(r"^(?P<digest>[0-9a-f]{64}) [ *](?P<name>[^/\\]+)$")
# pg_dump waits at most this long for a lock (an ALTER or a seed holding ACCESS EXCLUSIVE) instead
# of hanging the backup job behind it.
_LOCK_WAIT_TIMEOUT: Final = "60s"
_MAX_ERROR_CHARS: Final = 2000

# Fixed rendering of row text, so the checksums do not depend on the server's or role's defaults.
_SESSION_SETTINGS: Final = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 1",
    "SET bytea_output = 'hex'",
    "SET statement_timeout = 0",
)

# Ordinary tables of every non-system schema, minus tables owned by extensions (they are
# recreated by CREATE EXTENSION, not restored as data).
_TABLES_SQL: Final = """
SELECT format('%I.%I', n.nspname, c.relname) AS name
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%'
  AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (
      SELECT 1 FROM pg_depend d
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
  )
ORDER BY pg_total_relation_size(c.oid) DESC, 1
"""

# The first 64 bits of each row's md5, summed (sum(bigint) is exact: it returns numeric).
# Measured on 200k parties: half the time of summing both halves as numeric, and 64 bits plus
# the row count leave a 2^-64 chance for a corruption to go unnoticed.
_TABLE_SQL: Final = """
SELECT count(*) AS rows,
       coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)::bigint), 0)::text AS total
FROM {table} AS t
"""

_SEQUENCES_SQL: Final = """
SELECT format('%I.%I', schemaname, sequencename) AS name, last_value
FROM pg_sequences
WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1
"""


# --- errors ------------------------------------------------------------------------------------


class BackupError(RuntimeError):
    """A backup or restore failed; the message names the step (never the password)."""


class IntegrityError(BackupError):
    """A dump or its manifest does not match its SHA-256 (or the checksum file is missing)."""


class TargetNotEmpty(BackupError):
    """The restore target already holds tables and ``force`` was not given."""


class VerificationFailed(BackupError):
    """The restored database differs from the manifest.

    Attributes:
        mismatches: One line per differing table or sequence.
        report: What the restore did.
    """

    def __init__(self, mismatches: Sequence[str], report: RestoreReport) -> None:
        super().__init__(f"restored database differs from the backup: {'; '.join(mismatches)}")
        self.mismatches = list(mismatches)
        self.report = report


# --- data --------------------------------------------------------------------------------------


class TableFingerprint(msgspec.Struct, frozen=True, kw_only=True):
    """Row count and content checksum of one table."""

    rows: int
    checksum: str


class Fingerprint(msgspec.Struct, frozen=True, kw_only=True):
    """Every user table's fingerprint and every sequence's ``last_value``."""

    tables: dict[str, TableFingerprint]
    sequences: dict[str, int | None]

    @property
    def rows(self) -> int:
        """Rows over all tables."""
        return sum(t.rows for t in self.tables.values())


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """What a backup contains (no personal data: counts, checksums, versions).

    Attributes:
        format: :data:`MANIFEST_FORMAT`.
        created_at: When the snapshot was taken (RFC 3339, UTC).
        database: The source database's name.
        server_version: The source server's ``server_version``.
        encoding: The source database's encoding (the restore creates the target with it).
        pg_dump_version: ``pg_dump --version`` of the dumping client.
        dump_file: The dump's file name.
        dump_bytes: Its size.
        dump_sha256: Its SHA-256.
        fingerprint: The source's fingerprint in the dumped snapshot.
    """

    format: int
    created_at: str
    database: str
    server_version: str
    encoding: str
    pg_dump_version: str
    dump_file: str
    dump_bytes: int
    dump_sha256: str
    fingerprint: Fingerprint


class BackupResult(msgspec.Struct, frozen=True, kw_only=True):
    """The files a backup wrote and what they hold."""

    dump: str
    manifest: str
    checksum_file: str
    sha256: str
    bytes: int
    tables: int
    rows: int
    seconds: float


class RestoreReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a restore did.

    Attributes:
        database: The target database's name.
        created: Whether the database was created by this restore.
        replaced: Whether an existing non-empty database was dropped first (``force``).
        seconds: Wall time, verification included.
        tables: Tables verified against the manifest (0 when not verified).
        rows: Rows verified.
        verified: Whether the comparison ran.
    """

    database: str
    created: bool
    replaced: bool
    seconds: float
    tables: int
    rows: int
    verified: bool


# --- helpers -----------------------------------------------------------------------------------


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` on the same server, with the same options."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(name, safe="")))


def _database_name(url: str) -> str:
    name = unquote(urlsplit(url).path.lstrip("/"))
    if not name:
        raise BackupError("the database URL names no database")
    return name


def _client_env(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and an environment carrying it (``PGPASSWORD``)."""
    parts = urlsplit(url)
    env = dict(os.environ)
    if parts.password is None:
        return url, env
    env["PGPASSWORD"] = unquote(parts.password)
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    netloc = f"{quote(unquote(user), safe='')}@{host}" if user else host
    return urlunsplit(parts._replace(netloc=netloc)), env


def _redact(text: str, url: str) -> str:
    password = urlsplit(url).password
    text = text.replace(unquote(password), "***") if password else text
    return text[-_MAX_ERROR_CHARS:]


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(
            f"{name} not found on PATH: install the PostgreSQL client tools (Debian: "
            "postgresql-client-15), at least the server's major version"
        )
    return found


async def _run(args: Sequence[str], *, env: Mapping[str, str], url: str, step: str) -> str:
    """Run a client tool; raise :class:`BackupError` with its (redacted) stderr on failure."""
    process = await asyncio.create_subprocess_exec(
        *args,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await process.communicate()
    except BaseException:
        # Cancelled (Ctrl-C, a timeout around us): do not leave a pg_dump/pg_restore running.
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    if process.returncode != 0:
        detail = _redact(stderr.decode("utf-8", "replace").strip(), url)
        raise BackupError(f"{step} failed (exit {process.returncode}): {detail}")
    return stdout.decode("utf-8", "replace")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (mode 0600) durably: temp file, fsync, rename."""
    tmp = path.with_name(path.name + ".partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- fingerprints ------------------------------------------------------------------------------


async def _table_fingerprint(conn: asyncpg.Connection, name: str) -> TableFingerprint:
    # `name` comes from format('%I.%I'): quoted identifiers, safe to interpolate.
    row = await conn.fetchrow(_TABLE_SQL.format(table=name))
    assert row is not None  # noqa: S101 - an aggregate always returns one row
    digest = hashlib.sha256(f"{row['rows']}:{row['total']}".encode()).hexdigest()
    return TableFingerprint(rows=int(row["rows"]), checksum=digest)


async def _set_session(conn: asyncpg.Connection) -> None:
    for statement in _SESSION_SETTINGS:
        await conn.execute(statement)


async def fingerprint(
    conn: asyncpg.Connection,
    *,
    database_url: str | None = None,
    snapshot: str | None = None,
    workers: int = 1,
) -> Fingerprint:
    """Fingerprint every user table and sequence as ``conn`` sees them.

    Run it inside a ``REPEATABLE READ`` transaction to fingerprint one snapshot. Sets fixed
    session settings (time zone, date and float output) so any server renders rows identically.

    Args:
        conn: The connection whose snapshot is fingerprinted.
        database_url: With ``snapshot`` and ``workers`` > 1: where helper connections connect.
        snapshot: ``pg_export_snapshot()`` of ``conn``'s transaction; helpers import it, so
            every table is read in the same snapshot.
        workers: Connections scanning tables at once (the largest tables are taken first).
    """
    await _set_session(conn)
    names = [str(r["name"]) for r in await conn.fetch(_TABLES_SQL)]
    pending = list(reversed(names))  # pop() takes the largest first
    tables: dict[str, TableFingerprint] = {}

    async def drain(worker: asyncpg.Connection) -> None:
        while pending:
            name = pending.pop()
            tables[name] = await _table_fingerprint(worker, name)

    helpers: list[asyncpg.Connection] = []
    try:
        if workers > 1 and database_url is not None and snapshot is not None:
            for _ in range(min(workers, len(names)) - 1):
                helper = await asyncpg.connect(database_url)
                helpers.append(helper)
                await helper.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                await helper.execute(f"SET TRANSACTION SNAPSHOT {_literal(snapshot)}")
                await _set_session(helper)
        await asyncio.gather(drain(conn), *(drain(h) for h in helpers))
    finally:
        for helper in helpers:
            await helper.close()  # ends its read-only transaction
    sequences = {
        str(r["name"]): (int(r["last_value"]) if r["last_value"] is not None else None)
        for r in await conn.fetch(_SEQUENCES_SQL)
    }
    return Fingerprint(tables=dict(sorted(tables.items())), sequences=sequences)


async def database_fingerprint(database_url: str, *, workers: int = 2) -> Fingerprint:
    """Fingerprint a database in one ``REPEATABLE READ`` snapshot, ``workers`` tables at a time."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = str(await conn.fetchval("SELECT pg_export_snapshot()"))
            return await fingerprint(
                conn, database_url=database_url, snapshot=snapshot, workers=workers
            )
    finally:
        await conn.close()


def compare_fingerprints(
    expected: Fingerprint, actual: Fingerprint, *, exact_sequences: bool = True
) -> list[str]:
    """Differences between two fingerprints, one line each (empty when they match).

    Args:
        expected: The source (or the manifest).
        actual: The restored database.
        exact_sequences: Compare sequence values exactly. Sequences are not transactional, so
            a backup of a database taken while it was written to may record a value a little
            different from the one pg_dump saved; then only their presence is compared.
    """
    problems: list[str] = []
    for name in sorted(expected.tables.keys() | actual.tables.keys()):
        want, got = expected.tables.get(name), actual.tables.get(name)
        if want is None:
            problems.append(f"{name}: not in the backup")
        elif got is None:
            problems.append(f"{name}: missing")
        elif want.rows != got.rows:
            problems.append(f"{name}: {got.rows} rows, expected {want.rows}")
        elif want.checksum != got.checksum:
            problems.append(f"{name}: content checksum differs ({want.rows} rows)")
    for name in sorted(expected.sequences.keys() | actual.sequences.keys()):
        if name not in actual.sequences:
            problems.append(f"sequence {name}: missing")
        elif name not in expected.sequences:
            problems.append(f"sequence {name}: not in the backup")
        elif exact_sequences and expected.sequences[name] != actual.sequences[name]:
            problems.append(
                f"sequence {name}: last_value {actual.sequences[name]}, "
                f"expected {expected.sequences[name]}"
            )
    return problems


async def compare_databases(source_url: str, target_url: str) -> list[str]:
    """Differences between two databases' tables and sequences (empty when identical)."""
    source, target = await asyncio.gather(
        database_fingerprint(source_url), database_fingerprint(target_url)
    )
    return compare_fingerprints(source, target)


# --- backup ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _BackupFiles:
    """The paths of one backup (file system work runs in a thread, off the event loop)."""

    dump: Path
    manifest: Path
    checksum: Path

    @property
    def partial(self) -> Path:
        """Where pg_dump writes until the dump is complete."""
        return self.dump.with_name(self.dump.name + ".partial")

    @classmethod
    def plan(cls, out: Path, base: str) -> _BackupFiles:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        files = cls(
            dump=out / f"{base}{_DUMP_SUFFIX}",
            manifest=out / f"{base}{_MANIFEST_SUFFIX}",
            checksum=out / f"{base}{_CHECKSUM_SUFFIX}",
        )
        if files.dump.exists() or files.checksum.exists():
            raise BackupError(f"{files.dump} already exists")
        return files

    def seal(self, describe: Callable[[str, int], Manifest]) -> tuple[str, int]:
        """Make the dump final, then write its manifest and, last, the checksum file.

        A checksum file therefore only ever exists for a complete backup.

        Returns:
            The dump's SHA-256 and size.
        """
        os.chmod(self.partial, 0o600)
        _fsync(self.partial)
        self.partial.replace(self.dump)
        digest, size = _sha256(self.dump), self.dump.stat().st_size
        manifest = msgspec.json.format(msgspec.json.encode(describe(digest, size)), indent=2)
        _write_private(self.manifest, manifest + b"\n")
        manifest_digest = hashlib.sha256(manifest + b"\n").hexdigest()
        _write_private(
            self.checksum,
            f"{digest}  {self.dump.name}\n{manifest_digest}  {self.manifest.name}\n".encode(),
        )
        return digest, size


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
    pg_dump = _binary("pg_dump")
    name = _database_name(database_url)
    now = dt.datetime.now(dt.UTC)
    files = await asyncio.to_thread(
        _BackupFiles.plan, Path(out_dir), f"{name}-{now:%Y%m%dT%H%M%SZ}"
    )
    partial = files.partial
    dsn, env = _client_env(database_url)
    version = await _run([pg_dump, "--version"], env=env, url=database_url, step="pg_dump")
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
                _run(
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


# --- restore -----------------------------------------------------------------------------------


def _checksum_path(dump: Path) -> Path:
    name = dump.name.removesuffix(_DUMP_SUFFIX) if dump.name.endswith(_DUMP_SUFFIX) else dump.name
    return dump.with_name(name + _CHECKSUM_SUFFIX)


def verify_checksums(dump: Path | str) -> dict[str, str]:
    """Check the dump (and every other file listed) against its ``.dump.sha256`` file.

    Returns:
        File name -> verified SHA-256.

    Raises:
        IntegrityError: The checksum file is missing or malformed, does not list the dump, or a
            listed file is missing or differs.
    """
    dump = Path(dump)
    checksum_file = _checksum_path(dump)
    if not checksum_file.is_file():
        raise IntegrityError(f"no checksum file {checksum_file.name} next to the dump: refusing")
    expected: dict[str, str] = {}
    for line in checksum_file.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        match = _CHECKSUM_LINE.match(line.strip())
        if match is None:
            raise IntegrityError(f"{checksum_file.name} is malformed: refusing")
        expected[match["name"]] = match["digest"]
    if dump.name not in expected:
        raise IntegrityError(f"{checksum_file.name} does not list {dump.name}: refusing")
    for name, digest in expected.items():
        path = dump.with_name(name)
        if not path.is_file():
            raise IntegrityError(f"{name} is listed in {checksum_file.name} but missing")
        if _sha256(path) != digest:
            raise IntegrityError(f"{name} does not match its SHA-256: corrupted or altered")
    return expected


def _load_manifest(dump: Path, verified: Mapping[str, str]) -> Manifest | None:
    name = dump.name.removesuffix(_DUMP_SUFFIX) + _MANIFEST_SUFFIX
    if name not in verified:
        return None
    try:
        return msgspec.json.decode(dump.with_name(name).read_bytes(), type=Manifest)
    except msgspec.DecodeError as exc:
        raise IntegrityError(f"{name} is not a backup manifest: {exc}") from None


async def _user_tables(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return len(await conn.fetch(_TABLES_SQL))
    finally:
        await conn.close()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


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
            await admin.execute(f"DROP DATABASE {_ident(name)}")
            replaced = True
        # template0: template1 may carry local extras (extensions) that would clash with the dump.
        await admin.execute(
            f"CREATE DATABASE {_ident(name)} TEMPLATE template0 ENCODING {_literal(encoding)}"
        )
        return True, replaced
    finally:
        await admin.close()


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def _drop(admin_url: str, name: str) -> None:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        await admin.execute(f"DROP DATABASE IF EXISTS {_ident(name)}")
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
    manifest = _load_manifest(dump, verified)
    if verify and manifest is None:
        raise BackupError("no manifest listed beside the dump: cannot verify (pass verify=False)")
    if manifest is not None and manifest.dump_sha256 != verified[dump.name]:
        raise IntegrityError(f"the manifest beside {dump.name} describes another dump: refusing")
    pg_restore = _binary("pg_restore")
    name = _database_name(target_url)
    admin = admin_url or with_database(target_url, "postgres")
    if name == _database_name(admin):
        raise BackupError(f"cannot restore into {name!r}: it is the maintenance database")
    dsn, env = _client_env(target_url)
    toc = await _run([pg_restore, "--list", str(dump)], env=env, url=target_url, step="pg_restore")
    encoding = manifest.encoding if manifest is not None else "UTF8"
    created, replaced = await _prepare_target(
        admin, target_url, name, encoding=encoding, force=force
    )
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".list", encoding="utf-8") as listing:
            listing.write(_restore_list(toc))
            listing.flush()
            await _run(
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


# --- command line (``c2s-api backup`` / ``c2s-api restore``) -----------------------------------

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_REFUSED: Final = 3
"""Exit statuses of the commands: 3 means nothing was changed because a safety check refused
(checksum mismatch, target not empty); 2 is argparse's usage error."""


def backup_command(database_url: str, out: str, *, stdout: TextIO, stderr: TextIO) -> int:
    """``c2s-api backup``: write a backup of ``database_url`` into ``out``; print what was written.

    Returns:
        An exit status (:data:`EXIT_OK` or :data:`EXIT_FAILED`).
    """
    try:
        result = asyncio.run(backup(database_url, out))
    except BackupError as exc:
        print(f"backup: {exc}", file=stderr)
        return EXIT_FAILED
    print(f"dump:      {result.dump}", file=stdout)
    print(f"manifest:  {result.manifest}", file=stdout)
    print(f"checksums: {result.checksum_file}", file=stdout)
    print(
        f"sha256 {result.sha256}  {result.bytes:,} bytes  {result.tables} tables  "
        f"{result.rows:,} rows  {result.seconds:.1f}s",
        file=stdout,
    )
    return EXIT_OK


def restore_command(
    dump: str, target_url: str, *, force: bool, jobs: int, stdout: TextIO, stderr: TextIO
) -> int:
    """``c2s-api restore``: restore ``dump`` into ``target_url`` and verify it.

    Returns:
        An exit status: :data:`EXIT_OK`, :data:`EXIT_REFUSED` (nothing changed) or
        :data:`EXIT_FAILED`.
    """
    try:
        report = asyncio.run(restore(dump, target_url, force=force, jobs=jobs))
    except (IntegrityError, TargetNotEmpty) as exc:
        print(f"restore refused: {exc}", file=stderr)
        return EXIT_REFUSED
    except VerificationFailed as exc:
        print(f"restore: verification FAILED in {exc.report.database!r}:", file=stderr)
        for line in exc.mismatches:
            print(f"  {line}", file=stderr)
        return EXIT_FAILED
    except BackupError as exc:
        print(f"restore: {exc}", file=stderr)
        return EXIT_FAILED
    action = "replaced" if report.replaced else "created" if report.created else "filled"
    print(
        f"restored into {report.database!r} ({action}) in {report.seconds:.1f}s; verified "
        f"{report.tables} tables, {report.rows:,} rows: identical to the backup",
        file=stdout,
    )
    return EXIT_OK
