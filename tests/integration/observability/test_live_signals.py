"""Every signal the dashboard, the rules and the runbooks point at is real.

The app runs under Granian and the worker as a process (``tests/support/processes.py``), both
against the session's PostgreSQL, Redis and the sandbox upstreams. After real traffic (lookups,
``/leads/process``, a webhook handled by the worker, an upstream failure), both ``/metrics``
endpoints are scraped, and every metric named by the dashboard JSON, the alert and recording
rules (their inputs; recording-rule outputs are not exported) and the runbooks must have at
least one sample in one of the scrapes: declared is not enough.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import urllib.request
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.observability.test_prometheus_rules import metric_names_in
from tests.support.factories import issue_key
from tests.support.processes import (
    APP_FACTORY,
    ROOT,
    ChildProcess,
    free_port,
    granian_server,
    worker_argv,
)
from tests.support.sandbox import (
    C2S_TOKEN,
    DIRETRIX_PASS,
    DIRETRIX_USER,
    WEBHOOK_SECRET,
    WORK_API_TOKEN,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.support.pg_replica import PgReplica
    from tests.support.sandbox import SandboxAdmin

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DASHBOARDS = sorted((ROOT / "observability" / "grafana" / "dashboards").glob("*.json"))
RULE_FILES = sorted((ROOT / "observability" / "prometheus").glob("*.yml"))
RUNBOOKS = sorted((ROOT / "docs" / "runbooks").glob("*.md"))
# Series Prometheus makes itself for every target: never in an exposition.
PROMETHEUS_OWN = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS"})
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${route:regex}": ".*",
    "$route": ".*",
    "$instance": ".*",
    "$job": ".*",
}
# Metric families of this service: a runbook's identifier with one of these prefixes is a metric
# reference (the other identifiers in code spans are commands, files, log events...).
_METRIC_PREFIXES = (
    "http_server_",
    "http_client_",
    "upstream_",
    "circuit_breaker_",
    "cache_",
    "rate_limit_",
    "queue_",
    "worker_",
    "pipeline_",
    "enrichments_",
    "feature_flag_",
    "dependency_",
    "db_client_",
    "c2s_api_",
    "process_",
    "python_",
)
# Identifiers with a metric prefix that are log fields, named as such by the runbooks.
_LOG_FIELDS = frozenset({"upstream_status"})
_CODE = re.compile(r"```[a-z]*\n(.*?)```|`([^`\n]+)`", re.DOTALL)
_STRING = re.compile(r"'[^']*'|\"(?:[^\"\\]|\\.)*\"")
_IDENT = re.compile(r"(?<![\w.:/$-])[a-z][a-z0-9_]*(?![\w(/.-])")


def _substitute(expr: str) -> str:
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    return expr


def _dashboard_exprs(path: Path) -> list[str]:
    model = json.loads(path.read_text(encoding="utf-8"))
    exprs: list[str] = []

    def walk(node: Any) -> None:  # Any: Grafana's JSON model
        if isinstance(node, dict):
            expr = node.get("expr")
            if isinstance(expr, str):
                exprs.append(expr)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(model.get("panels", []))
    for variable in model.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        if isinstance(text, str) and (m := re.fullmatch(r"label_values\((.+),\s*\w+\)", text)):
            exprs.append(m[1])
    return exprs


def referenced_metrics() -> dict[str, set[str]]:
    """Metric name -> where it is referenced (dashboard panels, rules, runbooks)."""
    refs: dict[str, set[str]] = {}
    recorded: set[str] = set()
    for path in RULE_FILES:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for group in document.get("groups", []):
            for rule in group["rules"]:
                if "record" in rule:
                    recorded.add(rule["record"])
                for name in metric_names_in(rule["expr"]):
                    refs.setdefault(name, set()).add(path.name)
    for path in DASHBOARDS:
        for expr in _dashboard_exprs(path):
            for name in metric_names_in(_substitute(expr)):
                refs.setdefault(name, set()).add(path.name)
    for path in RUNBOOKS:
        for block, span in _CODE.findall(path.read_text(encoding="utf-8")):
            code = _STRING.sub(" ", block or span)
            for match in _IDENT.finditer(code):
                if match[0].startswith(_METRIC_PREFIXES) and match[0] not in _LOG_FIELDS:
                    refs.setdefault(match[0], set()).add(path.name)
    for name in recorded | PROMETHEUS_OWN:
        refs.pop(name, None)
    return refs


def test_references_are_found_in_every_kind_of_file() -> None:
    refs = referenced_metrics()
    where = {source for sources in refs.values() for source in sources}
    assert any(s.endswith(".json") for s in where)
    assert {"alerts.yml", "rules.yml"} <= where
    assert "CircuitBreakerOpen.md" in where
    # Recording-rule outputs and Prometheus' own series are not expected in a scrape.
    assert "sli:http_requests:rate5m" not in refs
    assert "up" not in refs
    assert "enrichments_total" in refs
    assert "http_client_request_duration_seconds_bucket" in refs
    assert "upstream_retries_total" in refs


def _scrape(url: str) -> dict[str, list[float]]:
    """Sample name -> the values of its samples in one scrape of ``url``."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback URL
        text = response.read().decode()
    values: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values.setdefault(sample.name, []).append(sample.value)
    return values


