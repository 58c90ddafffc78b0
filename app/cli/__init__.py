"""The ``c2s-api`` command line: serve, worker, sandbox and the operational commands.

Each sub-command is a small function; heavy imports happen inside it so ``c2s-api --help``
stays fast. Invalid configuration stops any command with one line naming the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from app.config import settings_or_exit

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from infra.backup.command import CommandOutcome

__all__ = ["build_parser", "main"]


def _serve(args: argparse.Namespace) -> int:
    from app.cli.serve import serve

    settings = settings_or_exit()
    return serve(
        settings, workers=args.workers, port=args.port, host=args.host, worker=not args.no_worker
    )


def _worker(args: argparse.Namespace) -> int:
    from app.cli.serve import embedded_upstreams
    from app.cli.worker import run_worker

    # Upstreams without a URL are the sandbox `c2s-api serve` runs (the embedded default).
    return run_worker(embedded_upstreams(settings_or_exit()), concurrency=args.concurrency)


def _sandbox(args: argparse.Namespace) -> int:
    from infra.sandbox.app import run_sandbox

    settings = settings_or_exit()
    run_sandbox(args.port or settings.sandbox_port, args.host, seed=args.seed)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from infra.db.migrate import MigrationError, migrate, migrate_status

    settings = settings_or_exit()
    try:
        if args.status:
            status = asyncio.run(migrate_status(settings.database_url))
            print(f"applied: {len(status.applied)}  pending: {len(status.pending)}")
            return 0 if status.up_to_date else 1
        asyncio.run(migrate(settings.database_url))
    except MigrationError as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 1
    print("migrations applied")
    return 0


def _seed(args: argparse.Namespace) -> int:
    from infra.db.seed import seed

    settings = settings_or_exit()
    report = asyncio.run(seed(settings.database_url, args.parties, seed=args.seed))
    print(report)
    return 0


def _keys(args: argparse.Namespace) -> int:
    from app.cli.keys import run_keys

    return run_keys(args, settings_or_exit())


def _print_outcome(outcome: CommandOutcome) -> int:
    for line in outcome.out:
        print(line)
    for line in outcome.err:
        print(line, file=sys.stderr)
    return outcome.status


def _backup(args: argparse.Namespace) -> int:
    from infra.backup.command import backup_command

    settings = settings_or_exit()
    out = args.out or settings.backup_dir
    if not out:
        print("backup: pass --out DIR (or set BACKUP_DIR)", file=sys.stderr)
        return 2
    return _print_outcome(backup_command(settings.database_url, out))


def _restore(args: argparse.Namespace) -> int:
    from infra.backup.command import restore_command
    from infra.backup.pgtools import with_database

    settings = settings_or_exit()
    target = args.target_url or with_database(settings.database_url, args.target_db)
    return _print_outcome(restore_command(args.dump, target, force=args.force, jobs=args.jobs))


def _flags(args: argparse.Namespace) -> int:
    from infra.flags import defaults_from_settings, flags_command

    settings = settings_or_exit()
    return flags_command(
        settings.redis_url,
        prefix=settings.redis_key_prefix,
        defaults=defaults_from_settings(settings),
        action=args.action,
        name=getattr(args, "name", None),
        value=getattr(args, "value", None),
        out=sys.stdout,
        err=sys.stderr,
    )


def _retention(args: argparse.Namespace) -> int:
    from app.cli.retention import retention_command

    return retention_command(settings_or_exit(), dry_run=args.dry_run, as_json=args.json)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests)."""
    from app.cli.keys import add_keys_parser

    parser = argparse.ArgumentParser(prog="c2s-api", description="c2s-api lead enrichment")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve", help="run the API under Granian (embedded sandbox when no upstream URL is set)"
    )
    serve.add_argument("--workers", type=int, default=None, help="Granian workers (WEB_WORKERS)")
    serve.add_argument("--port", type=int, default=None, help="listen port (PORT)")
    serve.add_argument("--host", default=None, help="listen address (HOST)")
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help="development: do not run a `c2s-api worker` beside the API",
    )
    serve.set_defaults(handler=_serve)

    worker = sub.add_parser("worker", help="process accepted webhook events from the queue")
    worker.add_argument("--concurrency", type=int, default=None, help="jobs in parallel")
    worker.set_defaults(handler=_worker)

    sandbox = sub.add_parser("sandbox", help="run the simulated C2S, Diretrix and Work API")
    sandbox.add_argument("--port", type=int, default=None, help="listen port (SANDBOX_PORT)")
    sandbox.add_argument("--host", default="127.0.0.1", help="listen address")
    sandbox.add_argument("--seed", type=int, default=None, help="synthetic people seed")
    sandbox.set_defaults(handler=_sandbox)

    migrate = sub.add_parser("migrate", help="apply the database migrations (dbmate)")
    migrate.add_argument("--status", action="store_true", help="only report pending migrations")
    migrate.set_defaults(handler=_migrate)

    seed = sub.add_parser("seed", help="load synthetic parties (COPY) for tests and benchmarks")
    seed.add_argument("--parties", type=int, required=True, help="how many parties")
    seed.add_argument("--seed", type=int, default=1, help="random seed")
    seed.set_defaults(handler=_seed)

    add_keys_parser(sub)
    from app.cli.jobs import add_jobs_parser

    add_jobs_parser(sub)

    # --- operations: backup, restore, flags (docs/dr.md, ADR 0007) ---
    from domain.flags import Flag

    backup = sub.add_parser("backup", help="pg_dump the database (custom format, checksummed)")
    backup.add_argument("--out", default=None, help="output directory (BACKUP_DIR)")
    backup.set_defaults(handler=_backup)

    restore = sub.add_parser("restore", help="restore a backup into a NEW database and verify it")
    restore.add_argument("dump", help="the .dump file (.dump.sha256 and .manifest.json beside it)")
    target = restore.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-db", help="database name on DATABASE_URL's server")
    target.add_argument("--target-url", help="full URL of the target database")
    restore.add_argument("--force", action="store_true", help="DROP and replace a non-empty target")
    restore.add_argument("--jobs", type=int, default=2, help="parallel pg_restore jobs")
    restore.set_defaults(handler=_restore)

    flags = sub.add_parser("flags", help="list or change feature flags (no deploy needed)")
    flag_actions = flags.add_subparsers(dest="action", required=True)
    flag_actions.add_parser("list", help="every flag: value, default, override")
    flag_set = flag_actions.add_parser("set", help="override a flag for every worker")
    flag_set.add_argument("name", choices=[f.value for f in Flag])
    flag_set.add_argument("value", choices=["on", "off"])
    flag_unset = flag_actions.add_parser("unset", help="remove an override (back to default)")
    flag_unset.add_argument("name", choices=[f.value for f in Flag])
    flags.set_defaults(handler=_flags)

    retention = sub.add_parser(
        "retention", help="purge data past its retention (what the worker runs daily)"
    )
    retention.add_argument("--dry-run", action="store_true", help="count only, purge nothing")
    retention.add_argument("--json", action="store_true", help="one JSON object of counts")
    retention.set_defaults(handler=_retention)
    for name, action in sub.choices.items():
        if name == "keys":
            action.set_defaults(handler=_keys)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``c2s-api`` console script."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
