"""Callback rules (domain/callbacks.py): the URL rule, the SSRF rule, signing and the schedule."""

from __future__ import annotations

import hashlib
import hmac
import random

import pytest

from domain.callbacks import (
    MAX_CALLBACK_URL_LENGTH,
    RETRY_WINDOW_S,
    callback_retry_policy,
    is_public_address,
    new_callback_secret,
    next_step,
    signature_header,
    validate_callback_url,
)
from domain.errors import InvalidInput
from domain.signatures import SignatureCheck, verify_signature

NEW = "c2scb_new-secret-0000000000000000"
OLD = "c2scb_old-secret-1111111111111111"
BODY = b'{"job_id":"7b1c","state":"done"}'
T = 1_800_000_000


# --- the URL rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/c2s",
        "https://hooks.example.com:8443/c2s?tenant=a",
        "https://93.184.216.34/cb",
        "https://[2606:4700::6810:85e5]/cb",
    ],
)
def test_production_accepts_https_to_public_hosts(url: str) -> None:
    assert validate_callback_url(url, environment="production") == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/c2s", "https"),
        ("https://10.0.0.1/cb", "public address"),
        ("https://169.254.169.254/latest/meta-data", "public address"),
        ("https://[::ffff:127.0.0.1]/cb", "public address"),
        ("https://localhost/cb", "public host"),
        ("https://127.0.0.1:8443/cb", "public host"),
        ("https://user:pw@hooks.example.com/cb", "credentials"),
        ("https://hooks.example.com/cb#frag", "fragment"),
        ("ftp://hooks.example.com/cb", "https"),
        ("hooks.example.com/cb", "https"),
        ("https://hooks.example.com/a b", "spaces"),
        ("https://hooks.example.com:99999/cb", "valid URL"),
        ("", "characters"),
        ("https://h.example.com/" + "a" * MAX_CALLBACK_URL_LENGTH, "characters"),
    ],
)
def test_production_refuses_with_a_reason_naming_the_field(url: str, why: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_callback_url(url, environment="production")
    assert caught.value.field == "callback_url"
    assert why in caught.value.detail
    if url:
        assert url not in caught.value.detail


@pytest.mark.parametrize("environment", ["development", "test"])
def test_development_allows_plain_http_to_loopback_only(environment: str) -> None:
    for url in ("http://127.0.0.1:9000/cb", "http://localhost:9000/cb", "http://[::1]:9/cb"):
        assert validate_callback_url(url, environment=environment) == url
    assert validate_callback_url("https://10.0.0.1/cb", environment=environment)
    with pytest.raises(InvalidInput, match="loopback"):
        validate_callback_url("http://hooks.example.com/cb", environment=environment)


# --- the SSRF rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0",  # noqa: S104 - an address under test, nothing binds it
        "0.1.2.3",
        "10.1.2.3",
        "100.64.0.1",
        "100.127.255.254",
        "127.0.0.1",
        "127.8.8.8",
        "169.254.169.254",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.8",
        "192.0.2.1",
        "192.168.1.1",
        "198.18.0.1",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "64:ff9b::a00:1",
        "2002:a00:1::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "2001:db8::1",
        "fc00::1",
        "fd00:ec2::254",
        "fdaa:0:1::3",
        "fe80::1",
        "fec0::1",
        "ff02::1",
        "not-an-address",
    ],
)
def test_private_loopback_link_local_and_special_addresses_are_refused(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "93.184.216.34", "1.1.1.1", "2606:4700::6810:85e5", "::ffff:8.8.8.8"],
)
def test_public_addresses_pass(address: str) -> None:
    assert is_public_address(address)


# --- signing -------------------------------------------------------------------------------


def _receiver_verifies(header: str, body: bytes, secret: str, now: int) -> bool:
    """The receiver's check exactly as docs/callbacks.md tells it, written independently."""
    fields = [part.split("=", 1) for part in header.split(",")]
    timestamp = next(value for key, value in fields if key == "t")
    if abs(now - int(timestamp)) > 300:
        return False
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return any(hmac.compare_digest(expected, value) for key, value in fields if key == "v1")


def test_one_secret_signs_one_v1_that_the_receiver_verifies() -> None:
    header = signature_header([NEW], T, BODY)
    assert header.startswith(f"t={T},v1=")
    assert header.count("v1=") == 1
    assert _receiver_verifies(header, BODY, NEW, now=T + 5)
    assert not _receiver_verifies(header, BODY + b" ", NEW, now=T + 5)
    assert not _receiver_verifies(header, BODY, NEW, now=T + 301)


def test_during_a_rotation_either_valid_secret_verifies_and_a_retired_one_does_not() -> None:
    header = signature_header([NEW, OLD], T, BODY)
    assert header.count("v1=") == 2
    assert _receiver_verifies(header, BODY, NEW, now=T)
    assert _receiver_verifies(header, BODY, OLD, now=T)
    assert not _receiver_verifies(header, BODY, "c2scb_someone-else-22222222222", now=T)
    # Our own verifier (the webhook's) agrees.
    for secrets in ((NEW,), (OLD,)):
        assert verify_signature(header, BODY, secrets, now=T, tolerance_s=300) is (
            SignatureCheck.VALID
        )
    after_retirement = signature_header([NEW], T, BODY)
    assert not _receiver_verifies(after_retirement, BODY, OLD, now=T)


def test_new_secrets_are_random_and_long() -> None:
    first, second = new_callback_secret(), new_callback_secret()
    assert first != second
    assert first.startswith("c2scb_")
    assert len(first) >= 40


# --- the schedule --------------------------------------------------------------------------


def test_a_2xx_is_delivered_whatever_the_attempt() -> None:
    policy = callback_retry_policy(10.0)
    step = next_step(delivered=True, attempts=7, since_first_attempt_s=9e9, rand=0.5, policy=policy)
    assert step.state == "delivered"


def test_backoff_doubles_from_the_base_with_full_jitter_capped_at_one_hour() -> None:
    policy = callback_retry_policy(10.0)
    caps = [
        next_step(
            delivered=False, attempts=n, since_first_attempt_s=0.0, rand=0.999999, policy=policy
        ).delay_s
        for n in range(1, 14)
    ]
    assert caps[:4] == pytest.approx([10.0, 20.0, 40.0, 80.0], rel=1e-4)
    assert max(caps) == pytest.approx(3600.0, rel=1e-4)
    half = next_step(
        delivered=False, attempts=3, since_first_attempt_s=0.0, rand=0.5, policy=policy
    )
    assert half.state == "pending"
    assert half.delay_s == pytest.approx(20.0)


def test_failures_are_retried_for_24_hours_after_the_first_attempt_then_failed() -> None:
    policy = callback_retry_policy(10.0)
    rand = random.Random(7)
    elapsed, attempts = 0.0, 1
    while True:
        step = next_step(
            delivered=False,
            attempts=attempts,
            since_first_attempt_s=elapsed,
            rand=rand.random(),
            policy=policy,
        )
        if step.state == "failed":
            break
        elapsed += step.delay_s
        attempts += 1
    assert elapsed <= RETRY_WINDOW_S  # no attempt is ever scheduled after the window
    assert elapsed > RETRY_WINDOW_S - 3600  # ...and retries go on close to its end
    assert 20 < attempts < 200
