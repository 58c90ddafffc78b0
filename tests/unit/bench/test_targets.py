"""The benchmark's performance targets: read from the thresholds file, judged on a result,
printed by the gate beside its regression checks (never failing it), kept by calibrate."""

from __future__ import annotations

import json
import tomllib
from typing import TYPE_CHECKING, Any

import pytest

from bench import gatecheck
from bench.load import report
from bench.load.targets import THRESHOLDS, evaluate, load_targets, measurements, parse_targets

if TYPE_CHECKING:
    from pathlib import Path


def _point(**fields: Any) -> dict[str, Any]:
    base = {
        "rps": 1000.0,
        "p50_ms": 0.5,
        "p90_ms": 0.9,
        "p99_ms": 1.5,
        "errors": {"connect": 0},
        "cpu_us_per_request": 150.0,
        "redis_round_trips_per_request": 0.0,
        "postgres_round_trips_per_request": 0.0,
        "bare": {"rps": 2000.0, "p50_ms": 0.25},
    }
    base.update(fields)
    return base


def _result(**overrides: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "mode": "short",
        "config": {"concurrencies": [1, 16, 64], "scenarios": ["hot", "cpf", "worker"]},
        "scenarios": {
            "hot": {
                "status": "ok",
                "points": {
                    "1": _point(cpu_us_per_request=180.0),
                    "16": _point(cpu_us_per_request=120.0),
                    "64": _point(cpu_us_per_request=250.0),
                },
            },
            "cpf": {
                "status": "ok",
                "points": {
                    "1": _point(postgres_round_trips_per_request=2.0),
                    "16": _point(postgres_round_trips_per_request=2.0),
                    "64": _point(invalid="error rate 5.0%"),
                },
            },
        },
        "worker": {"status": "ok", "jobs_per_s": 300.0, "failed": 0},
        "memory": {"max_rss_mb": 120.0, "caches_full_rss_mb": 160.0},
    }
    result.update(overrides)
    result["ratios"] = report.compute_ratios(result)
    return result


