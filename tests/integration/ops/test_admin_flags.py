"""Feature flags end to end: the admin endpoints, the CLI, /metrics and the flag checks.

The app is the real factory (with :class:`app.http.routes.admin.AdminController` registered when the
factory does not do it yet), on real PostgreSQL and Redis, with a Redis prefix of each test's own.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from app.cli import main
from app.http.routes.admin import AdminController
from app.main import create_app
from infra.flags import flags_command
from tests.support.factories import issue_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from litestar import Litestar

    from app.config import Settings

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
FLAGS = "/api/v1/admin/flags"
# A CPF with wrong check digits: the batch item fails with its own 400, no upstream is called.
BATCH = {"items": [{"cpf": "12345678900"}]}


def _app(settings: Settings) -> Litestar:
    app = create_app(settings)
    if not any(route.path == FLAGS for route in app.routes):  # until create_app registers it
        app.register(AdminController)
    return app


@pytest.fixture
async def client(ops_settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=_app(ops_settings)) as client:
        yield client


class Keys(msgspec.Struct, frozen=True):
    admin: dict[str, str]
    user: dict[str, str]
    admin_id: str


@pytest.fixture(scope="module")
async def keys(database_url: str) -> Keys:
    admin, admin_key = await issue_key(database_url, tenant="ops", scopes="admin")
    user, _ = await issue_key(database_url, tenant="ops", scopes="read,enrich")
    return Keys(
        admin={"Authorization": f"Bearer {admin}"},
        user={"Authorization": f"Bearer {user}"},
        admin_id=str(admin_key.id),
    )


def _flag(body: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(f for f in body["flags"] if f["name"] == name)
    return found


async def test_flags_need_the_admin_scope(client: AsyncTestClient[Litestar], keys: Keys) -> None:
    for method, path, body in (
        ("GET", FLAGS, None),
        ("PUT", f"{FLAGS}/enable_batch", {"enabled": False}),
        ("DELETE", f"{FLAGS}/enable_batch/override", None),
    ):
        anonymous = await client.request(method, path, json=body)
        assert anonymous.status_code == 401, (method, anonymous.text)
        refused = await client.request(method, path, json=body, headers=keys.user)
        assert refused.status_code == 403, (method, refused.text)
        assert refused.headers["content-type"].startswith(PROBLEM)
        assert "admin" in refused.json()["detail"]
    # The refused PUT changed nothing.
    listed = (await client.get(FLAGS, headers=keys.admin)).json()
    assert _flag(listed, "enable_batch")["overridden"] is False


async def test_list_shows_every_flag_with_its_default_and_meaning(
    client: AsyncTestClient[Litestar], keys: Keys
) -> None:
    response = await client.get(FLAGS, headers=keys.admin)
    assert response.status_code == 200
    body = response.json()
    assert [f["name"] for f in body["flags"]] == [
        "send_c2s_messages",
        "use_dossier_cache",
        "enable_batch",
    ]
    assert body["degraded"] is False
    assert body["cache_ttl_s"] == 2.0
    for flag in body["flags"]:
        assert flag["enabled"] is True
        assert flag["default"] is True
        assert flag["overridden"] is False
        assert flag["description"]
        assert flag["when_off"]
        assert "changed_by" not in flag


async def test_batch_answers_503_while_its_flag_is_off(
    client: AsyncTestClient[Litestar], keys: Keys
) -> None:
    assert (
        await client.post("/api/v1/enrich/batch", json=BATCH, headers=keys.user)
    ).status_code == 200
    put = await client.put(f"{FLAGS}/enable_batch", json={"enabled": False}, headers=keys.admin)
    assert put.status_code == 200
    view = put.json()
    assert view["enabled"] is False
    assert view["default"] is True
    assert view["overridden"] is True
    assert view["changed_by"] == f"api-key:{keys.admin_id}"  # the key's id, never the key
    refused = await client.post("/api/v1/enrich/batch", json=BATCH, headers=keys.user)
    assert refused.status_code == 503
    assert refused.headers["content-type"].startswith(PROBLEM)
    assert refused.headers["retry-after"] == "60"
    assert refused.json()["dependency"] == "feature:enable_batch"
    # The switch is named as what it is, not as a failing dependency.
    assert refused.json()["detail"] == "Feature 'enable_batch' is switched off"
    reset = await client.delete(f"{FLAGS}/enable_batch/override", headers=keys.admin)
    assert reset.status_code == 200
    assert reset.json()["overridden"] is False
    again = await client.post("/api/v1/enrich/batch", json=BATCH, headers=keys.user)
    assert again.status_code == 200
    assert again.json()["results"][0]["status"] == 400


async def test_bad_flag_updates_are_400_problems(
    client: AsyncTestClient[Litestar], keys: Keys
) -> None:
    unknown = await client.put(f"{FLAGS}/no_such_flag", json={"enabled": False}, headers=keys.admin)
    assert unknown.status_code == 400
    assert unknown.json()["errors"][0]["field"] == "name"
    for body in ({"enabled": "no"}, {"enabled": False, "extra": 1}, {}):
        bad = await client.put(f"{FLAGS}/enable_batch", json=body, headers=keys.admin)
        assert bad.status_code == 400, (body, bad.text)
        assert bad.headers["content-type"].startswith(PROBLEM)
    listed = (await client.get(FLAGS, headers=keys.admin)).json()
    assert _flag(listed, "enable_batch")["enabled"] is True


async def test_a_change_reaches_another_worker_within_the_ttl(
    ops_settings: Settings, keys: Keys
) -> None:
    """Two apps with their own lifespan (pool, Redis client, flag store) are two workers."""
    ttl = 0.5
    settings = msgspec.structs.replace(ops_settings, flag_cache_ttl_s=ttl)
    async with (
        AsyncTestClient(app=_app(settings)) as first,
        AsyncTestClient(app=_app(settings)) as second,
    ):
        assert (
            await second.post("/api/v1/enrich/batch", json=BATCH, headers=keys.user)
        ).status_code == 200
        put = await first.put(f"{FLAGS}/enable_batch", json={"enabled": False}, headers=keys.admin)
        assert put.status_code == 200
        changed = time.monotonic()
        while True:
            status = (
                await second.post("/api/v1/enrich/batch", json=BATCH, headers=keys.user)
            ).status_code
            if status == 503:
                break
            assert status == 200
            assert time.monotonic() - changed < ttl + 3.0, "not applied within the TTL"
            await asyncio.sleep(0.05)


async def test_the_cli_changes_what_the_api_serves(
    client: AsyncTestClient[Litestar], keys: Keys, ops_settings: Settings
) -> None:
    out, err = io.StringIO(), io.StringIO()

    def run(action: str, name: str | None = None, value: str | None = None) -> int:
        return flags_command(
            ops_settings.redis_url,
            prefix=ops_settings.redis_key_prefix,
            defaults={},
            action=action,
            name=name,
            value=value,
            out=out,
            err=err,
        )

    # The command runs its own event loop (asyncio.run): call it from a thread.
    assert await asyncio.to_thread(run, "set", "send_c2s_messages", "off") == 0
    assert "send_c2s_messages    off" in out.getvalue()
    listed = (await client.get(FLAGS, headers=keys.admin)).json()
    flag = _flag(listed, "send_c2s_messages")
    assert flag["enabled"] is False
    assert flag["changed_by"] == "cli"
    assert await asyncio.to_thread(run, "list") == 0
    assert "(by cli at " in out.getvalue()
    assert await asyncio.to_thread(run, "unset", "send_c2s_messages") == 0
    listed = (await client.get(FLAGS, headers=keys.admin)).json()
    assert _flag(listed, "send_c2s_messages")["overridden"] is False
    assert err.getvalue() == ""


async def test_the_cli_entry_point(
    ops_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", ops_settings.redis_url)
    monkeypatch.setenv("REDIS_KEY_PREFIX", ops_settings.redis_key_prefix)
    monkeypatch.setenv("FLAG_USE_DOSSIER_CACHE", "false")
    assert await asyncio.to_thread(main, ["flags", "list"]) == 0
    assert "use_dossier_cache    off    off" in capsys.readouterr().out  # the setting's default
    assert await asyncio.to_thread(main, ["flags", "set", "enable_batch", "off"]) == 0
    assert await asyncio.to_thread(main, ["flags", "unset", "enable_batch"]) == 0
    with pytest.raises(SystemExit) as usage:  # argparse: unknown flag names are usage errors
        await asyncio.to_thread(main, ["flags", "set", "no_such_flag", "on"])
    assert usage.value.code == 2


async def test_the_cli_reports_an_unreachable_redis(
    ops_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert await asyncio.to_thread(main, ["flags", "set", "enable_batch", "off"]) == 1
    assert "nothing was changed" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["flags", "list"]) == 1
    captured = capsys.readouterr()
    assert "defaults" in captured.err
    assert "enable_batch         on" in captured.out


async def test_flag_values_are_on_metrics(client: AsyncTestClient[Litestar], keys: Keys) -> None:
    put = await client.put(
        f"{FLAGS}/use_dossier_cache", json={"enabled": False}, headers=keys.admin
    )
    assert put.status_code == 200, put.text
    scrape = (await client.get("/metrics")).text
    assert 'feature_flag_enabled{flag="use_dossier_cache"} 0.0' in scrape
    assert 'feature_flag_enabled{flag="send_c2s_messages"} 1.0' in scrape
    assert "feature_flag_storage_degraded 0.0" in scrape
    reset = await client.delete(f"{FLAGS}/use_dossier_cache/override", headers=keys.admin)
    assert reset.status_code == 200, reset.text
    scrape = (await client.get("/metrics")).text
    assert 'feature_flag_enabled{flag="use_dossier_cache"} 1.0' in scrape


async def test_the_flag_operations_are_documented(
    client: AsyncTestClient[Litestar],
) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    operations = {
        op["operationId"]: (method, op)
        for item in document["paths"].values()
        for method, op in item.items()
    }
    for operation_id in ("listFeatureFlags", "setFeatureFlag", "resetFeatureFlag"):
        _method, op = operations[operation_id]
        assert op["summary"]
        assert op["security"]
        assert {"401", "403", "503"} <= set(op["responses"])
