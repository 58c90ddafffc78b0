"""``c2s-api keys create|list|update|revoke|callback-secret``: API key administration from the
command line.

Each function prints its result and returns the process exit status, so the ``c2s-api`` parser only
parses arguments (:func:`add_keys_parser`) and dispatches (:func:`run_keys`):

* 0: done;
* 1: no key has the given id (``revoke``, ``update``);
* 2: invalid arguments (unknown scope, bad tenant, bad id...);
* 3: PostgreSQL unavailable or not migrated.

The plaintext of a new key is printed exactly once, by ``create``; nothing stores or logs it.
``create`` also creates the key's first callback signing secret (the ``C2S-Signature`` of its
bulk-job callbacks, ``docs/callbacks.md``) and prints it once; ``callback-secret KEY_ID --rotate``
adds the next one (the previous keeps signing until ``--retire``). Secrets are stored sealed
(AES-GCM from ``CACHE_HMAC_KEYS``), never printed again.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO
from uuid import UUID

import asyncpg

from app.bootstrap import open_pool
from app.config import parse_hmac_keys
from domain.errors import Conflict, DependencyUnavailable, InvalidInput, NotFound
from domain.keys import DEFAULT_SCOPES, key_status, new_api_key
from domain.usage import parse_paid_quota
from infra.db.callback_secrets import SEALING_PURPOSE, PgCallbackSecrets
from infra.db.keys import PgApiKeyStore
from infra.sealing import AeadEnvelope

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable, Iterable

    from app.config import Settings
    from domain.keys import ApiKey

__all__ = [
    "EXIT_INVALID",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "add_keys_parser",
    "keys_callback_secret",
    "keys_create",
    "keys_list",
    "keys_revoke",
    "keys_update",
    "run_keys",
]

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_INVALID = 2
EXIT_UNAVAILABLE = 3


def add_keys_parser(subparsers: Any) -> None:  # Any: argparse's private _SubParsersAction
    """Register ``keys create|list|revoke`` on the ``c2s-api`` sub-command parser.

    Args:
        subparsers: What ``parser.add_subparsers(...)`` returned.
    """
    keys = subparsers.add_parser("keys", help="create, list, update and revoke API keys")
    sub = keys.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True, help="who or what uses the key")
    create.add_argument("--tenant", required=True, help="tenant whose data the key may reach")
    create.add_argument(
        "--scopes",
        default=",".join(DEFAULT_SCOPES),
        help="comma-separated: read, enrich, admin, dpo (default: read,enrich)",
    )
    create.add_argument(
        "--expires-days", type=int, default=None, help="lifetime in days (default: no expiry)"
    )
    create.add_argument(
        "--paid-quota",
        default=None,
        help="paid upstream calls per UTC day at most (default: none, no quota)",
    )
    listing = sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--active", action="store_true", help="hide revoked keys")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    revoke = sub.add_parser("revoke", help="revoke a key (effective within 5 s)")
    revoke.add_argument("key_id", help="the key's id, as shown by 'keys list'")
    callback = sub.add_parser(
        "callback-secret",
        help="list, rotate or retire the secrets that sign a key's bulk-job callbacks",
    )
    callback.add_argument("key_id", help="the key's id, as shown by 'keys list'")
    action = callback.add_mutually_exclusive_group()
    action.add_argument(
        "--rotate", action="store_true", help="add a new secret (printed once); both sign"
    )
    action.add_argument("--retire", action="store_true", help="retire every secret but the newest")
    update = sub.add_parser("update", help="change a key's daily paid-call quota")
    update.add_argument("key_id", help="the key's id, as shown by 'keys list'")
    update.add_argument(
        "--paid-quota",
        required=True,
        help="paid upstream calls per UTC day at most, or 'none' (no quota)",
    )


def run_keys(args: argparse.Namespace, settings: Settings) -> int:
    """Dispatch a parsed ``keys`` command.

    Args:
        args: Parsed arguments (see :func:`add_keys_parser`).
        settings: Settings (the database URL).

    Returns:
        The exit status.
    """
    if args.keys_command == "create":
        return keys_create(
            settings,
            args.name,
            args.tenant,
            args.scopes,
            args.expires_days,
            paid_quota=args.paid_quota,
        )
    if args.keys_command == "list":
        return keys_list(settings, include_revoked=not args.active, as_json=args.json)
    if args.keys_command == "callback-secret":
        return keys_callback_secret(settings, args.key_id, rotate=args.rotate, retire=args.retire)
    if args.keys_command == "update":
        return keys_update(settings, args.key_id, args.paid_quota)
    return keys_revoke(settings, args.key_id)


def keys_create(
    settings: Settings,
    name: str,
    tenant: str,
    scopes: str | Iterable[str],
    expires_days: int | None,
    *,
    paid_quota: str | int | None = None,
    out: TextIO | None = None,
) -> int:
    """Create a key and print its plaintext once.

    Args:
        settings: Settings (the database URL).
        name: Human label.
        tenant: Tenant id (lower-case slug).
        scopes: ``"read,enrich"`` or an iterable of scope names.
        expires_days: Lifetime in days, or ``None``.
        paid_quota: Paid calls per UTC day at most (``none``/``None``: no quota).
        out: Where to print (stdout by default).

    Returns:
        The exit status.
    """
    stream = out or sys.stdout
    try:
        generated, record = new_api_key(
            name=name,
            tenant=tenant,
            scopes=scopes,
            now=datetime.now(UTC),
            expires_days=expires_days,
            paid_quota_daily=parse_paid_quota(paid_quota),
        )
    except InvalidInput as exc:
        return _invalid(exc.detail)

    async def create(store: PgApiKeyStore) -> int:
        key = await store.create(record)
        print(f"id:      {key.id}", file=stream)
        print(f"name:    {key.name}", file=stream)
        print(f"tenant:  {key.tenant}", file=stream)
        print(f"scopes:  {','.join(key.scopes)}", file=stream)
        print(f"expires: {_stamp(key.expires_at) or 'never'}", file=stream)
        print(f"quota:   {_quota(key.paid_quota_daily)}", file=stream)
        print(f"key:     {generated.plaintext}", file=stream)
        callback_secret = await _callback_secrets(settings, store).rotate(key.id)
        print(f"callback secret: {callback_secret}", file=stream)
        print(
            "\nThis is the only time the key is shown: store it now. "
            "Send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'. "
            "The callback secret (shown once too) verifies the C2S-Signature of the key's "
            "bulk-job callbacks (docs/callbacks.md).",
            file=stream,
            flush=True,
        )
        return EXIT_OK

    return _run(settings, create)


def keys_list(
    settings: Settings,
    *,
    include_revoked: bool = True,
    as_json: bool = False,
    out: TextIO | None = None,
) -> int:
    """Print the keys: id, name, tenant, prefix, scopes, status and times (never a digest).

    Args:
        settings: Settings (the database URL).
        include_revoked: Also list revoked keys.
        as_json: One JSON object per line instead of a table.
        out: Where to print (stdout by default).

    Returns:
        The exit status.
    """
    stream = out or sys.stdout

    async def listing(store: PgApiKeyStore) -> int:
        keys = await store.list(include_revoked=include_revoked)
        now = datetime.now(UTC)
        rows = [_row(key, now) for key in keys]
        if as_json:
            for row in rows:
                print(json.dumps(row), file=stream)
            return EXIT_OK
        _print_table(rows, stream)
        return EXIT_OK

    return _run(settings, listing)


def keys_revoke(settings: Settings, key_id: str, *, out: TextIO | None = None) -> int:
    """Revoke a key; every worker stops accepting it within the auth cache TTL (<= 5 s).

    Args:
        settings: Settings (the database URL).
        key_id: The key's id.
        out: Where to print (stdout by default).

    Returns:
        The exit status (1 when no key has that id).
    """
    stream = out or sys.stdout
    parsed = _key_id(key_id)
    if parsed is None:
        return _invalid(_BAD_KEY_ID)

    async def revoke(store: PgApiKeyStore) -> int:
        key = await store.revoke(parsed)
        if key is None:
            print(f"error: no API key with id {parsed}", file=sys.stderr)
            return EXIT_NOT_FOUND
        print(
            f"revoked {key.id} ({key.name}, tenant {key.tenant}) at {_stamp(key.revoked_at)}",
            file=stream,
        )
        return EXIT_OK

    return _run(settings, revoke)


def keys_callback_secret(
    settings: Settings,
    key_id: str,
    *,
    rotate: bool = False,
    retire: bool = False,
    out: TextIO | None = None,
) -> int:
    """List a key's callback secrets (metadata), add one (``rotate``) or retire the previous.

    Rotation: ``--rotate`` prints a new secret once; the previous one keeps signing (each
    callback carries one ``v1=`` per valid secret) while receivers switch; ``--retire`` then
    retires every secret but the newest. At most two are valid: rotating again first needs
    ``--retire``.

    Args:
        settings: Settings (the database URL, ``CACHE_HMAC_KEYS`` for sealing).
        key_id: The key's id.
        rotate: Add a new secret.
        retire: Retire every valid secret but the newest.
        out: Where to print (stdout by default).

    Returns:
        The exit status (1 when no key has that id, 2 when two secrets are valid already).
    """
    stream = out or sys.stdout
    parsed = _key_id(key_id)
    if parsed is None:
        return _invalid(_BAD_KEY_ID)

    async def manage(store: PgApiKeyStore) -> int:
        secrets = _callback_secrets(settings, store)
        if rotate:
            try:
                secret = await secrets.rotate(parsed)
            except NotFound:
                print(f"error: no API key with id {parsed}", file=sys.stderr)
                return EXIT_NOT_FOUND
            except Conflict as exc:
                return _invalid(exc.detail)
            print(f"callback secret: {secret}", file=stream)
            print(
                "\nShown once: give it to the receiver. Both this and the previous secret sign "
                "every callback until 'c2s-api keys callback-secret "
                f"{parsed} --retire'.",
                file=stream,
                flush=True,
            )
            return EXIT_OK
        if retire:
            retired = await secrets.retire_previous(parsed)
            print(f"retired {retired} previous callback secret(s) of {parsed}", file=stream)
            return EXIT_OK
        listing = await secrets.list(parsed)
        if not listing:
            print(f"no callback secrets for {parsed}", file=stream)
        for info in listing:
            state = f"retired {_stamp(info.retired_at)}" if info.retired_at else "valid"
            print(f"{info.id}  created {_stamp(info.created_at)}  {state}", file=stream)
        return EXIT_OK

    return _run(settings, manage)


def keys_update(
    settings: Settings, key_id: str, paid_quota: str | int | None, *, out: TextIO | None = None
) -> int:
    """Set or remove a key's daily paid-call quota (effective within the auth cache TTL).

    Args:
        settings: Settings (the database URL).
        key_id: The key's id.
        paid_quota: Paid calls per UTC day at most, or ``none`` (no quota).
        out: Where to print (stdout by default).

    Returns:
        The exit status (1 when no key has that id).
    """
    stream = out or sys.stdout
    parsed = _key_id(key_id)
    if parsed is None:
        return _invalid(_BAD_KEY_ID)

    try:
        quota = parse_paid_quota(paid_quota)
    except InvalidInput as exc:
        return _invalid(exc.detail)

    async def update(store: PgApiKeyStore) -> int:
        key = await store.set_paid_quota(parsed, quota)
        if key is None:
            print(f"error: no API key with id {parsed}", file=sys.stderr)
            return EXIT_NOT_FOUND
        print(
            f"updated {key.id} ({key.name}, tenant {key.tenant}): "
            f"paid quota {_quota(key.paid_quota_daily)}",
            file=stream,
        )
        return EXIT_OK

    return _run(settings, update)


# --- helpers ------------------------------------------------------------------------------------


def _callback_secrets(settings: Settings, store: PgApiKeyStore) -> PgCallbackSecrets:
    envelope = AeadEnvelope(
        parse_hmac_keys(settings.cache_hmac_keys.get()), purpose=SEALING_PURPOSE
    )
    return PgCallbackSecrets(store.pool, envelope, acquire_timeout=settings.db_connect_timeout_s)


def _quota(value: int | None) -> str:
    return "none" if value is None else f"{value}/day"


_BAD_KEY_ID = "key id must be a UUID, as shown by 'c2s-api keys list'"


def _key_id(text: str) -> UUID | None:
    """The key id given on the command line, or ``None`` when it is not a UUID."""
    try:
        return UUID(text.strip())
    except ValueError:
        return None


def _invalid(detail: str) -> int:
    print(f"error: {detail}", file=sys.stderr)
    return EXIT_INVALID


def _run(settings: Settings, action: Callable[[PgApiKeyStore], Awaitable[int]]) -> int:
    async def main() -> int:
        async with open_pool(settings) as pool:
            return await action(PgApiKeyStore(pool, acquire_timeout=settings.db_connect_timeout_s))

    try:
        return asyncio.run(main())
    except (DependencyUnavailable, OSError, TimeoutError, asyncpg.PostgresConnectionError):
        print("error: PostgreSQL is unavailable (check DATABASE_URL)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except asyncpg.UndefinedTableError:
        print("error: table core.api_keys is missing: run 'c2s-api migrate' first", file=sys.stderr)
        return EXIT_UNAVAILABLE


def _stamp(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def _row(key: ApiKey, now: datetime) -> dict[str, Any]:  # Any: JSON values
    return {
        "id": str(key.id),
        "name": key.name,
        "tenant": key.tenant,
        "prefix": f"c2s_{key.key_prefix}_",
        "scopes": ",".join(key.scopes),
        "status": key_status(key, now),
        "created_at": _stamp(key.created_at),
        "expires_at": _stamp(key.expires_at),
        "revoked_at": _stamp(key.revoked_at),
        "last_used_at": _stamp(key.last_used_at),
        "paid_quota_daily": key.paid_quota_daily,
    }


_COLUMNS = (
    ("id", "ID"),
    ("name", "NAME"),
    ("tenant", "TENANT"),
    ("prefix", "PREFIX"),
    ("scopes", "SCOPES"),
    ("status", "STATUS"),
    ("created_at", "CREATED"),
    ("expires_at", "EXPIRES"),
    ("revoked_at", "REVOKED"),
    ("last_used_at", "LAST USED"),
    ("paid_quota_daily", "PAID QUOTA/DAY"),
)


def _cell(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _print_table(rows: list[dict[str, Any]], stream: TextIO) -> None:  # Any: JSON values
    if not rows:
        print("no API keys", file=stream)
        return
    cells = [[_cell(row[field]) for field, _ in _COLUMNS] for row in rows]
    widths = [
        max(len(title), *(len(line[i]) for line in cells)) for i, (_, title) in enumerate(_COLUMNS)
    ]
    print(
        "  ".join(title.ljust(w) for (_, title), w in zip(_COLUMNS, widths, strict=True)).rstrip(),
        file=stream,
    )
    for line in cells:
        print(
            "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(), file=stream
        )
