"""The service's version, read once from the installed package's metadata."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["SERVICE_VERSION"]

try:
    SERVICE_VERSION: str = version("c2s-api")
except PackageNotFoundError:  # a source tree that was never installed
    SERVICE_VERSION = "0+unknown"
