"""Benchmarks of c2s-api: load scenarios (``bench.load``), micro benchmarks (``bench/micro``),
the bare baseline app and the CI gate. See ``bench/README.md``."""
