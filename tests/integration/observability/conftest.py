"""Fixtures for the observability integration tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROMETHEUS_DIR = Path(__file__).resolve().parents[3] / "observability" / "prometheus"


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of ``promtool``; fails (never skips) when it is missing."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed. `bash scripts/bootstrap.sh` installs it (Debian package "
            "`prometheus`); or run `apt-get install -y prometheus` and stop the service it "
            "starts.",
            pytrace=False,
        )
    return path


def run_promtool(promtool: str, *args: str, stdin: bytes | None = None) -> str:
    """Run promtool; fail the test with its output when it exits non-zero."""
    result = subprocess.run(
        [promtool, *args], input=stdin, capture_output=True, check=False, timeout=120
    )
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    if result.returncode != 0:
        pytest.fail(f"promtool {' '.join(args)} failed ({result.returncode}):\n{output}")
    return output
