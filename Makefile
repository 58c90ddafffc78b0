# One-liners over uv; `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash
UV := PATH="$$HOME/.local/bin:$$PATH" uv

.PHONY: help install run test test-unit test-integration lint format typecheck imports audit check-all bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

install: ## uv, locked dependencies, PostgreSQL and Redis running
	@bash scripts/bootstrap.sh

run: install ## run the service on its embedded default (http://127.0.0.1:8080)
	$(UV) run c2s-api serve

test: install ## the whole test suite (real PostgreSQL, Redis and sandbox), with coverage
	$(UV) run pytest --cov --cov-report=term

test-unit: ## domain and unit tests only (no services)
	$(UV) run pytest tests/unit tests/property

test-integration: install ## integration tests only
	$(UV) run pytest -m integration

lint: ## ruff lint + format check
	$(UV) run ruff check .
	$(UV) run ruff format --check .

format: ## apply ruff format and safe fixes
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

typecheck: ## mypy --strict over every package
	$(UV) run mypy

imports: ## import-linter layer contracts
	$(UV) run lint-imports

bench: install ## the benchmark suite (python -m bench; --short for the CI-sized run)
	$(UV) run python -m bench $(ARGS)

check-all: install ## everything CI runs, from one list (scripts/checks.sh)
	bash scripts/checks.sh
