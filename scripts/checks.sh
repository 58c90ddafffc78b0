#!/usr/bin/env bash
# The one list of checks, run alike by `make check-all` (a developer) and `.ci/run` (CI):
# lint, format, types, layers, migrations, supply chain, the README's test command (with
# coverage and its floor), and the benchmark gate. Any failure stops the run.
#
#   bash scripts/checks.sh              # everything
#   SKIP_BENCH=1 bash scripts/checks.sh # everything but the bench gate (a loaded laptop)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.local/bin:$PATH"
export OTEL_SDK_DISABLED=true

step() { printf '\n==> %s\n' "$*"; }

step "lint (ruff)"
uv run ruff check .
uv run ruff format --check .

step "types (mypy --strict)"
uv run mypy

step "layers (import-linter)"
uv run lint-imports

step "migrations (squawk)"
uv run squawk infra/db/migrations/*.sql

step "supply chain (pip-audit on uv.lock, bandit)"
# The PyPI vulnerability service does not answer for every package from these machines: such
# packages are reported loudly as "could not be audited"; a real finding still fails the run.
AUDIT_ALLOW_SKIPS=1 bash scripts/supply-chain.sh

step "tests (the README's test command, with coverage and its floor)"
make test

if [[ -z "${SKIP_BENCH:-}" ]]; then
    step "bench gate (short benchmark against bench/thresholds.toml)"
    bench/gate
fi
