"""Chaos scenarios: real processes, fault proxies, load and the ledger check (docs/chaos.md)."""
