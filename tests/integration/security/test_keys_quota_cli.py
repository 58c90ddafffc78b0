"""``c2s-api keys create --paid-quota``, ``keys update --paid-quota`` and the quota in
``keys list`` (app/cli/keys.py), through the argument parser, against the session database."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from app.cli.keys import EXIT_INVALID, EXIT_NOT_FOUND, EXIT_OK, add_keys_parser, run_keys

if TYPE_CHECKING:
    from app.config import Settings

pytestmark = pytest.mark.integration

_ID = re.compile(r"^id:\s+(\S+)$", re.MULTILINE)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="c2s-api")
    add_keys_parser(parser.add_subparsers(dest="command", required=True))
    return parser


async def _run(settings: Settings, *argv: str) -> int:
    args = _parser().parse_args(["keys", *argv])
    # The CLI runs its own event loop (asyncio.run): call it from a thread.
    return await asyncio.to_thread(run_keys, args, settings)


async def _listed(
    settings: Settings, key_id: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:  # Any: JSON values
    assert await _run(settings, "list", "--json") == EXIT_OK
    rows = {row["id"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    row: dict[str, Any] = rows[key_id]
    return row


async def test_create_update_and_list_the_paid_quota(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant = f"quota-{uuid.uuid4().hex[:8]}"
    status = await _run(settings, "create", "--name", "q", "--tenant", tenant, "--paid-quota", "2")
    assert status == EXIT_OK
    printed = capsys.readouterr().out
    assert "quota:   2/day" in printed
    match = _ID.search(printed)
    assert match is not None
    key_id = match[1]
    assert (await _listed(settings, key_id, capsys))["paid_quota_daily"] == 2

    assert await _run(settings, "update", key_id, "--paid-quota", "500") == EXIT_OK
    assert "paid quota 500/day" in capsys.readouterr().out
    assert (await _listed(settings, key_id, capsys))["paid_quota_daily"] == 500

    assert await _run(settings, "update", key_id, "--paid-quota", "none") == EXIT_OK
    assert "paid quota none" in capsys.readouterr().out
    assert (await _listed(settings, key_id, capsys))["paid_quota_daily"] is None

    assert await _run(settings, "update", key_id, "--paid-quota", "0") == EXIT_OK
    capsys.readouterr()
    assert await _run(settings, "list") == EXIT_OK
    table = capsys.readouterr().out
    assert "PAID QUOTA/DAY" in table
    line = next(row for row in table.splitlines() if row.startswith(key_id))
    assert line.rstrip().endswith(" 0")


async def test_a_key_without_quota_lists_none(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _run(settings, "create", "--name", "free", "--tenant", "free-t") == EXIT_OK
    printed = capsys.readouterr().out
    assert "quota:   none" in printed
    match = _ID.search(printed)
    assert match is not None
    assert (await _listed(settings, match[1], capsys))["paid_quota_daily"] is None


@pytest.mark.parametrize("quota", ["-1", "lots", "1.5", "1000000000"])
async def test_an_invalid_quota_is_refused(
    settings: Settings, capsys: pytest.CaptureFixture[str], quota: str
) -> None:
    status = await _run(settings, "create", "--name", "x", "--tenant", "x-t", "--paid-quota", quota)
    assert status == EXIT_INVALID
    assert await _run(settings, "update", str(uuid.uuid4()), "--paid-quota", quota) == EXIT_INVALID
    assert "paid quota" in capsys.readouterr().err


async def test_update_of_an_unknown_or_malformed_id(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _run(settings, "update", str(uuid.uuid4()), "--paid-quota", "3") == EXIT_NOT_FOUND
    assert await _run(settings, "update", "not-a-uuid", "--paid-quota", "3") == EXIT_INVALID
    assert "error:" in capsys.readouterr().err
