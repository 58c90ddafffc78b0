"""CPF and CNPJ rules (docs/contract.md §6.1)."""

from __future__ import annotations

import pytest

from domain.documents import (
    cnpj_check_digits,
    cpf_check_digits,
    format_cnpj,
    format_cpf,
    is_valid_cnpj,
    is_valid_cpf,
    normalize_cnpj,
    normalize_cpf,
    only_digits,
    to_work_api_cpf,
)
from domain.errors import InvalidInput


@pytest.mark.parametrize("raw", ["52998224725", "529.982.247-25", "01234567890", "00000000191"])
def test_accepts_reference_valid_cpfs(raw: str) -> None:
    assert is_valid_cpf(raw)
    assert normalize_cpf(raw) == only_digits(raw)


def test_rejects_cpf_with_wrong_check_digit() -> None:
    assert not is_valid_cpf("12345678900")
    with pytest.raises(InvalidInput) as excinfo:
        normalize_cpf("12345678900")
    assert excinfo.value.field == "cpf"


def test_rejects_short_cpf_1234567() -> None:
    assert not is_valid_cpf("1234567")


@pytest.mark.parametrize("raw", ["", "1", "12345678", "191"])
def test_rejects_cpf_missing_more_than_two_leading_zeros(raw: str) -> None:
    assert not is_valid_cpf(raw)


@pytest.mark.parametrize(("raw", "expected"), [("1234567890", "01234567890"), ("191", None)])
def test_left_pads_only_nine_or_ten_digit_cpfs(raw: str, expected: str | None) -> None:
    if expected is None:
        assert not is_valid_cpf(raw)
    else:
        assert normalize_cpf(raw) == expected


@pytest.mark.parametrize("digit", "0123456789")
def test_rejects_cpf_of_one_repeated_digit(digit: str) -> None:
    assert not is_valid_cpf(digit * 11)


def test_accepts_work_api_fourteen_digit_zero_padded_cpf() -> None:
    assert normalize_cpf("00052998224725") == "52998224725"


def test_rejects_fourteen_digit_cpf_with_non_zero_prefix() -> None:
    assert not is_valid_cpf("10052998224725")


def test_rejects_cpf_longer_than_eleven_digits_without_zero_prefix() -> None:
    assert not is_valid_cpf("529982247250")


def test_check_digits_cannot_catch_every_single_digit_change() -> None:
    # A property of the public algorithm, not of our code: remainders 0 and 1 both give 0.
    assert is_valid_cpf("12345678909")
    assert is_valid_cpf("22345678909")


def test_invalid_cpf_message_does_not_contain_the_value() -> None:
    with pytest.raises(InvalidInput) as excinfo:
        normalize_cpf("12345678900")
    assert "12345678900" not in str(excinfo.value)


def test_computes_cpf_check_digits() -> None:
    assert cpf_check_digits("529982247") == "25"
    assert cpf_check_digits("000000001") == "91"


def test_cpf_check_digits_rejects_wrong_length_as_programming_error() -> None:
    with pytest.raises(ValueError, match="9 ASCII digits"):
        cpf_check_digits("12345")


def test_formats_cpf_for_display() -> None:
    assert format_cpf("52998224725") == "529.982.247-25"


def test_converts_cpf_to_work_api_form() -> None:
    assert to_work_api_cpf("529.982.247-25") == "00052998224725"


def test_only_digits_keeps_ascii_digits_only() -> None:
    assert only_digits("529.982.247-25") == "52998224725"
    assert only_digits("１２３") == ""  # full-width digits are not ASCII digits
    assert only_digits("") == ""


def test_accepts_valid_cnpj_in_any_format() -> None:
    assert normalize_cnpj("11.222.333/0001-81") == "11222333000181"
    assert is_valid_cnpj("11222333000181")


def test_rejects_cnpj_with_wrong_check_digit() -> None:
    assert not is_valid_cnpj("11222333000182")
    with pytest.raises(InvalidInput) as excinfo:
        normalize_cnpj("11222333000182")
    assert excinfo.value.field == "cnpj"


@pytest.mark.parametrize("digit", "0123456789")
def test_rejects_cnpj_of_one_repeated_digit(digit: str) -> None:
    assert not is_valid_cnpj(digit * 14)


def test_rejects_short_cnpj() -> None:
    assert not is_valid_cnpj("12345678901")


def test_left_pads_cnpj_that_lost_leading_zeros() -> None:
    twelve = "002718493600"
    full = twelve + cnpj_check_digits(twelve)
    assert normalize_cnpj(full[1:]) == full
    assert normalize_cnpj(full[2:]) == full
    assert not is_valid_cnpj(full[3:])


def test_computes_cnpj_check_digits() -> None:
    assert cnpj_check_digits("112223330001") == "81"


def test_formats_cnpj_for_display() -> None:
    assert format_cnpj("11222333000181") == "11.222.333/0001-81"
