"""Properties of the sandbox's synthetic people: any valid CPF yields a usable, faithful dossier."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.documents import cpf_check_digits, is_valid_cpf
from domain.dossier import decode_dossier, normalize_dossier
from domain.emails import is_valid_email
from domain.message import format_block
from domain.phones import parse_br_phone
from infra.sandbox.people import SyntheticPeople

PEOPLE = SyntheticPeople(20251122)

nine_digits = st.text(alphabet="0123456789", min_size=9, max_size=9).filter(
    lambda nine: nine != nine[0] * 9
)
valid_cpfs = nine_digits.map(lambda nine: nine + cpf_check_digits(nine))
seeds = st.integers(min_value=0, max_value=2**63 - 1)


@settings(max_examples=150, deadline=None)
@given(cpf=valid_cpfs)
def test_any_valid_cpf_gives_a_dossier_the_domain_decodes_and_formats(cpf: str) -> None:
    raw = PEOPLE.dossier_json(cpf)
    dossier = decode_dossier(raw)
    assert dossier.dados_basicos is not None
    assert dossier.dados_basicos.cpf == cpf
    block = format_block(dossier, income_multiplier=1.9)
    assert f"CPF: {cpf}\n" in block
    assert "💰 DADOS FINANCEIROS" in block
    assert "Renda: R$ " in block
    person = normalize_dossier(dossier)
    assert person.cpf == cpf
    assert person.birth_date is not None
    assert person.sex in ("M", "F")
    assert person.income is not None
    assert person.addresses
    assert all(a.zip_code is not None and a.state is not None for a in person.addresses)


@settings(max_examples=100, deadline=None)
@given(cpf=valid_cpfs)
def test_the_dossier_has_the_25_upstream_keys(cpf: str) -> None:
    payload = msgspec.json.decode(PEOPLE.dossier_json(cpf))
    assert len(payload) == 25
    assert payload["status"] == 200
    assert all(is_valid_cpf(p["cpfParente"]) for p in payload["parentes"])


@settings(max_examples=100, deadline=None)
@given(cpf=valid_cpfs)
def test_contacts_are_valid_brazilian_phones_and_emails(cpf: str) -> None:
    person = PEOPLE.by_cpf(cpf)
    for phone in person.phones:
        parsed = parse_br_phone(phone.number)
        assert parsed.national == phone.number
    assert parse_br_phone(person.mobile).is_mobile
    assert all(is_valid_email(email) for email in person.emails)
    # Reserved example domains only (RFC 2606): no synthetic address can belong to anyone.
    assert all(".example." in "." + email.rsplit("@", 1)[1] + "." for email in person.emails)


@settings(max_examples=50, deadline=None)
@given(seed=seeds, cpf=valid_cpfs)
def test_people_are_a_pure_function_of_seed_and_cpf(seed: int, cpf: str) -> None:
    one, two = SyntheticPeople(seed), SyntheticPeople(seed)
    assert one.dossier_json(cpf) == two.dossier_json(cpf)
    assert one.by_cpf(cpf) == two.by_cpf(cpf)


@settings(max_examples=50, deadline=None)
@given(seed=seeds, index=st.integers(min_value=0, max_value=10**9))
def test_person_i_is_the_person_of_its_cpf(seed: int, index: int) -> None:
    people = SyntheticPeople(seed)
    person = people.person(index)
    assert is_valid_cpf(person.cpf)
    again = people.by_cpf(person.cpf)
    assert (again.name, again.phones, again.emails) == (person.name, person.phones, person.emails)
    assert people.index_for_lead(people.lead_id(index)) == index
