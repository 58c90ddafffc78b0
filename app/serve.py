"""``c2s-api serve``: Granian with the app factory, per the deployment flags in DESIGN.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from observability.logging import configure_logging

if TYPE_CHECKING:
    from app.config import Settings

__all__ = ["serve"]

log = structlog.get_logger("app.serve")


def serve(
    settings: Settings,
    *,
    workers: int | None = None,
    port: int | None = None,
    host: str | None = None,
) -> int:
    """Run the API in the foreground until SIGINT/SIGTERM; return the exit status."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops

    configure_logging(settings.log_level, settings.log_format)
    bind_port = port or settings.port
    bind_host = host or settings.host
    log.info("serving", host=bind_host, port=bind_port, workers=workers or settings.web_workers)
    server = Granian(
        "app.main:create_app",
        factory=True,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
        address=bind_host,
        port=bind_port,
        workers=workers or settings.web_workers,
        workers_kill_timeout=settings.workers_kill_timeout,
        respawn_failed_workers=True,
        log_access=False,
    )
    server.serve()
    return 0
