"""Generate the c2s-api Grafana dashboard as deterministic JSON.

``python -m observability.grafana.build`` rewrites ``dashboards/c2s-api.json``; ``--check``
fails when the committed file differs from what this code generates (a test runs the same
comparison). Edit this file, never the JSON.

Conventions: the data source is the ``${datasource}`` template variable (no data source UID in
the JSON), every query is filtered by ``$job`` and ``$instance`` (and RED panels by ``$route``),
rates use ``$__rate_interval``, latency panels ask for exemplars (``trace_id`` -> Tempo, wired in
the provisioned Prometheus data source).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final

__all__ = ["DASHBOARD_PATH", "build_dashboard", "render"]

DASHBOARD_PATH: Final = Path(__file__).parent / "dashboards" / "c2s-api.json"

DS: Final = {"type": "prometheus", "uid": "${datasource}"}
SEL: Final = 'job=~"$job",instance=~"$instance"'
ROUTE: Final = 'http_route=~"$route"'
H: Final = "http_server_request_duration_seconds"
CACHED: Final = 'http_route=~"/api/v1/work/modules/.+"'
CUSTOMERS: Final = 'http_route=~"/api/v1/customers/.+|/api/v1/contributor/customer"'
AVAILABILITY_SLO: Final = 0.999
LATENCY_SLO: Final = 0.99
ENRICHMENT_SLO: Final = 0.99

Json = dict[str, Any]  # Any: Grafana's JSON model


class _Layout:
    """Hands out panel ids and grid positions, row by row (24 columns)."""

    def __init__(self) -> None:
        self.panels: list[Json] = []
        self._next_id = 1
        self._y = 0
        self._x = 0
        self._row_height = 0

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "id": self._id(),
                "title": title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y},
            }
        )
        self._y += 1

    def _newline(self) -> None:
        if self._x:
            self._y += self._row_height
            self._x = 0
            self._row_height = 0

    def add(self, panel: Json, w: int, h: int = 8) -> None:
        if self._x + w > 24:
            self._newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self._x, "y": self._y}
        self.panels.append(panel)
        self._x += w
        self._row_height = max(self._row_height, h)


def _target(expr: str, legend: str = "", *, ref: str = "A", exemplar: bool = False) -> Json:
    target: Json = {
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": True,
        "refId": ref,
    }
    if exemplar:
        target["exemplar"] = True
    return target


def _targets(*items: tuple[str, str], exemplar: bool = False) -> list[Json]:
    refs = "ABCDEFGHIJ"
    return [
        _target(expr, legend, ref=refs[i], exemplar=exemplar)
        for i, (expr, legend) in enumerate(items)
    ]


def _thresholds(*steps: tuple[float | None, str]) -> Json:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


def timeseries(
    title: str,
    targets: list[Json],
    *,
    unit: str = "short",
    description: str = "",
    threshold_line: float | None = None,
    stack: bool = False,
    max_value: float | None = None,
) -> Json:
    """A time-series panel; ``threshold_line`` draws the objective as a red dashed line."""
    defaults: Json = {
        "unit": unit,
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": "dashed" if threshold_line is not None else "off"},
        },
        "thresholds": _thresholds((None, "green"), (threshold_line, "red"))
        if threshold_line is not None
        else _thresholds((None, "green")),
    }
    if max_value is not None:
        defaults["max"] = max_value
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(
    title: str,
    expr: str,
    *,
    unit: str,
    steps: tuple[tuple[float | None, str], ...],
    description: str = "",
    decimals: int | None = None,
) -> Json:
    """A single-value panel coloured by ``steps`` (value, colour), lowest first."""
    defaults: Json = {
        "unit": unit,
        "thresholds": _thresholds(*steps),
        "color": {"mode": "thresholds"},
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [_target(expr, ref="A")],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "area",
            "textMode": "value",
        },
    }


def heatmap(title: str, expr: str, description: str = "") -> Json:
    """A latency heatmap from histogram buckets, with exemplar dots (trace links)."""
    target = _target(expr, "{{le}}", exemplar=True)
    target["format"] = "heatmap"
    return {
        "type": "heatmap",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [target],
        "fieldConfig": {"defaults": {"unit": "s"}, "overrides": []},
        "options": {
            "calculate": False,
            "yAxis": {"unit": "s"},
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "cellGap": 1,
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "tooltip": {"mode": "single", "yHistogram": True},
            "legend": {"show": True},
        },
    }


def state_timeline(title: str, expr: str, legend: str, mappings: list[Json]) -> Json:
    """A state timeline with value mappings (breaker states, flags)."""
    return {
        "type": "state-timeline",
        "title": title,
        "datasource": DS,
        "targets": [_target(expr, legend)],
        "fieldConfig": {
            "defaults": {
                "mappings": mappings,
                "color": {"mode": "thresholds"},
                "thresholds": _thresholds((None, "green")),
            },
            "overrides": [],
        },
        "options": {"showValue": "never", "mergeValues": True, "rowHeight": 0.8},
    }


def _value_map(values: dict[str, tuple[str, str]]) -> list[Json]:
    return [
        {
            "type": "value",
            "options": {
                key: {"text": text, "color": color, "index": i}
                for i, (key, (text, color)) in enumerate(values.items())
            },
        }
    ]


def _quantile(q: float, metric: str, by: str, selector: str) -> str:
    return (
        f"histogram_quantile({q}, sum by (le{', ' + by if by else ''}) "
        f"(rate({metric}_bucket{{{selector}}}[$__rate_interval])))"
    )


def _variables() -> list[Json]:
    def query_var(name: str, label: str, query: str) -> Json:
        return {
            "type": "query",
            "name": name,
            "label": label,
            "datasource": DS,
            "query": {"query": query, "refId": f"{name}-variable"},
            "definition": query,
            "refresh": 2,
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
            "regex": "",
            "hide": 0,
        }

    return [
        {
            "type": "datasource",
            "name": "datasource",
            "label": "Data source",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
            "regex": "",
        },
        query_var("job", "Job", "label_values(c2s_api_build_info, job)"),
        query_var(
            "instance", "Instance", 'label_values(c2s_api_build_info{job=~"$job"}, instance)'
        ),
        query_var(
            "route",
            "Route",
            f'label_values({H}_count{{job=~"$job",instance=~"$instance"}}, http_route)',
        ),
    ]


def _slo_row(lay: _Layout) -> None:
    lay.row("SLOs and golden signals")
    total = f"sum(increase({H}_count{{{SEL}}}[$__range]))"
    errors = f'sum(increase({H}_count{{{SEL},http_response_status_code=~"5.."}}[$__range]))'
    lay.add(
        stat(
            "Availability (time range)",
            f"1 - ((({errors}) or vector(0)) / {total})",
            unit="percentunit",
            decimals=3,
            steps=((None, "red"), (AVAILABILITY_SLO, "green")),
            description="Share of non-5xx answers over the selected range; objective 99.9 %.",
        ),
        w=4,
    )
    month_total = f"sum(increase({H}_count{{{SEL}}}[30d]))"
    month_errors = f'sum(increase({H}_count{{{SEL},http_response_status_code=~"5.."}}[30d]))'
    lay.add(
        stat(
            "Error budget consumed (30 d)",
            f"((({month_errors}) or vector(0)) / {month_total}) / {1 - AVAILABILITY_SLO:g}",
            unit="percentunit",
            decimals=1,
            steps=((None, "green"), (0.5, "orange"), (1, "red")),
            description="5xx ratio over 30 days divided by the 0.1 % budget; 100 % = spent.",
        ),
        w=4,
    )
    lay.add(
        stat(
            "p99 cached lookups (objective 25 ms)",
            _quantile(0.99, H, "", f'{SEL},{CACHED},http_response_status_code!~"5.."'),
            unit="s",
            steps=((None, "green"), (0.025, "red")),
        ),
        w=4,
    )
    lay.add(
        stat(
            "p99 customer lookups (objective 50 ms)",
            _quantile(0.99, H, "", f'{SEL},{CUSTOMERS},http_response_status_code!~"5.."'),
            unit="s",
            steps=((None, "green"), (0.05, "red")),
        ),
        w=4,
    )
    lay.add(
        stat(
            "Request rate",
            f"sum(rate({H}_count{{{SEL}}}[$__rate_interval]))",
            unit="reqps",
            steps=((None, "blue"),),
        ),
        w=4,
    )
    lay.add(
        stat(
            "In flight",
            f"sum(http_server_active_requests{{{SEL}}})",
            unit="short",
            steps=((None, "green"), (100, "orange"), (200, "red")),
            description="Granian backpressure is 256 per worker; Fly sheds above 250.",
        ),
        w=4,
    )
    budget = 1 - AVAILABILITY_SLO
    lay.add(
        timeseries(
            "Availability error-budget burn rate (multi-window)",
            _targets(
                (f'sli:http_requests:error_ratio_rate5m{{job=~"$job"}} / {budget:g}', "5m"),
                (f'sli:http_requests:error_ratio_rate30m{{job=~"$job"}} / {budget:g}', "30m"),
                (f'sli:http_requests:error_ratio_rate1h{{job=~"$job"}} / {budget:g}', "1h"),
                (f'sli:http_requests:error_ratio_rate6h{{job=~"$job"}} / {budget:g}', "6h"),
                (f'sli:http_requests:error_ratio_rate3d{{job=~"$job"}} / {budget:g}', "3d"),
            ),
            description="Burn rate = error ratio / 0.1 %. Pages at 14.4x (1h and 5m) and 6x "
            "(6h and 30m); ticket at 1x (3d and 6h).",
            threshold_line=14.4,
        ),
        w=12,
    )
    lat_budget = 1 - LATENCY_SLO

    def slow_burn(sli: str, window: str) -> str:
        return f'sli:{sli}_latency:slow_ratio_rate{window}{{job=~"$job"}} / {lat_budget:g}'

    lay.add(
        timeseries(
            "Latency error-budget burn rate (1h and 5m)",
            _targets(
                (slow_burn("cached_lookup", "1h"), "cached 1h"),
                (slow_burn("cached_lookup", "5m"), "cached 5m"),
                (slow_burn("customer_lookup", "1h"), "customers 1h"),
                (slow_burn("customer_lookup", "5m"), "customers 5m"),
            ),
            description="Share of lookups slower than the objective / 1 %.",
            threshold_line=14.4,
        ),
        w=12,
    )


def _red_row(lay: _Layout) -> None:
    lay.row("RED by route")
    sel = f"{SEL},{ROUTE}"

    def ratio(status: str) -> str:
        return (
            f"sum by (http_route) (rate({H}_count{{{sel},{status}}}[$__rate_interval]))"
            f" / sum by (http_route) (rate({H}_count{{{sel}}}[$__rate_interval]))"
        )

    lay.add(
        timeseries(
            "Requests per second by route",
            _targets(
                (
                    f"sum by (http_route) (rate({H}_count{{{sel}}}[$__rate_interval]))",
                    "{{http_route}}",
                )
            ),
            unit="reqps",
        ),
        w=12,
    )
    lay.add(
        timeseries(
            "In-flight requests by method",
            _targets(
                (
                    f"sum by (http_request_method) (http_server_active_requests{{{SEL}}})",
                    "{{http_request_method}}",
                )
            ),
        ),
        w=12,
    )
    lay.add(
        timeseries(
            "5xx ratio by route",
            _targets((ratio('http_response_status_code=~"5.."'), "{{http_route}}")),
            unit="percentunit",
            threshold_line=0.001,
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "4xx ratio by route (without 429)",
            _targets(
                (
                    ratio('http_response_status_code=~"4..",http_response_status_code!="429"'),
                    "{{http_route}}",
                )
            ),
            unit="percentunit",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "429 ratio by route (rate limited)",
            _targets((ratio('http_response_status_code="429"'), "{{http_route}}")),
            unit="percentunit",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Latency p50 / p95 / p99 by route",
            _targets(
                (_quantile(0.5, H, "http_route", sel), "p50 {{http_route}}"),
                (_quantile(0.95, H, "http_route", sel), "p95 {{http_route}}"),
                (_quantile(0.99, H, "http_route", sel), "p99 {{http_route}}"),
                exemplar=True,
            ),
            unit="s",
            description="Exemplar dots link to the trace of a request in that bucket.",
        ),
        w=12,
    )
    lay.add(
        heatmap(
            "Latency heatmap (exemplars)",
            f"sum by (le) (rate({H}_bucket{{{sel}}}[$__rate_interval]))",
        ),
        w=12,
    )


def _upstream_row(lay: _Layout) -> None:
    lay.row("Upstreams (C2S, Diretrix, Work API)")
    c = "http_client_request_duration_seconds"
    lay.add(
        timeseries(
            "Upstream latency p95 by upstream",
            _targets(
                (_quantile(0.95, c, "upstream", SEL), "p95 {{upstream}}"),
                (_quantile(0.5, c, "upstream", SEL), "p50 {{upstream}}"),
                exemplar=True,
            ),
            unit="s",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Upstream requests by status and error",
            _targets(
                (
                    "sum by (upstream, http_response_status_code, error_type) "
                    f"(rate({c}_count{{{SEL}}}[$__rate_interval]))",
                    "{{upstream}} {{http_response_status_code}} {{error_type}}",
                )
            ),
            unit="reqps",
            stack=True,
            description="error_type is empty on success; otherwise the status code, timeout, "
            "a network error class, soft_error (Work API error inside a 200) or invalid_body.",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Upstream retries",
            _targets(
                (
                    "sum by (upstream, error_type) "
                    f"(rate(upstream_retries_total{{{SEL}}}[$__rate_interval]))",
                    "{{upstream}} after {{error_type}}",
                )
            ),
            unit="reqps",
        ),
        w=8,
    )


def _breaker_row(lay: _Layout) -> None:
    lay.row("Circuit breakers")
    lay.add(
        state_timeline(
            "Breaker state",
            f"max by (name) (circuit_breaker_state{{{SEL}}})",
            "{{name}}",
            _value_map(
                {
                    "0": ("closed", "green"),
                    "1": ("half-open", "yellow"),
                    "2": ("open", "red"),
                    "3": ("forced open", "purple"),
                    "4": ("disabled", "blue"),
                }
            ),
        ),
        w=12,
    )
    lay.add(
        state_timeline(
            "Breaker storage degraded (per-process fallback)",
            f"max by (name) (circuit_breaker_storage_degraded{{{SEL}}})",
            "{{name}}",
            _value_map({"0": ("shared", "green"), "1": ("degraded", "orange")}),
        ),
        w=12,
    )
    lay.add(
        timeseries(
            "Breaker transitions",
            _targets(
                (
                    "sum by (name, to) "
                    f"(increase(circuit_breaker_transitions_total{{{SEL}}}[$__rate_interval]))",
                    "{{name}} -> {{to}}",
                )
            ),
        ),
        w=12,
    )
    lay.add(
        timeseries(
            "Calls rejected by breakers",
            _targets(
                (
                    f"sum by (name) (rate(circuit_breaker_rejections_total{{{SEL}}}"
                    "[$__rate_interval]))",
                    "{{name}}",
                )
            ),
            unit="reqps",
        ),
        w=12,
    )


def _cache_row(lay: _Layout) -> None:
    lay.row("Caches")
    m = "cache_requests_total"
    lay.add(
        timeseries(
            "Hit ratio by cache",
            _targets(
                (
                    f'sum by (cache) (rate({m}{{{SEL},result=~"hit|hit_local"}}[$__rate_interval]))'
                    " / sum by (cache) "
                    f'(rate({m}{{{SEL},result=~"hit|hit_local|miss"}}[$__rate_interval]))',
                    "{{cache}}",
                )
            ),
            unit="percentunit",
            max_value=1,
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Lookups by cache",
            _targets((f"sum by (cache) (rate({m}{{{SEL}}}[$__rate_interval]))", "{{cache}}")),
            unit="reqps",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Integrity failures and errors",
            _targets(
                (
                    "sum by (cache, result) "
                    f'(rate({m}{{{SEL},result=~"integrity_failure|error"}}[$__rate_interval]))',
                    "{{cache}} {{result}}",
                )
            ),
            unit="reqps",
            description="integrity_failure: a cached envelope whose HMAC did not verify "
            "(tampering or a retired key).",
        ),
        w=8,
    )


def _rate_limit_row(lay: _Layout) -> None:
    lay.row("Rate limits")
    lay.add(
        timeseries(
            "Allowed vs limited by policy",
            _targets(
                (
                    "sum by (policy, outcome) "
                    f"(rate(rate_limit_decisions_total{{{SEL}}}[$__rate_interval]))",
                    "{{policy}} {{outcome}}",
                )
            ),
            unit="reqps",
            stack=True,
        ),
        w=12,
    )
    lay.add(
        state_timeline(
            "Rate limiter degraded",
            f"max(rate_limit_degraded{{{SEL}}})",
            "degraded",
            _value_map({"0": ("ok", "green"), "1": ("degraded", "red")}),
        ),
        w=6,
    )
    lay.add(
        timeseries(
            "Rate-limit storage errors",
            _targets(
                (
                    f"sum(rate(rate_limit_storage_errors_total{{{SEL}}}[$__rate_interval]))",
                    "errors",
                )
            ),
            unit="reqps",
        ),
        w=6,
    )


def _queue_row(lay: _Layout) -> None:
    lay.row("Queue, worker and pipeline")
    lay.add(
        timeseries(
            "Queue depth by status",
            _targets((f"max by (status) (queue_depth{{{SEL}}})", "{{status}}")),
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Job age (oldest waiting, p95 at pick-up)",
            _targets(
                (f"max(queue_oldest_job_age_seconds{{{SEL}}})", "oldest waiting"),
                (_quantile(0.95, "queue_job_age_seconds", "", SEL), "p95 at pick-up"),
            ),
            unit="s",
            threshold_line=300,
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Jobs by outcome, dead letters",
            _targets(
                (
                    f"sum by (outcome) (rate(queue_jobs_total{{{SEL}}}[$__rate_interval]))",
                    "{{outcome}}",
                ),
                (
                    f"sum(rate(queue_dead_letters_total{{{SEL}}}[$__rate_interval]))",
                    "dead letters",
                ),
            ),
            unit="reqps",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Pipeline step latency p95",
            _targets(
                (_quantile(0.95, "pipeline_step_duration_seconds", "step", SEL), "{{step}}"),
                exemplar=True,
            ),
            unit="s",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Enrichments by entrypoint and outcome",
            _targets(
                (
                    "sum by (entrypoint, outcome) "
                    f"(rate(enrichments_total{{{SEL}}}[$__rate_interval]))",
                    "{{entrypoint}} {{outcome}}",
                )
            ),
            unit="reqps",
            stack=True,
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Failed enrichments ratio (SLO: 99 % not failed)",
            _targets(
                (
                    f'sum(rate(enrichments_total{{{SEL},outcome="failed"}}[$__rate_interval]))'
                    f" / sum(rate(enrichments_total{{{SEL}}}[$__rate_interval]))",
                    "failed ratio",
                )
            ),
            unit="percentunit",
            threshold_line=1 - ENRICHMENT_SLO,
            description="/leads/process answers 200 even when an upstream failed: this ratio, "
            "not the HTTP status, is the enrichment SLI (alert EnrichmentBudgetBurn).",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Active jobs per worker",
            _targets((f"sum by (instance) (worker_active_jobs{{{SEL}}})", "{{instance}}")),
        ),
        w=8,
    )


def _bulk_row(lay: _Layout) -> None:
    lay.row("Bulk enrichment jobs")
    lay.add(
        timeseries(
            "Bulk jobs not ended, by state",
            _targets((f"max by (state) (bulk_jobs{{{SEL}}})", "{{state}}")),
            description="Sampled from PostgreSQL by every worker (alert BulkJobStuck).",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Bulk items per second, by outcome",
            _targets(
                (
                    f"sum by (outcome) (rate(bulk_items_total{{{SEL}}}[$__rate_interval]))",
                    "{{outcome}}",
                ),
                (
                    f"sum by (instance) (rate(bulk_items_total{{{SEL}}}[$__rate_interval]))",
                    "{{instance}} (all outcomes)",
                ),
            ),
            unit="reqps",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Oldest bulk job not ended, runner errors",
            _targets(
                (f"max(bulk_oldest_job_age_seconds{{{SEL}}})", "oldest job age (s)"),
                (
                    f"sum by (event) (rate(bulk_errors_total{{{SEL}}}[$__rate_interval]))",
                    "{{event}} /s",
                ),
            ),
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Job callbacks: deliveries by outcome, pending",
            _targets(
                (
                    "sum by (outcome) "
                    f"(rate(callback_deliveries_total{{{SEL}}}[$__rate_interval]))",
                    "{{outcome}} /s",
                ),
                (f"max(callback_pending{{{SEL}}})", "pending"),
            ),
            description="Signed job callbacks (alert CallbackDeliveriesFailing).",
        ),
        w=12,
    )
    lay.add(
        timeseries(
            "Paid upstream calls per second by tenant, audit records written",
            _targets(
                (
                    "sum by (tenant, upstream) "
                    f"(rate(paid_calls_total{{{SEL}}}[$__rate_interval]))",
                    "{{tenant}} {{upstream}}",
                ),
                (
                    f"sum(rate(audit_records_written_total{{{SEL}}}[$__rate_interval]))",
                    "audit records /s",
                ),
            ),
            description="Usage per tenant (alert TenantNearPaidQuota) and the audit trail.",
            unit="reqps",
        ),
        w=12,
    )


def _db_row(lay: _Layout) -> None:
    lay.row("PostgreSQL pool and readiness")
    lay.add(
        timeseries(
            "Pool connections (used / idle / max)",
            _targets(
                (f"sum by (state) (db_client_connections_usage{{{SEL}}})", "{{state}}"),
                (f"sum(db_client_connections_max{{{SEL}}})", "max"),
            ),
        ),
        w=12,
    )
    lay.add(
        state_timeline(
            "Readiness by dependency",
            f"min by (dependency) (dependency_ready{{{SEL}}})",
            "{{dependency}}",
            _value_map({"0": ("failing", "red"), "1": ("ready", "green")}),
        ),
        w=12,
    )


def _process_row(lay: _Layout) -> None:
    lay.row("Process")
    lay.add(
        timeseries(
            "Resident memory",
            _targets((f"process_resident_memory_bytes{{{SEL}}}", "{{instance}}")),
            unit="bytes",
        ),
        w=6,
    )
    lay.add(
        timeseries(
            "CPU",
            _targets(
                (f"rate(process_cpu_seconds_total{{{SEL}}}[$__rate_interval])", "{{instance}}")
            ),
            unit="percentunit",
            description="One Granian worker per VM: 100 % is one core.",
        ),
        w=6,
    )
    lay.add(
        timeseries(
            "GC collections by generation",
            _targets(
                (
                    "sum by (generation) "
                    f"(rate(python_gc_collections_total{{{SEL}}}[$__rate_interval]))",
                    "gen {{generation}}",
                )
            ),
            unit="ops",
            description="gc.freeze() after start-up keeps the start-up heap out of these.",
        ),
        w=6,
    )
    lay.add(
        timeseries(
            "Open file descriptors",
            _targets(
                (f"process_open_fds{{{SEL}}}", "{{instance}}"),
                (f"process_max_fds{{{SEL}}}", "max {{instance}}"),
            ),
        ),
        w=6,
    )


def build_dashboard() -> Json:
    """The dashboard model (a plain dict)."""
    lay = _Layout()
    _slo_row(lay)
    _red_row(lay)
    _upstream_row(lay)
    _breaker_row(lay)
    _cache_row(lay)
    _rate_limit_row(lay)
    _queue_row(lay)
    _bulk_row(lay)
    _db_row(lay)
    _process_row(lay)
    return {
        "uid": "c2s-api-overview",
        "title": "c2s-api / service overview",
        "description": "SLOs, RED by route, dependencies, queue and process of c2s-api. "
        "Generated by observability/grafana/build.py.",
        "tags": ["c2s-api", "slo"],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "title": "Runbooks",
                "type": "link",
                "url": "https://github.com/c2s/c2s-api/tree/main/docs/runbooks",
                "targetBlank": True,
                "icon": "doc",
                "tags": [],
                "asDropdown": False,
                "includeVars": False,
                "keepTime": False,
                "tooltip": "",
            }
        ],
        "templating": {"list": _variables()},
        "panels": lay.panels,
    }


def render() -> str:
    """The dashboard as the exact text committed in :data:`DASHBOARD_PATH`."""
    return json.dumps(build_dashboard(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the dashboard, or with ``--check`` report whether the committed one is current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = DASHBOARD_PATH.read_text(encoding="utf-8") if DASHBOARD_PATH.exists() else ""
        if current != text:
            print(f"{DASHBOARD_PATH} is out of date: run python -m observability.grafana.build")
            return 1
        return 0
    DASHBOARD_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {DASHBOARD_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
