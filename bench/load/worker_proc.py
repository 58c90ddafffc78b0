"""The queue worker as the benchmark runs it: ``run_worker`` with its metrics port off.

``c2s-api worker`` would bind the Prometheus port 9464, which another process on the machine
may hold; the benchmark needs only the jobs drained. Settings come from the environment, as for
``c2s-api worker``.

Run: ``python -m bench.load.worker_proc --concurrency 8``.
"""

from __future__ import annotations

import argparse

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the worker until SIGTERM; return its exit status."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, required=True, help="jobs in parallel")
    args = parser.parse_args(argv)
    from app.cli.worker import run_worker
    from app.config import settings_or_exit

    return run_worker(settings_or_exit(), concurrency=args.concurrency, metrics_port=0)


if __name__ == "__main__":
    raise SystemExit(main())
