"""What a result was measured on: machine, versions, commit (read-only probes only)."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Final

__all__ = ["machine_info"]

_PACKAGES: Final = (
    "granian",
    "litestar",
    "msgspec",
    "uvloop",
    "asyncpg",
    "redis",
    "aiohttp",
    "pgqueuer",
    "pytest-benchmark",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _command(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info(repo: Path, *, postgres: str | None, redis: str | None) -> dict[str, Any]:
    """Machine, software versions and the commit measured (``dirty`` when the tree differs).

    Args:
        repo: The work tree.
        postgres: PostgreSQL's ``server_version``.
        redis: Redis's ``redis_version``.
    """
    sha = _command(["git", "-C", str(repo), "rev-parse", "HEAD"])
    status = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in _PACKAGES},
        "wrk": _command(["wrk", "--version"]),
        "postgresql": postgres,
        "redis": redis,
        "git_sha": sha,
        "git_dirty": bool(status.strip()),
        "ci": os.environ.get("CI") == "true",
    }