def _row(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return next(r for r in rows if r["key"] == key)


def test_a_measured_value_within_its_goal_is_met_and_one_beyond_is_not() -> None:
    targets = parse_targets(
        {
            "cpu_us.hot.c1": {"max": 200, "unit": "us", "title": "hot CPU c1"},
            "cpu_us.hot.c64": {"max": 200, "unit": "us", "title": "hot CPU c64"},
            "worker.jobs_per_s": {"min": 250, "title": "worker"},
            "rss_mb.caches_full": {"max": 150, "unit": "MB", "title": "RSS"},
        }
    )

    rows = evaluate(_result(), targets)

    assert _row(rows, "cpu_us.hot.c1") | {} == {
        "key": "cpu_us.hot.c1",
        "target": "hot CPU c1",
        "goal": "<= 200 us",
        "value": 180.0,
        "measured": "180 us",
        "met": True,
    }
    assert _row(rows, "cpu_us.hot.c64")["met"] is False
    assert _row(rows, "worker.jobs_per_s")["met"] is True
    assert _row(rows, "rss_mb.caches_full")["met"] is False


def test_the_bulk_scenario_is_judged_and_a_run_with_failed_items_is_not() -> None:
    targets = parse_targets(
        {
            "bulk.items_per_s": {"min": 200, "title": "bulk items/s"},
            "bulk.cpu_us_per_item": {"max": 2500, "title": "bulk CPU"},
        }
    )
    bulk = {"status": "ok", "items_per_s": 150.0, "cpu_us_per_item": 1900.0, "failed": 0}

    rows = evaluate(_result(bulk=bulk), targets)

    assert _row(rows, "bulk.items_per_s")["met"] is False
    assert _row(rows, "bulk.cpu_us_per_item")["met"] is True
    failed = evaluate(_result(bulk={**bulk, "failed": 3}), targets)
    assert _row(failed, "bulk.items_per_s")["met"] is None
    assert _row(failed, "bulk.items_per_s")["measured"] == "not measured: 3 item(s) failed"


def test_a_key_without_concurrency_is_judged_on_the_worst_point() -> None:
    rows = evaluate(_result(), parse_targets({"cpu_us.hot": {"max": 200}}))

    assert _row(rows, "cpu_us.hot")["value"] == 250.0
    assert _row(rows, "cpu_us.hot")["met"] is False


def test_round_trips_per_request_are_measurements() -> None:
    rows = evaluate(
        _result(),
        parse_targets({"redis_trips.hot": {"max": 0}, "pg_trips.cpf.c16": {"max": 1}}),
    )

    assert _row(rows, "redis_trips.hot")["met"] is True
    assert _row(rows, "pg_trips.cpf.c16")["value"] == 2.0
    assert _row(rows, "pg_trips.cpf.c16")["met"] is False


def test_a_missing_measurement_is_not_met_and_says_why() -> None:
    targets = parse_targets(
        {
            "pg_trips.cpf": {"max": 1},
            "p50_ms.cpf.c64": {"max": 1},
            "cpu_us.webhook": {"max": 800},
            "leads_400ms.wall_ratio": {"max": 1.5},
            "rss_mb.hot": {"max": 150},
        }
    )

    rows = evaluate(_result(), targets)

    assert all(r["met"] is None and r["value"] is None for r in rows)
    assert "invalid point(s) c64" in _row(rows, "pg_trips.cpf")["measured"]
    assert "error rate 5.0%" in _row(rows, "p50_ms.cpf.c64")["measured"]
    assert _row(rows, "cpu_us.webhook")["measured"] == "not measured: scenario not run"
    assert _row(rows, "leads_400ms.wall_ratio")["measured"] == "not measured: scenario not run"
    assert _row(rows, "rss_mb.hot")["measured"] == "not measured by this run"


def test_a_pending_scenario_and_a_failed_batch_are_not_measured() -> None:
    result = _result(
        leads_400ms={
            "status": "ok",
            "latency_ms": 400,
            "batch": 64,
            "wall_ms": 500.0,
            "succeeded": 60,
        },
    )
    result["scenarios"]["webhook"] = {"status": "pending: route not registered"}
    targets = parse_targets(
        {"leads_400ms.wall_ratio": {"max": 1.5}, "p50_ms.webhook.c1": {"max": 3}}
    )

    rows = evaluate(result, targets)

    assert "leads_400ms.wall_ratio" in result["ratios"]
    assert _row(rows, "leads_400ms.wall_ratio")["measured"] == (
        "not measured: 60 of 64 leads succeeded"
    )
    assert _row(rows, "p50_ms.webhook.c1")["measured"] == (
        "not measured: pending: route not registered"
    )


def test_a_worker_with_failed_jobs_has_no_drain_rate() -> None:
    result = _result(worker={"status": "ok", "jobs_per_s": 400.0, "failed": 3})

    assert "worker.jobs_per_s" not in measurements(result)
    row = evaluate(result, parse_targets({"worker.jobs_per_s": {"min": 250}}))[0]
    assert row["measured"] == "not measured: 3 job(s) failed"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"max": 1, "min": 0}, "exactly one of max or min"),
        ({"title": "x"}, "exactly one of max or min"),
        ({"max": 1, "limit": 2}, "unknown field"),
        (3, "inline table"),
    ],
)
def test_a_malformed_target_is_refused(spec: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_targets({"cpu_us.hot": spec})


def test_the_committed_targets_parse_and_name_measurements_a_full_result_has() -> None:
    targets = load_targets()
    keys = {t.key for t in targets}

    assert len(targets) == len(tomllib.loads(THRESHOLDS.read_text())["target"])
    assert {"cpu_us.hot.c16", "redis_trips.hot", "pg_trips.phone", "rss_mb.caches_full"} <= keys
    assert {"worker.jobs_per_s", "leads_400ms.wall_ratio", "cpu_us.webhook"} <= keys
    prefixes = (
        *("cpu_us.", "p50_ms.", "p99_ms.", "redis_trips.", "pg_trips.", "rps_ratio."),
        *("p50_ratio.", "leads_400ms.", "worker.", "rss_mb.", "bulk."),
    )
    assert all(key.startswith(prefixes) for key in keys)


def test_the_report_shows_every_target_with_its_status() -> None:
    result = _result(mode="full", started_at="2026-01-01T00:00:00Z")
    result["config"].update(parties=1_000_000, duration_s=10, warmup_s=2)
    del result["worker"]
    result["targets"] = report.evaluate_targets(result)

    text = report.markdown(result)

    assert len(result["targets"]) == len(load_targets())
    assert "| Hot path CPU per request, c1 | <= 200 us | 180 us | met |" in text
    assert "| Hot path CPU per request, c64 | <= 200 us | 250 us | **NOT met** |" in text
    assert "| not measured: scenario not run | not measured |" in text


def _thresholds(tmp_path: Path, floor: float) -> Path:
    path = tmp_path / "thresholds.toml"
    path.write_text(
        "# header\n\n"
        f'[floor]\n"rps_ratio.hot.c16" = {floor}\n\n'
        '[ceiling]\n"p50_ratio.hot.c1" = 5.0\n\n'
        "[target]  # reported\n"
        "# a goal of the issue\n"
        '"cpu_us.hot.c1" = {max = 200, unit = "us", title = "Hot CPU c1"}\n'
        '"cpu_us.hot.c64" = {max = 200, unit = "us", title = "Hot CPU c64"}\n'
    )
    return path


def _valid_run(tmp_path: Path) -> Path:
    result = _result()
    del result["scenarios"]["cpf"]
    path = tmp_path / "run.json"
    path.write_text(json.dumps(result))
    return path


def test_the_gate_reports_unmet_targets_without_failing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _valid_run(tmp_path)

    code = gatecheck.main(
        ["--thresholds", str(_thresholds(tmp_path, 0.1)), "--result", str(result)]
    )

    out = capsys.readouterr().out
    assert code == 0
    assert "bench gate: ok" in out
    lines = out.splitlines()
    assert any("cpu_us.hot.c1" in line and line.rstrip().endswith("met") for line in lines)
    assert any("cpu_us.hot.c64" in line and "NOT met" in line for line in lines)
    assert "1 of 2 targets met" in out


def test_a_regression_still_fails_the_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _valid_run(tmp_path)

    code = gatecheck.main(
        ["--thresholds", str(_thresholds(tmp_path, 0.9)), "--result", str(result)]
    )

    assert code == 1
    out = capsys.readouterr().out
    assert out.rstrip().endswith("bench gate: FAIL: regression in hot (rps_ratio.hot.c16)")
    assert "0 of 2 targets met" not in out  # the targets are still reported: one is met
    assert "1 of 2 targets met" in out


def test_calibrate_rewrites_floors_and_keeps_the_target_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    thresholds = _thresholds(tmp_path, 0.1)
    run = tmp_path / "run.json"
    run.write_text(json.dumps(_result()))

    assert gatecheck.main(["--thresholds", str(thresholds), "calibrate", str(run)]) == 0

    text = capsys.readouterr().out
    data = tomllib.loads(text)
    assert data["floor"]["rps_ratio.hot.c16"] == pytest.approx(0.5 * 0.7)
    assert data["target"] == tomllib.loads(thresholds.read_text())["target"]
    assert "# a goal of the issue" in text
    assert "# [target]: the performance targets" in text


def test_calibrating_the_committed_file_keeps_every_target() -> None:
    section = gatecheck.target_section(THRESHOLDS.read_text())

    text = gatecheck.calibrate([_result()], section)

    assert tomllib.loads(text)["target"] == tomllib.loads(THRESHOLDS.read_text())["target"]


def test_a_file_without_targets_calibrates_without_a_target_section() -> None:
    assert gatecheck.target_section('[floor]\n"x" = 1\n') == ""
    assert "target" not in tomllib.loads(gatecheck.calibrate([_result()], ""))
