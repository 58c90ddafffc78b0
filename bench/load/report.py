"""Ratios, targets and the markdown table of a benchmark result.

A result is the JSON document written by the runner (plain dicts and lists). Every ratio has
its denominator in the same run: the bare route (``GET /_bench/bare``, same server, same worker,
middleware-free app) at the same concurrency, measured at the start and at the end of the run
and averaged, so a slow drift of the machine during the run cancels out.

Ratio names (the keys of ``bench/thresholds.toml``):

* ``rps_ratio.<scenario>.c<N>``: the scenario's requests/s over the bare route's (higher is
  better; a floor in the thresholds);
* ``p50_ratio.<scenario>.c<N>``: the scenario's median latency over the bare route's (lower is
  better; a ceiling);
* ``leads_400ms.wall_ratio``: wall time of 64 concurrent leads over the injected upstream
  latency (1.0 is perfect overlap; 64 would be full serialisation; a ceiling);
* ``worker.rate_ratio``: jobs/s drained over the bare route's requests/s at concurrency 16 (a
  floor; the bare rate stands for the machine's speed);
* ``micro.<name>``: a micro benchmark's median over the calibration loop's, measured in the same
  pytest run (a ceiling).
"""

from __future__ import annotations

from typing import Any, Final

from bench.load.targets import evaluate, load_targets

__all__ = [
    "bare_denominators",
    "compute_ratios",
    "denominator",
    "evaluate_targets",
    "markdown",
]

Result = dict[str, Any]  # Any: the JSON document

_HTTP_ORDER: Final = (
    "bare",
    "health",
    "hot",
    "cpf",
    "email",
    "phone",
    "leads",
    "webhook",
)


def _point(result: Result, scenario: str, concurrency: int) -> dict[str, Any] | None:
    block = result.get("scenarios", {}).get(scenario)
    if not block or block.get("status") != "ok":
        return None
    point: dict[str, Any] | None = block.get("points", {}).get(str(concurrency))
    return point


def bare_denominators(result: Result) -> dict[int, dict[str, float]]:
    """Per concurrency: the bare route's own run at the start (for points without a pair)."""
    out: dict[int, dict[str, float]] = {}
    points = result.get("scenarios", {}).get("bare", {}).get("points", {})
    for concurrency, point in points.items():
        out[int(concurrency)] = {"rps": point["rps"], "p50_ms": point["p50_ms"]}
    return out


def denominator(result: Result, point: dict[str, Any], concurrency: int) -> dict[str, float]:
    """The bare figures a point is compared with: its paired run, else the run at the start."""
    pair: dict[str, float] | None = point.get("bare")
    if pair is not None:
        return pair
    return bare_denominators(result).get(concurrency, {"rps": 0.0, "p50_ms": 0.0})


def compute_ratios(result: Result) -> dict[str, float]:
    """Every ratio of the run (see the module docstring for the names)."""
    ratios: dict[str, float] = {}
    for scenario in _HTTP_ORDER[1:]:
        for concurrency in result.get("config", {}).get("concurrencies", []):
            point = _point(result, scenario, concurrency)
            if point is None or point.get("invalid"):
                continue
            bare = denominator(result, point, concurrency)
            if bare["rps"] > 0:
                ratios[f"rps_ratio.{scenario}.c{concurrency}"] = round(
                    point["rps"] / bare["rps"], 4
                )
            if bare["p50_ms"] > 0:
                ratios[f"p50_ratio.{scenario}.c{concurrency}"] = round(
                    point["p50_ms"] / bare["p50_ms"], 3
                )
    leads = result.get("leads_400ms", {})
    if leads.get("status") == "ok":
        ratios["leads_400ms.wall_ratio"] = round(leads["wall_ms"] / leads["latency_ms"], 3)
    worker = result.get("worker", {})
    if worker.get("status") == "ok" and worker.get("bare_rps_c16"):
        ratios["worker.rate_ratio"] = round(worker["jobs_per_s"] / worker["bare_rps_c16"], 5)
    micro = result.get("micro", {})
    if micro.get("status") == "ok":
        for name, bench in micro.get("benchmarks", {}).items():
            if name != "calibration":
                ratios[f"micro.{name}"] = bench["ratio"]
    return ratios


