"""A pipeline that tells the truth, end to end: the real app, PostgreSQL, Redis, the sandbox
upstreams over HTTP and (for the webhook flow) a real worker process.

* an outage of Diretrix is a 503 with ``Retry-After`` on ``/c2s/enrich`` and an
  ``upstream_unavailable`` answer on ``/leads/process``, never "not found", and never replayed:
  once Diretrix is back the next request enriches;
* one C2S message per lead, whatever the events, even when each message makes C2S fire
  ``on_update_lead`` at us (the sandbox's ``update_webhook_url`` knob);
* a second lead of the same person gets its message without a second Work API call.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
import pytest

from app.main import create_app
from tests.support.factories import issue_key
from tests.support.processes import granian_server
from tests.support.sandbox import WEBHOOK_SECRET

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    import asyncpg
    from litestar import Litestar
    from litestar.testing import AsyncTestClient

    from app.config import Settings
    from tests.support.processes import ChildProcess
    from tests.support.sandbox import SandboxAdmin

pytestmark = pytest.mark.integration

PROCESS = "/api/v1/leads/process"
WEBHOOK = "/api/v1/webhooks/c2s"
WORK_API_ROUTE = "GET /api"


@pytest.fixture(scope="module")
async def key(database_url: str) -> str:
    plaintext, _ = await issue_key(database_url, tenant="truth", scopes="read,enrich")
    return plaintext


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


@pytest.fixture
async def isolated(e2e_settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The app with its own Redis key space: the breakers this test opens stay its own."""
    from litestar.testing import AsyncTestClient

    settings = msgspec.structs.replace(
        e2e_settings,
        redis_key_prefix=f"{e2e_settings.redis_key_prefix}{uuid.uuid4().hex[:8]}:",
    )
    async with AsyncTestClient(app=create_app(settings), timeout=60) as client:
        yield client


# --- point 1 and 2: an outage is not "not found", and is not replayed ------------------------


async def test_a_diretrix_outage_is_503_then_retried_once_diretrix_is_back(
    isolated: AsyncTestClient[Litestar], sandbox: SandboxAdmin, key: str
) -> None:
    lead = await sandbox.create_lead(person_index=71)
    await sandbox.set_faults("diretrix", error_rate=1.0, error_status=500)
    direct = await isolated.post(f"/api/v1/c2s/enrich/{lead['lead_id']}", headers=auth(key))
    assert direct.status_code == 503, direct.text
    assert int(direct.headers["retry-after"]) >= 1
    assert direct.json()["error"] != "Could not find CPF via Diretrix"
    process = await isolated.get(PROCESS, params={"id": lead["lead_id"]}, headers=auth(key))
    assert process.json() == {
        "success": False,
        "message": "Could not look up the CPF: Diretrix unavailable, try again later",
        "lead_id": lead["lead_id"],
        "reason": "upstream_unavailable",
    }
    assert await sandbox.messages(lead["lead_id"]) == []

    await sandbox.clear_faults()
    # Neither the failure nor a "no CPF" was remembered: once the breaker lets calls through
    # again, the next request enriches (never a replayed failure, never a cached "not found").
    deadline = time.monotonic() + 40
    while True:
        again = (
            await isolated.get(PROCESS, params={"id": lead["lead_id"]}, headers=auth(key))
        ).json()
        assert "duplicate_request" not in again, again
        if again["success"] or time.monotonic() > deadline:
            break
        assert again["reason"] == "upstream_unavailable", again
        await asyncio.sleep(1)
    assert again["success"] is True, again
    assert again["cpfs_processed"] == [lead["cpf"]]
    assert len(await sandbox.messages(lead["lead_id"])) == 1


# --- point 4: a second lead of the same person gets its message ------------------------------


async def test_a_second_lead_of_the_same_person_gets_its_message_without_a_second_fetch(
    client: AsyncTestClient[Litestar], sandbox: SandboxAdmin, key: str
) -> None:
    first = await sandbox.create_lead(person_index=72)
    second = await sandbox.create_lead(person_index=72)
    assert first["lead_id"] != second["lead_id"]
    one = (await client.get(PROCESS, params={"id": first["lead_id"]}, headers=auth(key))).json()
    two = (await client.get(PROCESS, params={"id": second["lead_id"]}, headers=auth(key))).json()
    assert one["success"] is True, one
    assert two["success"] is True, two
    assert two["cpfs_processed"] == [first["cpf"]]
    [message_one] = await sandbox.messages(first["lead_id"])
    [message_two] = await sandbox.messages(second["lead_id"])
    assert message_two["body"] == message_one["body"]
    assert "DADOS PESSOAIS" in message_two["body"]
    assert await sandbox.count("work_api", WORK_API_ROUTE) == 1  # paid once


# --- point 3: one message per lead, whatever the events --------------------------------------


@pytest.fixture(scope="module")
def live_url(e2e_env: dict[str, str]) -> Iterator[str]:
    """The app under Granian: the sandbox's C2S posts its update webhooks to it."""
    with granian_server(
        "app.main:create_app", env={**os.environ, **e2e_env}, ready_path="/health"
    ) as url:
        yield url


def event(lead: dict[str, Any], updated_at: str, hook_action: str) -> dict[str, Any]:
    return {
        "id": lead["lead_id"],
        "hook_action": hook_action,
        "attributes": {"updated_at": updated_at, "customer": lead["customer"]},
    }


@pytest.mark.slow
async def test_three_events_per_lead_and_echoing_updates_give_one_message_per_lead(
    live_url: str,
    sandbox: SandboxAdmin,
    db: asyncpg.Pool,
    start_worker: Callable[..., ChildProcess],
) -> None:
    # C2S fires on_update_lead at us after each message it receives (our own included).
    await sandbox.configure(
        update_webhook_url=live_url + WEBHOOK, update_webhook_token=WEBHOOK_SECRET
    )
    leads = [await sandbox.create_lead(person_index=i) for i in (73, 74)]
    bodies = [
        [
            event(lead, "2025-11-26 07:00:00.000 -0300", "on_create_lead"),
            event(lead, "2025-11-26 07:00:02.000 -0300", "on_update_lead"),
            event(lead, "2025-11-26 07:00:04.000 -0300", "on_update_lead"),
        ]
        for lead in leads
    ]
    headers = {"X-Webhook-Token": WEBHOOK_SECRET}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for body in bodies:
            async with http.post(live_url + WEBHOOK, json=body, headers=headers) as answer:
                assert answer.status == 200, await answer.text()
                assert (await answer.json())["processed"] == 3
    worker = start_worker(concurrency=2)
    try:
        await asyncio.sleep(30)
    finally:
        await sandbox.configure()  # no more echoes
    assert worker.alive(), worker.output(tail=40)
    for lead in leads:
        messages = await sandbox.messages(lead["lead_id"])
        assert len(messages) == 1, (lead["lead_id"], len(messages), worker.output(tail=40))
        assert "DADOS PESSOAIS" in messages[0]["body"]
        rows = await db.fetch(
            "SELECT status, message_sent_at, error_message FROM core.webhook_events "
            "WHERE source = 'c2s' AND lead_id = $1",
            lead["lead_id"],
        )
        # The three events, plus C2S's echo of our message: every one completed, one sent.
        assert len(rows) >= 4, rows
        assert {r["status"] for r in rows} == {"completed"}, rows
        assert sum(r["message_sent_at"] is not None for r in rows) == 1
    assert await sandbox.count("work_api", WORK_API_ROUTE) == 2  # one dossier per person
    assert worker.terminate(timeout_s=15) == 0
