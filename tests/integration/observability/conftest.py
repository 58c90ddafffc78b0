"""Fixtures for the observability integration tests."""

from __future__ import annotations

import shutil

import pytest


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
