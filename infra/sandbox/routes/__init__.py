"""The sandbox's route groups: one per simulated upstream, plus its own control routes.

Each group is a small class built with the shared :class:`~infra.sandbox.state.SandboxState`;
its ``route_handlers()`` are what :func:`~infra.sandbox.app.create_sandbox_app` assembles.
"""

from __future__ import annotations

from infra.sandbox.routes.c2s import C2SRoutes
from infra.sandbox.routes.control import ControlRoutes
from infra.sandbox.routes.diretrix import DiretrixRoutes
from infra.sandbox.routes.faults import FaultRoutes
from infra.sandbox.routes.work_api import WorkApiRoutes

__all__ = ["C2SRoutes", "ControlRoutes", "DiretrixRoutes", "FaultRoutes", "WorkApiRoutes"]
