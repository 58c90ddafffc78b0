"""The sandbox speaks the upstreams' wire formats (docs/contract.md §3), checked over HTTP."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from domain.documents import is_valid_cpf
from tests.support.sandbox import C2S_TOKEN, DIRETRIX_PASS, DIRETRIX_USER, PEOPLE, WORK_API_TOKEN

if TYPE_CHECKING:
    from tests.support.sandbox import SandboxAdmin

pytestmark = pytest.mark.integration

BEARER = {"Authorization": f"Bearer {C2S_TOKEN}"}
BASIC = {"Authorization": aiohttp.encode_basic_auth(DIRETRIX_USER, DIRETRIX_PASS)}
UFS = {
    "AC", "AL", "AP", "AM", "BA", "CE", "DF", "ES", "GO", "MA", "MT", "MS", "MG", "PA",
    "PB", "PR", "PE", "PI", "RJ", "RN", "RS", "RO", "RR", "SC", "SP", "SE", "TO",
}  # fmt: skip
DOSSIER_KEYS = [
    "status", "foto", "DadosBasicos", "DadosEconomicos", "profissao", "empregos", "empresas",
    "registroGeral", "tituloEleitor", "enderecos", "telefones", "emails", "parentes",
    "DadosImposto", "beneficios", "listaDocumentos", "imunoBiologicos", "pep", "vizinhos",
    "internet", "comprasId", "perfilConsumo", "servidor_siape", "flags", "debug_info",
]  # fmt: skip


async def _get(
    admin: SandboxAdmin, path: str, **kwargs: Any
) -> tuple[int, str, bytes, dict[str, str]]:
    async with admin.session.get(admin.base_url + path, **kwargs) as resp:
        headers = {str(k): v for k, v in resp.headers.items()}
        return resp.status, resp.content_type, await resp.read(), headers


async def _json(admin: SandboxAdmin, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with admin.session.request(method, admin.base_url + path, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None)


# ---- C2S ---------------------------------------------------------------------------------


async def test_c2s_lead_is_json_api_with_every_documented_field(
    sandbox: SandboxAdmin,
) -> None:
    person = PEOPLE.person(3)
    status, body = await _json(
        sandbox, "GET", f"/integration/leads/{PEOPLE.lead_id(3)}", headers=BEARER
    )
    assert status == 200
    data = body["data"]
    assert data["id"] == PEOPLE.lead_id(3)
    assert re.fullmatch(r"[0-9a-f]{32}", data["id"])
    assert data["type"] == "lead"
    assert isinstance(data["internal_id"], int)
    attrs = data["attributes"]
    assert set(attrs) >= {
        "customer", "description", "product", "lead_source", "lead_status", "seller",
        "created_at", "updated_at",
    }  # fmt: skip
    assert set(attrs["customer"]) == {"id", "name", "email", "phone", "phone2"}
    assert attrs["customer"]["email"] == person.email
    assert attrs["customer"]["phone"] == "+55" + person.mobile
    assert set(attrs["product"]) == {"id", "description", "prop_ref"}
    assert set(attrs["lead_status"]) == {"id", "alias", "name"}


async def test_c2s_rejects_a_missing_or_wrong_bearer_token(sandbox: SandboxAdmin) -> None:
    path = f"/integration/leads/{PEOPLE.lead_id(1)}"
    assert (await _get(sandbox, path))[0] == 401
    assert (await _get(sandbox, path, headers={"Authorization": "Bearer nope"}))[0] == 401


async def test_c2s_unknown_lead_is_a_404_with_a_text_body(sandbox: SandboxAdmin) -> None:
    status, content_type, body, _ = await _get(
        sandbox, "/integration/leads/" + "0" * 32, headers=BEARER
    )
    assert (status, content_type) == (404, "text/plain")
    assert body == b"Lead not found"


async def test_c2s_create_message_answers_201_and_is_recorded(
    sandbox: SandboxAdmin,
) -> None:
    lead_id = PEOPLE.lead_id(2)
    status, body = await _json(
        sandbox,
        "POST",
        f"/integration/leads/{lead_id}/create_message",
        headers=BEARER,
        json={"leadId": lead_id, "body": "olá\nmundo"},
    )
    assert status == 201
    assert body["success"] is True
    assert [m["body"] for m in await sandbox.messages(lead_id)] == ["olá\nmundo"]


async def test_c2s_create_lead_answers_a_32_hex_id_that_can_be_fetched(
    sandbox: SandboxAdmin,
) -> None:
    payload = {
        "data": {
            "type": "lead",
            "attributes": {
                "name": "Fulana de Tal",
                "description": "Google Ads",
                "type_negotiation": "Compra",
                "source": "Google Ads",
                "phone": "11987650000",
            },
        }
    }
    status, body = await _json(sandbox, "POST", "/integration/leads", headers=BEARER, json=payload)
    assert status == 201
    lead_id = body["data"]["id"]
    assert re.fullmatch(r"[0-9a-f]{32}", lead_id)
    status, fetched = await _json(sandbox, "GET", f"/integration/leads/{lead_id}", headers=BEARER)
    assert status == 200
    customer = fetched["data"]["attributes"]["customer"]
    assert customer["name"] == "Fulana de Tal"
    assert customer["email"] is None


async def test_c2s_create_lead_without_a_name_is_422(sandbox: SandboxAdmin) -> None:
    status, body = await _json(
        sandbox,
        "POST",
        "/integration/leads",
        headers=BEARER,
        json={"data": {"attributes": {}}},
    )
    assert status == 422
    assert body["errors"][0]["status"] == "422"


async def test_sandbox_lead_can_have_null_or_missing_customer_fields(
    sandbox: SandboxAdmin,
) -> None:
    nulls = await sandbox.create_lead(person_index=5, customer={"email": None, "phone": ""})
    bare = await sandbox.create_lead(customer={"name": "Só Nome"})
    _, body = await _json(sandbox, "GET", f"/integration/leads/{nulls['lead_id']}", headers=BEARER)
    customer = body["data"]["attributes"]["customer"]
    assert customer["email"] is None
    assert customer["phone"] == ""
    assert customer["name"] == PEOPLE.person(5).name.title()
    _, body = await _json(sandbox, "GET", f"/integration/leads/{bare['lead_id']}", headers=BEARER)
    assert body["data"]["attributes"]["customer"] == {"name": "Só Nome"}


# ---- Diretrix ----------------------------------------------------------------------------


async def test_diretrix_requires_basic_auth(sandbox: SandboxAdmin) -> None:
    path = "/Consultas/Pessoa/Telefone/11987654321"
    assert (await _get(sandbox, path))[0] == 401
    wrong = {"Authorization": aiohttp.encode_basic_auth(DIRETRIX_USER, "wrong")}
    assert (await _get(sandbox, path, headers=wrong))[0] == 401


async def test_diretrix_finds_people_by_phone_and_email(sandbox: SandboxAdmin) -> None:
    person = PEOPLE.person(7)
    expected = [{"nome": person.name, "cpf": person.cpf}]
    for path in (
        f"/Consultas/Pessoa/Telefone/{person.mobile}",
        f"/Consultas/Pessoa/Telefone/{person.phones[-1].number}",
        f"/Consultas/Pessoa/Email/{person.email}",
    ):
        status, body = await _json(sandbox, "GET", path, headers=BASIC)
        assert (status, body) == (200, expected), path


async def test_diretrix_answers_an_empty_array_for_unknown_contacts(
    sandbox: SandboxAdmin,
) -> None:
    for path in (
        "/Consultas/Pessoa/Telefone/11900000001",
        "/Consultas/Pessoa/Email/ninguem@example.com",
    ):
        assert await _json(sandbox, "GET", path, headers=BASIC) == (200, [])


async def test_diretrix_person_by_cpf_has_the_provider_shape(sandbox: SandboxAdmin) -> None:
    person = PEOPLE.person(4)
    status, body = await _json(sandbox, "GET", f"/Consultas/Pessoa/{person.cpf}", headers=BASIC)
    assert status == 200
    assert set(body) == {
        "nome", "cpf", "rg", "rgOrgaoEmissor", "dataNascimento", "idade", "signo", "sexo",
        "mae", "telefones", "emails", "enderecos",
    }  # fmt: skip
    assert body["nome"] == person.name
    assert set(body["telefones"][0]) == {"numero", "ddd", "operadora", "tipo", "ranking"}
    assert "logadouro" in body["enderecos"][0]
    status, _ = await _json(sandbox, "GET", "/Consultas/Pessoa/12345678900", headers=BASIC)
    assert status == 404


# ---- Work API ----------------------------------------------------------------------------


def _work(module: str, query: str, token: str = WORK_API_TOKEN) -> dict[str, str]:
    return {"token": token, "modulo": module, "consulta": query}


async def test_work_api_cpf_is_the_full_25_key_dossier_in_upstream_formats(
    sandbox: SandboxAdmin,
) -> None:
    person = PEOPLE.person(11)
    status, body = await _json(sandbox, "GET", "/api", params=_work("cpf", person.cpf))
    assert status == 200
    assert list(body) == DOSSIER_KEYS
    basic = body["DadosBasicos"]
    assert basic["cpf"] == person.cpf
    assert re.fullmatch(r"\d{2}/\d{2}/\d{4}", basic["dataNascimento"])
    assert basic["sexo"] in ("M - MASCULINO", "F - FEMININO")
    economic = body["DadosEconomicos"]
    assert re.fullmatch(r"\d+,\d{2}", economic["renda"])
    assert re.fullmatch(
        r"(De R\$ \d+ até R\$ \d+|Acima de R\$ \d+)",
        economic["poderAquisitivo"]["faixaPoderAquisitivo"],
    )
    for address in body["enderecos"]:
        assert re.fullmatch(r"\d{8}", address["cep"])
        assert address["uf"] in UFS
        assert "logradouroNumero" in address
    for phone in body["telefones"]:
        assert re.fullmatch(r"\d{10,11}", phone["telefone"])
    for relative in body["parentes"]:
        assert is_valid_cpf(relative["cpfParente"])


async def test_work_api_accepts_the_14_digit_cpf_form(sandbox: SandboxAdmin) -> None:
    cpf = PEOPLE.cpf_for(12)
    _, body = await _json(sandbox, "GET", "/api", params=_work("cpf", "000" + cpf))
    assert body["DadosBasicos"]["cpf"] == cpf


async def test_work_api_cep_lists_residents(sandbox: SandboxAdmin) -> None:
    status, body = await _json(sandbox, "GET", "/api", params=_work("cep", "01310-100"))
    assert status == 200
    assert isinstance(body, list)
    assert body
    resident = body[0]
    assert set(resident) >= {"nome", "cpf_cnpj", "dataNascimento", "renda", "endereco"}
    assert resident["endereco"]["cep"] == 1310100
    assert isinstance(resident["endereco"]["logradouroNumero"], int)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (_work("cpf", "52998224725", token="wrong"), {"status": 403}),
        (_work("cnpj", "11222333000181"), {"code": 429, "message": "not enough credits"}),
        (_work("nome", "MARIA"), {"status": 403}),
        (_work("cpf", "12345678900"), {"status": 404}),
        (_work("cep", "123"), {"status": 404}),
    ],
    ids=["wrong-token", "no-credits", "unknown-module", "unknown-cpf", "bad-cep"],
)
async def test_work_api_soft_errors_come_inside_http_200(
    sandbox: SandboxAdmin, params: dict[str, str], expected: dict[str, Any]
) -> None:
    status, body = await _json(sandbox, "GET", "/api", params=params)
    assert status == 200
    assert body.items() >= expected.items()


async def test_work_api_unknown_module_message_names_the_module(
    sandbox: SandboxAdmin,
) -> None:
    _, body = await _json(sandbox, "GET", "/api", params=_work("titulo", "1"))
    assert body["statusMsg"] == "Módulo titulo inexistente para a rota"


# ---- faults and counters -------------------------------------------------------------------


async def test_faults_are_read_set_and_reset(sandbox: SandboxAdmin) -> None:
    config = await sandbox.set_faults("work_api", latency_ms=5, soft_error_rate=1)
    assert config["latency_ms"] == 5
    _, all_faults = await _json(sandbox, "GET", "/_sandbox/faults")
    assert all_faults["work_api"]["soft_error_rate"] == 1
    assert all_faults["c2s"]["soft_error_rate"] == 0
    _, body = await _json(sandbox, "GET", "/api", params=_work("cpf", PEOPLE.cpf_for(0)))
    assert body["status"] == 403  # the default soft error kind: expired token
    await sandbox.clear_faults()
    _, one = await _json(sandbox, "GET", "/_sandbox/faults/work_api")
    assert one["soft_error_rate"] == 0


async def test_faults_reject_unknown_upstreams_and_knobs(sandbox: SandboxAdmin) -> None:
    status, _ = await _json(sandbox, "POST", "/_sandbox/faults/nope", json={})
    assert status == 404
    status, _ = await _json(sandbox, "POST", "/_sandbox/faults/c2s", json={"bogus": 1})
    assert status == 400
    status, _ = await _json(sandbox, "POST", "/_sandbox/faults/c2s", json={"error_rate": 2})
    assert status == 400


async def test_error_faults_answer_the_configured_status_with_retry_after(
    sandbox: SandboxAdmin,
) -> None:
    await sandbox.set_faults("diretrix", error_rate=1, error_status=429, retry_after_s=7)
    status, _, _, headers = await _get(
        sandbox, "/Consultas/Pessoa/Email/a@example.com", headers=BASIC
    )
    assert status == 429
    assert headers["Retry-After"] == "7"


async def test_wrong_auth_fault_rejects_valid_credentials(sandbox: SandboxAdmin) -> None:
    await sandbox.set_faults("c2s", wrong_auth=True)
    status, *_ = await _get(sandbox, f"/integration/leads/{PEOPLE.lead_id(1)}", headers=BEARER)
    assert status == 401


async def test_counters_count_calls_per_route_and_reset(sandbox: SandboxAdmin) -> None:
    await _get(sandbox, f"/integration/leads/{PEOPLE.lead_id(1)}", headers=BEARER)
    await _get(sandbox, f"/integration/leads/{PEOPLE.lead_id(2)}")
    await _get(sandbox, "/api", params=_work("cpf", PEOPLE.cpf_for(1)))
    counters = await sandbox.counters()
    assert counters["c2s"] == {"GET /integration/leads/{id}": 2}
    assert counters["work_api"] == {"GET /api": 1}
    assert counters["diretrix"] == {}
    async with sandbox.session.delete(sandbox.base_url + "/_sandbox/counters"):
        pass
    assert await sandbox.counters() == {"c2s": {}, "diretrix": {}, "work_api": {}}
