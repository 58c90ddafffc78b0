"""Scrape the real app's /metrics: promtool accepts it, labels are templates, no PII."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

import pytest
from litestar import get
from litestar.params import FromPath
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from observability.pii import scrub_text
from tests.support.promtool import run_promtool

if TYPE_CHECKING:
    from app.config import Settings

pytestmark = pytest.mark.integration

CPF = "52998224725"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ROUTE_OPT = {"exclude_from_auth": True, "exclude_from_rate_limit": True}


@get("/api/v1/observability-test/{item_id:uuid}", opt=ROUTE_OPT, sync_to_thread=False)
def item_by_id(item_id: FromPath[uuid.UUID]) -> dict[str, str]:
    """A route with a typed path parameter, like the customer lookup."""
    return {"id": str(item_id)}


async def test_scrape_passes_promtool_with_route_templates_and_no_pii(
    settings: Settings, promtool: str
) -> None:
    app = create_app(settings)
    app.register(item_by_id)
    item = uuid.uuid4()
    async with AsyncTestClient(app=app) as client:
        assert (await client.get(f"/api/v1/observability-test/{item}?cpf={CPF}")).status_code == 200
        assert (
            await client.get(f"/api/v1/customers/{CPF}?email=ana@exemplo.com")
        ).status_code == 404
        assert (await client.get("/health/ready")).status_code == 200
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/schema/openapi.json")).status_code == 200
        scrape = await client.get("/metrics")
    assert scrape.status_code == 200
    content_type = scrape.headers["content-type"]
    assert content_type.startswith("text/plain")
    assert content_type.lower().count("charset") == 1, content_type
    run_promtool(promtool, "check", "metrics", stdin=scrape.content)

    families = {f.name: f for f in text_string_to_metric_families(scrape.text)}
    requests = families["http_server_request_duration_seconds"]
    routes = {s.labels["http_route"] for s in requests.samples}
    # Plain templates: the parameter's name, never its type (docs, rules and dashboards agree).
    assert "/api/v1/observability-test/{item_id}" in routes
    assert not any(route.startswith("/api/v1/") and ":" in route for route in routes), routes
    assert "_unmatched" in routes
    # Probes, scrapes and documents (/schema* like /docs*) are in no SLI.
    assert not any(route.startswith(("/health", "/metrics", "/schema")) for route in routes)
    statuses = {
        (s.labels["http_route"], s.labels["http_response_status_code"])
        for s in requests.samples
        if s.name.endswith("_count")
    }
    assert ("/api/v1/observability-test/{item_id}", "200") in statuses
    assert ("_unmatched", "404") in statuses

    for family in families.values():
        for sample in family.samples:
            for name, value in sample.labels.items():
                where = f"{sample.name}{{{name}={value!r}}}"
                assert str(item) not in value, where
                assert CPF not in value, where
                assert not UUID_RE.search(value), where
                assert "?" not in value, where
                assert scrub_text(value) == value, where

    assert families["db_client_connections_max"].samples[0].value >= settings.db_pool_max
    build = families["c2s_api_build_info"].samples[0]
    assert build.labels["version"]


async def test_openmetrics_is_served_when_prometheus_asks_for_it(settings: Settings) -> None:
    app = create_app(settings)
    accept = (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
        "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    async with AsyncTestClient(app=app) as client:
        scrape = await client.get("/metrics", headers={"accept": accept})
    assert scrape.headers["content-type"].startswith("application/openmetrics-text")
    assert scrape.text.rstrip().endswith("# EOF")
    assert "# TYPE http_server_request_duration_seconds histogram" in scrape.text
