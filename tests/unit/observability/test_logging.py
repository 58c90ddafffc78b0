"""JSON logging: trace ids on every line, PII scrubbed, Granian's loggers in the same format."""

from __future__ import annotations

import json
import logging
import logging.config
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from granian.log import LogLevels
from granian.log import configure_logging as granian_configure_logging
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from observability.logging import (
    GRANIAN_LOGGERS,
    configure_logging,
    granian_log_dictconfig,
    scrub_pii,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7


class _Captured:
    """What the test wrote to stdout (pytest's capture replaces ``sys.stdout`` per phase)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def getvalue(self) -> str:
        return self._capsys.readouterr().out


@pytest.fixture
def stdout(capsys: pytest.CaptureFixture[str]) -> Iterator[_Captured]:
    """Log into pytest's captured stdout; put the previous logging configuration back after."""
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved_granian = {
        name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate)
        for name in GRANIAN_LOGGERS
    }
    yield _Captured(capsys)
    structlog.configure(**saved_structlog)
    root.handlers[:], level = saved_root
    root.setLevel(level)
    for name, (handlers, propagate) in saved_granian.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).propagate = propagate


def _lines(buffer: _Captured) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def _in_span() -> Any:  # Any: the API's context manager type
    ctx = SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(1))
    return trace.use_span(NonRecordingSpan(ctx))


def test_structlog_lines_are_json_with_trace_ids_and_no_pii(stdout: _Captured) -> None:
    configure_logging("INFO", "json")
    log = structlog.get_logger("test.logging")
    with _in_span():
        log.info("lead_enriched", cpf="123.456.789-09", contact={"email": "ana@exemplo.com.br"})
    log.info("outside_a_span", phone_as_int=11987654321)
    inside, outside = _lines(stdout)
    assert inside["event"] == "lead_enriched"
    assert inside["trace_id"] == format(TRACE_ID, "032x")
    assert inside["span_id"] == format(SPAN_ID, "016x")
    assert inside["cpf"] == "***.***.***-09"
    assert inside["contact"] == {"email": "a***@e***.br"}
    assert outside["trace_id"] is None
    assert outside["span_id"] is None
    assert outside["phone_as_int"] == "*********21"


def test_level_from_settings_filters_lines(stdout: _Captured) -> None:
    configure_logging("WARNING", "json")
    log = structlog.get_logger("test.logging.level")
    log.info("dropped")
    log.warning("kept")
    assert [line["event"] for line in _lines(stdout)] == ["kept"]


def test_stdlib_records_share_the_format_and_are_scrubbed(stdout: _Captured) -> None:
    configure_logging("INFO", "json")
    with _in_span():
        logging.getLogger("some.library").warning("retrying %s", "https://x/api?token=abc&q=1")
    (line,) = _lines(stdout)
    assert line["logger"] == "some.library"
    assert line["level"] == "warning"
    assert line["event"] == "retrying https://x/api?token=***&q=1"
    assert line["trace_id"] == format(TRACE_ID, "032x")


def test_exception_tracebacks_are_scrubbed(stdout: _Captured) -> None:
    configure_logging("INFO", "json")
    log = structlog.get_logger("test.logging.exc")
    try:
        raise ValueError("no dossier for 12345678909")
    except ValueError:
        log.exception("dossier_failed")
    (line,) = _lines(stdout)
    assert "12345678909" not in line["exception"]
    assert "*********09" in line["exception"]


def test_scrub_pii_processor_skips_trusted_keys_and_walks_containers() -> None:
    event = {
        "event": "x",
        "trace_id": "a1234567890123b4567890123456789c",
        "ids": ["12345678909", ("ana@ex.com",)],
        "count": 3,
        "ratio": 0.5,
    }
    out = scrub_pii(None, "info", event)
    assert out["trace_id"] == "a1234567890123b4567890123456789c"
    assert out["ids"] == ["*********09", ["a***@e***.com"]]
    assert out["count"] == 3
    assert out["ratio"] == 0.5


def test_configure_logging_takes_over_granian_loggers(stdout: _Captured) -> None:
    configure_logging("INFO", "json")
    logging.getLogger("_granian").info("Listening at: %s", "http://127.0.0.1:8080")
    (line,) = _lines(stdout)
    assert line["logger"] == "_granian"
    assert line["event"] == "Listening at: http://127.0.0.1:8080"
    assert "trace_id" in line


def test_granian_dictconfig_renders_granian_lines_as_json(stdout: _Captured) -> None:
    config = granian_log_dictconfig("INFO", "json")
    json.dumps(config)  # usable as a --log-config file
    # Exactly what Granian does with `log_dictconfig`.
    granian_configure_logging(LogLevels.info, config, True)
    logging.getLogger("_granian").info("Starting granian (main PID: %s)", 42)
    logging.getLogger("granian.access").info(
        '%(addr)s - "%(method)s %(path)s" %(status)d',
        {
            "addr": "10.0.0.1",
            "method": "GET",
            "path": "/api/v1/customers/12345678909",
            "query_string": "cpf=12345678909",
            "status": 200,
            "dt_ms": 1.23456,
            "time": "now",
            "scheme": "http",
            "protocol": "HTTP/1.1",
        },
    )
    started, access = _lines(stdout)
    assert started["event"] == "Starting granian (main PID: 42)"
    assert started["logger"] == "_granian"
    assert access == access | {
        "event": "granian_access",
        "logger": "granian.access",
        "method": "GET",
        "status": 200,
        "duration_ms": 1.235,
    }
    assert "12345678909" not in json.dumps(access)
    assert "/api/v1/customers" not in json.dumps(access)
