"""``c2s-api keys create|list|revoke`` (app/cli/keys.py) against the session database."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import uuid
from typing import TYPE_CHECKING

import asyncpg
import msgspec
import pytest

from app.cli.keys import (
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    add_keys_parser,
    keys_create,
    keys_list,
    keys_revoke,
    run_keys,
)
from domain.keys import digest_key
from infra.db.keys import PgApiKeyStore

if TYPE_CHECKING:
    from app.config import Settings
    from domain.keys import ApiKey

pytestmark = pytest.mark.integration

_KEY = re.compile(r"c2s_[a-z0-9]{8}_[A-Za-z0-9_-]{43}")


async def _create(settings: Settings, **kwargs: object) -> tuple[int, str]:
    out = io.StringIO()
    # The CLI functions run their own event loop (asyncio.run): call them from a thread.
    status = await asyncio.to_thread(
        keys_create,
        settings,
        str(kwargs.get("name", "cli test")),
        str(kwargs.get("tenant", "cli-tenant")),
        kwargs.get("scopes", "read,enrich"),  # type: ignore[arg-type]
        kwargs.get("expires_days"),  # type: ignore[arg-type]
        out=out,
    )
    return status, out.getvalue()


async def _stored(settings: Settings, plaintext: str) -> ApiKey:
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        found = await PgApiKeyStore(pool).find_by_hash(digest_key(plaintext))
    finally:
        await pool.close()
    assert found is not None
    return found


async def test_create_prints_the_key_once_and_stores_only_its_digest(settings: Settings) -> None:
    status, printed = await _create(settings, scopes="read", expires_days=30)
    assert status == EXIT_OK
    keys = _KEY.findall(printed)
    assert len(keys) == 1
    stored = await _stored(settings, keys[0])
    assert str(stored.id) in printed
    assert stored.scopes == ("read",)
    assert stored.expires_at is not None


async def test_list_shows_metadata_but_never_a_secret_or_digest(settings: Settings) -> None:
    status, printed = await _create(settings, name="listed key")
    assert status == EXIT_OK
    plaintext = _KEY.findall(printed)[0]
    out = io.StringIO()
    assert await asyncio.to_thread(keys_list, settings, out=out) == EXIT_OK
    table = out.getvalue()
    assert "listed key" in table
    assert plaintext.split("_", 2)[1] in table  # the public prefix
    assert plaintext not in table
    assert plaintext.split("_", 2)[2] not in table
    assert digest_key(plaintext).hex() not in table
    for header in ("ID", "NAME", "TENANT", "PREFIX", "SCOPES", "CREATED", "EXPIRES", "REVOKED"):
        assert header in table


async def test_list_json_and_revoke(settings: Settings) -> None:
    status, printed = await _create(settings, name="to revoke")
    assert status == EXIT_OK
    plaintext = _KEY.findall(printed)[0]
    key_id = str((await _stored(settings, plaintext)).id)
    out = io.StringIO()
    assert await asyncio.to_thread(keys_revoke, settings, key_id, out=out) == EXIT_OK
    assert key_id in out.getvalue()
    out = io.StringIO()
    assert await asyncio.to_thread(keys_list, settings, as_json=True, out=out) == EXIT_OK
    rows = {row["id"]: row for row in map(json.loads, out.getvalue().splitlines())}
    assert rows[key_id]["status"] == "revoked"
    assert rows[key_id]["revoked_at"]
    assert "key_hash" not in rows[key_id]
    out = io.StringIO()
    assert await asyncio.to_thread(keys_list, settings, include_revoked=False, out=out) == EXIT_OK
    assert key_id not in out.getvalue()


async def test_revoke_unknown_and_malformed_ids(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(keys_revoke, settings, str(uuid.uuid4())) == EXIT_NOT_FOUND
    assert await asyncio.to_thread(keys_revoke, settings, "not-a-uuid") == EXIT_INVALID
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("field", "value"),
    [("scopes", "read,write"), ("tenant", "Not A Slug"), ("expires_days", 0), ("name", " ")],
)
async def test_create_rejects_invalid_arguments(
    settings: Settings, capsys: pytest.CaptureFixture[str], field: str, value: object
) -> None:
    status, printed = await _create(settings, **{field: value})
    assert status == EXIT_INVALID
    assert not _KEY.findall(printed)
    assert "error:" in capsys.readouterr().err


async def test_unreachable_database_is_exit_status_3(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    down = msgspec.structs.replace(
        settings, database_url="postgresql://postgres@127.0.0.1:1/none", db_connect_timeout_s=0.5
    )
    assert await asyncio.to_thread(keys_list, down) == EXIT_UNAVAILABLE
    status, _ = await _create(down)
    assert status == EXIT_UNAVAILABLE
    assert "PostgreSQL" in capsys.readouterr().err


async def test_argparse_wiring(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="c2s-api")
    add_keys_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "keys",
            "create",
            "--name",
            "argv",
            "--tenant",
            "argv-t",
            "--scopes",
            "read",
            "--expires-days",
            "5",
        ]
    )
    assert (args.name, args.tenant, args.scopes, args.expires_days) == ("argv", "argv-t", "read", 5)
    assert await asyncio.to_thread(run_keys, args, settings) == EXIT_OK
    assert len(_KEY.findall(capsys.readouterr().out)) == 1
    args = parser.parse_args(["keys", "list", "--active", "--json"])
    assert await asyncio.to_thread(run_keys, args, settings) == EXIT_OK
    assert "argv-t" in capsys.readouterr().out
    args = parser.parse_args(["keys", "revoke", str(uuid.uuid4())])
    assert await asyncio.to_thread(run_keys, args, settings) == EXIT_NOT_FOUND
    defaults = parser.parse_args(["keys", "create", "--name", "n", "--tenant", "t"])
    assert defaults.scopes == "read,enrich"
    assert defaults.expires_days is None


async def test_create_a_dpo_key(settings: Settings, pool: asyncpg.Pool) -> None:
    status, output = await _create(settings, scopes="dpo")
    assert status == EXIT_OK
    plaintext = _KEY.search(output)
    assert plaintext is not None
    stored = await pool.fetchval(
        "SELECT scopes FROM core.api_keys WHERE key_hash = $1", digest_key(plaintext[0])
    )
    assert list(stored) == ["dpo"]
