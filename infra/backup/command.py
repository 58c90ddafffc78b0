"""The ``c2s-api backup`` and ``c2s-api restore`` commands, as records for the CLI to print.

Nothing here writes to a terminal: each command returns a :class:`CommandOutcome` with its exit
status and the lines meant for standard output and standard error.
"""

from __future__ import annotations

import asyncio
from typing import Final

import msgspec

from infra.backup.engine import backup, restore
from infra.backup.model import BackupError, IntegrityError, TargetNotEmpty, VerificationFailed

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "CommandOutcome",
    "backup_command",
    "restore_command",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_REFUSED: Final = 3
"""Exit statuses of the commands: 3 means nothing was changed because a safety check refused
(checksum mismatch, target not empty); 2 is argparse's usage error."""


class CommandOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a command did: its exit status and the lines for stdout and stderr."""

    status: int
    out: tuple[str, ...] = ()
    err: tuple[str, ...] = ()


def backup_command(database_url: str, out: str) -> CommandOutcome:
    """``c2s-api backup``: write a backup of ``database_url`` into ``out``.

    Returns:
        :data:`EXIT_OK` with the written files, or :data:`EXIT_FAILED` with the reason.
    """
    try:
        result = asyncio.run(backup(database_url, out))
    except BackupError as exc:
        return CommandOutcome(status=EXIT_FAILED, err=(f"backup: {exc}",))
    return CommandOutcome(
        status=EXIT_OK,
        out=(
            f"dump:      {result.dump}",
            f"manifest:  {result.manifest}",
            f"checksums: {result.checksum_file}",
            f"sha256 {result.sha256}  {result.bytes:,} bytes  {result.tables} tables  "
            f"{result.rows:,} rows  {result.seconds:.1f}s",
        ),
    )


def restore_command(dump: str, target_url: str, *, force: bool, jobs: int) -> CommandOutcome:
    """``c2s-api restore``: restore ``dump`` into ``target_url`` and verify it.

    Returns:
        :data:`EXIT_OK`, :data:`EXIT_REFUSED` (nothing changed) or :data:`EXIT_FAILED`, with
        what happened.
    """
    try:
        report = asyncio.run(restore(dump, target_url, force=force, jobs=jobs))
    except (IntegrityError, TargetNotEmpty) as exc:
        return CommandOutcome(status=EXIT_REFUSED, err=(f"restore refused: {exc}",))
    except VerificationFailed as exc:
        lines = [f"restore: verification FAILED in {exc.report.database!r}:"]
        lines += [f"  {line}" for line in exc.mismatches]
        return CommandOutcome(status=EXIT_FAILED, err=tuple(lines))
    except BackupError as exc:
        return CommandOutcome(status=EXIT_FAILED, err=(f"restore: {exc}",))
    action = "replaced" if report.replaced else "created" if report.created else "filled"
    return CommandOutcome(
        status=EXIT_OK,
        out=(
            f"restored into {report.database!r} ({action}) in {report.seconds:.1f}s; verified "
            f"{report.tables} tables, {report.rows:,} rows: identical to the backup",
        ),
    )
