"""structlog JSON logging with ``trace_id``/``span_id`` on every line and personal data scrubbed.

One stream on stdout for everything: structlog events of our code, stdlib records (asyncio,
OpenTelemetry's exporter, Litestar) and Granian's own loggers (``_granian``, ``granian.access``),
all rendered by the same processors. The last processor before rendering runs
:func:`observability.pii.scrub_text` over every string value: the masking at the call sites
(:func:`observability.pii.mask_pii`) is the rule, this is the safety net.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, Final, TextIO, cast

import structlog
from opentelemetry import trace

from observability.pii import scrub_text

if TYPE_CHECKING:
    from collections.abc import MutableMapping

__all__ = [
    "GRANIAN_LOGGERS",
    "STDOUT",
    "configure_logging",
    "granian_log_dictconfig",
    "scrub_pii",
    "stdlib_formatter",
]

GRANIAN_LOGGERS: Final = ("_granian", "granian.access")


class _CurrentStdout:
    """A text stream that writes to whatever ``sys.stdout`` is at each write.

    structlog's PrintLogger and logging's StreamHandler keep the stream object they were given;
    loggers are cached on first use. Anything that swaps ``sys.stdout`` later (pytest's capture,
    a supervisor) would keep receiving lines on a stale object. In production it is the same
    stream, one attribute lookup later.
    """

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


STDOUT: Final = cast("TextIO", _CurrentStdout())
"""Where every log line goes: the current ``sys.stdout``."""

# Values we produce ourselves and that are known not to hold personal data; skipping them saves
# the regex on every line (and hex ids can contain digit runs that look like phone numbers).
_TRUSTED_KEYS: Final = frozenset({"trace_id", "span_id", "timestamp", "level", "logger"})
_MAX_DEPTH: Final = 4
# Integers of exactly 11 digits are what a CPF without leading zero or a mobile number with its
# area code becomes when someone logs it as a number.
_INT_LOW, _INT_HIGH = 10**10, 10**11


def _add_trace_ids(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:  # Any: structlog processor protocol
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event.setdefault("span_id", format(ctx.span_id, "016x"))
    else:
        event.setdefault("trace_id", None)
        event.setdefault("span_id", None)
    return event


def _scrub(value: Any, depth: int) -> Any:  # Any: any loggable value
    if isinstance(value, str):
        return scrub_text(value)
    if type(value) is int:
        return scrub_text(str(value)) if _INT_LOW <= abs(value) < _INT_HIGH else value
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {key: _scrub(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(item, depth + 1) for item in value]
    return value


def scrub_pii(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:  # Any: structlog processor protocol
    """structlog processor: mask CPFs, phones, e-mails and credentials in every value.

    Strings anywhere in the event (nested up to four levels in dicts and sequences) go through
    :func:`observability.pii.scrub_text`; 11-digit integers are masked like digit strings.
    Run it last, after ``format_exc_info``, so tracebacks are scrubbed too.
    """
    for key, value in event.items():
        if key in _TRUSTED_KEYS:
            continue
        new = _scrub(value, 0)
        if new is not value:
            event[key] = new
    return event


def _granian_access_fields(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:  # Any: structlog processor protocol
    # Granian's access records carry the raw path and query string in their args; keep the
    # method, status and duration only (our middleware logs the route template). Other records'
    # args are already merged into the message: never log them twice.
    args = event.pop("positional_args", None)
    record = event.get("_record")
    if record is not None and record.name == "granian.access" and isinstance(args, dict):
        event["event"] = "granian_access"
        event["method"] = args.get("method")
        event["status"] = args.get("status")
        dt_ms = args.get("dt_ms")
        event["duration_ms"] = round(dt_ms, 3) if isinstance(dt_ms, float) else dt_ms
    return event


def _renderer(fmt: str) -> Any:  # Any: structlog renderers share no useful base type
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=False)


def _shared_processors() -> list[Any]:  # Any: structlog processors are loosely typed
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_ids,
    ]


def stdlib_formatter(fmt: str = "json") -> logging.Formatter:
    """A ``logging.Formatter`` rendering stdlib records exactly like our structlog events.

    Also the factory named in :func:`granian_log_dictconfig` (``"()"`` key).

    Args:
        fmt: ``json`` (production) or ``console``.
    """
    return structlog.stdlib.ProcessorFormatter(
        pass_foreign_args=True,  # structlog empties record.args before the chain runs
        foreign_pre_chain=[
            *_shared_processors(),
            structlog.stdlib.add_logger_name,
            _granian_access_fields,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            scrub_pii,
            _renderer(fmt),
        ],
    )


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route structlog and the stdlib loggers (Granian, asyncio, OTel) to one JSON stream.

    Idempotent; call it in every process (the Granian parent and each worker's app factory).

    Args:
        level: ``DEBUG``, ``INFO``, ``WARNING`` or ``ERROR``.
        fmt: ``json`` or ``console``.
    """
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.format_exc_info,
            scrub_pii,
            _renderer(fmt),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=STDOUT),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(STDOUT)
    handler.setFormatter(stdlib_formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Granian configures its loggers with its own plain-text handlers and propagate=False
    # before it imports the app; take them over so that worker lines are JSON too.
    for name in GRANIAN_LOGGERS:
        granian_logger = logging.getLogger(name)
        granian_logger.handlers[:] = [handler]
        granian_logger.propagate = False


def granian_log_dictconfig(level: str = "INFO", fmt: str = "json") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for Granian's ``log_dictconfig`` (or ``--log-config``).

    Renders ``_granian`` and ``granian.access`` lines with :func:`stdlib_formatter`, so the
    Granian parent process logs JSON like the workers. JSON-serialisable, so it can also be
    written to a file for the ``granian`` CLI.

    Args:
        level: Level of both loggers (Granian's own ``log_level`` overrides ``_granian``'s).
        fmt: ``json`` or ``console``.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "c2s": {"()": "observability.logging.stdlib_formatter", "fmt": fmt},
        },
        "handlers": {
            "c2s_stdout": {
                "class": "logging.StreamHandler",
                "formatter": "c2s",
                "stream": "ext://observability.logging.STDOUT",
            },
        },
        "loggers": {
            name: {"handlers": ["c2s_stdout"], "level": level, "propagate": False}
            for name in GRANIAN_LOGGERS
        },
    }


def main() -> None:
    """Print :func:`granian_log_dictconfig` as JSON, for ``granian --log-config <file>``.

    ``python -m observability.logging [LEVEL] [json|console] > granian-log.json``
    """
    import json

    level = sys.argv[1] if len(sys.argv) > 1 else "INFO"
    fmt = sys.argv[2] if len(sys.argv) > 2 else "json"
    print(json.dumps(granian_log_dictconfig(level, fmt), indent=2))


if __name__ == "__main__":
    main()
