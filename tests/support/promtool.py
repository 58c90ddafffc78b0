"""``promtool`` runs for the Prometheus rule, metric and configuration checks."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.processes import ROOT

__all__ = ["PROMETHEUS_DIR", "run_promtool"]

PROMETHEUS_DIR = ROOT / "observability" / "prometheus"


def run_promtool(promtool: str, *args: str, stdin: bytes | None = None) -> str:
    """Run promtool; fail the test with its output when it exits non-zero."""
    result = subprocess.run(
        [promtool, *args], input=stdin, capture_output=True, check=False, timeout=120
    )
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    if result.returncode != 0:
        pytest.fail(f"promtool {' '.join(args)} failed ({result.returncode}):\n{output}")
    return output
