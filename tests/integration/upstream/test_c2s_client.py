"""The C2S client against the sandbox: parsing, error mapping, and where retries may happen."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from domain.errors import NotFound, UpstreamError
from domain.models import NewLead
from infra.upstream import RetryableUpstreamError
from tests.support.sandbox import PEOPLE
from tests.support.upstream import RETRY_ATTEMPTS

if TYPE_CHECKING:
    from domain.ports import C2SPort, DiretrixPort, WorkApiPort
    from infra.upstream import UpstreamClients
    from tests.support.sandbox import SandboxAdmin
    from tests.support.upstream import MakeClients

pytestmark = pytest.mark.integration

GET_LEAD = "GET /integration/leads/{id}"
CREATE_MESSAGE = "POST /integration/leads/{id}/create_message"
CREATE_LEAD = "POST /integration/leads"


async def test_the_clients_implement_the_domain_ports(clients: UpstreamClients) -> None:
    # mypy checks these assignments structurally against the Protocols.
    ports: tuple[C2SPort, DiretrixPort, WorkApiPort] = (
        clients.c2s,
        clients.diretrix,
        clients.work_api,
    )
    assert all(ports)


async def test_fetches_a_lead_with_its_customer(clients: UpstreamClients) -> None:
    person = PEOPLE.person(21)
    lead = await clients.c2s.fetch_lead(PEOPLE.lead_id(21))
    assert lead.id == PEOPLE.lead_id(21)
    assert lead.customer.name == person.name.title()
    assert lead.customer.email == person.email
    assert lead.customer.phone == person.mobile_e164
    assert lead.customer.phone2 is None
    assert lead.product_ref is not None
    assert lead.status == "novo"
    assert lead.source == "Portal Imobiliário"


async def test_a_lead_with_null_email_and_phone_parses(
    clients: UpstreamClients, sandbox: SandboxAdmin
) -> None:
    created = await sandbox.create_lead(
        person_index=22, customer={"email": None, "phone": None, "phone2": None}
    )
    lead = await clients.c2s.fetch_lead(created["lead_id"])
    assert lead.customer.email is None
    assert lead.customer.phone is None
    assert lead.customer.name == PEOPLE.person(22).name.title()


async def test_a_lead_with_missing_or_blank_customer_fields_parses(
    clients: UpstreamClients, sandbox: SandboxAdmin
) -> None:
    bare = await sandbox.create_lead(customer={"name": "Cliente Sem Contato"})
    blank = await sandbox.create_lead(customer={"name": " ", "email": "", "phone": "  "})
    lead = await clients.c2s.fetch_lead(bare["lead_id"])
    assert lead.customer.name == "Cliente Sem Contato"
    assert (lead.customer.email, lead.customer.phone, lead.customer.id) == (None, None, None)
    lead = await clients.c2s.fetch_lead(blank["lead_id"])
    assert (lead.customer.name, lead.customer.email, lead.customer.phone) == (None, None, None)


async def test_an_unknown_lead_is_not_found(clients: UpstreamClients) -> None:
    with pytest.raises(NotFound):
        await clients.c2s.fetch_lead("f" * 32)


async def test_a_wrong_token_is_an_upstream_error(make_clients: MakeClients) -> None:
    clients = make_clients(c2s_token="not-the-token")
    with pytest.raises(UpstreamError) as caught:
        await clients.c2s.fetch_lead(PEOPLE.lead_id(1))
    assert caught.value.status == 401
    assert "not-the-token" not in str(caught.value)


async def test_rejected_valid_credentials_are_an_upstream_error(
    clients: UpstreamClients, sandbox: SandboxAdmin
) -> None:
    await sandbox.set_faults("c2s", wrong_auth=True)
    with pytest.raises(UpstreamError) as caught:
        await clients.c2s.send_message(PEOPLE.lead_id(1), "x")
    assert caught.value.status == 401


async def test_send_message_posts_the_body_to_the_lead(
    clients: UpstreamClients, sandbox: SandboxAdmin
) -> None:
    lead_id = PEOPLE.lead_id(23)
    await clients.c2s.send_message(lead_id, "✅ DADOS PESSOAIS\nNome: X\n")
    messages = await sandbox.messages(lead_id)
    assert [m["body"] for m in messages] == ["✅ DADOS PESSOAIS\nNome: X\n"]


async def test_send_message_to_an_unknown_lead_is_an_upstream_error(
    clients: UpstreamClients,
) -> None:
    with pytest.raises(UpstreamError) as caught:
        await clients.c2s.send_message("e" * 32, "x")
    assert caught.value.status == 404


async def test_create_lead_returns_an_id_that_can_be_fetched(clients: UpstreamClients) -> None:
    lead_id = await clients.c2s.create_lead(
        NewLead(name="Lead Google", description="Veio do anúncio", email="lead@example.com")
    )
    assert re.fullmatch(r"[0-9a-f]{32}", lead_id)
    lead = await clients.c2s.fetch_lead(lead_id)
    assert lead.customer.name == "Lead Google"
    assert lead.customer.email == "lead@example.com"
    assert lead.customer.phone is None


async def test_fetch_lead_is_retried_on_5xx(
    clients: UpstreamClients, sandbox: SandboxAdmin
) -> None:
    await sandbox.set_faults("c2s", error_rate=1)
    with pytest.raises(RetryableUpstreamError) as caught:
        await clients.c2s.fetch_lead(PEOPLE.lead_id(1))
    assert caught.value.status == 500
    assert await sandbox.count("c2s", GET_LEAD) == RETRY_ATTEMPTS


async def test_send_message_is_never_retried(
    clients: UpstreamClients, sandbox: SandboxAdmin
) -> None:
    await sandbox.set_faults("c2s", error_rate=1, error_status=503)
    with pytest.raises(UpstreamError):
        await clients.c2s.send_message(PEOPLE.lead_id(1), "only once")
    assert await sandbox.count("c2s", CREATE_MESSAGE) == 1


async def test_create_lead_is_never_retried(
    clients: UpstreamClients, sandbox: SandboxAdmin
) -> None:
    await sandbox.set_faults("c2s", error_rate=1)
    with pytest.raises(UpstreamError):
        await clients.c2s.create_lead(NewLead(name="Once", description="d"))
    assert await sandbox.count("c2s", CREATE_LEAD) == 1
