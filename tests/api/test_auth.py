"""API-key authentication through the real app factory (``app.http.middleware.auth``), on real
PostgreSQL.

The v1 controllers' own behaviour is tested elsewhere; here small probe routes are registered on
an app built by ``create_app`` (the same middleware stack, lifespan and error table), so every
rule of the middleware is exercised whatever routes exist. Tenant isolation is tested through
the real v1 endpoints.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec
import pytest
from litestar import Request, get, post
from litestar.params import JSONBody
from litestar.testing import AsyncTestClient

from app.http.middleware.auth import require_scope
from app.main import create_app
from domain.dossier import decode_dossier
from domain.keys import ApiKey, generate_key
from domain.tenancy import current_tenant, tenant_scope
from infra.db.keys import PgApiKeyStore
from infra.db.repository import PgPartyRepository
from tests.support.factories import issue_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from litestar import Litestar

    from app.config import Settings

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


class Payload(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    value: int


@get("/probe/read", include_in_schema=False, sync_to_thread=False)
def probe_read(request: Request[Any, Any, Any]) -> dict[str, Any]:
    state = request.scope["state"]
    return {
        "api_key_id": state.get("api_key_id"),
        "tenant": state.get("tenant"),
        "scopes": list(state.get("scopes") or ()),
        "current_tenant": current_tenant.get(),
    }


@post("/probe/enrich", include_in_schema=False, status_code=200, sync_to_thread=False)
def probe_enrich(data: JSONBody[Payload]) -> dict[str, int]:
    return {"value": data.value}


@get("/probe/admin", include_in_schema=False, opt={"scope": "admin"}, sync_to_thread=False)
def probe_admin() -> dict[str, bool]:
    return {"admin": True}


@get(
    "/probe/guarded",
    include_in_schema=False,
    guards=[require_scope("admin")],
    sync_to_thread=False,
)
def probe_guarded() -> dict[str, bool]:
    return {"guarded": True}


@get(
    "/probe/public",
    include_in_schema=False,
    opt={"exclude_from_auth": True},
    sync_to_thread=False,
)
def probe_public() -> dict[str, str | None]:
    return {"current_tenant": current_tenant.get()}


_PROBES = (probe_read, probe_enrich, probe_admin, probe_guarded, probe_public)


def _with_probes(app: Litestar) -> Litestar:
    for handler in _PROBES:
        app.register(handler)
    return app


@pytest.fixture(scope="module")
async def probe_client(settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The real app plus the probe routes, with its own lifespan."""
    async with AsyncTestClient(app=_with_probes(create_app(settings))) as client:
        yield client


class Keys(msgspec.Struct, kw_only=True):
    read: tuple[str, ApiKey]
    enrich: tuple[str, ApiKey]
    both: tuple[str, ApiKey]
    admin: tuple[str, ApiKey]
    expired: tuple[str, ApiKey]


@pytest.fixture(scope="module")
async def keys(database_url: str) -> Keys:
    """Keys of tenant ``acme`` with each scope set, plus an expired one."""
    return Keys(
        read=await issue_key(database_url, scopes="read"),
        enrich=await issue_key(database_url, scopes="enrich"),
        both=await issue_key(database_url, scopes="read,enrich"),
        admin=await issue_key(database_url, scopes="admin"),
        expired=await issue_key(database_url, expires_in=timedelta(seconds=-1)),
    )


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    for member in ("type", "title", "detail", "error", "request_id"):
        assert member in body
    return body


def _stable(body: dict[str, Any]) -> dict[str, Any]:
    """A problem body without the per-request members."""
    return {k: v for k, v in body.items() if k not in ("request_id", "trace_id", "instance")}


# --- 401 -------------------------------------------------------------------------------------


async def test_missing_key_is_401_with_www_authenticate(
    probe_client: AsyncTestClient[Litestar],
) -> None:
    response = await probe_client.get("/probe/read")
    body = assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "API key" in body["detail"]


