"""Tracing, metrics and logging set-up."""

from __future__ import annotations

__all__: list[str] = []
