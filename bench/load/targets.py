"""The performance targets: read from ``bench/thresholds.toml`` (``[target]``), judged on a result.

One source of truth for the gate's target lines (``bench.gatecheck``) and the markdown report
(``bench.load.report``): both call :func:`evaluate` with the targets of :func:`load_targets`.

A target names a *measurement* of a result and a goal, ``max`` (measured <= goal) or ``min``
(measured >= goal). :func:`measurements` flattens a result into those names:

* ``cpu_us.<scenario>.c<N>``: CPU time of the Granian worker per request, in us;
* ``p50_ms.<scenario>.c<N>``, ``p99_ms.<scenario>.c<N>``: wrk's latency percentiles;
* ``redis_trips.<scenario>.c<N>``, ``pg_trips.<scenario>.c<N>``: Redis commands and PostgreSQL
  round trips sent per request while serving it (counted in the worker under load; background
  work such as periodic syncs is reported per second beside it, not charged to requests);
* the same names without ``.c<N>``: the highest value over the scenario's points (c1, c16,
  c64), present only when every point of the scenario is valid;
* every ratio of the result (``rps_ratio.*``, ``p50_ratio.*``, ``leads_400ms.wall_ratio``,
  ``worker.rate_ratio``, ``micro.*``); ``leads_400ms.wall_ratio`` only when every lead of the
  batches succeeded;
* ``worker.jobs_per_s`` (the worker's default concurrency, only without failed jobs);
* ``bulk.items_per_s``, ``bulk.cpu_us_per_item`` (one worker process running a bulk job, only
  without failed items);
* ``rss_mb.max`` (highest RSS of the worker over the run), ``rss_mb.caches_full`` (under load
  after the cache fill, see ``bench.load.scenarios.reads.fill_caches``), ``rss_mb.hot``.

A target whose measurement is absent is reported "not measured" with the reason (scenario not
run, pending, invalid point, or a result from before the measurement existed); it is never
counted as met.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Final

import msgspec

__all__ = [
    "THRESHOLDS",
    "Target",
    "evaluate",
    "load_targets",
    "measurements",
    "parse_targets",
]

THRESHOLDS: Final = Path(__file__).resolve().parents[1] / "thresholds.toml"

Result = dict[str, Any]  # Any: the JSON document

_CONCURRENCY: Final = re.compile(r"\.c(\d+)$")
_POINT_FIELDS: Final = (
    ("cpu_us", "cpu_us_per_request"),
    ("p50_ms", "p50_ms"),
    ("p99_ms", "p99_ms"),
    ("redis_trips", "redis_round_trips_per_request"),
    ("pg_trips", "postgres_round_trips_per_request"),
)


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """One goal: ``key`` (a measurement name) at most ``max`` or at least ``min``."""

    key: str
    title: str
    max: float | None = None
    min: float | None = None
    unit: str = ""

    @property
    def goal(self) -> str:
        """The goal as text, e.g. ``<= 200 us``."""
        unit = f" {self.unit}" if self.unit else ""
        if self.max is not None:
            return f"<= {self.max:g}{unit}"
        return f">= {self.min:g}{unit}"

    def met(self, value: float) -> bool:
        """Whether ``value`` meets the goal."""
        if self.max is not None:
            return value <= self.max
        return self.min is not None and value >= self.min


def parse_targets(section: dict[str, Any]) -> list[Target]:
    """Targets from the ``[target]`` table (file order); a malformed entry raises ValueError."""
    targets: list[Target] = []
    for key, spec in section.items():
        if not isinstance(spec, dict):
            raise ValueError(f"target {key!r}: expected an inline table, got {spec!r}")
        if ("max" in spec) == ("min" in spec):
            raise ValueError(f"target {key!r}: exactly one of max or min is required")
        unknown = set(spec) - {"max", "min", "unit", "title"}
        if unknown:
            raise ValueError(f"target {key!r}: unknown field(s) {sorted(unknown)}")
        targets.append(
            Target(
                key=key,
                title=str(spec.get("title", key)),
                max=None if spec.get("max") is None else float(spec["max"]),
                min=None if spec.get("min") is None else float(spec["min"]),
                unit=str(spec.get("unit", "")),
            )
        )
    return targets


def load_targets(path: Path = THRESHOLDS) -> list[Target]:
    """The ``[target]`` section of the thresholds file."""
    return parse_targets(dict(tomllib.loads(path.read_text()).get("target", {})))


def _scenario_values(name: str, block: dict[str, Any], out: dict[str, float]) -> None:
    points: dict[str, dict[str, Any]] = block.get("points", {})
    all_valid = bool(points) and not any(p.get("invalid") for p in points.values())
    for measure, field in _POINT_FIELDS:
        seen: list[float] = []
        for concurrency, point in points.items():
            value = point.get(field)
            if point.get("invalid") or value is None:
                continue
            out[f"{measure}.{name}.c{concurrency}"] = float(value)
            seen.append(float(value))
        if all_valid and len(seen) == len(points):
            out[f"{measure}.{name}"] = max(seen)


def measurements(result: Result) -> dict[str, float]:
    """Every measurement of ``result`` by name (see the module docstring)."""
    out: dict[str, float] = {}
    for name, block in result.get("scenarios", {}).items():
        if block.get("status") == "ok":
            _scenario_values(name, block, out)
    out.update({k: float(v) for k, v in result.get("ratios", {}).items()})
    batch = result.get("leads_400ms", {})
    if batch.get("status") == "ok" and batch.get("succeeded") != batch.get("batch"):
        out.pop("leads_400ms.wall_ratio", None)
    worker = result.get("worker", {})
    if worker.get("status") == "ok" and not worker.get("failed"):
        out["worker.jobs_per_s"] = float(worker["jobs_per_s"])
    bulk = result.get("bulk", {})
    if bulk.get("status") == "ok" and not bulk.get("failed") and "items_per_s" in bulk:
        out["bulk.items_per_s"] = float(bulk["items_per_s"])
        out["bulk.cpu_us_per_item"] = float(bulk["cpu_us_per_item"])
    memory = result.get("memory", {})
    for name, field in (
        ("max", "max_rss_mb"),
        ("caches_full", "caches_full_rss_mb"),
        ("hot", "hot_rss_mb"),
    ):
        if memory.get(field) is not None:
            out[f"rss_mb.{name}"] = float(memory[field])
    return out


def _scenario_of(key: str) -> str:
    parts = key.split(".")
    head = parts[0]
    if head in ("leads_400ms", "worker", "micro", "bulk"):
        return {"leads_400ms": "leads400"}.get(head, head)
    if head == "rss_mb":
        return "hot" if parts[1:] in (["caches_full"], ["hot"]) else "run"
    return parts[1] if len(parts) > 1 else head


def _block_of(result: Result, scenario: str) -> dict[str, Any] | None:
    if scenario in result.get("scenarios", {}):
        block: dict[str, Any] = result["scenarios"][scenario]
        return block
    name = {"leads400": "leads_400ms"}.get(scenario, scenario)
    other: dict[str, Any] | None = result.get(name)
    return other


def _why_missing(key: str, result: Result) -> str:
    scenario = _scenario_of(key)
    block = _block_of(result, scenario)
    if result.get("error"):
        return "not measured: the run failed"
    if block is None:
        ran = result.get("config", {}).get("scenarios")
        if ran is not None and scenario not in ran and scenario != "run":
            return "not measured: scenario not run"
        return "not measured by this run"
    status = str(block.get("status", "ok"))
    if status != "ok":
        return f"not measured: {status}"
    match = _CONCURRENCY.search(key)
    concurrency = match.group(1) if match else None
    points: dict[str, dict[str, Any]] = block.get("points", {})
    invalid = [f"c{c}" for c, p in points.items() if p.get("invalid")]
    if concurrency in points and points[concurrency].get("invalid"):
        return f"not measured: point invalid ({points[concurrency]['invalid']})"
    if invalid and concurrency not in points:
        return f"not measured: invalid point(s) {', '.join(invalid)}"
    if scenario == "leads400":
        return f"not measured: {block.get('succeeded')} of {block.get('batch')} leads succeeded"
    if scenario == "worker":
        return f"not measured: {block.get('failed')} job(s) failed"
    if scenario == "bulk":
        return f"not measured: {block.get('failed')} item(s) failed"
    return "not measured by this run"


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def evaluate(result: Result, targets: list[Target]) -> list[dict[str, Any]]:
    """Each target with its measured value and whether it is met (None: not measured).

    Rows (JSON): ``key``, ``target`` (title), ``goal``, ``value``, ``measured`` (text), ``met``.
    """
    values = measurements(result)
    rows: list[dict[str, Any]] = []
    for target in targets:
        value = values.get(target.key)
        if value is None:
            measured, met = _why_missing(target.key, result), None
        else:
            unit = f" {target.unit}" if target.unit else ""
            measured, met = f"{_number(value)}{unit}", target.met(value)
        rows.append(
            {
                "key": target.key,
                "target": target.title,
                "goal": target.goal,
                "value": value,
                "measured": measured,
                "met": met,
            }
        )
    return rows
