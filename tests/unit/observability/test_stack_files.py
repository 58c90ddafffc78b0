"""The compose stack and the documents around the alerts hang together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "observability/compose/compose.yaml"
ALERTS = ROOT / "observability/prometheus/alerts.yml"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def test_compose_runs_app_worker_stores_and_the_telemetry_stack() -> None:
    services = _compose()["services"]
    assert {"app", "worker", "postgres", "redis", "prometheus", "grafana", "tempo"} <= set(services)
    assert services["worker"]["command"] == ["c2s-api", "worker"]
    assert "--enable-feature=exemplar-storage" in services["prometheus"]["command"]
    assert services["app"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://tempo:4318"


def test_compose_publishes_ports_on_loopback_only() -> None:
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), name


def test_compose_mounts_files_that_exist() -> None:
    for service in _compose()["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).resolve().exists(), source
        build = service.get("build")
        if build:
            assert (COMPOSE.parent / build["context"] / "Dockerfile").exists()


def test_every_alert_has_a_summary_and_a_runbook_in_the_repository() -> None:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    alerts = [rule for group in groups for rule in group["rules"] if "alert" in rule]
    assert alerts
    for rule in alerts:
        annotations = rule["annotations"]
        assert annotations["summary"].strip()
        url = annotations["runbook_url"]
        prefix = "https://github.com/c2s/c2s-api/blob/main/"
        assert url.startswith(prefix)
        assert url.endswith(f"docs/runbooks/{rule['alert']}.md")
        runbook = ROOT / url.removeprefix(prefix)
        assert runbook.exists(), runbook
        text = runbook.read_text(encoding="utf-8")
        for section in (
            "## What it means",
            "## Impact",
            "## Check first",
            "## Mitigation",
            "## Escalation",
        ):
            assert section in text, f"{runbook.name}: {section}"
        assert rule["labels"]["severity"] in {"page", "ticket"}
