"""Brazilian phone rules (docs/contract.md §6.2)."""

from __future__ import annotations

import pytest

from domain.errors import InvalidInput
from domain.phones import (
    BrPhone,
    diretrix_form,
    format_br_phone,
    parse_br_phone,
    storage_digits,
)


@pytest.mark.parametrize(
    "raw",
    ["11987654321", "(11) 98765-4321", "+55 11 98765-4321", "5511987654321", "11 98765 4321"],
)
def test_parses_mobile_in_reference_formats_to_e164(raw: str) -> None:
    phone = parse_br_phone(raw)
    assert phone == BrPhone(e164="+5511987654321", national="11987654321", ddd="11", is_mobile=True)


@pytest.mark.parametrize("raw", ["1133334444", "(11) 3333-4444"])
def test_parses_landline_to_e164(raw: str) -> None:
    phone = parse_br_phone(raw)
    assert phone.e164 == "+551133334444"
    assert phone.national == "1133334444"
    assert not phone.is_mobile


def test_e164_length_is_14_for_mobile_and_13_for_landline() -> None:
    assert len(parse_br_phone("11987654321").e164) == 14
    assert len(parse_br_phone("1133334444").e164) == 13


@pytest.mark.parametrize(
    "raw",
    ["1234", "119876", "0187654321", "+1234567890", "1" * 20, "9" * 25, "", "   "],
)
def test_rejects_reference_invalid_phones(raw: str) -> None:
    with pytest.raises(InvalidInput) as excinfo:
        parse_br_phone(raw)
    assert excinfo.value.field == "phone"


def test_rejects_phone_with_invalid_ddd() -> None:
    with pytest.raises(InvalidInput):
        parse_br_phone("2098765432")


@pytest.mark.parametrize(
    "raw", ["11987654321 ext. 22", "(11) 9ABCD-EFGH", "１１９８７６５４３２１", "Tel 11987654321"]
)
def test_rejects_phone_with_letters_or_non_ascii_digits(raw: str) -> None:
    with pytest.raises(InvalidInput):
        parse_br_phone(raw)


def test_accepts_phone_with_dots_and_surrounding_spaces() -> None:
    assert parse_br_phone("  11.98765.4321 ").e164 == "+5511987654321"


def test_phone_error_does_not_contain_the_value() -> None:
    with pytest.raises(InvalidInput) as excinfo:
        parse_br_phone("0187654321")
    assert "0187654321" not in str(excinfo.value)


def test_storage_digits_of_valid_phone_drops_country_code() -> None:
    assert storage_digits("+55 11 98765-4321") == "11987654321"
    assert storage_digits("5511987654321") == "11987654321"


def test_storage_digits_of_invalid_phone_strips_non_digits_and_leading_55() -> None:
    assert storage_digits("55 (00) 1234-56789") == "00123456789"
    assert storage_digits("abc") == ""
    assert storage_digits("1234") == "1234"


def test_diretrix_form_is_national_digits_not_e164() -> None:
    assert diretrix_form(parse_br_phone("+55 11 98765-4321")) == "11987654321"


def test_formats_mobile_for_display() -> None:
    assert format_br_phone("11987654321") == "(11) 98765-4321"


def test_formats_landline_for_display() -> None:
    assert format_br_phone("1133334444") == "(11) 3333-4444"


def test_format_tolerates_country_code_and_returns_other_lengths_unchanged() -> None:
    assert format_br_phone("+55 11 98765-4321") == "(11) 98765-4321"
    assert format_br_phone("1234") == "1234"


def test_ddd_55_is_not_mistaken_for_the_country_code() -> None:
    # A naive "strip a leading 55" would eat the area code of Rio Grande do Sul numbers.
    assert parse_br_phone("55987654321").national == "55987654321"
    assert storage_digits("55987654321") == "55987654321"
    assert storage_digits("+55 55 98765-4321") == "55987654321"
