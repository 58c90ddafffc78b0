"""What backups and restores produce: errors, fingerprints, the manifest, results, reports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
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
]

MANIFEST_FORMAT: Final = 1


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