async def test_unknown_revoked_expired_and_malformed_keys_get_the_same_401(
    probe_client: AsyncTestClient[Litestar], keys: Keys, database_url: str
) -> None:
    revoked, revoked_key = await issue_key(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        await PgApiKeyStore(pool).revoke(revoked_key.id)
    finally:
        await pool.close()
    candidates = {
        "unknown": generate_key().plaintext,
        "revoked": revoked,
        "expired": keys.expired[0],
        "malformed": "not-a-key",
        "truncated": keys.read[0][:-5],
    }
    bodies = {}
    for label, candidate in candidates.items():
        response = await probe_client.get("/probe/read", headers=bearer(candidate))
        bodies[label] = _stable(assert_problem(response, 401))
        assert response.headers["www-authenticate"].startswith("Bearer"), label
    assert len({msgspec.json.encode(body) for body in bodies.values()}) == 1, bodies


async def test_unknown_key_via_x_api_key_is_401(probe_client: AsyncTestClient[Litestar]) -> None:
    response = await probe_client.get(
        "/probe/read", headers={"X-API-Key": generate_key().plaintext}
    )
    assert_problem(response, 401)


async def test_revoked_key_is_refused_within_5_seconds(
    probe_client: AsyncTestClient[Litestar], database_url: str
) -> None:
    plaintext, stored = await issue_key(database_url)
    assert (await probe_client.get("/probe/read", headers=bearer(plaintext))).status_code == 200
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        await PgApiKeyStore(pool).revoke(stored.id)
    finally:
        await pool.close()
    start = time.monotonic()
    while True:
        response = await probe_client.get("/probe/read", headers=bearer(plaintext))
        if response.status_code == 401:
            break
        assert response.status_code == 200
        assert time.monotonic() - start < 5.0, "revocation not effective within 5 s"
        await asyncio.sleep(0.1)
    assert_problem(response, 401)


async def test_expired_key_is_401(probe_client: AsyncTestClient[Litestar], keys: Keys) -> None:
    assert_problem(await probe_client.get("/probe/read", headers=bearer(keys.expired[0])), 401)


async def test_two_different_keys_in_one_request_are_refused(
    probe_client: AsyncTestClient[Litestar], keys: Keys
) -> None:
    headers = {**bearer(keys.both[0]), "X-API-Key": keys.admin[0]}
    assert_problem(await probe_client.get("/probe/read", headers=headers), 401)


# --- accepted ---------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["bearer", "bearer-lowercase", "x-api-key", "both-agree"])
async def test_key_is_accepted_in_either_header(
    probe_client: AsyncTestClient[Litestar], keys: Keys, style: str
) -> None:
    plaintext, stored = keys.both
    headers = {
        "bearer": {"Authorization": f"Bearer {plaintext}"},
        "bearer-lowercase": {"Authorization": f"bearer {plaintext}"},
        "x-api-key": {"X-API-Key": plaintext},
        "both-agree": {"Authorization": f"Bearer {plaintext}", "X-API-Key": plaintext},
    }[style]
    response = await probe_client.get("/probe/read", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["api_key_id"] == str(stored.id)


async def test_request_state_carries_key_id_tenant_and_scopes_never_the_key(
    probe_client: AsyncTestClient[Litestar], keys: Keys
) -> None:
    plaintext, stored = keys.both
    body = (await probe_client.get("/probe/read", headers=bearer(plaintext))).json()
    assert body == {
        "api_key_id": str(stored.id),
        "tenant": "acme",
        "scopes": ["read", "enrich"],
        "current_tenant": "acme",
    }
    assert plaintext not in str(body)
    assert current_tenant.get() is None  # the request's tenant does not leak out of it


async def test_last_use_is_recorded(
    probe_client: AsyncTestClient[Litestar], database_url: str
) -> None:
    plaintext, stored = await issue_key(database_url)
    assert (await probe_client.get("/probe/read", headers=bearer(plaintext))).status_code == 200
    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(50):
            used = await conn.fetchval(
                "SELECT last_used_at FROM core.api_keys WHERE id = $1", stored.id
            )
            if used is not None:
                break
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    assert used is not None


# --- 403 ------------------------------------------------------------------------------------


async def test_post_needs_the_enrich_scope(
    probe_client: AsyncTestClient[Litestar], keys: Keys
) -> None:
    payload = {"value": 1}
    body = assert_problem(
        await probe_client.post("/probe/enrich", json=payload, headers=bearer(keys.read[0])), 403
    )
    assert "enrich" in body["detail"]
    ok = await probe_client.post("/probe/enrich", json=payload, headers=bearer(keys.enrich[0]))
    assert ok.status_code == 200
    assert ok.json() == payload


async def test_get_needs_the_read_scope(
    probe_client: AsyncTestClient[Litestar], keys: Keys
) -> None:
    body = assert_problem(
        await probe_client.get("/probe/read", headers=bearer(keys.enrich[0])), 403
    )
    assert "read" in body["detail"]


async def test_route_declared_scope_and_admin(
    probe_client: AsyncTestClient[Litestar], keys: Keys
) -> None:
    assert_problem(await probe_client.get("/probe/admin", headers=bearer(keys.both[0])), 403)
    admin = bearer(keys.admin[0])
    assert (await probe_client.get("/probe/admin", headers=admin)).status_code == 200
    # admin grants everything
    assert (await probe_client.get("/probe/read", headers=admin)).status_code == 200
    response = await probe_client.post("/probe/enrich", json={"value": 2}, headers=admin)
    assert response.status_code == 200


async def test_scope_guard(probe_client: AsyncTestClient[Litestar], keys: Keys) -> None:
    assert_problem(await probe_client.get("/probe/guarded", headers=bearer(keys.read[0])), 403)
    assert (
        await probe_client.get("/probe/guarded", headers=bearer(keys.admin[0]))
    ).status_code == 200


# --- excluded routes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/health",
        "/health/ready",
        "/docs",
        "/docs/static/c2s-init.js",
        "/schema/openapi.json",
        "/api-docs/openapi.yml",
    ],
)
async def test_excluded_routes_work_without_a_key(
    client: AsyncTestClient[Litestar], path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200, (path, response.text)


async def test_metrics_needs_no_key_when_served(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/metrics")
    assert response.status_code in (200, 404)
    assert response.status_code != 401


async def test_excluded_route_has_no_tenant(probe_client: AsyncTestClient[Litestar]) -> None:
    response = await probe_client.get("/probe/public")
    assert response.status_code == 200
    assert response.json() == {"current_tenant": None}


async def test_options_needs_no_key(probe_client: AsyncTestClient[Litestar]) -> None:
    response = await probe_client.options("/probe/read")
    assert response.status_code == 204
    assert "GET" in response.headers["allow"]


# --- PostgreSQL down --------------------------------------------------------------------------


async def test_database_down_on_a_cache_miss_is_503_with_retry_after(
    settings: Settings,
) -> None:
    broken = msgspec.structs.replace(
        settings,
        database_url="postgresql://postgres@127.0.0.1:1/none",
        db_connect_timeout_s=0.3,
    )
    async with AsyncTestClient(app=_with_probes(create_app(broken))) as client:
        response = await client.get("/probe/read", headers=bearer(generate_key().plaintext))
        body = assert_problem(response, 503)
        assert int(response.headers["retry-after"]) >= 1
        assert body["dependency"] == "postgres"
        # Requests without a key are still refused with 401, without touching the database.
        assert_problem(await client.get("/probe/read"), 401)
        # Excluded routes keep working.
        assert (await client.get("/health")).status_code == 200


# --- the key never shows up ---------------------------------------------------------------------


async def test_keys_never_appear_in_logs_or_bodies(
    probe_client: AsyncTestClient[Litestar],
    keys: Keys,
    capfd: pytest.CaptureFixture[str],
) -> None:
    good = keys.both[0]
    unknown = generate_key().plaintext
    responses = [
        await probe_client.get("/probe/read", headers=bearer(good)),
        await probe_client.get("/probe/read", headers={"X-API-Key": unknown}),
        await probe_client.get("/probe/admin", headers=bearer(good)),
        await probe_client.post("/probe/enrich", content=b"{", headers=bearer(good)),
        await probe_client.get("/no/such/route", headers=bearer(good)),
    ]
    out, err = capfd.readouterr()
    everything = out + err + "".join(r.text + str(r.headers) for r in responses)
    for key in (good, unknown):
        secret = key.split("_", 2)[2]
        assert key not in everything
        assert secret not in everything


# --- tenant isolation (OWASP API1) --------------------------------------------------------------


@pytest.fixture
async def party_of_tenant_a(database_url: str) -> tuple[str, str]:
    """A person stored while acting for ``tenant-a``: ``(party id, cpf)``."""
    from infra.sandbox.people import SyntheticPeople

    people = SyntheticPeople(seed=4242)
    cpf = people.cpf_for(7)
    raw = people.dossier_json(cpf)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        with tenant_scope("tenant-a"):
            stored = await PgPartyRepository(pool).store_dossier(
                cpf, decode_dossier(raw), raw, None
            )
    finally:
        await pool.close()
    return str(stored.party_id), cpf


async def test_a_tenant_cannot_read_another_tenants_data(
    client: AsyncTestClient[Litestar], database_url: str, party_of_tenant_a: tuple[str, str]
) -> None:
    party_id, cpf = party_of_tenant_a
    key_a, _ = await issue_key(database_url, tenant="tenant-a", scopes="read,enrich")
    key_b, _ = await issue_key(database_url, tenant="tenant-b", scopes="read,enrich")

    # The owner sees its party, by id and by CPF (from the database)...
    own = await client.get(f"/api/v1/customers/{party_id}", headers=bearer(key_a))
    assert own.status_code == 200, own.text
    found = await client.get(
        "/api/v1/contributor/customer", params={"cpf": cpf}, headers=bearer(key_a)
    )
    assert found.status_code == 200, found.text
    assert found.json()["metadata"]["party_id"] == party_id

    # ...another tenant does not: the id is unknown to it,
    other = await client.get(f"/api/v1/customers/{party_id}", headers=bearer(key_b))
    assert other.status_code == 404, other.text
    # indistinguishable from an id that does not exist at all (the body only echoes the id)
    stranger = uuid.uuid4()
    absent = await client.get(f"/api/v1/customers/{stranger}", headers=bearer(key_b))

    def shape(response: Any, echoed: str) -> dict[str, Any]:
        body: dict[str, Any] = response.json()
        body.pop("request_id", None)
        return {k: str(v).replace(echoed, "<id>") for k, v in body.items()}

    assert shape(other, party_id) == shape(absent, str(stranger))
    assert cpf not in other.text
    # and a lookup by the same CPF never answers tenant A's stored party (it may fetch the
    # person afresh from the Work API, on tenant B's own account, or fail with a 4xx/502/503).
    lookup = await client.get(
        "/api/v1/contributor/customer", params={"cpf": cpf}, headers=bearer(key_b)
    )
    assert lookup.status_code in (200, 404, 502, 503), lookup.text
    assert party_id not in lookup.text
    unknown = await client.get(f"/api/v1/customers/{uuid.uuid4()}", headers=bearer(key_b))
    assert unknown.status_code == 404
