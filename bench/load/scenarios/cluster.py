"""The informative Redis Cluster row: the hot path and the lookup by CPF with the app on a local
6-node Redis Cluster (``scripts/redis-cluster.sh``, ADR 0014), as ratios to the same points on
the single Redis measured back to back in the same run. It gates nothing.
"""

from __future__ import annotations

import random
import socket
import subprocess
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec

from bench.load.settings import REPO, say
from bench.load.stack import start_app

if TYPE_CHECKING:
    from bench.load.session import Run
    from bench.load.wrk import Point

__all__ = ["cluster_row"]

CONCURRENCY = 16
SCRIPT = REPO / "scripts" / "redis-cluster.sh"


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _base_port() -> int:
    for _ in range(100):
        base = random.randrange(30000, 40000, 10)
        if all(_free(base + i) and _free(base + i + 10000) for i in range(6)):
            return base
    raise RuntimeError("no free port range for a Redis Cluster")


def _measure(run: Run, server: Any, tag: str) -> dict[str, Point]:
    hot = [("GET", f"/api/v1/work/modules/all?documento={c}") for c in run.hot_cpfs]
    cpf = [("GET", f"/api/v1/contributor/customer?cpf={quote(v)}") for v in run.ids.cpfs]
    points: dict[str, Point] = {}
    for name, lines in (("hot", hot), ("cpf", cpf)):
        requests_file = run.requests_file(f"cluster-{tag}-{name}", lines)
        # The warm-up also fills the cluster's dossier cache (a miss per CPF, then cached).
        run.wrk(
            requests_file, CONCURRENCY, run.profile.warmup_s, "cycle", run.auth(), server=server
        )
        points[name] = run.wrk(
            requests_file, CONCURRENCY, run.duration_s, "cycle", run.auth(), server=server
        )
        point = points[name]
        say(f"  {tag} {name} c={CONCURRENCY}: {point.rps:,.0f} req/s p50 {point.p50_ms:.2f} ms")
    return points


def cluster_row(run: Run) -> None:
    """Single Redis, then the cluster: hot and cpf at c16, one Granian worker on the server
    core each time; the row is the cluster's figures over the single node's."""
    say("cluster: hot path and lookup on a Redis Cluster, as ratios to the single Redis")
    single = _measure(run, run.server, "single")
    base = _base_port()
    started = subprocess.run(
        ["bash", str(SCRIPT), "start", str(base)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        if started.returncode != 0:
            run.result["cluster"] = {"status": f"cluster did not start: {started.stderr[-300:]}"}
            return
        url = started.stdout.strip().splitlines()[-1]
        env = {**run.env, "REDIS_URL": url}
        server = start_app(run.procs, env, workers=1, cpus=run.cores.server)
        try:
            on_cluster = _measure(run, server, "cluster")
        finally:
            run.procs.stop(server.proc)
    finally:
        subprocess.run(
            ["bash", str(SCRIPT), "stop", str(base)], capture_output=True, timeout=120, check=False
        )
    ratios = {
        name: {
            "rps": round(on_cluster[name].rps / single[name].rps, 3) if single[name].rps else None,
            "p50": round(on_cluster[name].p50_ms / single[name].p50_ms, 3)
            if single[name].p50_ms
            else None,
        }
        for name in single
    }
    run.result["cluster"] = {
        "status": "ok",
        "concurrency": CONCURRENCY,
        "single": {k: msgspec.to_builtins(v) for k, v in single.items()},
        "cluster": {k: msgspec.to_builtins(v) for k, v in on_cluster.items()},
        "ratios": ratios,
    }
    for name, ratio in ratios.items():
        say(f"  {name}: cluster / single req/s {ratio['rps']}, p50 {ratio['p50']}")
