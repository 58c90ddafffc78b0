"""Callback signing secrets from the command line (``c2s-api keys create`` and
``c2s-api keys callback-secret``) against the session database."""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import uuid
from typing import TYPE_CHECKING

import pytest

from app.cli.keys import (
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_OK,
    add_keys_parser,
    keys_callback_secret,
    keys_create,
    run_keys,
)

if TYPE_CHECKING:
    import asyncpg

    from app.config import Settings
    from infra.db.callback_secrets import PgCallbackSecrets

pytestmark = pytest.mark.integration

_SECRET = re.compile(r"callback secret: (c2scb_[A-Za-z0-9_-]{43})")
_ID = re.compile(r"id:\s+([0-9a-f-]{36})")


async def _secret_command(settings: Settings, key_id: str, **flags: bool) -> tuple[int, str]:
    out = io.StringIO()
    # The CLI functions run their own event loop (asyncio.run): call them from a thread.
    status = await asyncio.to_thread(keys_callback_secret, settings, key_id, out=out, **flags)
    return status, out.getvalue()


async def test_create_prints_a_callback_secret_once_stored_sealed_and_used_to_sign(
    settings: Settings, pool: asyncpg.Pool, secrets: PgCallbackSecrets
) -> None:
    out = io.StringIO()
    status = await asyncio.to_thread(
        keys_create, settings, "with callbacks", "acme", "read,enrich", None, out=out
    )
    assert status == EXIT_OK
    printed = out.getvalue()
    assert len(_SECRET.findall(printed)) == 1
    secret = _SECRET.findall(printed)[0]
    key_id = uuid.UUID(_ID.findall(printed)[0])
    assert await secrets.signing_secrets(key_id) == [secret]
    sealed = await pool.fetchval(
        "SELECT sealed FROM core.callback_secrets WHERE key_id = $1", key_id
    )
    assert secret.encode() not in bytes(sealed)
    assert secret.split("_", 1)[1].encode() not in bytes(sealed)


async def test_rotate_keeps_the_previous_secret_signing_until_retire(
    settings: Settings, secrets: PgCallbackSecrets, key_id: uuid.UUID
) -> None:
    status, printed = await _secret_command(settings, str(key_id), rotate=True)
    assert status == EXIT_OK
    first = _SECRET.findall(printed)[0]
    status, printed = await _secret_command(settings, str(key_id), rotate=True)
    assert status == EXIT_OK
    second = _SECRET.findall(printed)[0]
    assert await secrets.signing_secrets(key_id) == [second, first]  # newest first, both sign
    status, _ = await _secret_command(settings, str(key_id), rotate=True)
    assert status == EXIT_INVALID  # two are valid: retire the previous one first
    assert await secrets.signing_secrets(key_id) == [second, first]
    status, printed = await _secret_command(settings, str(key_id), retire=True)
    assert (status, "retired 1") == (EXIT_OK, printed[: len("retired 1")])
    assert await secrets.signing_secrets(key_id) == [second]
    status, listing = await _secret_command(settings, str(key_id))
    assert status == EXIT_OK
    assert listing.count("valid") == 1
    assert listing.count("retired") == 1
    assert first not in listing
    assert second not in listing


async def test_unknown_and_malformed_key_ids(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _ = await _secret_command(settings, str(uuid.uuid4()), rotate=True)
    assert status == EXIT_NOT_FOUND
    status, _ = await _secret_command(settings, "not-a-uuid", rotate=True)
    assert status == EXIT_INVALID
    assert "error:" in capsys.readouterr().err


async def test_argparse_wiring(
    settings: Settings, secrets: PgCallbackSecrets, key_id: uuid.UUID
) -> None:
    parser = argparse.ArgumentParser(prog="c2s-api")
    add_keys_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["keys", "callback-secret", str(key_id), "--rotate"])
    assert await asyncio.to_thread(run_keys, args, settings) == EXIT_OK
    assert len(await secrets.signing_secrets(key_id)) == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["keys", "callback-secret", str(key_id), "--rotate", "--retire"])
