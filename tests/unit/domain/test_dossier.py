"""Work API dossier decoding and normalisation (docs/contract.md §3.3, §5, §6.5)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from domain.dossier import (
    Dossier,
    NormalizedPerson,
    decode_dossier,
    normalize_dossier,
    parse_amount,
    parse_br_date,
    quality_score_for_risk,
)
from domain.errors import InvalidInput

GOLDEN = Path(__file__).resolve().parents[2] / "golden"


def _decode(payload: dict[str, Any]) -> Dossier:
    return decode_dossier(msgspec.json.encode(payload))


def _person(payload: dict[str, Any]) -> NormalizedPerson:
    return normalize_dossier(_decode(payload))


@pytest.fixture(scope="module")
def helena() -> Dossier:
    return decode_dossier((GOLDEN / "dossier_helena.json").read_bytes())


def test_decodes_full_dossier_sections(helena: Dossier) -> None:
    assert helena.status == 200
    assert helena.dados_basicos is not None
    assert helena.dados_basicos.nome == "HELENA MARQUES DUARTE"
    assert helena.dados_basicos.situacao_cadastral is not None
    assert helena.dados_basicos.situacao_cadastral.descricao_situacao_cadastral == "REGULAR"
    economic = helena.dados_economicos
    assert economic is not None
    assert economic.poder_aquisitivo is not None
    assert economic.poder_aquisitivo.faixa_poder_aquisitivo == "De R$ 7018 até R$ 15000"
    assert economic.score is not None
    assert economic.score.score_csba_faixa_risco == "BAIXISSIMO RISCO"
    assert helena.profissao is not None
    assert helena.profissao.pis == 10000000000
    assert helena.titulo_eleitor is not None
    assert helena.titulo_eleitor.titulo_eleitor_numero == 100000000000
    assert len(helena.telefones) == 4
    assert helena.telefones[0].whatsapp == "SIM"
    assert helena.enderecos[0].logradouro_numero == "245"
    assert helena.emails[0].prioridade == "MUITO ALTA"
    assert helena.parentes[0].grau_parentesco == "MAE"
    assert helena.flags is not None
    assert helena.flags.pessoa_exposta_politicamente is False


def test_decodes_str_input_like_bytes(helena: Dossier) -> None:
    text = (GOLDEN / "dossier_helena.json").read_text(encoding="utf-8")
    assert decode_dossier(text) == helena


def test_decodes_empty_object_to_empty_dossier() -> None:
    assert decode_dossier(b"{}") == Dossier()


def test_decodes_soft_error_body() -> None:
    dossier = decode_dossier(b'{"status": 403, "statusMsg": "token expirado", "reason": "x"}')
    assert (dossier.status, dossier.status_msg, dossier.dados_basicos) == (
        403,
        "token expirado",
        None,
    )


@pytest.mark.parametrize("raw", [b"", b"not json", b"{", b"\xff\xfe", "{'a': 1}"])
def test_rejects_non_json(raw: bytes | str) -> None:
    with pytest.raises(InvalidInput) as excinfo:
        decode_dossier(raw)
    assert excinfo.value.field == "dossier"


@pytest.mark.parametrize("raw", [b"[]", b"null", b"1", b'"x"', b"[{}]"])
def test_rejects_non_object_top_level(raw: bytes) -> None:
    with pytest.raises(InvalidInput):
        decode_dossier(raw)


def test_tolerates_numbers_where_strings_are_documented() -> None:
    dossier = _decode(
        {"DadosBasicos": {"cpf": 52998224725, "nome": 7}, "DadosEconomicos": {"renda": 8500.5}}
    )
    assert dossier.dados_basicos is not None
    assert dossier.dados_basicos.cpf == "52998224725"
    assert dossier.dados_basicos.nome == "7"
    assert dossier.dados_economicos is not None
    assert dossier.dados_economicos.renda == "8500.5"


def test_drops_wrongly_typed_sections_and_items() -> None:
    dossier = _decode(
        {
            "DadosBasicos": "oops",
            "telefones": [1, None, {"telefone": "11987654321", "whatsapp": True}, "x"],
            "emails": {"email": "a@b.c"},
            "enderecos": [{"cep": {"nested": 1}, "uf": ["SP"], "cidade": "SAO PAULO"}],
        }
    )
    assert dossier.dados_basicos is None
    assert len(dossier.telefones) == 1
    assert dossier.telefones[0].telefone == "11987654321"
    assert dossier.telefones[0].whatsapp is None
    assert dossier.emails == ()
    assert dossier.enderecos[0].cep is None
    assert dossier.enderecos[0].cidade == "SAO PAULO"


def test_ignores_unknown_keys() -> None:
    assert _decode({"vizinhos": [{"nome": "X"}], "novoCampo": {"a": 1}}) == Dossier()


def test_well_typed_and_cleaned_paths_agree() -> None:
    base = {"DadosBasicos": {"nome": "ANA", "cpf": "52998224725"}, "telefones": [{"tipo": "X"}]}
    odd = {**base, "profissao": {"pis": 1.5}}  # the float forces the cleaning path
    fast = _decode(base)
    cleaned = _decode(odd)
    assert msgspec.structs.replace(cleaned, profissao=None) == fast


def test_normalizes_person_fields(helena: Dossier) -> None:
    person = normalize_dossier(helena)
    assert person.cpf == "39053344705"
    assert person.name == "HELENA MARQUES DUARTE"
    assert person.normalized_name == "HELENA MARQUES DUARTE"
    assert person.birth_date == dt.date(1988, 9, 7)
    assert person.sex == "F"
    assert person.mother_name == "ROSANA MARQUES DUARTE"
    assert person.father_name is None  # "SEM INFORMAÇÃO"
    assert person.marital_status == "SOLTEIRO(A)"
    assert person.rg == "RJ-00.000.001"
    assert person.occupation == "Contadora"
    assert person.income == 8500.5
    assert person.purchasing_power == "ALTO"
    assert person.income_range == "De R$ 7018 até R$ 15000"
    assert person.credit_score == 884
    assert person.risk_band == "BAIXISSIMO RISCO"
    assert person.quality_score == 0.9


def test_normalizes_emails_lower_cased_deduplicated_with_priority(helena: Dossier) -> None:
    emails = normalize_dossier(helena).emails
    assert [e.address for e in emails] == [
        "helena.duarte@exemplo.com.br",
        "h.marques@correio.example",
        "helena.d@exemplo.com",
    ]
    assert (emails[0].priority, emails[0].quality, emails[0].is_personal) == (
        "MUITO ALTA",
        "OTIMO",
        True,
    )
    assert emails[1].is_blacklisted is False


def test_skips_invalid_emails() -> None:
    person = _person({"emails": [{"email": "bad"}, {"email": "x999999@mail.com"}, {}]})
    assert person.emails == ()


def test_normalizes_phones_to_storage_digits_with_flags(helena: Dossier) -> None:
    phones = normalize_dossier(helena).phones
    assert [p.number for p in phones] == ["21987650012", "2134560078", "21991230045", "2126660099"]
    first = phones[0]
    assert (first.is_whatsapp, first.operator, first.type, first.status) == (
        True,
        "VIVO",
        "TELEFONE MÓVEL",
        "ATIVO",
    )
    assert not phones[1].is_whatsapp


def test_deduplicates_phones_keeping_whatsapp_flag() -> None:
    person = _person(
        {
            "telefones": [
                {"telefone": "11987654321", "operadora": "VIVO"},
                {"telefone": "+55 (11) 98765-4321", "whatsapp": "SIM"},
                {"telefone": "123"},
            ]
        }
    )
    assert len(person.phones) == 1
    assert person.phones[0].is_whatsapp
    assert person.phones[0].operator == "VIVO"


def test_normalizes_addresses_with_number_state_and_zip(helena: Dossier) -> None:
    addresses = normalize_dossier(helena).addresses
    first = addresses[0]
    assert (first.street_type, first.street, first.number, first.complement) == (
        "R",
        "DAS ACACIAS",
        "245",
        "BLOCO B",
    )
    assert (first.neighborhood, first.city, first.state, first.zip_code) == (
        "JARDIM BOTANICO",
        "RIO DE JANEIRO",
        "RJ",
        "22460030",
    )
    assert addresses[1].state == "RJ"  # "rj" upper-cased
    assert addresses[1].complement is None  # "" is no complement


def test_address_state_outside_brazil_and_bad_zip_become_none() -> None:
    person = _person({"enderecos": [{"cidade": "X", "uf": "XX", "cep": "123"}]})
    assert (person.addresses[0].state, person.addresses[0].zip_code) == (None, None)


def test_numeric_zip_code_gets_its_leading_zero_back() -> None:
    person = _person({"enderecos": [{"logradouro": "A", "cep": 1304001, "logradouroNumero": 10}]})
    assert person.addresses[0].zip_code == "01304001"
    assert person.addresses[0].number == "10"


def test_skips_addresses_without_street_city_state_or_zip() -> None:
    person = _person({"enderecos": [{"complemento": "APTO 1", "bairro": "CENTRO"}]})
    assert person.addresses == ()


def test_normalizes_relatives_and_companies(helena: Dossier) -> None:
    person = normalize_dossier(helena)
    assert person.relatives[0].cpf == "05134892660"
    assert person.relatives[0].relationship == "MAE"
    company = person.companies[0]
    assert (company.cnpj, company.relation, company.started_on, company.is_active) == (
        "27184936000176",
        "SOCIO-ADMINISTRADOR",
        dt.date(2016, 5, 2),
        True,
    )
    assert company.ended_on is None
    assert person.companies[1].relation is None


def test_ended_company_relation_is_inactive() -> None:
    person = _person({"empresas": [{"cnpj": "11222333000181", "demissao": "01/02/2020"}]})
    assert person.companies[0].ended_on == dt.date(2020, 2, 1)
    assert not person.companies[0].is_active


def test_missing_sex_stays_none_instead_of_defaulting_to_m() -> None:
    assert _person({"DadosBasicos": {"nome": "X"}}).sex is None
    assert _person({"DadosBasicos": {"sexo": ""}}).sex is None
    assert _person({"DadosBasicos": {"sexo": "I - IGNORADO"}}).sex is None


@pytest.mark.parametrize(("raw", "sex"), [("M - MASCULINO", "M"), ("F - FEMININO", "F")])
def test_sex_is_first_letter_of_label(raw: str, sex: str) -> None:
    assert _person({"DadosBasicos": {"sexo": raw}}).sex == sex


def test_invalid_dossier_cpf_becomes_none() -> None:
    assert _person({"DadosBasicos": {"cpf": "12345678901"}}).cpf is None


def test_work_api_padded_cpf_is_normalized() -> None:
    assert _person({"DadosBasicos": {"cpf": "00052998224725"}}).cpf == "52998224725"


@pytest.mark.parametrize(
    ("band", "score"),
    [
        ("BAIXISSIMO RISCO", 0.9),
        ("BAIXO RISCO", 0.7),
        ("MEDIO RISCO", 0.5),
        ("ALTO RISCO", 0.3),
        ("ALTISSIMO RISCO", 0.1),
        ("Baixíssimo  Risco", 0.9),
        ("DESCONHECIDO", 0.5),
        (None, 0.5),
    ],
)
def test_low_risk_gives_high_quality(band: str | None, score: float) -> None:
    assert quality_score_for_risk(band) == score


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("15/05/1985", dt.date(1985, 5, 15)),
        ("1/2/2000", dt.date(2000, 2, 1)),
        ("2023-01-15 00:00:00", dt.date(2023, 1, 15)),
        ("30/02/1975", None),
        ("Não consta.", None),
        ("", None),
        (None, None),
    ],
)
def test_parses_dates_and_returns_none_when_unparsable(
    raw: str | None, expected: dt.date | None
) -> None:
    assert parse_br_date(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("8500,50", Decimal("8500.50")),
        ("8.500,50", Decimal("8500.50")),
        ("8500.50", Decimal("8500.50")),
        (" 1200 ", Decimal("1200")),
        ("abc", None),
        ("NaN", None),
        ("1e5", None),
        ("", None),
        (None, None),
    ],
)
def test_parses_amounts_with_decimal_comma(raw: str | None, expected: Decimal | None) -> None:
    assert parse_amount(raw) == expected


def test_normalized_person_round_trips_through_json(helena: Dossier) -> None:
    person = normalize_dossier(helena)
    encoded = msgspec.json.encode(person)
    assert msgspec.json.decode(encoded, type=NormalizedPerson) == person
    assert b'"birth_date":"1988-09-07"' in encoded


def test_normalized_person_always_encodes_every_key() -> None:
    decoded = msgspec.json.decode(msgspec.json.encode(normalize_dossier(Dossier())))
    assert isinstance(decoded, dict)
    assert set(decoded) == set(NormalizedPerson.__struct_fields__)
    assert decoded["sex"] is None
    assert decoded["quality_score"] == 0.5
