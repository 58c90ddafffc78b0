"""What a benchmark run is made of: its profiles, scenario names, addresses and limits.

Shared by the runner (``bench.load.runner``), the run's orchestration (``bench.load.session``)
and the scenarios (``bench.load.scenarios``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Final

import msgspec

__all__ = [
    "CONCURRENCIES",
    "FULL",
    "HOT_CPFS",
    "LEADS_BATCH",
    "MAX_ERROR_RATE",
    "PG_ADMIN_URL",
    "REDIS_URL",
    "REPO",
    "RESULTS_DIR",
    "SCENARIOS",
    "SHORT",
    "UPSTREAM_LATENCY_MS",
    "Profile",
    "say",
]

REPO: Final = Path(__file__).resolve().parents[2]
RESULTS_DIR: Final = REPO / "bench" / "results"
PG_ADMIN_URL: Final = os.environ.get(
    "BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL: Final = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CONCURRENCIES: Final = (1, 16, 64)
UPSTREAM_LATENCY_MS: Final = 400
LEADS_BATCH: Final = 64
# A point whose error rate exceeds this is reported invalid (and fails the gate).
MAX_ERROR_RATE: Final = 0.01
HOT_CPFS: Final = 64

SCENARIOS: Final = (
    "micro",
    "health",
    "hot",
    "cpf",
    "email",
    "phone",
    "leads",
    "leads400",
    "webhook",
    "worker",
    "bulk",
    "two_workers",
    "cluster",
)


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    """How long and how big a run is."""

    name: str
    duration_s: float
    warmup_s: float
    parties: int
    database: str
    identifiers: int
    worker_jobs: int
    worker_concurrency: tuple[int, ...]
    leads_batches: int
    micro_max_time_s: float
    # The cache fill at the end of a run (RSS with every cache full): distinct hot-path CPFs
    # requested (each one a Work API fetch, then cached), and how long the load lasts.
    fill_dossiers: int
    fill_s: float
    # Items of the bulk job one worker process runs (fresh people: each a Work API fetch).
    bulk_items: int = 2000


FULL: Final = Profile(
    name="full",
    duration_s=10,
    warmup_s=2,
    parties=1_000_000,
    database="c2s_bench",
    identifiers=1000,
    worker_jobs=3000,
    worker_concurrency=(16, 4),  # the default first: the target judges it
    leads_batches=3,
    micro_max_time_s=1.0,
    fill_dossiers=10_000,
    fill_s=60,
    bulk_items=10_000,
)
SHORT: Final = Profile(
    name="short",
    duration_s=2,
    warmup_s=1,
    parties=20_000,
    database="c2s_bench_short",
    identifiers=200,
    worker_jobs=600,
    worker_concurrency=(16,),
    leads_batches=2,
    micro_max_time_s=0.2,
    fill_dossiers=300,
    fill_s=5,
    bulk_items=1000,
)


def say(message: str) -> None:
    """A progress line on stderr (stdout carries the result)."""
    print(f"bench: {message}", file=sys.stderr, flush=True)
