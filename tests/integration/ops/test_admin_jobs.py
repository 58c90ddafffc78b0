"""Dead letters are visible and redrivable: ``/api/v1/admin/jobs``, ``c2s-api jobs`` and the
``queue_dead_letters_pending`` gauge (docs/runbooks/QueueDeadLetters.md)."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import uuid
from typing import TYPE_CHECKING

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from app.cli import build_parser
from app.cli.jobs import EXIT_NOT_FOUND, EXIT_OK, jobs_list, jobs_redrive, run_jobs
from app.main import create_app
from domain.models import LeadCustomer
from domain.webhooks import WebhookEvent
from infra.db.events import PgEventStore
from observability import metrics
from observability.queue import PrometheusQueueListener
from tests.support.factories import issue_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from litestar import Litestar

    from app.config import Settings

pytestmark = pytest.mark.integration

JOBS = "/api/v1/admin/jobs"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield created
    await created.close()


@pytest.fixture
async def client(ops_settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(ops_settings)) as client:
        yield client


@pytest.fixture(scope="module")
async def admin(database_url: str) -> dict[str, str]:
    key, _ = await issue_key(database_url, tenant="ops", scopes="admin")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
async def user(database_url: str) -> dict[str, str]:
    key, _ = await issue_key(database_url, tenant="ops", scopes="read,enrich")
    return {"Authorization": f"Bearer {key}"}


async def _event(store: PgEventStore) -> uuid.UUID:
    lead = uuid.uuid4().hex
    stamp = dt.datetime.now(dt.UTC)
    raw = f'{{"id":"{lead}","attributes":{{"updated_at":"{stamp.isoformat()}"}}}}'.encode()
    event = WebhookEvent(lead_id=lead, updated_at=stamp, customer=LeadCustomer(), raw=raw)
    accepted = await store.accept([event])
    return accepted.ids[0]


async def _failed(pool: asyncpg.Pool, *, dead: bool, send_unknown: bool = False) -> uuid.UUID:
    store = PgEventStore(pool)
    event_id = await _event(store)
    # The job the intake enqueued has run (and failed): it is gone from the queue.
    await pool.execute(
        "DELETE FROM queue.pgqueuer WHERE dedupe_key = $1", f"webhook_event:{event_id}"
    )
    if send_unknown:
        await pool.execute(
            "UPDATE core.webhook_events SET send_intent_at = now() WHERE id = $1", event_id
        )
    reason = "gave up after 9 attempts: work_api unavailable" if dead else "lead not found in C2S"
    await store.mark_failed(event_id, reason, dead_letter=dead)
    return event_id


async def _live_jobs(pool: asyncpg.Pool, event_id: uuid.UUID) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM queue.pgqueuer WHERE dedupe_key = $1 AND status = 'queued'",
        f"webhook_event:{event_id}",
    )
    return count


async def test_admin_lists_dead_letters_and_redrives_one(
    client: AsyncTestClient[Litestar],
    pool: asyncpg.Pool,
    admin: dict[str, str],
    user: dict[str, str],
) -> None:
    dead = await _failed(pool, dead=True)
    permanent = await _failed(pool, dead=False)
    unknown = await _failed(pool, dead=True, send_unknown=True)

    assert (await client.get(f"{JOBS}?state=dead", headers=user)).status_code == 403
    listed = await client.get(f"{JOBS}?state=dead&limit=1000", headers=admin)
    assert listed.status_code == 200
    ids = {job["id"]: job for job in listed.json()["jobs"]}
    assert str(dead) in ids
    assert str(permanent) not in ids  # failed for good, not a dead letter
    assert ids[str(dead)]["dead_letter"] is True
    assert ids[str(dead)]["error"].startswith("gave up after")
    assert "payload" not in ids[str(dead)]  # no personal data in the listing

    refused = await client.post(f"{JOBS}/{dead}/redrive", headers=user)
    assert refused.status_code == 403
    redriven = await client.post(f"{JOBS}/{dead}/redrive", headers=admin)
    assert redriven.status_code == 200, redriven.text
    assert redriven.json() == {"id": str(dead), "status": "redriven"}
    row = await pool.fetchrow(
        "SELECT status, attempts, dead_lettered_at, redriven_at FROM core.webhook_events "
        "WHERE id = $1",
        dead,
    )
    assert row is not None
    assert (row["status"], row["attempts"], row["dead_lettered_at"]) == ("queued", 0, None)
    assert row["redriven_at"] is not None
    assert await _live_jobs(pool, dead) == 1

    again = await client.post(f"{JOBS}/{dead}/redrive", headers=admin)
    assert again.status_code == 409
    maybe_sent = await client.post(f"{JOBS}/{unknown}/redrive", headers=admin)
    assert maybe_sent.status_code == 409
    assert "send outcome unknown" in maybe_sent.json()["detail"]
    assert await _live_jobs(pool, unknown) == 0
    missing = await client.post(f"{JOBS}/{uuid.uuid4()}/redrive", headers=admin)
    assert missing.status_code == 404
    # A permanent failure may be redriven one by one, by an operator who fixed its cause.
    assert (await client.post(f"{JOBS}/{permanent}/redrive", headers=admin)).status_code == 200


async def test_admin_redrives_every_dead_letter_but_never_a_maybe_sent_one(
    client: AsyncTestClient[Litestar], pool: asyncpg.Pool, admin: dict[str, str]
) -> None:
    dead = [await _failed(pool, dead=True) for _ in range(2)]
    unknown = await _failed(pool, dead=True, send_unknown=True)
    response = await client.post(f"{JOBS}/redrive-dead", headers=admin)
    assert response.status_code == 200
    redriven = set(response.json()["ids"])
    assert {str(d) for d in dead} <= redriven
    assert str(unknown) not in redriven
    for event_id in dead:
        assert await _live_jobs(pool, event_id) == 1


async def test_dead_letter_depth_is_sampled_into_a_gauge(pool: asyncpg.Pool) -> None:
    await _failed(pool, dead=True)
    stats = await PgEventStore(pool).queue_stats()
    expected: int = await pool.fetchval(
        "SELECT count(*) FROM core.webhook_events "
        "WHERE status = 'failed' AND dead_lettered_at IS NOT NULL AND source = 'c2s'"
    )
    assert stats.dead_letters == expected >= 1
    PrometheusQueueListener().sampled(stats)
    assert metrics.QUEUE_DEAD_LETTERS_PENDING._value.get() == expected


async def test_cli_lists_and_redrives(settings: Settings, pool: asyncpg.Pool) -> None:
    dead = await _failed(pool, dead=True)
    out = io.StringIO()
    status = await asyncio.to_thread(jobs_list, settings, state="dead", limit=1000, out=out)
    assert status == EXIT_OK
    table = out.getvalue()
    assert table.splitlines()[0].split()[:3] == ["ID", "LEAD", "STATE"]
    assert str(dead) in table
    out = io.StringIO()
    assert await asyncio.to_thread(jobs_redrive, settings, str(dead), out=out) == EXIT_OK
    assert f"redriven {dead}" in out.getvalue()
    # Not failed any more: exit 1, like `keys revoke` of an unknown key.
    assert await asyncio.to_thread(jobs_redrive, settings, str(dead)) == EXIT_NOT_FOUND
    other = await _failed(pool, dead=True)
    args = build_parser().parse_args(["jobs", "redrive", "--all-dead"])
    out = io.StringIO()
    assert await asyncio.to_thread(run_jobs, args, settings) == EXIT_OK
    assert await _live_jobs(pool, other) == 1
    parsed = build_parser().parse_args(["jobs", "list", "--state", "dead"])
    assert (parsed.jobs_command, parsed.state) == ("list", "dead")
