"""``c2s-api jobs list|redrive``: the webhook queue's dead letters, from the command line.

Exit status, like ``c2s-api keys``:

* 0: done;
* 1: no such event, or it cannot be redriven (not failed; send outcome unknown);
* 2: invalid arguments;
* 3: PostgreSQL unavailable or not migrated.

See docs/runbooks/QueueDeadLetters.md.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO
from uuid import UUID

import asyncpg

from domain.errors import DependencyUnavailable
from infra.db.jobs import JOB_STATES, JobView, PgJobAdmin
from infra.db.pool import create_pool

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable

    from app.config import Settings
    from infra.db.jobs import JobState

__all__ = ["add_jobs_parser", "jobs_list", "jobs_redrive", "run_jobs"]

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_INVALID = 2
EXIT_UNAVAILABLE = 3

_REFUSALS = {
    "not_found": "no webhook event with id {id}",
    "not_failed": "event {id} is not failed: only failed events are redriven",
    "send_unknown": (
        "event {id} may already have posted its message (send outcome unknown): not redriven; "
        "check the lead in C2S first (docs/runbooks/QueueDeadLetters.md)"
    ),
}


def add_jobs_parser(subparsers: Any) -> None:  # Any: argparse's private _SubParsersAction
    """Register ``jobs list|redrive`` on the ``c2s-api`` sub-command parser."""
    jobs = subparsers.add_parser("jobs", help="list webhook jobs and redrive dead letters")
    sub = jobs.add_subparsers(dest="jobs_command", required=True)
    listing = sub.add_parser("list", help="webhook events by state, newest first")
    listing.add_argument(
        "--state",
        choices=JOB_STATES,
        default="all",
        help="dead (retry budget spent, redrivable), failed, open, completed or all",
    )
    listing.add_argument("--limit", type=int, default=50, help="at most this many (1..1000)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    redrive = sub.add_parser("redrive", help="put failed events back in the queue")
    target = redrive.add_mutually_exclusive_group(required=True)
    target.add_argument("event_id", nargs="?", help="the event's id, as shown by 'jobs list'")
    target.add_argument("--all-dead", action="store_true", help="every dead letter")
    jobs.set_defaults(handler=lambda args: _dispatch(args))


def _dispatch(args: argparse.Namespace) -> int:
    from app.config import settings_or_exit

    return run_jobs(args, settings_or_exit())


def run_jobs(args: argparse.Namespace, settings: Settings) -> int:
    """Dispatch a parsed ``jobs`` command; the exit status."""
    if args.jobs_command == "list":
        return jobs_list(settings, state=args.state, limit=args.limit, as_json=args.json)
    return jobs_redrive(settings, args.event_id, all_dead=args.all_dead)


def jobs_list(
    settings: Settings,
    *,
    state: JobState = "all",
    limit: int = 50,
    as_json: bool = False,
    out: TextIO | None = None,
) -> int:
    """Print webhook events in ``state`` as a table (or JSON lines)."""
    stream = out or sys.stdout
    if not 1 <= limit <= 1000:
        return _invalid("--limit must be 1..1000")

    async def listing(admin: PgJobAdmin) -> int:
        rows = [_row(job) for job in await admin.list_jobs(state, limit)]
        if as_json:
            for row in rows:
                print(json.dumps(row), file=stream)
        else:
            _print_table(rows, stream)
        return EXIT_OK

    return _run(settings, listing)


def jobs_redrive(
    settings: Settings,
    event_id: str | None,
    *,
    all_dead: bool = False,
    out: TextIO | None = None,
) -> int:
    """Redrive one failed event, or every dead letter (``all_dead``)."""
    stream = out or sys.stdout
    if all_dead:

        async def everything(admin: PgJobAdmin) -> int:
            ids = await admin.redrive_dead()
            print(f"redriven {len(ids)} dead letter(s)", file=stream)
            for redriven in ids:
                print(f"  {redriven}", file=stream)
            return EXIT_OK

        return _run(settings, everything)
    try:
        parsed = UUID((event_id or "").strip())
    except ValueError:
        return _invalid("event id must be a UUID, as shown by 'c2s-api jobs list'")

    async def one(admin: PgJobAdmin) -> int:
        outcome = await admin.redrive(parsed)
        if outcome.status != "redriven":
            print(f"error: {_REFUSALS[outcome.status].format(id=parsed)}", file=sys.stderr)
            return EXIT_NOT_FOUND
        print(f"redriven {parsed}: queued again, attempts reset", file=stream)
        return EXIT_OK

    return _run(settings, one)


# --- helpers ------------------------------------------------------------------------------------


def _invalid(detail: str) -> int:
    print(f"error: {detail}", file=sys.stderr)
    return EXIT_INVALID


def _run(settings: Settings, action: Callable[[PgJobAdmin], Awaitable[int]]) -> int:
    async def main() -> int:
        pool = await create_pool(settings, min_size=0)
        try:
            return await action(PgJobAdmin(pool, acquire_timeout=settings.db_connect_timeout_s))
        finally:
            await pool.close()

    try:
        return asyncio.run(main())
    except (DependencyUnavailable, OSError, TimeoutError, asyncpg.PostgresConnectionError):
        print("error: PostgreSQL is unavailable (check DATABASE_URL)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
        print("error: the schema is not migrated: run 'c2s-api migrate' first", file=sys.stderr)
        return EXIT_UNAVAILABLE


def _stamp(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def _row(job: JobView) -> dict[str, Any]:  # Any: JSON values
    state = "dead" if job.dead_letter else job.status
    return {
        "id": str(job.id),
        "lead_id": job.lead_id,
        "state": f"{state} (send unknown)" if job.send_unknown else state,
        "attempts": job.attempts,
        "error": job.error,
        "received_at": _stamp(job.received_at),
        "processed_at": _stamp(job.processed_at),
        "redriven_at": _stamp(job.redriven_at),
    }


_COLUMNS = (
    ("id", "ID"),
    ("lead_id", "LEAD"),
    ("state", "STATE"),
    ("attempts", "ATTEMPTS"),
    ("received_at", "RECEIVED"),
    ("processed_at", "PROCESSED"),
    ("error", "ERROR"),
)


def _print_table(rows: list[dict[str, Any]], stream: TextIO) -> None:
    if not rows:
        print("no webhook events in that state", file=stream)
        return
    cells = [
        [str(row[key]) if row[key] is not None else "-" for key, _ in _COLUMNS] for row in rows
    ]
    widths = [
        max(len(title), *(len(line[i]) for line in cells)) for i, (_, title) in enumerate(_COLUMNS)
    ]
    print("  ".join(t.ljust(w) for (_, t), w in zip(_COLUMNS, widths, strict=True)), file=stream)
    for line in cells:
        print(
            "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(), file=stream
        )
