"""Logical backups of PostgreSQL: ``pg_dump -Fc``, checksummed, and verified restores.

A backup is three files in the output directory (``docs/dr.md`` has the procedure)::

    <db>-<UTC stamp>.dump            pg_dump custom format (compressed, restorable in parallel)
    <db>-<UTC stamp>.manifest.json   per-table row counts and content checksums, versions
    <db>-<UTC stamp>.dump.sha256     SHA-256 of both, in ``sha256sum -c`` format

Modules: :mod:`~infra.backup.engine` (backup and restore), :mod:`~infra.backup.fingerprint`
(content checksums and comparisons), :mod:`~infra.backup.files` (the backup's files and their
checksums), :mod:`~infra.backup.pgtools` (client tools and URLs), :mod:`~infra.backup.model`
(errors and records), :mod:`~infra.backup.command` (the CLI commands as records).
"""

from __future__ import annotations

from infra.backup.command import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    CommandOutcome,
    backup_command,
    restore_command,
)
from infra.backup.engine import backup, restore
from infra.backup.files import verify_checksums
from infra.backup.fingerprint import (
    compare_databases,
    compare_fingerprints,
    database_fingerprint,
    fingerprint,
)
from infra.backup.model import (
    MANIFEST_FORMAT,
    BackupError,
    BackupResult,
    Fingerprint,
    IntegrityError,
    Manifest,
    RestoreReport,
    TableFingerprint,
    TargetNotEmpty,
    VerificationFailed,
)
from infra.backup.pgtools import with_database

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "MANIFEST_FORMAT",
    "BackupError",
    "BackupResult",
    "CommandOutcome",
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
