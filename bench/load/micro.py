"""Run the micro benchmarks (``bench/micro``, pytest-benchmark) and read their JSON."""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING, Any

from bench.load.procs import python

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["run_micro"]


def run_micro(repo: Path, work_dir: Path, *, max_time_s: float) -> dict[str, Any]:
    """Run ``pytest bench/micro`` and return medians and ratios to the calibration loop.

    Args:
        repo: The work tree (pytest's root, for its configuration).
        work_dir: Where pytest-benchmark writes its JSON.
        max_time_s: pytest-benchmark's ``--benchmark-max-time`` per benchmark.

    Returns:
        ``{"status": "ok", "benchmarks": {name: {median_us, ops, rounds, ratio}}}``, or a
        status naming the failure.
    """
    out = work_dir / "micro.json"
    done = subprocess.run(
        [
            python(),
            "-m",
            "pytest",
            "bench/micro",
            # The suite's addopts (random order, strict plugins) are for tests, not timings.
            "-o",
            "addopts=",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--benchmark-max-time={max_time_s}",
            "--benchmark-min-rounds=20",
            f"--benchmark-json={out}",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        return {"status": f"error: pytest exited {done.returncode}: {done.stdout[-600:]}"}
    data = json.loads(out.read_text())
    medians = {bench["name"].removeprefix("test_"): bench["stats"] for bench in data["benchmarks"]}
    calibration = medians["calibration"]["median"]
    benchmarks = {
        name: {
            "median_us": round(stats["median"] * 1e6, 3),
            "ops": round(1 / stats["median"], 1),
            "rounds": stats["rounds"],
            "ratio": round(stats["median"] / calibration, 4),
        }
        for name, stats in sorted(medians.items(), key=lambda kv: kv[1]["median"])
    }
    return {"status": "ok", "max_time_s": max_time_s, "benchmarks": benchmarks}
