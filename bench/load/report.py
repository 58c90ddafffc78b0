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

__all__ = [
    "TARGETS_DOC",
    "bare_denominators",
    "compute_ratios",
    "denominator",
    "evaluate_targets",
    "markdown",
]

Result = dict[str, Any]  # Any: the JSON document

# The targets, in the order the README lists them.
TARGETS_DOC: Final = (
    ("hot_p50", "Hot path p50 at concurrency 1", "<= 1 ms"),
    ("hot_share", "Hot path req/s at c16 vs the bare route", ">= 20 %"),
    ("hot_rps", "Hot path req/s per worker at c16", ">= 2,000"),
    ("hot_redis", "Redis round trips per hot-path request", "as few as possible (1)"),
    ("cpf_p50", "Customer by CPF p50 at c1", "<= 2 ms"),
    ("email_p50", "Customer by e-mail p50 at c1", "<= 2 ms"),
    ("phone_p50", "Customer by phone p50 at c1", "<= 2 ms"),
    ("leads_p50", "/leads/process own overhead p50 at c1 (zero upstream latency)", "<= 10 ms"),
    (
        "leads_400",
        "64 concurrent leads with 400 ms Work API latency",
        "about one round trip each (wall <= 2 x 400 ms)",
    ),
    ("webhook_p50", "Webhook acceptance p50 at c1", "<= 3 ms"),
    ("worker_rate", "Worker drain rate, zero-latency upstreams", ">= 200 jobs/s"),
    ("rss", "RSS of one worker under load", "<= 150 MB"),
)

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


def _met(value: float | None, ok: bool) -> bool | None:
    return None if value is None else ok


def _hot_redis(result: Result) -> tuple[float | None, str]:
    trips = result.get("setup", {}).get("redis_round_trips", {}).get("hot")
    if trips is None:
        return None, "not measured"
    return trips, f"{trips:g} per request (measured)"


def evaluate_targets(result: Result) -> list[dict[str, Any]]:
    """Each target of the issue with the measured value and whether it is met.

    ``met`` is None when the scenario did not run (or is pending).
    """

    def p50(scenario: str, concurrency: int = 1) -> float | None:
        point = _point(result, scenario, concurrency)
        return None if point is None or point.get("invalid") else float(point["p50_ms"])

    def rps(scenario: str, concurrency: int) -> float | None:
        point = _point(result, scenario, concurrency)
        return None if point is None or point.get("invalid") else float(point["rps"])

    rows: list[dict[str, Any]] = []

    def add(key: str, measured: str, met: bool | None) -> None:
        title, target = next((t, g) for k, t, g in TARGETS_DOC if k == key)
        rows.append({"key": key, "target": title, "goal": target, "measured": measured, "met": met})

    hot = p50("hot")
    add("hot_p50", _ms(hot), _met(hot, hot is not None and hot <= 1.0))
    hot16 = rps("hot", 16)
    hot_point = _point(result, "hot", 16)
    bare16 = denominator(result, hot_point, 16)["rps"] if hot_point else None
    share = hot16 / bare16 if hot16 is not None and bare16 else None
    add(
        "hot_share",
        "-" if share is None else f"{share:.1%} ({hot16:,.0f} / {bare16:,.0f} req/s)",
        _met(share, share is not None and share >= 0.20),
    )
    add(
        "hot_rps",
        "-" if hot16 is None else f"{hot16:,.0f} req/s",
        _met(hot16, hot16 is not None and hot16 >= 2000),
    )
    trips, text = _hot_redis(result)
    add("hot_redis", text, _met(trips, trips is not None and trips <= 1.0))
    for kind in ("cpf", "email", "phone"):
        value = p50(kind)
        add(f"{kind}_p50", _ms(value), _met(value, value is not None and value <= 2.0))
    leads = p50("leads")
    add("leads_p50", _ms(leads), _met(leads, leads is not None and leads <= 10.0))
    batch = result.get("leads_400ms", {})
    if batch.get("status") == "ok":
        wall = float(batch["wall_ms"])
        add(
            "leads_400",
            f"{wall:,.0f} ms for {batch['batch']} leads "
            f"(x{wall / batch['latency_ms']:.2f} of one round trip; per-lead p50 "
            f"{batch['per_lead_p50_ms']:,.0f} ms)",
            wall <= 2 * batch["latency_ms"] and batch["succeeded"] == batch["batch"],
        )
    else:
        add("leads_400", batch.get("status", "not run"), None)
    webhook = p50("webhook")
    webhook_block = result.get("scenarios", {}).get("webhook", {})
    add(
        "webhook_p50",
        _ms(webhook) if webhook is not None else webhook_block.get("status", "not run"),
        _met(webhook, webhook is not None and webhook <= 3.0),
    )
    worker = result.get("worker", {})
    if worker.get("status") == "ok":
        rate = float(worker["jobs_per_s"])
        add(
            "worker_rate",
            f"{rate:,.0f} jobs/s (concurrency {worker['concurrency']}, "
            f"{worker['completed']} completed, {worker['failed']} failed)",
            rate >= 200 and worker["failed"] == 0,
        )
    else:
        add("worker_rate", worker.get("status", "not run"), None)
    memory = result.get("memory", {})
    rss = memory.get("max_rss_mb")
    add(
        "rss",
        "-" if rss is None else f"{rss:.0f} MB (hot path {memory.get('hot_rss_mb', 0):.0f} MB)",
        _met(rss, rss is not None and rss <= 150),
    )
    return rows


def _load(values: list[float] | None) -> str:
    return "?" if not values else "/".join(f"{v:.2f}" for v in values)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _mark(met: bool | None) -> str:
    return {True: "met", False: "**NOT met**", None: "not measured"}[met]


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
        "worker per request (the figure least disturbed by other work on the machine).",
        "",
        "| scenario | c | req/s | p50 ms | p90 ms | p99 ms | CPU us/req | bare req/s "
        "| bare p50 ms | req/s ratio | p50 ratio | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = result.get("ratios", {})
    scenarios = result.get("scenarios", {})
    for name in _HTTP_ORDER:
        block = scenarios.get(name)
        if not block:
            continue
        if block.get("status") != "ok":
            lines.append(f"| {name} | - | {block.get('status')} | | | | | | | | | |")
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
                f"{point.get('cpu_us_per_request', 0):,.0f} | {bare['rps']:,.0f} | "
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
    lines += _extras(result)
    return "\n".join(lines) + "\n"


def _extras(result: Result) -> list[str]:
    return [
        *_leads_400_section(result.get("leads_400ms", {})),
        *_worker_section(result.get("worker", {})),
        *_memory_section(result.get("memory", {})),
        *_two_workers_section(result.get("two_workers", {})),
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


def _memory_section(memory: dict[str, Any]) -> list[str]:
    if not memory:
        return []
    return [
        "",
        "## Memory (RSS of the Granian worker)",
        "",
        ", ".join(f"{k}: {v:.0f} MB" for k, v in memory.get("per_scenario_mb", {}).items()),
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
