"""Webhook authentication and bounds, through the real app, PostgreSQL and Redis.

With ``WEBHOOK_SECRET`` set, a C2S delivery needs a valid ``X-C2S-Signature`` or token, else 401
and nothing is stored or queued; bodies are bounded in events and bytes (413); the Google Ads
webhook needs its key. Without a secret (development/test only) the webhook stays open and the
app warns at start-up.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from app.config import Secret
from app.main import create_app
from domain.signatures import sign

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from litestar import Litestar

    from app.config import Settings

pytestmark = pytest.mark.integration

WEBHOOK = "/api/v1/webhooks/c2s"
GOOGLE = "/api/v1/webhooks/google-ads"
PROBLEM = "application/problem+json"
CURRENT = "whsec-api-test-current-7f3a9c"
PREVIOUS = "whsec-api-test-previous-51b2e8"
GOOGLE_KEY = "gads-api-test-key-0c9d2e41"


def new_lead_id() -> str:
    return "wh" + uuid.uuid4().hex[:16]


def event(lead_id: str, stamp: str = "2025-11-26T10:00:00Z") -> dict[str, Any]:
    return {
        "id": lead_id,
        "hook_action": "on_update_lead",
        "attributes": {"updated_at": stamp, "customer": {"name": "Webhook Test"}},
    }


def encode(document: Any) -> bytes:  # Any: a JSON document
    return msgspec.json.encode(document)


def signed(body: bytes, secret: str = CURRENT, at: float | None = None) -> dict[str, str]:
    stamp = int(time.time() if at is None else at)
    return {"Content-Type": "application/json", "X-C2S-Signature": sign(secret, stamp, body)}


JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
async def secured(settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The app with a current and a previous webhook secret and a Google Ads key."""
    app = create_app(
        msgspec.structs.replace(
            settings,
            redis_key_prefix=f"{settings.redis_key_prefix}webhook-auth:",
            webhook_secret=Secret(f"{CURRENT},{PREVIOUS}"),
            google_ads_webhook_key=Secret(GOOGLE_KEY),
        )
    )
    async with AsyncTestClient(app=app) as client:
        yield client


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


async def stored(db: asyncpg.Pool, *lead_ids: str) -> tuple[int, int]:
    """``(event rows, queued jobs)`` for these leads."""
    rows: int = await db.fetchval(
        "SELECT count(*) FROM core.webhook_events WHERE lead_id = ANY($1::text[])", list(lead_ids)
    )
    jobs: int = await db.fetchval(
        "SELECT count(*) FROM queue.pgqueuer AS j JOIN core.webhook_events AS e "
        "ON j.dedupe_key = 'webhook_event:' || e.id::text WHERE e.lead_id = ANY($1::text[])",
        list(lead_ids),
    )
    return rows, jobs


