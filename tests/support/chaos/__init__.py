"""Chaos helpers: open-loop load, fault proxies, the ledger check, scenario processes."""
