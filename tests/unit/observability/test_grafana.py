"""The generated dashboard: committed output is current, data source only through a variable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from observability.grafana import build

GRAFANA = Path(build.__file__).parent


def _panels() -> list[dict[str, Any]]:
    return [p for p in build.build_dashboard()["panels"] if p["type"] != "row"]


def test_committed_dashboard_is_what_the_generator_produces() -> None:
    committed = build.DASHBOARD_PATH.read_bytes()
    assert committed == build.render().encode("utf-8"), (
        "run: uv run python -m observability.grafana.build"
    )
    assert build.render() == build.render()  # deterministic within a run too
    assert build.main(["--check"]) == 0


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    dashboard = json.loads(build.DASHBOARD_PATH.read_text(encoding="utf-8"))
    uids = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("datasource"), dict):
                uids.add(node["datasource"].get("uid"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard["panels"])
    walk(dashboard["templating"])
    assert uids == {"${datasource}"}
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"instance", "route", "job"} <= set(variables)


def test_dashboard_has_the_agreed_rows() -> None:
    rows = [p["title"] for p in build.build_dashboard()["panels"] if p["type"] == "row"]
    assert rows == [
        "SLOs and golden signals",
        "RED by route",
        "Upstreams (C2S, Diretrix, Work API)",
        "Circuit breakers",
        "Caches",
        "Rate limits",
        "Queue, worker and pipeline",
        "Bulk enrichment jobs",
        "PostgreSQL pool and readiness",
        "Process",
    ]


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    everything = build.build_dashboard()["panels"]
    ids = [p["id"] for p in everything]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in everything:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & mine, panel["title"]
        cells |= mine


def test_latency_panels_ask_for_exemplars() -> None:
    heatmaps = [p for p in _panels() if p["type"] == "heatmap"]
    assert heatmaps
    assert all(t.get("exemplar") for p in heatmaps for t in p["targets"])
    red = next(p for p in _panels() if p["title"] == "Latency p50 / p95 / p99 by route")
    assert all(t.get("exemplar") for t in red["targets"])


def test_provisioning_links_exemplars_to_tempo_and_loads_the_dashboards() -> None:
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/datasources.yaml").read_text())
    by_uid = {s["uid"]: s for s in sources["datasources"]}
    destinations = by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert destinations == [{"name": "trace_id", "datasourceUid": "tempo"}]
    assert by_uid["tempo"]["type"] == "tempo"
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/dashboards.yaml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
