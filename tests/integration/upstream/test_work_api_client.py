"""The Work API client against the sandbox: dossiers, soft errors, secrecy of the token."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import pytest

from domain.errors import UpstreamError, UpstreamSoftError
from infra.upstream import WorkApiConfig, detect_soft_error, redact_url
from infra.upstream.http import mask
from tests.support.sandbox import PEOPLE, WORK_API_TOKEN
from tests.support.upstream import RETRY_ATTEMPTS

if TYPE_CHECKING:
    from infra.upstream import UpstreamClients
    from tests.support.sandbox import SandboxAdmin
    from tests.support.upstream import MakeClients

pytestmark = pytest.mark.integration

WORK_ROUTE = "GET /api"


async def test_fetches_the_dossier_of_a_cpf(clients: UpstreamClients) -> None:
    person = PEOPLE.person(41)
    dossier, raw = await clients.work_api.fetch_dossier(person.cpf)
    assert dossier.dados_basicos is not None
    assert dossier.dados_basicos.cpf == person.cpf
    assert dossier.dados_basicos.nome == person.name
    # The sandbox is deterministic: the in-process generator predicts every byte.
    assert raw == PEOPLE.dossier_json(person.cpf)


async def test_fetches_the_residents_of_a_cep(clients: UpstreamClients) -> None:
    raw = await clients.work_api.fetch_module("cep", "01310100")
    residents = msgspec.json.decode(raw)
    assert isinstance(residents, list)
    assert residents


@pytest.mark.parametrize(
    ("module", "query", "kind"),
    [
        ("cnpj", "11222333000181", "no_credits"),
        ("nome", "MARIA", "unknown_module"),
        ("cpf", "12345678900", "not_found"),
    ],
)
async def test_soft_errors_are_raised_not_returned(
    clients: UpstreamClients, module: str, query: str, kind: str
) -> None:
    with pytest.raises(UpstreamSoftError) as caught:
        await clients.work_api.fetch_module(module, query)
    assert caught.value.kind == kind
    assert caught.value.status == 200


async def test_an_expired_token_is_a_soft_error(make_clients: MakeClients) -> None:
    clients = make_clients(work_api_token="expired-token-value")
    with pytest.raises(UpstreamSoftError) as caught:
        await clients.work_api.fetch_dossier(PEOPLE.cpf_for(1))
    assert caught.value.kind == "expired_token"
    assert caught.value.code == 403
    assert "expired-token-value" not in repr(caught.value)


@pytest.mark.parametrize("kind", ["expired_token", "no_credits", "not_found", "other"])
async def test_injected_soft_errors_are_classified_and_not_retried(
    clients: UpstreamClients, sandbox: SandboxAdmin, kind: str
) -> None:
    await sandbox.set_faults("work_api", soft_error_rate=1, soft_error_kind=kind)
    with pytest.raises(UpstreamSoftError) as caught:
        await clients.work_api.fetch_dossier(PEOPLE.cpf_for(2))
    assert caught.value.kind == kind
    assert await sandbox.count("work_api", WORK_ROUTE) == 1


async def test_server_errors_are_retried(clients: UpstreamClients, sandbox: SandboxAdmin) -> None:
    await sandbox.set_faults("work_api", error_rate=1, error_status=502)
    with pytest.raises(UpstreamError) as caught:
        await clients.work_api.fetch_dossier(PEOPLE.cpf_for(3))
    assert caught.value.status == 502
    assert await sandbox.count("work_api", WORK_ROUTE) == RETRY_ATTEMPTS


async def test_the_token_never_reaches_logs_or_errors(
    clients: UpstreamClients, sandbox: SandboxAdmin, capfd: pytest.CaptureFixture[str]
) -> None:
    await sandbox.set_faults("work_api", error_rate=1)
    capfd.readouterr()
    # Read what reached the process's output (structlog may be configured by an earlier test
    # with cached loggers, which capture_logs() cannot intercept).
    with pytest.raises(UpstreamError) as caught:
        await clients.work_api.fetch_dossier(PEOPLE.cpf_for(4))
    out, err = capfd.readouterr()
    logs = out + err
    assert "upstream_call_failed" in logs  # the failures were logged...
    assert WORK_API_TOKEN not in logs  # ...without the token
    assert PEOPLE.cpf_for(4) not in logs  # ...or the CPF
    assert WORK_API_TOKEN not in repr(caught.value)
    config = WorkApiConfig(base_url="http://x", token=WORK_API_TOKEN)
    assert WORK_API_TOKEN not in repr(config)


def test_redact_url_hides_secrets_and_masks_personal_data() -> None:
    url = "https://u:pw@completa.example/api?token=abc123&modulo=cpf&consulta=52998224725"
    redacted = redact_url(url)
    assert (
        redacted == "https://u:***@completa.example/api?token=***&modulo=cpf&consulta=*********25"
    )
    assert redact_url("http://h/p") == "http://h/p"
    assert (
        redact_url("http://d/Consultas/Pessoa/Telefone/11987654321")
        == "http://d/Consultas/Pessoa/Telefone/*********21"
    )
    email_url = "http://d/Consultas/Pessoa/Email/ana%40example.com"
    assert redact_url(email_url) == "http://d/Consultas/Pessoa/Email/" + "*" * 13 + "om"
    lead = "http://c/integration/leads/358f62821dc6cfa7cfbda19e670d6392"
    assert redact_url(lead) == lead
    assert mask("ab") == "**"


@pytest.mark.parametrize(
    ("body", "module", "kind"),
    [
        (b'{"status":403,"statusMsg":"Forbidden","reason":"token"}', "cpf", "expired_token"),
        (b'{"code":429,"message":"not enough credits","remaining":0}', "cpf", "no_credits"),
        ('{"status":"403","statusMsg":"Módulo x inexistente"}'.encode(), "x", "unknown_module"),
        (b'{"status":404,"statusMsg":"Not Found"}', "cpf", "not_found"),
        (b'{"erro":"Falha"}', "cpf", "other"),
        (b'{"statusMsg":"algo deu errado"}', "cpf", "other"),
        (b'"texto"', "cpf", "other"),
        (b"[]", "cpf", "other"),
        (b'{"status":200}', "cpf", "not_found"),
    ],
)
def test_detect_soft_error_classifies_error_bodies(body: bytes, module: str, kind: str) -> None:
    with pytest.raises(UpstreamSoftError) as caught:
        detect_soft_error(body, module)
    assert caught.value.kind == kind


@pytest.mark.parametrize(
    ("body", "module"),
    [
        (b'{"status":200,"DadosBasicos":{"cpf":"52998224725"}}', "cpf"),
        (b'{"status":"200","DadosBasicos":{}}', "cpf"),
        (b"[]", "cep"),
        (b'[{"nome":"X"}]', "cep"),
    ],
)
def test_detect_soft_error_accepts_data(body: bytes, module: str) -> None:
    detect_soft_error(body, module)


def test_detect_soft_error_rejects_garbage_as_an_upstream_error() -> None:
    with pytest.raises(UpstreamError) as caught:
        detect_soft_error(b"<html>502 Bad Gateway</html>", "cpf")
    assert not isinstance(caught.value, UpstreamSoftError)
