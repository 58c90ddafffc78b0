"""``c2s-api retention [--dry-run] [--json]``: purge what is past its retention (LGPD art. 15-16).

The same purge ``c2s-api worker`` runs daily on pgqueuer's scheduler (``RETENTION_CRON``; see
:mod:`infra.db.retention`). Prints counts per kind, never an identifier. Exit status: 0 done,
3 PostgreSQL unavailable or not migrated.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TYPE_CHECKING, TextIO

import asyncpg
import msgspec

from app.bootstrap import open_pool
from domain.audit import SubjectDigester
from domain.errors import DependencyUnavailable
from infra.db.audit import PgAuditTrail
from infra.db.retention import PgRetention, RetentionPolicy, RetentionReport
from observability.metrics import RETENTION_LAST_RUN, RETENTION_PURGED

if TYPE_CHECKING:
    from app.config import Settings

__all__ = [
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "RetentionMetrics",
    "retention_command",
    "retention_policy",
]

EXIT_OK = 0
EXIT_UNAVAILABLE = 3


class RetentionMetrics:
    """Feeds ``retention_purged_total{kind}`` and ``retention_last_run_timestamp_seconds``."""

    def purged(self, kind: str, count: int) -> None:
        if count:
            RETENTION_PURGED.labels(kind).inc(count)

    def finished(self, at: float) -> None:
        RETENTION_LAST_RUN.set(at)


def retention_policy(settings: Settings) -> RetentionPolicy:
    """The retention settings."""
    return RetentionPolicy(
        days=settings.retention_days,
        raw_days=settings.raw_retention_days,
        batch=settings.retention_batch,
        audit_months=settings.audit_retention_months,
        bulk_days=settings.bulk_retention_days,
    )


async def _run(settings: Settings, dry_run: bool) -> RetentionReport:
    async with open_pool(settings) as pool:
        # Each purged person gets a `retention` audit record, written before the pool closes.
        audit = PgAuditTrail.configured(pool, settings)
        async with audit.running():
            retention = PgRetention(
                pool,
                retention_policy(settings),
                acquire_timeout=settings.db_connect_timeout_s,
                listener=RetentionMetrics(),
                audit=audit,
                digester=SubjectDigester(settings.cache_key_salt.get().encode()),
            )
            return await retention.run(dry_run=dry_run)


def retention_command(
    settings: Settings, *, dry_run: bool, as_json: bool = False, out: TextIO = sys.stdout
) -> int:
    """Run the purge once (or count, ``dry_run``) and print what went."""
    try:
        report = asyncio.run(_run(settings, dry_run))
    except (DependencyUnavailable, OSError, asyncpg.PostgresError) as exc:
        print(f"retention: database unavailable ({type(exc).__name__})", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if as_json:
        print(json.dumps(msgspec.to_builtins(report), sort_keys=True), file=out)
    else:
        for line in report.lines():
            print(line, file=out)
    return EXIT_OK
