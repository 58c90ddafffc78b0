"""The benchmark gate: short run, ratios against ``bench/thresholds.toml``, a table, an exit code.

``bench/gate`` (run by ``.ci/run``) calls :func:`main`, which

1. runs the short benchmark (``python -m bench --short``: a few seconds per point);
2. compares every ratio named in the thresholds file with its floor (``[floor]``: req/s ratios,
   the worker's rate; the measured value must be at least the threshold) or ceiling
   (``[ceiling]``: p50 ratios at concurrency 1, the 400 ms batch, micro benchmarks; the
   measured value must be at most the threshold);
3. also fails on any scenario that errored, any point that is invalid (error rate above 1 %,
   fresh requests exhausted) and any failed correctness check (hot path not served from the
   cache, lookups that called an upstream, leads that posted no message);
4. re-measures once the scenarios that failed, with the bare route again, and fails only when
   they fail again: a real regression fails twice, a noisy neighbour rarely does;
5. prints the table (scenario, measured, threshold, ok/FAIL) and exits 1 on any failure;
6. prints one line per performance target (``[target]``, judged by ``bench.load.targets``, the
   same evaluation as the run's markdown): met / NOT met with the measured value. A target not
   met is reported, it does not fail the gate (only a regression does).

Thresholds come from measured short runs (``python -m bench.gatecheck calibrate RESULT...``):
floors are ``FLOOR_MARGIN`` times the lowest value measured, ceilings ``CEILING_MARGIN`` times
the highest (``IO_*`` margins for the scenarios bound to PostgreSQL and the sandbox); the
``[target]`` section of the current file is carried over verbatim. A ratio
without a threshold (a new scenario) is reported, not judged; a scenario marked pending (e.g. a
route not registered yet) is reported as pending.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Final

from bench.load.runner import SCENARIOS, SHORT, default_scenarios, run
from bench.load.targets import evaluate, load_targets

__all__ = [
    "CEILING_MARGIN",
    "FLOOR_MARGIN",
    "IO_CEILING_MARGIN",
    "IO_FLOOR_MARGIN",
    "Check",
    "calibrate",
    "compare",
    "main",
    "target_section",
    "target_table",
]

THRESHOLDS: Final = Path(__file__).with_name("thresholds.toml")
# Noise margins (run-to-run noise on these machines is 10-60 % on absolute figures, less on
# ratios measured in one run; measured, see bench/README.md). Scenarios that stay inside the worker
# and Redis (health, the hot path, micro benchmarks) get the standard margins; scenarios whose
# time goes to PostgreSQL commits and the sandbox's answers (lookups, leads, webhooks, worker)
# vary up to 2.5x between runs on a shared machine (measured), so they get wider ones: the gate
# catches a doubling there, and a 1 ms slowdown of the hot path.
FLOOR_MARGIN: Final = 0.7
CEILING_MARGIN: Final = 1.5
IO_FLOOR_MARGIN: Final = 0.5
IO_CEILING_MARGIN: Final = 2.0
_IO_SCENARIOS: Final = frozenset(
    {"cpf", "email", "phone", "leads", "leads400", "webhook", "worker"}
)
# How the [target] section is written: part of the file's header, so calibrate writes it too.
_TARGET_HEADER: Final = (
    "#",
    "# [target]: the performance targets, REPORTED beside the checks (met / NOT met with the "
    "measured",
    "# value, by the gate and in the run's markdown) but never failing the gate. Each entry is",
    '#   "<measurement>" = {max = N | min = N, unit = "...", title = "..."}',
    "# max: met when measured <= N; min: met when measured >= N. Measurement names "
    "(bench/load/targets.py):",
    "# cpu_us|p50_ms|p99_ms|redis_trips|pg_trips.<scenario>.c<N> (per point; without .c<N>: "
    "the highest",
    "# over c1, c16, c64), any ratio of [floor]/[ceiling], worker.jobs_per_s, "
    "rss_mb.caches_full|max|hot.",
    "# calibrate keeps this section as it is; edit it by hand when a goal changes.",
)

Result = dict[str, Any]  # Any: the JSON document


class Check:
    """One row of the gate's table."""

    __slots__ = ("key", "measured", "ok", "scenario", "threshold", "why")

    def __init__(
        self,
        key: str,
        measured: float | None,
        threshold: str,
        ok: bool | None,
        why: str = "",
    ) -> None:
        self.key = key
        self.scenario = scenario_of(key)
        self.measured = measured
        self.threshold = threshold
        self.ok = ok
        self.why = why

    @property
    def status(self) -> str:
        """``ok``, ``FAIL``, or why it was not judged."""
        if self.ok is None:
            return self.why or "not judged"
        return "ok" if self.ok else "FAIL"


def scenario_of(key: str) -> str:
    """The runner scenario that measures ratio ``key`` (what a re-run must repeat)."""
    head, _, rest = key.partition(".")
    if head in ("rps_ratio", "p50_ratio", "scenario"):
        return rest.split(".", 1)[0]
    return {"leads_400ms": "leads400", "worker": "worker", "micro": "micro"}.get(head, head)


