"""E-mail rules (docs/contract.md §6.3)."""

from __future__ import annotations

import pytest

from domain.emails import is_valid_email, normalize_email, parse_email
from domain.errors import InvalidInput


@pytest.mark.parametrize(
    "raw",
    ["a@b.c", "user@example.com", "first.last+tag@sub.example.com.br", "o'neil@example.org"],
)
def test_accepts_valid_emails(raw: str) -> None:
    assert is_valid_email(raw)


def test_accepts_shortest_valid_email_a_at_b_dot_c() -> None:
    assert is_valid_email("a@b.c")


def test_rejects_email_without_dot() -> None:
    assert not is_valid_email("a@b")
    assert not is_valid_email("abcde@localhost")


def test_rejects_email_shorter_than_five_characters() -> None:
    assert not is_valid_email("a@.c")


@pytest.mark.parametrize("raw", ["a b@c.com", "ab@c .com", " ab@c.com", "ab@c.com "])
def test_rejects_email_with_spaces(raw: str) -> None:
    assert not is_valid_email(raw)


def test_tolerates_double_dots_in_local_part() -> None:
    assert is_valid_email("a..b@example.com")


@pytest.mark.parametrize(
    "raw",
    [
        "1199999999333@gmail.com",
        "x111111@gmail.com",
        "lead000000@mail.com",
        "123456789@mail.com",
    ],
)
def test_rejects_fake_lead_patterns(raw: str) -> None:
    assert not is_valid_email(raw)


@pytest.mark.parametrize(
    "raw",
    ["no-at-sign.com", "a@-example.com", "a@example-.com", "a@exa_mple.com", "a@@b.com"],
)
def test_rejects_malformed_emails(raw: str) -> None:
    assert not is_valid_email(raw)


def test_rejects_domain_label_longer_than_63_characters() -> None:
    assert not is_valid_email("a@" + "b" * 64 + ".com")
    assert is_valid_email("a@" + "b" * 63 + ".com")


def test_normalize_trims_and_lower_cases() -> None:
    assert normalize_email("  Maria.Silva@Example.COM ") == "maria.silva@example.com"


def test_parse_returns_normalized_address() -> None:
    assert parse_email(" Maria@Example.com ") == "maria@example.com"


def test_parse_rejects_invalid_address_naming_the_field() -> None:
    with pytest.raises(InvalidInput) as excinfo:
        parse_email("not-an-email")
    assert excinfo.value.field == "email"
    assert "not-an-email" not in str(excinfo.value)
