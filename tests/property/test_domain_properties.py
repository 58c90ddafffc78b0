"""Hypothesis properties of the pure domain: documents, phones, e-mails, names, dossier, message."""

from __future__ import annotations

from decimal import Decimal, localcontext
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

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
from domain.dossier import (
    RISK_QUALITY,
    Dossier,
    NormalizedPerson,
    decode_dossier,
    dossier_from_json_object,
    normalize_dossier,
)
from domain.emails import FAKE_EMAIL_PATTERNS, is_valid_email, normalize_email, parse_email
from domain.errors import InvalidInput
from domain.message import (
    DIFFERENT_PEOPLE_HEADER,
    Layout,
    PersonSource,
    format_block,
    format_lead_message,
    scale_amount,
)
from domain.names import levenshtein, match_names, normalize_name, similarity
from domain.phones import format_br_phone, parse_br_phone, storage_digits
from tests.support.strategies import (
    dossier_payloads,
    dossiers,
    json_objects,
    json_values,
    landline_nationals,
    mobile_nationals,
    valid_cnpjs,
    valid_cpfs,
)

LAYOUTS: tuple[Layout, ...] = ("webhook", "process")
FAST = settings(max_examples=200, deadline=None)
SLOW = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])

digit_text = st.text(alphabet="0123456789", min_size=0, max_size=16)
name_text = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "M", "Zs", "P"]), max_size=30
)


# --- independent oracles ------------------------------------------------------------------------


def oracle_cpf_digit(digits: str) -> str:
    """The TS formulation: (sum x 10) mod 11, 10 -> 0, weights counting down to 2."""
    weight = len(digits) + 1
    total = sum(int(d) * (weight - i) for i, d in enumerate(digits))
    rest = (total * 10) % 11
    return "0" if rest == 10 else str(rest)


def oracle_cnpj_digit(digits: str) -> str:
    """Weights cycle 2..9 from the right; 11 - (sum mod 11), >= 10 -> 0."""
    total = sum(int(d) * (2 + i % 8) for i, d in enumerate(reversed(digits)))
    value = 11 - total % 11
    return "0" if value >= 10 else str(value)


# --- CPF --------------------------------------------------------------------------------------


@FAST
@given(st.text(alphabet="0123456789", min_size=9, max_size=9))
def test_cpf_check_digits_agree_with_independent_oracle(nine: str) -> None:
    d1 = oracle_cpf_digit(nine)
    d2 = oracle_cpf_digit(nine + d1)
    assert cpf_check_digits(nine) == d1 + d2


@FAST
@given(valid_cpfs())
def test_generated_valid_cpfs_validate(cpf: str) -> None:
    assert is_valid_cpf(cpf)
    assert normalize_cpf(cpf) == cpf


def _change_digit(value: str, position: int, delta: int) -> str:
    return value[:position] + str((int(value[position]) + delta) % 10) + value[position + 1 :]


@FAST
@given(valid_cpfs(), st.integers(9, 10), st.integers(1, 9))
def test_changing_a_cpf_check_digit_always_invalidates_it(
    cpf: str, position: int, delta: int
) -> None:
    assert not is_valid_cpf(_change_digit(cpf, position, delta))


@FAST
@given(valid_cpfs(), st.integers(0, 8), st.integers(1, 9))
def test_changing_a_cpf_body_digit_invalidates_it_except_where_mod11_collapses(
    cpf: str, position: int, delta: int
) -> None:
    # The algorithm maps remainders 0 and 1 to the same check digit 0, so a change that moves the
    # remainder between them goes unnoticed (and the first digit's second weight, 11, is 0 mod
    # 11). Any other single-digit change must be caught.
    if is_valid_cpf(_change_digit(cpf, position, delta)):
        assert cpf[9] == "0"
        assert position == 0 or cpf[10] == "0"


@FAST
@given(valid_cpfs())
def test_cpf_format_then_strip_round_trips(cpf: str) -> None:
    formatted = format_cpf(cpf)
    assert len(formatted) == 14
    assert only_digits(formatted) == cpf
    assert normalize_cpf(formatted) == cpf


@FAST
@given(st.text(max_size=20))
def test_normalize_cpf_is_idempotent_and_is_valid_never_raises(raw: str) -> None:
    if is_valid_cpf(raw):
        once = normalize_cpf(raw)
        assert normalize_cpf(once) == once
    else:
        with pytest.raises(InvalidInput):
            normalize_cpf(raw)


