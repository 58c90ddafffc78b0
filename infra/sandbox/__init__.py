"""Simulated upstreams (C2S, Diretrix, Work API) for development, tests, chaos runs and benches.

Start it with :func:`infra.sandbox.app.run_sandbox` (the ``c2s-api sandbox`` command) or
``granian --interface asgi --factory infra.sandbox.app:create_sandbox_app``. The synthetic
people (:mod:`infra.sandbox.people`) import without the web stack: the app symbols below are
loaded on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from infra.sandbox.faults import FaultConfig
from infra.sandbox.people import Person, SyntheticPeople, lead_id_for

if TYPE_CHECKING:
    from infra.sandbox.app import SandboxSettings, create_sandbox_app, run_sandbox

__all__ = [
    "FaultConfig",
    "Person",
    "SandboxSettings",
    "SyntheticPeople",
    "create_sandbox_app",
    "lead_id_for",
    "run_sandbox",
]

_APP_SYMBOLS = frozenset({"SandboxSettings", "create_sandbox_app", "run_sandbox"})


def __getattr__(name: str) -> Any:  # Any: whichever app symbol was asked for
    if name in _APP_SYMBOLS:
        from infra.sandbox import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
