"""Micro benchmarks (pytest-benchmark) of the domain's hot spots; run by the runner."""