@FAST
@given(valid_cpfs(), st.integers(0, 5))
def test_zero_padded_cpf_normalizes_to_the_same_cpf(cpf: str, extra_zeros: int) -> None:
    assert normalize_cpf("0" * extra_zeros + cpf) == cpf
    assert to_work_api_cpf(cpf) == "000" + cpf
    assert normalize_cpf(to_work_api_cpf(cpf)) == cpf


@FAST
@given(digit_text.filter(lambda d: len(d) < 9))
def test_digit_strings_shorter_than_nine_are_never_cpfs(digits: str) -> None:
    assert not is_valid_cpf(digits)


# --- CNPJ -------------------------------------------------------------------------------------


@FAST
@given(st.text(alphabet="0123456789", min_size=12, max_size=12))
def test_cnpj_check_digits_agree_with_independent_oracle(twelve: str) -> None:
    d1 = oracle_cnpj_digit(twelve)
    d2 = oracle_cnpj_digit(twelve + d1)
    assert cnpj_check_digits(twelve) == d1 + d2


@FAST
@given(valid_cnpjs(), st.integers(0, 13), st.integers(1, 9))
def test_valid_cnpjs_validate_and_single_digit_changes_invalidate(
    cnpj: str, position: int, delta: int
) -> None:
    assert is_valid_cnpj(cnpj)
    if is_valid_cnpj(_change_digit(cnpj, position, delta)):
        # Only the remainder 0/1 collapse of both check digits can hide a change.
        assert position < 12
        assert cnpj[12:] == "00"


@FAST
@given(valid_cnpjs())
def test_cnpj_format_round_trips_and_normalize_is_idempotent(cnpj: str) -> None:
    formatted = format_cnpj(cnpj)
    assert len(formatted) == 18
    assert normalize_cnpj(formatted) == cnpj
    assert normalize_cnpj(normalize_cnpj(formatted)) == cnpj
    assert normalize_cnpj("000" + cnpj) == cnpj


@FAST
@given(st.text(max_size=24))
def test_is_valid_cnpj_never_raises(raw: str) -> None:
    assert isinstance(is_valid_cnpj(raw), bool)


# --- phones -----------------------------------------------------------------------------------


@FAST
@given(mobile_nationals(), st.sampled_from(["{n}", "+55{n}", "55{n}", "({d}) {a}-{b}"]))
def test_any_valid_ddd_mobile_parses_to_14_char_e164(national: str, shape: str) -> None:
    raw = shape.format(n=national, d=national[:2], a=national[2:7], b=national[7:])
    phone = parse_br_phone(raw)
    assert phone.e164 == "+55" + national
    assert len(phone.e164) == 14
    assert phone.national == national
    assert phone.is_mobile
    assert parse_br_phone(phone.national) == phone
    assert parse_br_phone(phone.e164) == phone


@FAST
@given(
    st.one_of(mobile_nationals(), landline_nationals()),
    st.sampled_from(["{n}", "+55 {n}", "55{n}", "0{n}", "({d}) {r}", "+55 ({d}) {r}"]),
)
def test_storage_digits_of_a_valid_phone_is_its_national_form(national: str, shape: str) -> None:
    raw = shape.format(n=national, d=national[:2], r=national[2:])
    assert storage_digits(raw) == parse_br_phone(raw).national == national


@FAST
@given(landline_nationals())
def test_any_valid_ddd_landline_parses_to_13_char_e164(national: str) -> None:
    phone = parse_br_phone(national)
    assert phone.e164 == "+55" + national
    assert len(phone.e164) == 13
    assert not phone.is_mobile


@FAST
@given(st.one_of(st.text(max_size=30), digit_text, mobile_nationals().map(lambda n: f"55{n}")))
def test_storage_digits_is_idempotent(raw: str) -> None:
    once = storage_digits(raw)
    assert storage_digits(once) == once
    assert once == only_digits(once)


@FAST
@given(
    st.one_of(
        st.text(alphabet="0123456789", max_size=7),
        st.text(alphabet="0123456789", min_size=20, max_size=30),
    )
)
def test_digit_strings_of_length_0_to_7_and_20_to_30_are_rejected(digits: str) -> None:
    with pytest.raises(InvalidInput):
        parse_br_phone(digits)


