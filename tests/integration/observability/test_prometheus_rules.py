"""Rule files, rule unit tests, and every PromQL expression of the rules and the dashboard.

Each expression is parsed by promtool (written as a recording rule into a temporary file) and
every metric it names must be one the app's registry exports, a recording rule, or one of
Prometheus' own series.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from observability.grafana import build
from observability.metrics import REGISTRY, metric_names
from tests.support.promtool import PROMETHEUS_DIR, run_promtool

if TYPE_CHECKING:
    from pathlib import Path

RULE_FILES = (PROMETHEUS_DIR / "rules.yml", PROMETHEUS_DIR / "alerts.yml")
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
# Series Prometheus makes itself for every target.
PROMETHEUS_OWN = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS"})
# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${route:regex}": ".*",
    "$route": ".*",
    "$instance": ".*",
    "$job": ".*",
}
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
     "bool", "offset", "inf", "nan"}
)  # fmt: skip


def _rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            rules.extend(group["rules"])
    return rules


def _recorded() -> frozenset[str]:
    return frozenset(rule["record"] for rule in _rules() if "record" in rule)


def _dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for panel in build.build_dashboard()["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    for variable in build.build_dashboard()["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            out.append((f"variable {variable['name']}", query["query"]))
    return out


def _substitute(expr: str) -> str:
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def _label_values_metric(expr: str) -> str | None:
    # Grafana's label_values(metric{...}, label) is not PromQL: check its selector instead.
    match = re.fullmatch(r"label_values\((.+),\s*\w+\)", expr.strip())
    return match[1] if match else None


def metric_names_in(expr: str) -> set[str]:
    """The metric names a (valid) PromQL expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (regexes may contain anything)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":  # exponent or unit of a number
            continue
        if text[match.end() :].lstrip().startswith("("):  # a function or an aggregation
            continue
        if match[0].lower() in _KEYWORDS:
            continue
        names.add(match[0])
    return names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le) (rate(a_bucket{x=~"b|c"}[5m]))', {"a_bucket"}),
        ("histogram_quantile(0.99, sum by (le, r) (rate(m_bucket[1m])))", {"m_bucket"}),
        ('1 - ((sum(increase(a{s=~"5.."}[1h])) or vector(0)) / sum(increase(a[1h])))', {"a"}),
        ("x:y:z / 0.001 and on (job) up == 0", {"x:y:z", "up"}),
        ("max(m offset 5m) > 1e3", {"m"}),
    ],
)
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names_in(expr) == names


def test_rule_files_are_valid(promtool: str) -> None:
    out = run_promtool(promtool, "check", "rules", *map(str, RULE_FILES))
    assert "SUCCESS" in out


def test_scrape_configuration_is_valid(promtool: str) -> None:
    run_promtool(promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))


def test_rule_unit_tests_pass(promtool: str) -> None:
    assert RULE_TESTS, "no promtool rule tests found"
    names = {path.name for path in RULE_TESTS}
    assert {"slo_availability_test.yml", "slo_latency_test.yml", "operations_test.yml"} <= names
    # One promtool per file, in parallel: the SLO files evaluate 3-day windows for 8 hours of
    # samples and take several seconds each.
    with ThreadPoolExecutor(max_workers=len(RULE_TESTS)) as pool:
        outputs = list(
            pool.map(lambda p: run_promtool(promtool, "test", "rules", str(p)), RULE_TESTS)
        )
    assert all("SUCCESS" in out and "FAILED" not in out for out in outputs)


def test_every_burn_rate_alert_is_exercised_by_a_rule_test() -> None:
    tested = " ".join(path.read_text(encoding="utf-8") for path in RULE_TESTS)
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    for alert in alerts:
        assert f"alertname: {alert}" in tested, alert


def test_every_promql_expression_parses(promtool: str, tmp_path: Path) -> None:
    exprs = [(f"rule {r.get('record') or r.get('alert')}", r["expr"]) for r in _rules()]
    for where, expr in _dashboard_exprs():
        selector = _label_values_metric(expr)
        exprs.append((where, _substitute(selector if selector else expr)))
    rules = [
        {"record": f"check:expr_{index}", "expr": expr}
        for index, (_where, expr) in enumerate(exprs)
    ]
    path = tmp_path / "exprs.yml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "parse", "rules": rules}]}), encoding="utf-8"
    )
    out = run_promtool(promtool, "check", "rules", str(path))
    assert f"SUCCESS: {len(rules)} rules found" in out


def test_every_metric_referenced_is_exported() -> None:
    known = metric_names(REGISTRY) | _recorded() | PROMETHEUS_OWN
    referenced: dict[str, set[str]] = {}
    for rule in _rules():
        for name in metric_names_in(rule["expr"]):
            referenced.setdefault(name, set()).add(f"rule {rule.get('record') or rule['alert']}")
    for where, expr in _dashboard_exprs():
        selector = _label_values_metric(expr)
        for name in metric_names_in(_substitute(selector if selector else expr)):
            referenced.setdefault(name, set()).add(f"panel {where}")
    assert referenced
    unknown = {name: sorted(where) for name, where in referenced.items() if name not in known}
    assert not unknown, f"metrics not exported by the app: {unknown}"


def test_no_dashboard_or_rule_groups_by_a_high_cardinality_label() -> None:
    forbidden = re.compile(r"\b(?:lead_id|cpf|email|phone|request_id|trace_id|path|url|ip)\b")
    for where, expr in [
        *_dashboard_exprs(),
        *((r.get("record") or r["alert"], r["expr"]) for r in _rules()),
    ]:
        for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            assert not forbidden.search(clause), f"{where}: {clause}"
