"""HTTP controllers of the v1 contract."""

from __future__ import annotations

__all__: list[str] = []