def _gated(key: str) -> bool:
    # p50 at 16 and 64 connections is concurrency / rate (closed loop): the req/s ratio already
    # judges it. p50 at concurrency 1 is the latency a single client sees, judged on its own.
    if key.startswith("p50_ratio."):
        return key.endswith(".c1")
    return True


def load_thresholds(path: Path = THRESHOLDS) -> dict[str, dict[str, float]]:
    """``{"floor": {...}, "ceiling": {...}}`` from the TOML file."""
    data = tomllib.loads(path.read_text())
    return {"floor": dict(data.get("floor", {})), "ceiling": dict(data.get("ceiling", {}))}


def _health_checks(result: Result) -> list[Check]:
    """Failures that are not ratios: errors, invalid points, failed correctness checks."""
    checks: list[Check] = []
    if result.get("error"):
        checks.append(Check("run", None, "no error", False, result["error"]))
    for name, block in result.get("scenarios", {}).items():
        status = str(block.get("status", ""))
        if status.startswith("pending"):
            checks.append(Check(f"scenario.{name}", None, "-", None, "pending"))
            continue
        if status != "ok":
            checks.append(Check(f"scenario.{name}", None, "ok", False, status))
            continue
        for concurrency, point in block.get("points", {}).items():
            if point.get("invalid"):
                checks.append(
                    Check(f"scenario.{name}.c{concurrency}", None, "valid", False, point["invalid"])
                )
        if block.get("check_ok") is False:
            checks.append(Check(f"scenario.{name}.check", None, "verified", False, block["check"]))
    for name in ("leads_400ms", "worker", "micro"):
        block = result.get(name)
        if block and block.get("status") != "ok":
            checks.append(Check(f"{name}.status", None, "ok", False, str(block.get("status"))))
    return checks


def compare(result: Result, thresholds: dict[str, dict[str, float]]) -> list[Check]:
    """Judge every ratio of ``result`` that has a threshold, plus the run's own health."""
    ratios: dict[str, float] = result.get("ratios", {})
    checks = _health_checks(result)
    pending = {c.scenario for c in checks if c.why == "pending"}
    for key, floor in sorted(thresholds["floor"].items()):
        value = ratios.get(key)
        if value is None:
            checks.append(Check(key, None, f">= {floor:g}", None, _missing(key, pending, result)))
        else:
            checks.append(Check(key, value, f">= {floor:g}", value >= floor))
    for key, ceiling in sorted(thresholds["ceiling"].items()):
        value = ratios.get(key)
        if value is None:
            checks.append(Check(key, None, f"<= {ceiling:g}", None, _missing(key, pending, result)))
        else:
            checks.append(Check(key, value, f"<= {ceiling:g}", value <= ceiling))
    known = set(thresholds["floor"]) | set(thresholds["ceiling"])
    for key, value in sorted(ratios.items()):
        if key not in known and _gated(key):
            checks.append(Check(key, value, "-", None, "no threshold yet"))
    return checks


def _missing(key: str, pending: set[str], result: Result) -> str:
    scenario = scenario_of(key)
    if scenario in pending:
        return "pending"
    if scenario not in result.get("config", {}).get("scenarios", SCENARIOS) and scenario != "bare":
        return "not run"
    return "not measured"


def table(checks: list[Check], title: str) -> str:
    """The gate's table as text."""
    rows = [("scenario", "check", "measured", "threshold", "status")]
    for c in checks:
        measured = "-" if c.measured is None else f"{c.measured:.4g}"
        rows.append((c.scenario, c.key, measured, c.threshold, c.status))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [title, ""]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def target_table(rows: list[dict[str, Any]], title: str) -> str:
    """One line per target: met / NOT met / not measured, with the measured value and goal."""
    table_rows = [("target", "measurement", "measured", "goal", "status")]
    for row in rows:
        status = {True: "met", False: "NOT met", None: "not measured"}[row["met"]]
        measured = "-" if row["value"] is None else row["measured"]
        if row["value"] is None:
            status = row["measured"]
        table_rows.append((row["target"], row["key"], measured, row["goal"], status))
    widths = [max(len(r[i]) for r in table_rows) for i in range(5)]
    lines = [title, ""]
    for i, cells in enumerate(table_rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    met = sum(1 for r in rows if r["met"] is True)
    lines.append(
        f"\n{met} of {len(rows)} targets met (reported only: targets do not fail the gate)"
    )
    return "\n".join(lines)


def target_section(text: str) -> str:
    """The ``[target]`` table of a thresholds file, verbatim (header line to the next table)."""
    kept: list[str] = []
    inside = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            inside = stripped.startswith("[target]")
        if inside:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join(kept) + "\n" if kept else ""


def _failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.ok is False]


