"""API key rules: format, digest, scopes, lifecycle (domain/keys.py)."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidInput
from domain.keys import (
    ALL_SCOPES,
    DEFAULT_SCOPES,
    ApiKey,
    digest_key,
    digests_equal,
    expiry_after_days,
    generate_key,
    grants,
    key_prefix_of,
    key_status,
    new_api_key,
    parse_scopes,
    required_scope,
    validate_name,
    validate_tenant,
)

NOW = datetime(2025, 11, 26, 12, 0, tzinfo=UTC)


def _key(**changes: object) -> ApiKey:
    fields: dict[str, object] = {
        "id": uuid.uuid4(),
        "name": "crm",
        "tenant": "acme",
        "key_prefix": "abcd1234",
        "scopes": ("read",),
        "created_at": NOW - timedelta(days=1),
    }
    fields.update(changes)
    return ApiKey(**fields)  # type: ignore[arg-type]


def test_generated_key_has_the_documented_format() -> None:
    generated = generate_key()
    assert re.fullmatch(r"c2s_[a-z0-9]{8}_[A-Za-z0-9_-]{43}", generated.plaintext)
    assert generated.plaintext.split("_", 2)[1] == generated.prefix


def test_generated_key_carries_at_least_256_bits_of_secret() -> None:
    secret = generate_key().plaintext.split("_", 2)[2]
    # token_urlsafe(32): 32 random bytes, base64url without padding -> 43 characters.
    assert len(secret) >= 43


def test_generated_keys_are_unique() -> None:
    keys = {generate_key().plaintext for _ in range(200)}
    assert len(keys) == 200


def test_digest_is_sha256_of_the_whole_key() -> None:
    generated = generate_key()
    assert generated.digest == hashlib.sha256(generated.plaintext.encode()).digest()
    assert digest_key(generated.plaintext) == generated.digest
    assert len(generated.digest) == 32


def test_generated_key_repr_hides_the_secret() -> None:
    generated = generate_key()
    assert generated.plaintext not in repr(generated)
    assert generated.prefix in repr(generated)


def test_digests_compare_equal_only_when_identical() -> None:
    one, other = generate_key(), generate_key()
    assert digests_equal(one.digest, digest_key(one.plaintext))
    assert not digests_equal(one.digest, other.digest)


@pytest.mark.parametrize(
    "candidate",
    [
        "",
        "c2s_",
        "c2s_abcd1234_short",
        "C2S_abcd1234_" + "a" * 43,
        "c2s_ABCD1234_" + "a" * 43,
        "c2s_abc1234_" + "a" * 43,
        "xyz_abcd1234_" + "a" * 43,
        "c2s_abcd1234_" + "a" * 43 + "!",
        "c2s_abcd1234_" + "a" * 300,
        " c2s_abcd1234_" + "a" * 43,
    ],
)
def test_rejects_malformed_keys_before_any_lookup(candidate: str) -> None:
    assert key_prefix_of(candidate) is None


def test_accepts_generated_keys_and_returns_their_prefix() -> None:
    generated = generate_key()
    assert key_prefix_of(generated.plaintext) == generated.prefix


@given(st.text(max_size=300))
def test_key_format_check_never_raises(candidate: str) -> None:
    assert key_prefix_of(candidate) is None or candidate.startswith("c2s_")


def test_parses_scopes_into_canonical_order_without_duplicates() -> None:
    assert parse_scopes("enrich, read,read") == ("read", "enrich")
    assert parse_scopes(["ADMIN"]) == ("admin",)
    assert parse_scopes("read,enrich,admin,dpo") == ALL_SCOPES
    assert parse_scopes("dpo") == ("dpo",)
    assert "dpo" not in DEFAULT_SCOPES


def test_rejects_unknown_scope_naming_it() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_scopes("read,write")
    assert caught.value.field == "scopes"
    assert "write" in caught.value.detail


def test_rejects_empty_scope_list() -> None:
    with pytest.raises(InvalidInput):
        parse_scopes(" , ")


@pytest.mark.parametrize(
    ("granted", "required", "allowed"),
    [
        (("read",), "read", True),
        (("read",), "enrich", False),
        (("enrich",), "read", False),
        (("enrich",), "enrich", True),
        (("admin",), "read", True),
        (("admin",), "enrich", True),
        (("read", "enrich"), "admin", False),
        ((), "read", False),
        # dpo (a person's export and erasure) is granted by itself only, not by admin.
        (("dpo",), "dpo", True),
        (("admin",), "dpo", False),
        (("read", "enrich"), "dpo", False),
        (("dpo",), "read", False),
    ],
)
def test_scope_grants(granted: tuple[str, ...], required: str, allowed: bool) -> None:
    assert grants(granted, required) is allowed


@pytest.mark.parametrize(
    ("method", "declared", "expected"),
    [
        ("GET", None, "read"),
        ("HEAD", None, "read"),
        ("POST", None, "enrich"),
        ("PUT", None, "enrich"),
        ("DELETE", None, "enrich"),
        ("GET", "enrich", "enrich"),
        ("POST", "admin", "admin"),
    ],
)
def test_required_scope_defaults_by_method(
    method: str, declared: str | None, expected: str
) -> None:
    assert required_scope(method, declared) == expected


def test_key_without_expiry_or_revocation_is_active() -> None:
    assert key_status(_key(), NOW) == "active"


def test_key_past_its_expiry_is_expired() -> None:
    assert key_status(_key(expires_at=NOW - timedelta(seconds=1)), NOW) == "expired"
    assert key_status(_key(expires_at=NOW), NOW) == "expired"
    assert key_status(_key(expires_at=NOW + timedelta(seconds=1)), NOW) == "active"


def test_revoked_key_is_revoked_even_if_also_expired() -> None:
    key = _key(revoked_at=NOW - timedelta(hours=1), expires_at=NOW - timedelta(hours=2))
    assert key_status(key, NOW) == "revoked"


@pytest.mark.parametrize("tenant", ["acme", "a", "tenant-1", "crm.acme_br", "x" * 63])
def test_accepts_tenant_slugs(tenant: str) -> None:
    assert validate_tenant(tenant) == tenant


@pytest.mark.parametrize("tenant", ["", "Acme", "-acme", "a b", "x" * 64, "acme/../b", "ação"])
def test_rejects_bad_tenants(tenant: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_tenant(tenant)
    assert caught.value.field == "tenant"


def test_name_is_stripped_and_bounded() -> None:
    assert validate_name("  Make.com scenario  ") == "Make.com scenario"
    for bad in ("", "   ", "x" * 101, "line\nbreak"):
        with pytest.raises(InvalidInput):
            validate_name(bad)


def test_expiry_after_days() -> None:
    assert expiry_after_days(NOW, None) is None
    assert expiry_after_days(NOW, 30) == NOW + timedelta(days=30)
    for bad in (0, -1, 3651):
        with pytest.raises(InvalidInput):
            expiry_after_days(NOW, bad)


def test_new_api_key_builds_a_record_without_the_plaintext() -> None:
    generated, record = new_api_key(
        name="crm", tenant="acme", scopes="read,enrich", now=NOW, expires_days=7
    )
    assert record.digest == digest_key(generated.plaintext)
    assert record.prefix == generated.prefix
    assert record.scopes == ("read", "enrich")
    assert record.expires_at == NOW + timedelta(days=7)
    assert generated.plaintext not in repr(record)
    assert not hasattr(record, "plaintext")


def test_new_api_key_validates_every_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        new_api_key(name="crm", tenant="Bad Tenant", scopes="read", now=NOW)
    assert caught.value.field == "tenant"
