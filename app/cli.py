"""The ``c2s-api`` command line: serve, and the operational commands.

Each sub-command is a small function; heavy imports happen inside it so ``c2s-api --help``
stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from app.config import settings_or_exit

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    from app.serve import serve

    settings = settings_or_exit()
    return serve(settings, workers=args.workers, port=args.port, host=args.host)


COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
    "serve": ("run the API under Granian (embedded sandbox when no upstream URL is set)", _serve),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests)."""
    parser = argparse.ArgumentParser(prog="c2s-api", description="c2s-api lead enrichment")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help=COMMANDS["serve"][0])
    serve.add_argument("--workers", type=int, default=None, help="Granian workers (WEB_WORKERS)")
    serve.add_argument("--port", type=int, default=None, help="listen port (PORT)")
    serve.add_argument("--host", default=None, help="listen address (HOST)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``c2s-api`` console script."""
    args = build_parser().parse_args(argv)
    _help, handler = COMMANDS[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
