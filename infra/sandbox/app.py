"""The sandbox: C2S, Diretrix and the Work API on one HTTP server, speaking their wire formats.

Run it with ``granian --interface asgi --factory infra.sandbox.app:create_sandbox_app`` or
:func:`run_sandbox`. Configuration comes from ``SANDBOX_*`` environment variables
(:mod:`infra.sandbox.settings`).

Upstream routes: ``GET /integration/leads/{id}``, ``POST /integration/leads/{id}/create_message``,
``POST /integration/leads`` (C2S, bearer: :mod:`infra.sandbox.routes.c2s`);
``GET /Consultas/Pessoa/Telefone/{phone}``, ``GET /Consultas/Pessoa/Email/{email}``,
``GET /Consultas/Pessoa/{cpf}`` (Diretrix, Basic: :mod:`infra.sandbox.routes.diretrix`);
``GET /api?token=&modulo=&consulta=`` (Work API; errors inside HTTP 200 like the real one:
:mod:`infra.sandbox.routes.work_api`).

Test helpers under ``/_sandbox``: ``GET health``, ``POST reset``, ``GET|POST config`` (the
simulated C2S firing ``on_update_lead`` after each message), ``POST leads`` (a lead for a
synthetic person and/or explicit customer fields), ``GET leads/{id}/messages``,
``GET people/{index}`` (:mod:`infra.sandbox.routes.control`); ``GET|POST faults/{upstream}``,
``GET|DELETE faults``, ``GET|DELETE counters`` (:mod:`infra.sandbox.routes.faults`).

Single worker by design: state (leads, messages, faults, counters) is process memory, one
:class:`~infra.sandbox.state.SandboxState` handed to every route group.
"""

from __future__ import annotations

import os

from litestar import Litestar

from infra.sandbox.routes import (
    C2SRoutes,
    ControlRoutes,
    DiretrixRoutes,
    FaultRoutes,
    WorkApiRoutes,
)
from infra.sandbox.settings import DEFAULT_PORT, SandboxSettings, sandbox_settings_from_env
from infra.sandbox.state import SandboxState

__all__ = [
    "SandboxSettings",
    "SandboxState",
    "create_sandbox_app",
    "run_sandbox",
    "sandbox_settings_from_env",
]


def create_sandbox_app(settings: SandboxSettings | None = None) -> Litestar:
    """Build the sandbox ASGI app (Granian ``--factory`` target).

    Args:
        settings: Configuration; default: :func:`sandbox_settings_from_env`.

    Returns:
        The Litestar app; its state is ``app.state.sandbox`` (one worker, one state).
    """
    state = SandboxState(settings if settings is not None else sandbox_settings_from_env())

    def warm_up() -> None:
        # Build the Diretrix contact registry before serving, so no request pays for it.
        state.people.warm_up()

    groups = (
        C2SRoutes(state),
        DiretrixRoutes(state),
        WorkApiRoutes(state),
        ControlRoutes(state),
        FaultRoutes(state),
    )
    app = Litestar(
        route_handlers=[handler for group in groups for handler in group.route_handlers()],
        on_startup=[warm_up],
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
    app.state.sandbox = state
    return app


def run_sandbox(port: int, host: str = "127.0.0.1", *, seed: int | None = None) -> None:
    """Serve the sandbox in the foreground with Granian (one worker) until SIGINT/SIGTERM.

    Args:
        port: Listen port.
        host: Listen address (loopback by default: the sandbox is for local use).
        seed: Seed of the synthetic people (default ``SANDBOX_SEED`` or 20251122).
    """
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops

    # The worker process builds the app from the environment; pass our choices through it.
    os.environ["SANDBOX_PORT"] = str(port)
    if seed is not None:
        os.environ["SANDBOX_SEED"] = str(seed)
    server = Granian(
        "infra.sandbox.app:create_sandbox_app",
        factory=True,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
        address=host,
        port=port,
        workers=1,
        # Hanging requests (timeout faults) must not hold shutdown for minutes.
        workers_kill_timeout=3,
        log_access=False,
    )
    server.serve()


if __name__ == "__main__":
    run_sandbox(int(os.environ.get("SANDBOX_PORT", DEFAULT_PORT)))
