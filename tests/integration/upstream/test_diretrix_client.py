"""The Diretrix client against the sandbox: lookups, auth, retries."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from domain.errors import DependencyUnavailable, NotFound, UpstreamError
from domain.models import CpfCandidate
from infra.upstream import RetryableUpstreamError
from tests.support.sandbox import PEOPLE
from tests.support.upstream import RETRY_ATTEMPTS

if TYPE_CHECKING:
    from infra.upstream import UpstreamClients
    from tests.support.sandbox import SandboxAdmin
    from tests.support.upstream import MakeClients

pytestmark = pytest.mark.integration

BY_PHONE = "GET /Consultas/Pessoa/Telefone/{phone}"
BY_EMAIL = "GET /Consultas/Pessoa/Email/{email}"


async def test_finds_the_cpf_of_a_phone_and_an_email(clients: UpstreamClients) -> None:
    person = PEOPLE.person(31)
    expected = [CpfCandidate(name=person.name, cpf=person.cpf)]
    assert await clients.diretrix.search_by_phone(person.mobile) == expected
    assert await clients.diretrix.search_by_email(person.email) == expected


async def test_unknown_contacts_give_no_candidates(clients: UpstreamClients) -> None:
    assert await clients.diretrix.search_by_phone("11900000002") == []
    assert await clients.diretrix.search_by_email("nobody+tag@example.com") == []


async def test_people_handed_out_later_become_findable(
    clients: UpstreamClients, sandbox: SandboxAdmin
) -> None:
    # Index beyond the pre-built registry: unknown until a lead is created for them.
    person = PEOPLE.person(50_000)
    assert await clients.diretrix.search_by_phone(person.mobile) == []
    await sandbox.create_lead(person_index=50_000)
    assert await clients.diretrix.search_by_phone(person.mobile) == [
        CpfCandidate(name=person.name, cpf=person.cpf)
    ]


async def test_fetches_a_person_by_cpf(clients: UpstreamClients) -> None:
    person = PEOPLE.person(32)
    found = await clients.diretrix.fetch_person(person.cpf)
    assert found.nome == person.name
    assert found.cpf == person.cpf
    assert found.enderecos[0].street == person.addresses[0].street
    with pytest.raises(NotFound):
        await clients.diretrix.fetch_person("12345678900")


async def test_wrong_credentials_are_an_upstream_error(make_clients: MakeClients) -> None:
    clients = make_clients(diretrix_pass="wrong-pass")
    with pytest.raises(UpstreamError) as caught:
        await clients.diretrix.search_by_email("a@example.com")
    assert caught.value.status == 401
    assert "wrong-pass" not in str(caught.value)


async def test_lookups_are_retried_on_5xx(clients: UpstreamClients, sandbox: SandboxAdmin) -> None:
    await sandbox.set_faults("diretrix", error_rate=1)
    with pytest.raises(RetryableUpstreamError):
        await clients.diretrix.search_by_phone("11987654321")
    with pytest.raises(RetryableUpstreamError):
        await clients.diretrix.search_by_email("a@example.com")
    counters = await sandbox.counters()
    assert counters["diretrix"] == {BY_PHONE: RETRY_ATTEMPTS, BY_EMAIL: RETRY_ATTEMPTS}


async def test_429_is_retried_but_a_long_retry_after_is_not_waited_for(
    clients: UpstreamClients, sandbox: SandboxAdmin
) -> None:
    await sandbox.set_faults("diretrix", error_rate=1, error_status=429, retry_after_s=1)
    with pytest.raises(RetryableUpstreamError) as caught:
        await clients.diretrix.search_by_phone("11987654321")
    assert caught.value.retry_after == 1.0
    assert await sandbox.count("diretrix", BY_PHONE) == RETRY_ATTEMPTS
    await sandbox.set_faults("diretrix", error_rate=1, error_status=429, retry_after_s=60)
    with pytest.raises(RetryableUpstreamError):
        await clients.diretrix.search_by_email("a@example.com")
    assert await sandbox.count("diretrix", BY_EMAIL) == 1


async def test_4xx_answers_are_not_retried(clients: UpstreamClients, sandbox: SandboxAdmin) -> None:
    await sandbox.set_faults("diretrix", error_rate=1, error_status=400)
    with pytest.raises(UpstreamError) as caught:
        await clients.diretrix.search_by_phone("11987654321")
    assert caught.value.status == 400
    assert await sandbox.count("diretrix", BY_PHONE) == 1


async def test_an_unreachable_upstream_is_unavailable(make_clients: MakeClients) -> None:
    clients = make_clients(base_url="http://127.0.0.1:1")
    with pytest.raises(DependencyUnavailable) as caught:
        await clients.diretrix.search_by_phone("11987654321")
    assert caught.value.dependency == "diretrix"
    assert caught.value.__cause__ is None
