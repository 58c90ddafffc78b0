"""API keys: format, digest, scopes and lifecycle rules (pure, no I/O).

A key is ``c2s_<prefix>_<secret>``:

* ``c2s_`` makes a leaked key recognisable by secret scanners and in support tickets;
* ``<prefix>`` is 8 random lower-case letters and digits, stored in clear so ``keys list`` and
  an operator can tell keys apart without ever seeing a secret;
* ``<secret>`` is ``secrets.token_urlsafe(32)`` (256 bits, 43 URL-safe characters).

Only the SHA-256 digest of the whole key is stored (ADR 0006): the key carries 256 bits of
entropy, so a fast hash already makes a stolen table useless, while a slow password hash
(argon2, bcrypt) would add milliseconds to every cache miss for no gain.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal, get_args
from uuid import UUID

import msgspec

from domain.errors import InvalidInput

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

__all__ = [
    "ALL_SCOPES",
    "DEFAULT_SCOPES",
    "KEY_MARKER",
    "MAX_KEY_LENGTH",
    "ApiKey",
    "GeneratedKey",
    "KeyStatus",
    "NewApiKey",
    "Scope",
    "digest_key",
    "digests_equal",
    "expiry_after_days",
    "generate_key",
    "grants",
    "key_prefix_of",
    "key_status",
    "new_api_key",
    "parse_scopes",
    "required_scope",
    "validate_name",
    "validate_tenant",
]

Scope = Literal["read", "enrich", "admin", "dpo"]
KeyStatus = Literal["active", "expired", "revoked"]

ALL_SCOPES: Final[tuple[Scope, ...]] = get_args(Scope)
DEFAULT_SCOPES: Final[tuple[Scope, ...]] = ("read", "enrich")
KEY_MARKER: Final = "c2s"
PREFIX_LENGTH: Final = 8
SECRET_BYTES: Final = 32
# Longest string worth hashing: a real key is 56 characters; anything far longer is garbage that
# should cost nothing (no digest, no cache entry).
MAX_KEY_LENGTH: Final = 200
MAX_EXPIRY_DAYS: Final = 3650

_PREFIX_ALPHABET: Final = string.ascii_lowercase + string.digits
# token_urlsafe(32) gives 43 characters; accept 32..128 so a future longer secret still parses.
_KEY_FORMAT: Final = re.compile(r"^c2s_([a-z0-9]{8})_([A-Za-z0-9_-]{32,128})$")
_TENANT_FORMAT: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


class GeneratedKey(msgspec.Struct, frozen=True, kw_only=True):
    """A freshly generated key: the plaintext is shown once, then only the digest is kept.

    Attributes:
        plaintext: The full key, to hand to the client exactly once.
        prefix: The 8-character public prefix (stored in clear).
        digest: SHA-256 of the plaintext (what is stored and looked up).
    """

    plaintext: str
    prefix: str
    digest: bytes

    def __repr__(self) -> str:
        # A GeneratedKey must never print its secret by accident (tracebacks, debuggers).
        return f"GeneratedKey(prefix={self.prefix!r})"


class NewApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """What the key store needs to create a key (never the plaintext).

    Attributes:
        name: Human label (who or what uses the key).
        tenant: The tenant whose data the key may reach.
        prefix: Public prefix of the key.
        digest: SHA-256 of the key.
        scopes: Granted scopes.
        expires_at: When the key stops working, or ``None`` for never.
        paid_quota_daily: Paid upstream calls per UTC day at most, or ``None`` for no quota.
    """

    name: str
    tenant: str
    prefix: str
    digest: bytes
    scopes: tuple[Scope, ...]
    expires_at: datetime | None = None
    paid_quota_daily: int | None = None


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """A stored key as the application sees it: everything but the digest.

    Attributes:
        id: Stable identifier (used for revocation and as the rate-limit identity).
        name: Human label.
        tenant: The tenant the key acts for.
        key_prefix: Public prefix, shown in listings.
        scopes: Granted scopes.
        created_at: Creation time.
        expires_at: Expiry, or ``None``.
        revoked_at: Revocation time, or ``None``.
        last_used_at: Last successful use (updated at most once a minute).
        paid_quota_daily: Paid upstream calls per UTC day at most (``domain/usage.py``), or
            ``None`` for no quota.
    """

    id: UUID
    name: str
    tenant: str
    key_prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    paid_quota_daily: int | None = None


def generate_key() -> GeneratedKey:
    """Generate a new random key.

    Returns:
        The plaintext (show it once), its public prefix and its digest.
    """
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    plaintext = f"{KEY_MARKER}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    return GeneratedKey(plaintext=plaintext, prefix=prefix, digest=digest_key(plaintext))


def key_prefix_of(candidate: str) -> str | None:
    """Return the public prefix of a well-formed key, or ``None`` when it is not one.

    A malformed candidate is rejected before any hashing or lookup, so garbage in an
    ``Authorization`` header costs a regex match and never touches the cache or the database.

    Args:
        candidate: What the client sent.
    """
    if len(candidate) > MAX_KEY_LENGTH:
        return None
    match = _KEY_FORMAT.match(candidate)
    return match[1] if match else None


def digest_key(plaintext: str) -> bytes:
    """SHA-256 of the whole key: the value stored and looked up (32 bytes).

    Args:
        plaintext: The full key.
    """
    return hashlib.sha256(plaintext.encode()).digest()


def digests_equal(left: bytes, right: bytes) -> bool:
    """Compare two digests in constant time (``hmac.compare_digest``)."""
    return hmac.compare_digest(left, right)


def parse_scopes(raw: str | Iterable[str]) -> tuple[Scope, ...]:
    """Parse ``"read,enrich"`` (or an iterable) into known scopes, deduplicated, in canonical order.

    Args:
        raw: Comma-separated scope names or an iterable of them.

    Returns:
        The scopes in the order of :data:`ALL_SCOPES`.

    Raises:
        InvalidInput: An unknown scope, or no scope at all.
    """
    names = raw.split(",") if isinstance(raw, str) else list(raw)
    wanted = {name.strip().lower() for name in names if name.strip()}
    unknown = sorted(wanted.difference(ALL_SCOPES))
    if unknown:
        raise InvalidInput(
            "scopes", f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(ALL_SCOPES)}"
        )
    if not wanted:
        raise InvalidInput("scopes", "at least one scope is required")
    return tuple(scope for scope in ALL_SCOPES if scope in wanted)


def grants(granted: Collection[str], required: str) -> bool:
    """Whether a key with scopes ``granted`` may do what needs ``required``.

    ``admin`` grants everything but ``dpo``; ``read`` and ``enrich`` are independent (an
    enrich-only integration cannot browse stored customers, a read-only dashboard cannot spend
    upstream credits). ``dpo`` (export and erase a person's data, LGPD art. 18) is granted by
    itself only: an operator's ``admin`` key cannot read or erase everything about a person.

    Args:
        granted: The key's scopes.
        required: The scope the route needs.
    """
    return required in granted or ("admin" in granted and required != "dpo")


def required_scope(method: str, declared: str | None = None) -> str:
    """The scope a route needs: its declared ``opt["scope"]``, else by method.

    Args:
        method: The HTTP method.
        declared: The route's ``opt["scope"]``, when set.

    Returns:
        ``declared``, else ``read`` for GET/HEAD/OPTIONS and ``enrich`` for anything else.
    """
    if declared:
        return declared
    return "read" if method in _SAFE_METHODS else "enrich"


def key_status(key: ApiKey, now: datetime) -> KeyStatus:
    """Whether ``key`` may be used at ``now``.

    Args:
        key: The stored key.
        now: The current time (timezone-aware).
    """
    # A revocation is effective from the moment it is recorded; comparing its time with ``now``
    # would let clock skew between the database and this host keep a revoked key alive.
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def validate_tenant(tenant: str) -> str:
    """Return ``tenant`` if it is a valid tenant id (lower-case slug, 1-63 characters).

    Raises:
        InvalidInput: Otherwise.
    """
    if not _TENANT_FORMAT.match(tenant):
        raise InvalidInput("tenant", "tenant must be 1-63 characters of a-z, 0-9, '.', '_' or '-'")
    return tenant


def validate_name(name: str) -> str:
    """Return ``name`` stripped if it is a usable label (1-100 printable characters).

    Raises:
        InvalidInput: Otherwise.
    """
    stripped = name.strip()
    if not stripped or len(stripped) > 100 or not stripped.isprintable():
        raise InvalidInput("name", "name must be 1-100 printable characters")
    return stripped


def expiry_after_days(now: datetime, days: int | None) -> datetime | None:
    """The expiry ``days`` after ``now``, or ``None`` for a key that does not expire.

    Raises:
        InvalidInput: ``days`` outside 1..3650.
    """
    if days is None:
        return None
    if not 1 <= days <= MAX_EXPIRY_DAYS:
        raise InvalidInput("expires_days", f"expires_days must be 1..{MAX_EXPIRY_DAYS}")
    return now + timedelta(days=days)


def new_api_key(
    *,
    name: str,
    tenant: str,
    scopes: str | Iterable[str],
    now: datetime,
    expires_days: int | None = None,
    paid_quota_daily: int | None = None,
) -> tuple[GeneratedKey, NewApiKey]:
    """Validate the inputs and generate a key to store.

    Args:
        name: Human label.
        tenant: Tenant id.
        scopes: Scopes, comma-separated or iterable.
        now: The current time (for the expiry).
        expires_days: Lifetime in days, or ``None`` for no expiry.
        paid_quota_daily: Paid calls per UTC day at most (already parsed, see
            :func:`domain.usage.parse_paid_quota`), or ``None`` for no quota.

    Returns:
        The generated key (plaintext shown once) and the record to store.

    Raises:
        InvalidInput: Naming the first invalid field.
    """
    record_name = validate_name(name)
    record_tenant = validate_tenant(tenant)
    record_scopes = parse_scopes(scopes)
    expires_at = expiry_after_days(now, expires_days)
    generated = generate_key()
    return generated, NewApiKey(
        name=record_name,
        tenant=record_tenant,
        prefix=generated.prefix,
        digest=generated.digest,
        scopes=record_scopes,
        expires_at=expires_at,
        paid_quota_daily=paid_quota_daily,
    )