def evaluate_targets(result: Result) -> list[dict[str, Any]]:
    """Each target of ``bench/thresholds.toml`` (``[target]``) judged on ``result`` (the rows
    of :func:`bench.load.targets.evaluate`; ``met`` is None when not measured)."""
    return evaluate(result, load_targets())


def _load(values: list[float] | None) -> str:
    return "?" if not values else "/".join(f"{v:.2f}" for v in values)


def _mark(met: bool | None) -> str:
    return {True: "met", False: "**NOT met**", None: "not measured"}[met]


def _trips(point: dict[str, Any], backend: str) -> str:
    value = point.get(f"{backend}_round_trips_per_request")
    return "" if value is None else f"{value:g}"


def markdown(result: Result) -> str:
    """The result as markdown: setup, targets, every point, the extras."""
    machine = result.get("machine", {})
    config = result.get("config", {})
    packages = machine.get("packages", {})
    lines = [
        f"# c2s-api benchmark: {result.get('mode', '?')} run, {result.get('started_at', '?')}",
        "",
        f"- machine: {machine.get('cpu_model')}, {machine.get('cores')} cores, "
        f"{machine.get('memory_gib')} GiB, kernel {machine.get('kernel')}",
        f"- software: Python {machine.get('python')}, Granian {packages.get('granian')}, "
        f"Litestar {packages.get('litestar')}, msgspec {packages.get('msgspec')}, "
        f"{machine.get('wrk')}, PostgreSQL {machine.get('postgresql')}, "
        f"Redis {machine.get('redis')}",
        f"- commit: {machine.get('git_sha')}"
        + (" (dirty tree)" if machine.get("git_dirty") else ""),
        f"- setup: 1 Granian worker ({config.get('pinning')}); {config.get('parties'):,} "
        f"parties; {config.get('duration_s')} s per point after {config.get('warmup_s')} s "
        f"warm-up; rate limits on ({config.get('rate_limits')})",
        f"- wall time of the run: {result.get('wall_s', 0):.0f} s; load average (1/5/15 min) "
        f"{_load(result.get('loadavg_start'))} at the start, {_load(result.get('loadavg_end'))} "
        "at the end",
        "",
        "## Targets",
        "",
        "From `bench/thresholds.toml` (`[target]`), the same evaluation the gate prints. CPU "
        "and round trips without a concurrency are the highest over c1, c16 and c64; round "
        "trips are those sent while serving a request (background work is listed per second "
        'under the points); RSS "every cache full" is the worker\'s highest RSS during the '
        "cache fill at the end of the run (see below).",
        "",
        "| target | goal | measured | status |",
        "|---|---|---|---|",
    ]
    for row in result.get("targets", []):
        lines.append(
            f"| {row['target']} | {row['goal']} | {row['measured']} | {_mark(row['met'])} |"
        )
    lines += [
        "",
        "## Requests per second and latency (1 worker)",
        "",
        "Ratios are to the bare route at the same concurrency, measured right before each "
        "point (bare req/s, bare p50). CPU us/req: user + system CPU time of the Granian "
        "worker per request (the figure least disturbed by other work on the machine). Redis "
        "and PG: round trips per request, sent while serving it (counted in the worker).",
        "",
        "| scenario | c | req/s | p50 ms | p90 ms | p99 ms | CPU us/req | Redis | PG "
        "| bare req/s | bare p50 ms | req/s ratio | p50 ratio | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = result.get("ratios", {})
    scenarios = result.get("scenarios", {})
    for name in _HTTP_ORDER:
        block = scenarios.get(name)
        if not block:
            continue
        if block.get("status") != "ok":
            lines.append(f"| {name} | - | {block.get('status')} | | | | | | | | | | | |")
            continue
        for concurrency, point in sorted(block["points"].items(), key=lambda kv: int(kv[0])):
            rr = ratios.get(f"rps_ratio.{name}.c{concurrency}")
            pr = ratios.get(f"p50_ratio.{name}.c{concurrency}")
            errors = point["errors"]
            total = sum(errors.values())
            flag = " (invalid)" if point.get("invalid") else ""
            bare = denominator(result, point, int(concurrency))
            lines.append(
                f"| {name}{flag} | {concurrency} | {point['rps']:,.0f} | {point['p50_ms']:.2f} | "
                f"{point['p90_ms']:.2f} | {point['p99_ms']:.2f} | "
                f"{point.get('cpu_us_per_request', 0):,.0f} | {_trips(point, 'redis')} | "
                f"{_trips(point, 'postgres')} | {bare['rps']:,.0f} | "
                f"{bare['p50_ms']:.2f} | "
                f"{'' if rr is None else f'{rr:.3f}'} | {'' if pr is None else f'{pr:.2f}'} | "
                f"{total} |"
            )
    lines.append("")
    for name in _HTTP_ORDER:
        block = scenarios.get(name, {})
        if block.get("check") or block.get("note"):
            text = " ".join(str(block.get(k, "")) for k in ("path", "check", "note"))
            lines.append(f"- {name}: {text.strip()}")
    lines += _background_lines(scenarios)
    lines += _extras(result)
    return "\n".join(lines) + "\n"


def _background_lines(scenarios: dict[str, Any]) -> list[str]:
    """Round trips the worker made outside requests (periodic syncs), per second per point."""
    parts: list[str] = []
    for name in _HTTP_ORDER:
        for concurrency, point in scenarios.get(name, {}).get("points", {}).items():
            if "redis_background_per_s" in point:
                parts.append(
                    f"{name} c{concurrency}: {point['redis_background_per_s']:g} / "
                    f"{point['postgres_background_per_s']:g}"
                )
    if not parts:
        return []
    return [
        "",
        "Background round trips of the worker (not charged to requests), Redis / PostgreSQL "
        "per second: " + "; ".join(parts) + ".",
    ]


def _extras(result: Result) -> list[str]:
    return [
        *_leads_400_section(result.get("leads_400ms", {})),
        *_worker_section(result.get("worker", {})),
        *_bulk_section(result.get("bulk", {})),
        *_memory_section(result.get("memory", {})),
        *_caches_full_section(result.get("caches_full", {})),
        *_two_workers_section(result.get("two_workers", {})),
        *_cluster_section(result.get("cluster", {})),
        *_micro_section(result.get("micro", {})),
        *_round_trips_section(result.get("setup", {}).get("redis_round_trips")),
    ]


def _leads_400_section(batch: dict[str, Any]) -> list[str]:
    if not batch:
        return []
    lines = ["", "## /leads/process with 400 ms Work API latency", ""]
    if batch.get("status") != "ok":
        return [*lines, str(batch.get("status"))]
    lines.append(
        f"{batch['batch']} distinct leads fired at once, {len(batch['walls_ms'])} batches: "
        f"wall {', '.join(f'{w:,.0f}' for w in batch['walls_ms'])} ms (median "
        f"{batch['wall_ms']:,.0f} ms = x{batch['wall_ms'] / batch['latency_ms']:.2f} of "
        f"the {batch['latency_ms']} ms round trip; serialised would be "
        f"{batch['batch'] * batch['latency_ms'] / 1000:.1f} s). Per lead: p50 "
        f"{batch['per_lead_p50_ms']:,.0f} ms, max {batch['per_lead_max_ms']:,.0f} ms; "
        f"{batch['succeeded']}/{batch['batch']} succeeded."
    )
    return lines


def _worker_section(worker: dict[str, Any]) -> list[str]:
    if not worker:
        return []
    lines = ["", "## Worker throughput (zero-latency upstreams)", ""]
    if worker.get("status") != "ok":
        return [*lines, str(worker.get("status"))]
    lines += [
        f"Events enqueued via {worker['enqueued_via']}; then one worker process drains "
        "them (time from the first job picked to the last one finished).",
        "",
        "| concurrency | jobs | completed | failed | seconds | jobs/s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for run in worker["runs"]:
        lines.append(
            f"| {run['concurrency']} | {run['jobs']} | {run['completed']} | "
            f"{run['failed']} | {run['seconds']:.2f} | {run['jobs_per_s']:,.0f} |"
        )
    return lines


def _bulk_section(bulk: dict[str, Any]) -> list[str]:
    if not bulk:
        return []
    lines = ["", "## Bulk job throughput (one worker process, zero-latency upstreams)", ""]
    if bulk.get("status") != "ok":
        return [*lines, str(bulk.get("status"))]
    return [
        *lines,
        f"One job of {bulk['items']:,} fresh people (each a lookup miss, a Work API fetch and a "
        f"store) run by one worker with {bulk['slots']} bulk slots: {bulk['done']:,} done, "
        f"{bulk['failed']} failed, {bulk['not_found']} not found in {bulk['seconds']:.2f} s "
        f"(first item started to job ended) = **{bulk['items_per_s']:,.0f} items/s**, "
        f"{bulk['cpu_us_per_item']:,.0f} us of worker CPU per item.",
    ]


def _memory_section(memory: dict[str, Any]) -> list[str]:
    if not memory:
        return []
    return [
        "",
        "## Memory (RSS of the Granian worker)",
        "",
        ", ".join(f"{k}: {v:.0f} MB" for k, v in memory.get("per_scenario_mb", {}).items()),
    ]


def _caches_full_section(fill: dict[str, Any]) -> list[str]:
    if not fill:
        return []
    lines = ["", "## Every cache full (the RSS target's condition)", ""]
    if fill.get("status") != "ok":
        return [*lines, str(fill.get("status"))]
    return [
        *lines,
        f"After every other scenario, wrk at concurrency 16 for {fill['seconds']:g} s cycled over "
        f"{fill['dossiers']:,} distinct hot-path CPFs never requested before and the "
        f"{fill['lookups']:,} lookup identifiers: {fill['requests']:,} requests "
        f"({fill['passes']:g} passes), {fill['work_api_fetches']:,} Work API fetches (each a "
        "dossier then cached). Any in-process cache of up to that many dossiers (and of every "
        "lookup) is full meanwhile; a cache with a larger capacity is not, and the RSS figure "
        "then understates it."
        + (
            ""
            if fill["passes"] >= 1
            else " The first pass did not end: fewer dossiers than listed were cached."
        ),
    ]


def _two_workers_section(two: dict[str, Any]) -> list[str]:
    if not two:
        return []
    lines = ["", "## Two Granian workers (unpinned, informative)", ""]
    if two.get("status") != "ok":
        return [*lines, str(two.get("status"))]
    lines += ["| scenario | c | req/s | p50 ms | p99 ms |", "|---|---:|---:|---:|---:|"]
    for name, points in two["points"].items():
        for concurrency, point in points.items():
            lines.append(
                f"| {name} | {concurrency} | {point['rps']:,.0f} | "
                f"{point['p50_ms']:.2f} | {point['p99_ms']:.2f} |"
            )
    return lines


def _cluster_section(row: dict[str, Any]) -> list[str]:
    if not row:
        return []
    lines = ["", "## Redis Cluster (informative; ratios to the single Redis, same run)", ""]
    if row.get("status") != "ok":
        return [*lines, str(row.get("status"))]
    lines += [
        "| scenario | c | single req/s | cluster req/s | req/s ratio | p50 ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, ratio in row["ratios"].items():
        lines.append(
            f"| {name} | {row['concurrency']} | {row['single'][name]['rps']:,.0f} | "
            f"{row['cluster'][name]['rps']:,.0f} | {ratio['rps']} | {ratio['p50']} |"
        )
    return lines


def _micro_section(micro: dict[str, Any]) -> list[str]:
    if not micro:
        return []
    lines = ["", "## Micro benchmarks (pytest-benchmark)", ""]
    if micro.get("status") != "ok":
        return [*lines, str(micro.get("status"))]
    lines += [
        "| benchmark | median us | ops/s | ratio to calibration |",
        "|---|---:|---:|---:|",
    ]
    for name, bench in micro["benchmarks"].items():
        lines.append(
            f"| {name} | {bench['median_us']:.2f} | {bench['ops']:,.0f} | {bench['ratio']:.3f} |"
        )
    return lines


def _round_trips_section(trips: dict[str, float] | None) -> list[str]:
    if not trips:
        return []
    return [
        "",
        "## Redis round trips per request (counted in-process on the real code path)",
        "",
        ", ".join(f"{k}: {v:g}" for k, v in trips.items()),
    ]
