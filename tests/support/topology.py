"""Multi-node topologies for tests, from the Debian binaries (no Docker): a Redis Cluster.

:func:`redis_cluster` starts ``scripts/redis-cluster.sh`` (6 ``redis-server`` processes, 3
masters and 3 replicas, on free loopback ports, data in a temporary directory) and stops and
removes it afterwards. The session fixture :func:`redis_cluster_topology` starts one only for the
tests that ask for it; a test that breaks its cluster (the chaos suite kills a master) starts its
own with :func:`redis_cluster`.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.processes import ROOT

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "REDIS_KINDS",
    "RedisClusterTopology",
    "redis_cluster",
    "redis_cluster_topology",
    "redis_url_of",
]

SCRIPT = ROOT / "scripts" / "redis-cluster.sh"
NODES = 6
# A node fails over after this long unreachable (the script's --cluster-node-timeout).
NODE_TIMEOUT_MS = 1000


def _cli(port: int, *args: str, timeout_s: float = 2.0) -> str:
    done = subprocess.run(
        ["redis-cli", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    return done.stdout


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_base() -> int:
    """A base port whose 6 node ports and 6 cluster-bus ports (+10000) are all free."""
    for _ in range(200):
        base = random.randrange(20000, 30000, 10)
        ports = [base + i for i in range(NODES)]
        if all(_free(p) and _free(p + 10000) for p in ports):
            return base
    raise RuntimeError("no free port range for a Redis Cluster")


@dataclass
class RedisClusterTopology:
    """A running local cluster: its URL, its nodes and the means to break one."""

    base_port: int
    directory: Path

    @property
    def ports(self) -> list[int]:
        return [self.base_port + i for i in range(NODES)]

    @property
    def url(self) -> str:
        """``REDIS_URL`` of the cluster (ADR 0014): every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def masters(self) -> list[int]:
        """Ports of the live masters, as the cluster sees them now."""
        alive = [p for p in self.ports if _cli(p, "ping").strip() == "PONG"]
        return [p for p in alive if "role:master" in _cli(p, "info", "replication")]

    def state_ok(self) -> bool:
        """``cluster_state:ok`` on every live node."""
        alive = [p for p in self.ports if _cli(p, "ping").strip() == "PONG"]
        return bool(alive) and all("cluster_state:ok" in _cli(p, "cluster", "info") for p in alive)

    def owner_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot now."""
        alive = [p for p in self.ports if _cli(p, "ping").strip() == "PONG"]
        slot = int(_cli(alive[0], "cluster", "keyslot", key).strip())
        for entry in _cli(alive[0], "cluster", "nodes").splitlines():
            fields = entry.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return int(fields[1].split("@")[0].rsplit(":", 1)[1])
        raise LookupError(f"no master serves slot {slot}")

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (its replica is promoted after the node timeout)."""
        pid = int((self.directory / f"redis-{port}.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)

    def wait_ok(self, timeout_s: float = 20.0) -> float:
        """Wait until every live node reports ``cluster_state:ok``; the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.state_ok() and len(self.masters()) == NODES // 2:
                return time.monotonic() - start
            time.sleep(0.1)
        raise TimeoutError("the Redis Cluster did not recover")


@contextlib.contextmanager
def redis_cluster() -> Iterator[RedisClusterTopology]:
    """Start a fresh 6-node cluster on free ports; stop it and remove its files on exit."""
    base = _free_base()
    directory = Path(tempfile.mkdtemp(prefix="c2s-redis-cluster-"))
    env = {
        **os.environ,
        "REDIS_CLUSTER_DIR": str(directory),
        "REDIS_CLUSTER_NODE_TIMEOUT_MS": str(NODE_TIMEOUT_MS),
    }
    try:
        subprocess.run(
            ["bash", str(SCRIPT), "start", str(base)],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield RedisClusterTopology(base, directory)
    finally:
        subprocess.run(
            ["bash", str(SCRIPT), "stop", str(base)],
            env=env,
            check=False,
            capture_output=True,
            timeout=60,
        )


@pytest.fixture(scope="session")
def redis_cluster_topology() -> Iterator[RedisClusterTopology]:
    """One Redis Cluster for the session, started on first use only."""
    with redis_cluster() as topology:
        yield topology


REDIS_KINDS = ("single", "cluster")
"""Parameters of a test that runs on one Redis and on the cluster (``indirect`` client)."""


def redis_url_of(request: pytest.FixtureRequest, kind: str) -> str:
    """The Redis URL for ``kind``: the session's server, or the session cluster (started now)."""
    if kind == "cluster":
        topology: RedisClusterTopology = request.getfixturevalue("redis_cluster_topology")
        return topology.url
    from tests.support.db import REDIS_BASE_URL

    return REDIS_BASE_URL