def calibrate(results: list[Result], targets: str = "") -> str:
    """A thresholds file from measured runs: floors at ``FLOOR_MARGIN`` x the lowest value,
    ceilings at ``CEILING_MARGIN`` x the highest; ``targets`` (a ``[target]`` section, see
    :func:`target_section`) is appended as it is."""
    values: dict[str, list[float]] = {}
    for result in results:
        for key, value in result.get("ratios", {}).items():
            if _gated(key):
                values.setdefault(key, []).append(float(value))

    def io(key: str) -> bool:
        return scenario_of(key) in _IO_SCENARIOS

    floors = {
        k: round(min(v) * (IO_FLOOR_MARGIN if io(k) else FLOOR_MARGIN), 4)
        for k, v in values.items()
        if k.startswith(("rps_ratio.", "worker."))
    }
    ceilings = {
        k: round(max(v) * (IO_CEILING_MARGIN if io(k) else CEILING_MARGIN), 4)
        for k, v in values.items()
        if not k.startswith(("rps_ratio.", "worker."))
    }
    machine = results[0].get("machine", {}) if results else {}
    stamps = ", ".join(str(r.get("started_at")) for r in results)
    lines = [
        "# Thresholds of the benchmark gate (bench/gate): ratios measured in ONE short run, each",
        "# against the bare route (same server, same worker, same run). See bench/README.md.",
        "#",
        f"# Set from {len(results)} measured short runs ({stamps})",
        f"# on {machine.get('cpu_model')}, {machine.get('cores')} cores, commit "
        f"{str(machine.get('git_sha'))[:12]}.",
        f"# Noise margin: floors = {FLOOR_MARGIN} x the lowest measured value, ceilings = "
        f"{CEILING_MARGIN} x the highest;",
        f"# for PostgreSQL/sandbox-bound scenarios ({', '.join(sorted(_IO_SCENARIOS))}): "
        f"{IO_FLOOR_MARGIN} and {IO_CEILING_MARGIN}.",
        "# Regenerate: python -m bench.gatecheck calibrate RESULT.json [RESULT.json ...]",
        *_TARGET_HEADER,
        "",
        "[floor]  # measured >= threshold (req/s ratios to the bare route; worker jobs/s ratio)",
    ]
    lines += [f'"{k}" = {v}' for k, v in sorted(floors.items())]
    lines += ["", "[ceiling]  # measured <= threshold (p50 ratios at c1, 400 ms batch, micro)"]
    lines += [f'"{k}" = {v}' for k, v in sorted(ceilings.items())]
    text = "\n".join(lines) + "\n"
    if targets:
        text += "\n" + targets
    return text


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"pin": not args.no_pin, "database": args.db, "drop_db": args.drop_db}


def _gate(args: argparse.Namespace) -> int:
    thresholds = load_thresholds(args.thresholds)
    if args.result is not None:
        result = json.loads(args.result.read_text())
    else:
        out = Path(tempfile.mkdtemp(prefix="c2s-gate-")) / "gate.json"
        result, _ = run(SHORT, default_scenarios(SHORT), out=out, **_run_options(args))
        print(f"bench gate: result in {out} (and {out.with_suffix('.md')})")
    checks = compare(result, thresholds)
    print(table(checks, f"bench gate: short run {result.get('started_at')}"))
    targets = evaluate(result, load_targets(args.thresholds))
    print()
    print(target_table(targets, "bench gate: performance targets (reported, not gating)"))
    failed = _failed(checks)
    if failed and args.result is None and not args.no_retry:
        scenarios = sorted({c.scenario for c in failed} & set(SCENARIOS))
        print(f"\nbench gate: re-measuring {', '.join(scenarios) or 'bare'} once", flush=True)
        out = Path(tempfile.mkdtemp(prefix="c2s-gate-")) / "retry.json"
        retry, _ = run(SHORT, scenarios, out=out, **_run_options(args))
        again = compare(retry, thresholds)
        failed_keys = {c.key for c in failed}
        recheck = [c for c in again if c.key in failed_keys or c.ok is False]
        print(table(recheck, "bench gate: re-measured"))
        failed = _failed(recheck)
    if failed:
        names = ", ".join(sorted({f"{c.scenario} ({c.key})" for c in failed}))
        print(f"\nbench gate: FAIL: regression in {names}")
        return 1
    print("\nbench gate: ok")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.gatecheck [--result FILE] | calibrate RESULT...``."""
    parser = argparse.ArgumentParser(prog="bench/gate", description=__doc__.split("\n")[0])
    parser.add_argument("--thresholds", type=Path, default=THRESHOLDS)
    parser.add_argument(
        "--result", type=Path, default=None, help="judge this result instead of running"
    )
    parser.add_argument("--no-retry", action="store_true", help="fail on the first measurement")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--db", default=None, help="database name (default c2s_bench_short)")
    parser.add_argument("--drop-db", action="store_true", help="drop the database at the end")
    sub = parser.add_subparsers(dest="command")
    cal = sub.add_parser("calibrate", help="print a thresholds file from measured short runs")
    cal.add_argument("results", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.command == "calibrate":
        targets = target_section(args.thresholds.read_text()) if args.thresholds.exists() else ""
        print(calibrate([json.loads(p.read_text()) for p in args.results], targets), end="")
        return 0
    return _gate(args)


if __name__ == "__main__":
    sys.exit(main())
