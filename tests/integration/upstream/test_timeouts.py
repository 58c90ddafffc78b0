"""Client timeouts fire at their configured bound against a sandbox that never answers."""

from __future__ import annotations

import time
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
# Scheduling and connection set-up on a loaded 2-core CI box; far below the sandbox's hang.
SLACK_S = 0.5


async def test_a_write_fails_at_its_timeout_and_is_not_retried(
    make_clients: MakeClients, sandbox: SandboxAdmin
) -> None:
    clients = make_clients(timeout_s=BOUND_S)
    await sandbox.set_faults("c2s", timeout_rate=1)
    start = time.perf_counter()
    with pytest.raises(DependencyUnavailable) as caught:
        await clients.c2s.send_message(PEOPLE.lead_id(1), "never answered")
    elapsed = time.perf_counter() - start
    assert BOUND_S * 0.9 <= elapsed < BOUND_S + SLACK_S
    assert caught.value.dependency == "c2s"
    assert await sandbox.count("c2s", "POST /integration/leads/{id}/create_message") == 1


async def test_a_read_times_out_once_per_attempt(
    make_clients: MakeClients, sandbox: SandboxAdmin
) -> None:
    clients = make_clients(timeout_s=BOUND_S)
    await sandbox.set_faults("diretrix", timeout_rate=1)
    start = time.perf_counter()
    with pytest.raises(DependencyUnavailable):
        await clients.diretrix.search_by_phone("11987654321")
    elapsed = time.perf_counter() - start
    bound = BOUND_S * RETRY_ATTEMPTS
    assert bound * 0.9 <= elapsed < bound + SLACK_S
    route = "GET /Consultas/Pessoa/Telefone/{phone}"
    assert await sandbox.count("diretrix", route) == RETRY_ATTEMPTS


async def test_latency_below_the_bound_is_fine(
    make_clients: MakeClients, sandbox: SandboxAdmin
) -> None:
    clients = make_clients(timeout_s=BOUND_S)
    await sandbox.set_faults("work_api", latency_ms=100, jitter_ms=50)
    dossier, _ = await clients.work_api.fetch_dossier(PEOPLE.cpf_for(9))
    assert dossier.dados_basicos is not None