@FAST
@given(st.text(max_size=40))
def test_parse_br_phone_raises_only_invalid_input(raw: str) -> None:
    try:
        phone = parse_br_phone(raw)
    except InvalidInput as exc:
        field = exc.field
    else:
        assert phone.e164.startswith("+55")
        assert phone.e164[1:].isdigit()
        assert len(phone.e164) in {13, 14}
        return
    assert field == "phone"


@FAST
@given(st.one_of(mobile_nationals(), landline_nationals()))
def test_display_format_strips_back_to_national_digits(national: str) -> None:
    assert only_digits(format_br_phone(national)) == national


# --- e-mails ----------------------------------------------------------------------------------


@FAST
@given(st.text(max_size=40))
def test_email_validator_never_raises_and_rejects_whitespace(raw: str) -> None:
    valid = is_valid_email(raw)
    if any(ch.isspace() for ch in raw):
        assert not valid


@FAST
@given(st.text(max_size=15), st.sampled_from(FAKE_EMAIL_PATTERNS), st.text(max_size=15))
def test_emails_containing_fake_patterns_are_always_rejected(
    before: str, pattern: str, after: str
) -> None:
    assert not is_valid_email(f"{before}{pattern}{after}@example.com")
    assert not is_valid_email(f"user@{before}{pattern}{after}.com")


@FAST
@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=4),
)
def test_simple_lowercase_emails_are_valid(local: str, domain: str, tld: str) -> None:
    assert is_valid_email(f"{local}@{domain}.{tld}")


@FAST
@given(st.one_of(st.text(max_size=30), st.emails().map(str)))
def test_normalize_email_is_idempotent_and_parse_agrees(raw: str) -> None:
    once = normalize_email(raw)
    assert normalize_email(once) == once
    try:
        parsed = parse_email(raw)
    except InvalidInput:
        assert not is_valid_email(once)
    else:
        assert parsed == once
        assert is_valid_email(parsed)


# --- names ------------------------------------------------------------------------------------


@FAST
@given(name_text, name_text, st.floats(0.0, 1.0))
def test_name_match_score_is_in_unit_interval(lead: str, candidate: str, threshold: float) -> None:
    result = match_names(lead, candidate, threshold)
    assert 0.0 <= result.score <= 1.0
    assert result.matched == (result.method != "none")


@FAST
@given(name_text)
def test_name_matches_itself_exactly(name: str) -> None:
    assume(normalize_name(name))
    result = match_names(name, name)
    assert (result.method, result.score, result.matched) == ("exact", 1.0, True)


@FAST
@given(name_text, name_text)
def test_similarity_is_symmetric_and_bounded(a: str, b: str) -> None:
    assert similarity(a, b) == similarity(b, a)
    assert 0.0 <= similarity(a, b) <= 1.0
    assert levenshtein(a, b) <= max(len(a), len(b))


@FAST
@given(st.one_of(name_text, st.text(max_size=30)))
def test_normalize_name_is_idempotent(raw: str) -> None:
    once = normalize_name(raw)
    assert normalize_name(once) == once
    assert once == once.strip()
    assert "  " not in once


@FAST
@given(st.text(max_size=8), st.text(max_size=8), st.text(max_size=8))
def test_levenshtein_obeys_triangle_inequality(a: str, b: str, c: str) -> None:
    assert levenshtein(a, c) <= levenshtein(a, b) + levenshtein(b, c)


# --- dossier ----------------------------------------------------------------------------------


@SLOW
@given(json_objects())
def test_any_json_object_decodes_without_raising(payload: dict[str, Any]) -> None:
    dossier = decode_dossier(msgspec.json.encode(payload))
    assert isinstance(dossier, Dossier)


@FAST
@given(json_values().filter(lambda v: not isinstance(v, dict)))
def test_non_object_top_level_is_invalid_input(value: Any) -> None:
    with pytest.raises(InvalidInput):
        decode_dossier(msgspec.json.encode(value))


@SLOW
@given(dossier_payloads())
def test_typed_fast_path_and_cleaning_path_agree(payload: dict[str, Any]) -> None:
    via_decoder = decode_dossier(msgspec.json.encode(payload))
    via_cleaning = dossier_from_json_object(payload)
    assert via_decoder == via_cleaning


