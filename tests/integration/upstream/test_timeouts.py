"""Client timeouts end calls to a sandbox that never answers (once per attempt for reads), and
latency below the bound is served."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from domain.errors import DependencyUnavailable
from tests.support.sandbox import PEOPLE
from tests.support.upstream import RETRY_ATTEMPTS

if TYPE_CHECKING:
    from tests.support.sandbox import SandboxAdmin
    from tests.support.upstream import MakeClients

pytestmark = pytest.mark.integration

BOUND_S = 0.3
# Far above the bounds under test, far below the sandbox's hang (120 s) and the session's own
# 30 s guard: a call that ends before it was ended by its configured timeout.
GUARD_S = 10.0


async def test_a_write_fails_at_its_timeout_and_is_not_retried(
    make_clients: MakeClients, sandbox: SandboxAdmin
) -> None:
    clients = make_clients(timeout_s=BOUND_S)
    await sandbox.set_faults("c2s", timeout_rate=1)
    with pytest.raises(DependencyUnavailable) as caught:
        await asyncio.wait_for(
            clients.c2s.send_message(PEOPLE.lead_id(1), "never answered"), GUARD_S
        )
    assert caught.value.dependency == "c2s"
    assert "did not answer in time" in str(caught.value)
    assert await sandbox.count("c2s", "POST /integration/leads/{id}/create_message") == 1


async def test_a_read_times_out_once_per_attempt(
    make_clients: MakeClients, sandbox: SandboxAdmin
) -> None:
    clients = make_clients(timeout_s=BOUND_S)
    await sandbox.set_faults("diretrix", timeout_rate=1)
    with pytest.raises(DependencyUnavailable) as caught:
        await asyncio.wait_for(clients.diretrix.search_by_phone("11987654321"), GUARD_S)
    assert "did not answer in time" in str(caught.value)
    route = "GET /Consultas/Pessoa/Telefone/{phone}"
    assert await sandbox.count("diretrix", route) == RETRY_ATTEMPTS


async def test_latency_below_the_bound_is_fine(
    make_clients: MakeClients, sandbox: SandboxAdmin
) -> None:
    clients = make_clients(timeout_s=BOUND_S)
    await sandbox.set_faults("work_api", latency_ms=100, jitter_ms=50)
    dossier, _ = await clients.work_api.fetch_dossier(PEOPLE.cpf_for(9))
    assert dossier.dados_basicos is not None