@pytest.fixture(scope="module")
def live_env(
    base_env: dict[str, str], sandbox_url: str, run_id: str, pg_replica: PgReplica
) -> dict[str, str]:
    return {
        **os.environ,
        **base_env,
        # A read replica, so that its gauges (and the alerts on them) have samples too.
        "DATABASE_READ_URL": pg_replica.url_for(base_env["DATABASE_URL"]),
        "REDIS_KEY_PREFIX": base_env["REDIS_KEY_PREFIX"] + "live:",
        "C2S_BASE_URL": sandbox_url,
        "C2S_TOKEN": C2S_TOKEN,
        "DIRETRIX_BASE_URL": sandbox_url,
        "DIRETRIX_USER": DIRETRIX_USER,
        "DIRETRIX_PASS": DIRETRIX_PASS,
        "WORK_API_BASE_URL": sandbox_url,
        "WORK_API_TOKEN": WORK_API_TOKEN,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "HOST": "127.0.0.1",
    }


@pytest.fixture
def worker_metrics(live_env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    argv = worker_argv(concurrency=2, lease_timeout_s=30.0, grace_s=2.0, metrics_port=port)
    worker = ChildProcess("worker", argv, live_env)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if "queue_depth" in _scrape(url):
                    break
            except OSError:
                pass
            if not worker.alive() or time.monotonic() > deadline:
                pytest.fail(f"the worker did not serve its metrics:\n{worker.output(40)}")
            time.sleep(0.2)
        yield url
    finally:
        worker.terminate(timeout_s=10)
        worker.stop()


async def test_every_referenced_metric_has_samples_after_real_traffic(
    live_env: dict[str, str],
    database_url: str,
    sandbox: SandboxAdmin,
    worker_metrics: str,
) -> None:
    # A key with a daily paid-call quota: its paid calls feed paid_quota_use_ratio.
    key, _ = await issue_key(
        database_url, tenant="live", scopes="read,enrich,admin", paid_quota=10_000
    )
    auth = {"X-API-Key": key}
    with granian_server(APP_FACTORY, env=live_env, ready_path="/health/ready") as base:
        async with aiohttp.ClientSession(base_url=base) as http:
            lead = await sandbox.create_lead(person_index=3)
            lead_id = lead["lead_id"]
            async with http.get("/api/v1/leads/process", params={"id": lead_id}, headers=auth) as r:
                assert r.status == 200, await r.text()
                answer = await r.json()
            assert answer["success"] is True, answer
            cpf = answer["cpfs_processed"][0]
            async with http.get("/api/v1/leads/process", params={"id": lead_id}, headers=auth) as r:
                assert r.status == 200
            for path in ("/api/v1/work/modules/all", "/api/v1/work/modules/all"):
                async with http.get(path, params={"documento": cpf}, headers=auth) as r:
                    assert r.status == 200, await r.text()
            async with http.get(
                "/api/v1/contributor/customer", params={"cpf": cpf}, headers=auth
            ) as r:
                assert r.status == 200, await r.text()
            # An upstream failing (and retried) for one lookup.
            await sandbox.set_faults("work_api", error_rate=1.0, error_status=503)
            async with http.get(
                "/api/v1/work/modules/cep", params={"documento": "01310100"}, headers=auth
            ) as r:
                assert r.status >= 500
            await sandbox.clear_faults()
            # A webhook: accepted by the app, processed by the worker.
            other = await sandbox.create_lead(person_index=4)
            body = {
                "id": other["lead_id"],
                "hook_action": "on_update_lead",
                "attributes": {
                    "updated_at": "2025-11-26 07:00:00.000 -0300",
                    "customer": other["customer"],
                },
            }
            async with http.post(
                "/api/v1/webhooks/c2s", json=body, headers={"X-Webhook-Token": WEBHOOK_SECRET}
            ) as r:
                assert r.status == 200, await r.text()
            deadline = time.monotonic() + 30
            while not await sandbox.messages(other["lead_id"]):
                assert time.monotonic() < deadline, "the worker did not process the webhook"
                await asyncio.sleep(0.2)
            api = _scrape(f"{base}/metrics")
        worker = _scrape(worker_metrics)
    refs = referenced_metrics()
    missing = {
        name: sorted(sources)
        for name, sources in refs.items()
        if not api.get(name) and not worker.get(name)
    }
    assert not missing, f"referenced but without samples in either scrape: {missing}"
    # The worker's own pool is what its gauges show (they were always 0).
    assert sum(worker["db_client_connections_max"]) > 0
    assert sum(worker["db_client_connections_usage"]) > 0
