"""HMAC body signatures and token comparison (domain/signatures.py), as pure functions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.signatures import (
    MAX_SIGNATURE_HEADER_LENGTH,
    SignatureCheck,
    compute_signature,
    parse_secrets,
    sign,
    token_matches,
    verify_signature,
)

CURRENT = "whsec-test-current-0001"
PREVIOUS = "whsec-test-previous-0002"
BODY = b'{"id":"lead-1"}'
T = 1_700_000_000
# Computed independently: printf '%s' '1700000000.{"id":"lead-1"}' |
#   openssl dgst -sha256 -hmac 'whsec-test-current-0001'
VECTOR = "6fcec666b5889bb6c5f52f7d209f5c26224c6a2a06bfca7ed5e8eb33ab4aeb36"


def check(
    header: str, body: bytes = BODY, *, now: float = T, secrets: tuple[str, ...] = (CURRENT,)
) -> SignatureCheck:
    """Verify against ``secrets`` with the 300 s window."""
    return verify_signature(header, body, secrets, now=now, tolerance_s=300)


def test_signature_matches_an_independent_hmac_sha256_of_timestamp_dot_body() -> None:
    assert compute_signature(CURRENT, T, BODY) == VECTOR
    assert sign(CURRENT, T, BODY) == f"t={T},v1={VECTOR}"


def test_a_fresh_signature_of_the_exact_body_is_valid() -> None:
    assert check(sign(CURRENT, T, BODY)) is SignatureCheck.VALID
    assert check(f"t={T},v1={VECTOR.upper()}") is SignatureCheck.VALID
    assert check(f" t={T} , v1={VECTOR} ") is SignatureCheck.VALID


def test_a_changed_body_or_timestamp_does_not_verify() -> None:
    header = sign(CURRENT, T, BODY)
    assert check(header, b'{"id":"lead-2"}') is SignatureCheck.MISMATCH
    assert check(header, BODY + b" ") is SignatureCheck.MISMATCH
    assert check(f"t={T + 1},v1={VECTOR}", now=T + 1) is SignatureCheck.MISMATCH


def test_timestamps_outside_the_window_are_stale_in_both_directions() -> None:
    header = sign(CURRENT, T, BODY)
    assert check(header, now=T + 300) is SignatureCheck.VALID
    assert check(header, now=T - 300) is SignatureCheck.VALID
    assert check(header, now=T + 301) is SignatureCheck.STALE
    assert check(header, now=T - 301) is SignatureCheck.STALE


def test_every_configured_secret_verifies_during_a_rotation() -> None:
    both = (CURRENT, PREVIOUS)
    assert check(sign(PREVIOUS, T, BODY), secrets=both) is SignatureCheck.VALID
    assert check(sign(CURRENT, T, BODY), secrets=both) is SignatureCheck.VALID
    assert check(sign(PREVIOUS, T, BODY)) is SignatureCheck.MISMATCH
    assert check(sign("whsec-someone-else-0003", T, BODY), secrets=both) is SignatureCheck.MISMATCH
    assert check(sign(CURRENT, T, BODY), secrets=()) is SignatureCheck.MISMATCH


def test_one_matching_v1_entry_among_several_is_enough() -> None:
    other = compute_signature(PREVIOUS, T, BODY)
    assert check(f"t={T},v1={other},v1={VECTOR}") is SignatureCheck.VALID
    assert check(f"t={T},v0=whatever,v1={VECTOR}") is SignatureCheck.VALID
    assert check(f"t={T},v1={other}") is SignatureCheck.MISMATCH


@pytest.mark.parametrize(
    "header",
    [
        "",
        VECTOR,
        f"v1={VECTOR}",
        f"t={T}",
        f"t={T},v0={VECTOR}",
        f"t=abc,v1={VECTOR}",
        f"t=-{T},v1={VECTOR}",
        f"t={T},t={T},v1={VECTOR}",
        f"t={'9' * 400},v1={VECTOR}",
        f"t={T},v1={VECTOR[:-1]}",
        f"t={T},v1={VECTOR[:-1]}g",
        f"t={T},v1",
        f"t=\u0661\u0667,v1={VECTOR}",
        f"t={T}," + ",".join([f"v1={VECTOR}"] * 9),
        f"t={T},v1={VECTOR}," + "x=" + "0" * MAX_SIGNATURE_HEADER_LENGTH,
    ],
)
def test_malformed_headers_are_refused_unparsed(header: str) -> None:
    assert check(header) is SignatureCheck.MALFORMED


@given(
    body=st.binary(max_size=512),
    secret=st.text(min_size=1, max_size=64),
    t=st.integers(0, 10**12 - 1),
)
def test_any_body_signed_with_a_secret_verifies_with_it(body: bytes, secret: str, t: int) -> None:
    header = sign(secret, t, body)
    assert verify_signature(header, body, [secret], now=t, tolerance_s=1) is SignatureCheck.VALID


@given(body=st.binary(min_size=1, max_size=256), data=st.data())
def test_flipping_any_byte_of_the_body_breaks_the_signature(
    body: bytes, data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(body) - 1))
    tampered = body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]
    assert check(sign(CURRENT, T, body), tampered) is SignatureCheck.MISMATCH


def test_tokens_match_any_configured_secret_exactly() -> None:
    both = (CURRENT, PREVIOUS)
    assert token_matches(CURRENT, both)
    assert token_matches(PREVIOUS, both)
    assert not token_matches(CURRENT[:-1], both)
    assert not token_matches(CURRENT + "x", both)
    assert not token_matches("", both)
    assert not token_matches(CURRENT, ())
    assert not token_matches("s\u00e9cret\udc80", both)


def test_secret_lists_are_comma_separated_current_first() -> None:
    assert parse_secrets(f" {CURRENT} , {PREVIOUS},, ") == (CURRENT, PREVIOUS)
    assert parse_secrets("") == ()
    assert parse_secrets(" , ") == ()