def assert_unauthorized(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["status"] == 401
    assert problem["type"].endswith("/unauthorized")


# --- C2S webhook: credentials --------------------------------------------------------------------


async def test_secret_set_and_no_credentials_is_401_and_nothing_is_stored_or_queued(
    secured: AsyncTestClient[Litestar], db: asyncpg.Pool
) -> None:
    lead_id = new_lead_id()
    response = await secured.post(WEBHOOK, content=encode(event(lead_id)), headers=JSON)
    assert_unauthorized(response)
    assert await stored(db, lead_id) == (0, 0)


async def test_wrong_token_is_401_and_nothing_is_stored(
    secured: AsyncTestClient[Litestar], db: asyncpg.Pool
) -> None:
    lead_id = new_lead_id()
    body = encode(event(lead_id))
    for headers, params in (
        ({**JSON, "X-Webhook-Token": CURRENT[:-1]}, {}),
        (JSON, {"token": CURRENT + "x"}),
        # Every token presented must be valid, not just one of them.
        ({**JSON, "X-Webhook-Token": CURRENT}, {"token": "not-the-secret"}),
    ):
        assert_unauthorized(
            await secured.post(WEBHOOK, content=body, headers=headers, params=params)
        )
    assert await stored(db, lead_id) == (0, 0)


async def test_valid_token_in_header_or_query_is_200_and_stored_with_its_job(
    secured: AsyncTestClient[Litestar], db: asyncpg.Pool
) -> None:
    by_header, by_query = new_lead_id(), new_lead_id()
    response = await secured.post(
        WEBHOOK, content=encode(event(by_header)), headers={**JSON, "X-Webhook-Token": CURRENT}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "received", "received": 1, "processed": 1, "duplicates": 0}
    response = await secured.post(
        WEBHOOK, content=encode(event(by_query)), headers=JSON, params={"token": CURRENT}
    )
    assert response.status_code == 200, response.text
    assert await stored(db, by_header, by_query) == (2, 2)


async def test_valid_signature_is_200_and_stored(
    secured: AsyncTestClient[Litestar], db: asyncpg.Pool
) -> None:
    lead_id = new_lead_id()
    body = encode(event(lead_id))
    response = await secured.post(WEBHOOK, content=body, headers=signed(body))
    assert response.status_code == 200, response.text
    assert response.json()["processed"] == 1
    assert await stored(db, lead_id) == (1, 1)


async def test_signature_with_a_stale_timestamp_is_401(
    secured: AsyncTestClient[Litestar], db: asyncpg.Pool
) -> None:
    lead_id = new_lead_id()
    body = encode(event(lead_id))
    now = time.time()
    for at in (now - 301, now - 3600, now + 3600):
        assert_unauthorized(await secured.post(WEBHOOK, content=body, headers=signed(body, at=at)))
    assert await stored(db, lead_id) == (0, 0)


async def test_tampered_body_is_401(secured: AsyncTestClient[Litestar], db: asyncpg.Pool) -> None:
    lead_id, victim = new_lead_id(), new_lead_id()
    original = encode(event(lead_id))
    tampered = encode(event(victim))
    response = await secured.post(WEBHOOK, content=tampered, headers=signed(original))
    assert_unauthorized(response)
    assert await stored(db, lead_id, victim) == (0, 0)


async def test_malformed_or_foreign_signature_is_401(
    secured: AsyncTestClient[Litestar], db: asyncpg.Pool
) -> None:
    lead_id = new_lead_id()
    body = encode(event(lead_id))
    for header in (
        "v1=abc",
        "t=1,v1=" + "0" * 64,
        signed(body, secret="whsec-attacker-0000000")["X-C2S-Signature"],
    ):
        response = await secured.post(
            WEBHOOK, content=body, headers={**JSON, "X-C2S-Signature": header}
        )
        assert_unauthorized(response)
    assert await stored(db, lead_id) == (0, 0)


async def test_rotation_the_previous_secret_still_verifies(
    secured: AsyncTestClient[Litestar], db: asyncpg.Pool
) -> None:
    by_signature, by_token = new_lead_id(), new_lead_id()
    body = encode(event(by_signature))
    response = await secured.post(WEBHOOK, content=body, headers=signed(body, secret=PREVIOUS))
    assert response.status_code == 200, response.text
    response = await secured.post(
        WEBHOOK, content=encode(event(by_token)), headers={**JSON, "X-Webhook-Token": PREVIOUS}
    )
    assert response.status_code == 200, response.text
    assert await stored(db, by_signature, by_token) == (2, 2)


async def test_secrets_and_presented_tokens_never_appear_in_bodies_or_logs(
    secured: AsyncTestClient[Litestar], capfd: pytest.CaptureFixture[str]
) -> None:
    near_miss = CURRENT[:-3] + "zzz"
    body = encode(event(new_lead_id()))
    responses = [
        await secured.post(WEBHOOK, content=body, headers={**JSON, "X-Webhook-Token": near_miss}),
        await secured.post(WEBHOOK, content=body, headers=JSON, params={"token": near_miss}),
        await secured.post(WEBHOOK, content=body, headers=signed(body, at=time.time() - 999)),
        await secured.post(GOOGLE, content=b"{}", headers=JSON, params={"google_key": near_miss}),
    ]
    assert [r.status_code for r in responses] == [401, 401, 401, 401]
    out, err = capfd.readouterr()
    assert "c2s_webhook_unauthorized" in out + err
    everything = out + err + "".join(r.text + str(r.headers) for r in responses)
    for secret in (CURRENT, PREVIOUS, GOOGLE_KEY, near_miss):
        assert secret not in everything


# --- C2S webhook: bounds -------------------------------------------------------------------------


async def test_too_many_events_is_413_naming_the_limit_and_nothing_is_stored(
    secured: AsyncTestClient[Litestar], db: asyncpg.Pool, settings: Settings
) -> None:
    assert settings.webhook_max_events == 100
    lead_ids = [new_lead_id() for _ in range(101)]
    body = encode([event(lead_id) for lead_id in lead_ids])
    response = await secured.post(WEBHOOK, content=body, headers=signed(body))
    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert "at most 100" in response.json()["detail"]
    assert await stored(db, *lead_ids) == (0, 0)
    # The limit itself is accepted.
    body = encode([event(lead_id) for lead_id in lead_ids[:100]])
    response = await secured.post(WEBHOOK, content=body, headers=signed(body))
    assert response.status_code == 200, response.text
    assert response.json()["processed"] == 100


async def test_webhook_body_over_its_own_limit_is_413(
    secured: AsyncTestClient[Litestar], db: asyncpg.Pool, settings: Settings
) -> None:
    assert settings.webhook_max_body_bytes < settings.max_body_bytes
    lead_id = new_lead_id()
    document = event(lead_id)
    document["attributes"]["description"] = "x" * settings.webhook_max_body_bytes
    body = encode(document)
    response = await secured.post(
        WEBHOOK, content=body, headers={**JSON, "X-Webhook-Token": CURRENT}
    )
    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert await stored(db, lead_id) == (0, 0)


# --- without a secret (development and test only) ------------------------------------------------


async def test_without_a_secret_the_webhook_is_open(
    client: AsyncTestClient[Litestar], db: asyncpg.Pool, settings: Settings
) -> None:
    assert not settings.webhook_secret
    lead_id = new_lead_id()
    response = await client.post(WEBHOOK, content=encode(event(lead_id)), headers=JSON)
    assert response.status_code == 200, response.text
    assert await stored(db, lead_id) == (1, 1)


def test_start_up_without_a_secret_warns_and_with_one_does_not(
    settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    create_app(settings)
    out, err = capfd.readouterr()
    assert "webhook_unauthenticated" in out + err
    assert "WEBHOOK_SECRET" in out + err
    create_app(msgspec.structs.replace(settings, webhook_secret=Secret(CURRENT)))
    out, err = capfd.readouterr()
    assert "webhook_unauthenticated" not in out + err


# --- Google Ads webhook ---------------------------------------------------------------------------


async def test_google_ads_needs_its_key(secured: AsyncTestClient[Litestar]) -> None:
    for params in (
        {},
        {"google_key": ""},
        {"google_key": GOOGLE_KEY[:-1]},
        {"google_key": CURRENT},
    ):
        assert_unauthorized(await secured.post(GOOGLE, content=b"{}", headers=JSON, params=params))
    # The right key passes the guard: the (empty) body is then judged on its own.
    response = await secured.post(
        GOOGLE, content=b"{}", headers=JSON, params={"google_key": GOOGLE_KEY}
    )
    assert response.status_code == 400, response.text


async def test_google_ads_without_a_configured_key_refuses_everything(
    client: AsyncTestClient[Litestar], settings: Settings
) -> None:
    assert not settings.google_ads_webhook_key
    for params in ({}, {"google_key": ""}, {"google_key": "anything"}):
        assert_unauthorized(await client.post(GOOGLE, content=b"{}", headers=JSON, params=params))