@SLOW
@given(dossiers())
def test_normalize_dossier_never_raises_and_round_trips_through_json(dossier: Dossier) -> None:
    person = normalize_dossier(dossier)
    encoded = msgspec.json.encode(person)
    assert msgspec.json.decode(encoded, type=NormalizedPerson) == person


@SLOW
@given(dossiers())
def test_normalized_person_invariants(dossier: Dossier) -> None:
    person = normalize_dossier(dossier)
    addresses = [e.address for e in person.emails]
    assert len(addresses) == len(set(addresses))
    assert all(a == a.lower() and is_valid_email(a) for a in addresses)
    numbers = [p.number for p in person.phones]
    assert len(numbers) == len(set(numbers))
    assert all(n.isdigit() and storage_digits(n) == n for n in numbers)
    for address in person.addresses:
        assert address.zip_code is None or (
            len(address.zip_code) == 8 and address.zip_code.isdigit()
        )
        assert address.state is None or (len(address.state) == 2 and address.state.isupper())
    assert person.sex in {None, "M", "F"}
    assert person.cpf is None or is_valid_cpf(person.cpf)
    assert person.quality_score in {*RISK_QUALITY.values(), 0.5}


@SLOW
@given(dossiers(), st.sampled_from([1.9, 1.0, 0.0, 2.5, 1e-9]))
def test_block_never_raises_and_every_line_ends_with_newline(
    dossier: Dossier, multiplier: float
) -> None:
    block = format_block(dossier, income_multiplier=multiplier)
    assert block.startswith("✅ DADOS PESSOAIS\n")
    lines = block.splitlines(keepends=True)
    assert all(line.endswith("\n") for line in lines)
    assert len(lines) == block.count("\n")


@SLOW
@given(
    st.lists(
        st.builds(
            PersonSource,
            cpf=st.one_of(valid_cpfs(), st.text(max_size=12)),
            dossier=dossiers(),
            via=st.sampled_from(["phone", "email", "both", "direct"]),
            contact=st.one_of(st.none(), st.text(max_size=20)),
        ),
        max_size=4,
    ),
    st.sampled_from(LAYOUTS),
)
def test_lead_message_never_raises_and_ends_with_newline(
    people: list[PersonSource], layout: Layout
) -> None:
    message = format_lead_message(people, layout=layout)
    assert message == "" or message.endswith("\n")
    assert bool(message) == bool(people)
    if layout == "process":
        assert not message.startswith(DIFFERENT_PEOPLE_HEADER)


@FAST
@given(valid_cpfs(), dossiers(), st.text(min_size=1, max_size=20))
def test_one_cpf_via_phone_and_email_is_reported_as_same_person(
    cpf: str, dossier: Dossier, contact: str
) -> None:
    people = [
        PersonSource(cpf=cpf, dossier=dossier, via="phone", contact=contact),
        PersonSource(cpf=format_cpf(cpf), dossier=dossier, via="email", contact=contact),
    ]
    for layout in LAYOUTS:
        message = format_lead_message(people, layout=layout)
        assert message.startswith("📞📧 Telefone e e-mail da mesma pessoa\n\n")
        assert "PESSOAS DIFERENTES" not in message


@FAST
@given(st.integers(-(10**12), 10**12), st.integers(0, 10**6))
def test_scaled_amount_is_the_binary_product_within_a_cent(
    cents: int, multiplier_thousandths: int
) -> None:
    multiplier = multiplier_thousandths / 1000
    amount = Decimal(cents) / 100
    scaled = scale_amount(amount, multiplier)
    assert scaled is not None
    # The printed rule (docs/contract.md §6.6): the binary double product, formatted to cents
    # (a negative amount that rounds to zero prints without its sign).
    assert scaled == f"{float(amount) * multiplier:.2f}".replace("-0.00", "0.00")
    # ...which never strays more than a cent from the exact decimal product.
    with localcontext() as ctx:
        ctx.prec = 100
        exact = cents * Decimal(repr(multiplier)) / 100
    assert abs(Decimal(scaled) - exact) <= Decimal("0.01")
    assert scaled.count(".") == 1
    assert len(scaled.split(".")[1]) == 2
