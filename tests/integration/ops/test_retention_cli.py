"""``c2s-api retention [--dry-run] [--json]`` (app/cli/retention.py): counts, never identifiers."""

from __future__ import annotations

import asyncio
import io
import json
from typing import TYPE_CHECKING

import msgspec
import pytest

from app.cli import build_parser
from app.cli.retention import EXIT_OK, EXIT_UNAVAILABLE, retention_command

if TYPE_CHECKING:
    from app.config import Settings

pytestmark = pytest.mark.integration


def test_the_command_is_registered_with_its_dry_run() -> None:
    args = build_parser().parse_args(["retention", "--dry-run", "--json"])
    assert (args.dry_run, args.json) == (True, True)
    assert build_parser().parse_args(["retention"]).dry_run is False


async def test_dry_run_prints_counts_per_kind(settings: Settings) -> None:
    out = io.StringIO()
    status = await asyncio.to_thread(
        retention_command, settings, dry_run=True, as_json=False, out=out
    )
    assert status == EXIT_OK
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "would purge parties",
        "would purge raw_payloads",
        "would purge enrichment_history",
        "would purge audit_partitions",
        "would purge bulk_jobs",
    ]
    out = io.StringIO()
    await asyncio.to_thread(retention_command, settings, dry_run=True, as_json=True, out=out)
    report = json.loads(out.getvalue())
    assert report["dry_run"] is True
    assert set(report) == {
        "dry_run",
        "parties",
        "raw_payloads",
        "enrichment_history",
        "audit_partitions",
        "bulk_jobs",
    }


async def test_no_database_is_exit_3(settings: Settings) -> None:
    dead = msgspec.structs.replace(
        settings, database_url="postgresql://postgres@127.0.0.1:1/none", db_connect_timeout_s=0.5
    )
    status = await asyncio.to_thread(retention_command, dead, dry_run=True, out=io.StringIO())
    assert status == EXIT_UNAVAILABLE
