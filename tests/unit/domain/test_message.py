"""The C2S message (docs/contract.md §6.6): golden files compared byte for byte, plus line rules.

Golden files live in ``tests/golden``. After an intended format change, regenerate them with
``UPDATE_GOLDEN=1 uv run pytest tests/unit/domain/test_message.py`` and review the diff: the
expected texts are part of the contract with C2S users (note the trailing space kept on phone
lines without WhatsApp).
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from domain.dossier import Dossier, decode_dossier
from domain.message import (
    DIFFERENT_PEOPLE_HEADER,
    SAME_PERSON_HEADER,
    PersonSource,
    format_block,
    format_lead_message,
    scale_amount,
)

if TYPE_CHECKING:
    from collections.abc import Callable

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
HELENA_CPF = "39053344705"
OTAVIO_CPF = "71460238001"
HELENA_PHONE = "(21) 98765-0012"
OTAVIO_EMAIL = "otavio.lacerda@exemplo.net"


def _load(name: str) -> Dossier:
    return decode_dossier((GOLDEN / f"dossier_{name}.json").read_bytes())


def _decode(payload: dict[str, Any]) -> Dossier:
    return decode_dossier(msgspec.json.encode(payload))


HELENA = _load("helena")
OTAVIO = _load("otavio")
HELENA_BY_PHONE = PersonSource(cpf=HELENA_CPF, dossier=HELENA, via="phone", contact=HELENA_PHONE)
HELENA_BY_EMAIL = PersonSource(
    cpf=HELENA_CPF, dossier=HELENA, via="email", contact="helena.duarte@exemplo.com.br"
)
OTAVIO_BY_EMAIL = PersonSource(cpf=OTAVIO_CPF, dossier=OTAVIO, via="email", contact=OTAVIO_EMAIL)

CASES: dict[str, Callable[[], str]] = {
    "block_helena": lambda: format_block(HELENA),
    "block_otavio": lambda: format_block(OTAVIO),
    # docs/contract.md §6.6: 1776,35 x 1.9 is printed from the binary double, 3375.06.
    "block_income_binary_rounding": lambda: format_block(_load("income_1776")),
    "same_person_process": lambda: format_lead_message(
        [HELENA_BY_PHONE, HELENA_BY_EMAIL], layout="process"
    ),
    "same_person_webhook": lambda: format_lead_message(
        [PersonSource(cpf=HELENA_CPF, dossier=HELENA, via="both")], layout="webhook"
    ),
    "two_people_webhook": lambda: format_lead_message(
        [HELENA_BY_PHONE, OTAVIO_BY_EMAIL], layout="webhook"
    ),
    "single_source_phone_webhook": lambda: format_lead_message([HELENA_BY_PHONE], layout="webhook"),
    "single_source_email_webhook": lambda: format_lead_message([OTAVIO_BY_EMAIL], layout="webhook"),
    "two_people_process": lambda: format_lead_message(
        [HELENA_BY_PHONE, OTAVIO_BY_EMAIL], layout="process"
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_message_matches_golden_file_byte_for_byte(case: str) -> None:
    path = GOLDEN / f"{case}.txt"
    produced = CASES[case]().encode("utf-8")
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_bytes(produced)
    assert produced == path.read_bytes()


def test_block_renders_reference_income_example() -> None:
    block = format_block(HELENA)
    assert "Renda: R$ 16150.95\n" in block
    assert "Faixa de Renda: De R$ 13334.20 até R$ 28500.00\n" in block


def test_block_rounds_cents_from_the_binary_product_like_the_earlier_service() -> None:
    # 4210.35 x 1.9 is 7999.665 in decimal but 7999.66499... as a double: the earlier service
    # printed 7999.66 (docs/contract.md §6.6).
    assert "Renda: R$ 7999.66\n" in format_block(OTAVIO)


def test_income_1776_35_prints_3375_06_as_the_earlier_service_did() -> None:
    block = format_block(_decode({"DadosEconomicos": {"renda": "1776,35"}}))
    assert "Renda: R$ 3375.06\n" in block


def test_income_band_amounts_are_rounded_from_the_binary_product() -> None:
    # 1 x 1.005 is 1.00499999... as a double: "1.00", as f"{x:.2f}" prints it.
    payload = {"DadosEconomicos": {"poderAquisitivo": {"faixaPoderAquisitivo": "De R$ 1 até R$ 3"}}}
    block = format_block(_decode(payload), income_multiplier=1.005)
    assert "Faixa de Renda: De R$ 1.00 até R$ 3.01\n" in block


def test_income_multiplier_is_configurable() -> None:
    block = format_block(HELENA, income_multiplier=1.0)
    assert "Renda: R$ 8500.50\n" in block
    assert "Faixa de Renda: De R$ 7018.00 até R$ 15000.00\n" in block


def test_unparsable_income_is_printed_raw() -> None:
    block = format_block(_decode({"DadosEconomicos": {"renda": "a combinar"}}))
    assert "Renda: R$ a combinar\n" in block


def test_band_amounts_with_decimals_are_left_alone() -> None:
    dossier = _decode(
        {"DadosEconomicos": {"poderAquisitivo": {"faixaPoderAquisitivo": "Até R$ 7018,50"}}}
    )
    assert "Faixa de Renda: Até R$ 7018,50\n" in format_block(dossier)


def test_block_of_empty_dossier_is_only_the_personal_header() -> None:
    assert format_block(Dossier()) == "✅ DADOS PESSOAIS\n"


def test_financial_header_printed_when_section_exists_even_if_empty() -> None:
    assert format_block(_decode({"DadosEconomicos": {}})) == (
        "✅ DADOS PESSOAIS\n\n💰 DADOS FINANCEIROS\n"
    )


def test_lists_show_at_most_three_emails_three_phones_two_addresses_three_companies() -> None:
    dossier = _decode(
        {
            "emails": [{"email": f"p{i}@x.com"} for i in range(5)],
            "telefones": [{"telefone": f"1198765432{i}"} for i in range(5)],
            "enderecos": [{"logradouro": f"RUA {i}"} for i in range(5)],
            "empresas": [{"cnpj": f"{i}"} for i in range(5)],
        }
    )
    block = format_block(dossier)
    assert "3. p2@x.com (N/A)\n" in block
    assert "p3@x.com" not in block
    assert "3. 11987654322 - N/A \n" in block
    assert "11987654323" not in block
    assert "2. RUA 1 , " in block
    assert "RUA 2" not in block
    assert "3. CNPJ: 2 - SOCIO\n" in block
    assert "CNPJ: 3" not in block


def test_phone_line_keeps_trailing_space_without_whatsapp() -> None:
    block = format_block(_decode({"telefones": [{"telefone": "1133334444", "tipo": "FIXO"}]}))
    assert "1. 1133334444 - FIXO \n" in block


def test_company_relation_defaults_to_socio_only_when_absent() -> None:
    block = format_block(_decode({"empresas": [{"cnpj": "1"}, {"cnpj": "2", "relacao": ""}]}))
    assert "1. CNPJ: 1 - SOCIO\n" in block
    assert "2. CNPJ: 2 - \n" in block


def test_address_line_renders_missing_parts_as_empty() -> None:
    block = format_block(_decode({"enderecos": [{"cidade": "RECIFE"}]}))
    assert "1.  ,  - RECIFE/ - CEP: \n" in block


def test_line_breaks_inside_values_cannot_forge_lines() -> None:
    block = format_block(_decode({"DadosBasicos": {"nome": "ANA\nCPF: 000\r\nX"}}))
    assert "Nome: ANA CPF: 000  X\n" in block
    assert block.count("\n") == 2


def test_same_person_header_is_followed_by_blank_line_and_block() -> None:
    message = format_lead_message([HELENA_BY_PHONE, HELENA_BY_EMAIL], layout="webhook")
    assert message == f"{SAME_PERSON_HEADER}\n\n{format_block(HELENA)}"


def test_same_cpf_in_different_formats_is_one_person() -> None:
    formatted = msgspec.structs.replace(HELENA_BY_EMAIL, cpf="390.533.447-05")
    message = format_lead_message([HELENA_BY_PHONE, formatted], layout="process")
    assert message.startswith(SAME_PERSON_HEADER)


def test_single_source_does_not_claim_different_people() -> None:
    message = format_lead_message([HELENA_BY_PHONE], layout="webhook")
    assert DIFFERENT_PEOPLE_HEADER not in message
    assert "═══ PESSOA" not in message
    assert message == (
        f"📞 Dados encontrados pelo telefone: {HELENA_PHONE}\n\n{format_block(HELENA)}"
    )


def test_single_source_without_contact_names_only_the_channel() -> None:
    source = PersonSource(cpf=OTAVIO_CPF, dossier=OTAVIO, via="email")
    message = format_lead_message([source], layout="webhook")
    assert message.startswith("📧 Dados encontrados pelo e-mail\n\n✅ DADOS PESSOAIS\n")


def test_direct_lookup_gets_the_bare_block() -> None:
    source = PersonSource(cpf=OTAVIO_CPF, dossier=OTAVIO, via="direct")
    assert format_lead_message([source], layout="webhook") == format_block(OTAVIO)


def test_process_layout_single_source_is_the_bare_block() -> None:
    assert format_lead_message([HELENA_BY_PHONE], layout="process") == format_block(HELENA)


def test_process_layout_joins_blocks_with_separator_and_no_labels() -> None:
    message = format_lead_message([HELENA_BY_PHONE, OTAVIO_BY_EMAIL], layout="process")
    assert message == format_block(HELENA) + "\n---\n\n" + format_block(OTAVIO)
    assert "═══ PESSOA" not in message


def test_webhook_layout_labels_people_with_their_contacts() -> None:
    message = format_lead_message([HELENA_BY_PHONE, OTAVIO_BY_EMAIL], layout="webhook")
    assert message.startswith(f"{DIFFERENT_PEOPLE_HEADER}\n\n═══ PESSOA 1 (Telefone: ")
    assert f"\n\n\n═══ PESSOA 2 (Email: {OTAVIO_EMAIL}) ═══\n✅ DADOS PESSOAIS\n" in message


def test_empty_people_gives_empty_message() -> None:
    assert format_lead_message([], layout="webhook") == ""


def test_income_multiplier_applies_to_whole_message() -> None:
    message = format_lead_message([HELENA_BY_PHONE], layout="process", income_multiplier=2.0)
    assert "Renda: R$ 17001.00\n" in message


@pytest.mark.parametrize(
    ("amount", "multiplier", "expected"),
    [
        (Decimal("8500.50"), 1.9, "16150.95"),
        (Decimal("7018"), 1.9, "13334.20"),
        (Decimal("0.005"), 1.0, "0.01"),
        (Decimal("-0.001"), 1.0, "0.00"),
        (Decimal("1776.35"), 1.9, "3375.06"),
        (Decimal("4210.35"), 1.9, "7999.66"),
        (Decimal("2.675"), 1.0, "2.67"),
        (Decimal("1"), 1.005, "1.00"),
        (Decimal("1"), float("nan"), None),
        (Decimal("1"), 1e300, None),
    ],
)
def test_scale_amount_formats_the_binary_product_like_python_f_format(
    amount: Decimal, multiplier: float, expected: str | None
) -> None:
    assert scale_amount(amount, multiplier) == expected
