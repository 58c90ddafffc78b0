"""Settings: read once from the environment; invalid values stop the process; secrets hidden."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.config import ConfigError, Secret, load_settings, redact_url


def test_defaults_are_the_embedded_local_services() -> None:
    settings = load_settings({})
    assert settings.port == 8080
    assert settings.database_url.startswith("postgresql://")
    assert settings.redis_url.startswith("redis://")
    assert settings.c2s_base_url == ""  # empty = the embedded sandbox


def test_values_are_coerced_from_strings() -> None:
    settings = load_settings(
        {"PORT": "9000", "DB_POOL_MAX": "20", "INCOME_MULTIPLIER": "2.5", "LOG_LEVEL": "DEBUG"}
    )
    assert (settings.port, settings.db_pool_max, settings.income_multiplier) == (9000, 20, 2.5)


def test_failed_authentications_are_limited_by_default() -> None:
    assert load_settings({}).auth_failure_limit == "20/minute"
    assert load_settings({"AUTH_FAILURE_LIMIT": ""}).auth_failure_limit == ""


def test_cors_origins_are_a_comma_separated_list() -> None:
    settings = load_settings({"CORS_ALLOW_ORIGINS": "https://a.example, https://b.example,"})
    assert settings.cors_allow_origins == ("https://a.example", "https://b.example")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PORT": "0"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"PORT": "http"}, "PORT"),
        ({"DATABASE_URL": "mysql://localhost/x"}, "DATABASE_URL"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"C2S_BASE_URL": "ftp://c2s"}, "C2S_BASE_URL"),
        ({"INCOME_MULTIPLIER": "-1"}, "INCOME_MULTIPLIER"),
        ({"DB_POOL_MIN": "50"}, "DB_POOL_MIN"),
        ({"AUTH_FAILURE_LIMIT": "twenty a minute"}, "AUTH_FAILURE_LIMIT"),
        ({"DATABASE_READ_URL": "replica-host:5432"}, "DATABASE_READ_URL"),
        ({"REPLICA_MAX_LAG_S": "0"}, "REPLICA_MAX_LAG_S"),
        ({"REPLICA_CHECK_S": "-1"}, "REPLICA_CHECK_S"),
        ({"WORKER_RETRY_MAX_S": "0"}, "WORKER_RETRY_MAX_S"),
        ({"REDIS_URL": "redis+cluster://10.0.0.1"}, "REDIS_URL"),
        ({"REDIS_URL": "redis+cluster://10.0.0.1:7000/3"}, "REDIS_URL"),
        ({"REDIS_CLUSTER_RETRIES": "9"}, "REDIS_CLUSTER_RETRIES"),
    ],
)
def test_invalid_value_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    message = str(info.value)
    assert f": {variable}:" in message
    assert "\n" not in message


def test_secrets_never_show_in_repr() -> None:
    settings = load_settings(
        {"C2S_TOKEN": "tok-123456", "WORK_API_TOKEN": "work-987654", "DIRETRIX_PASS": "pw-555"}
    )
    text = repr(settings) + str(settings)
    for secret in ("tok-123456", "work-987654", "pw-555"):
        assert secret not in text
    assert settings.c2s_token.get() == "tok-123456"


@given(st.text(min_size=1, max_size=40))
def test_secret_repr_is_the_same_mask_for_every_value(value: str) -> None:
    assert repr(Secret(value)) == "Secret('**********')"
    assert str(Secret(value)) == "Secret('**********')"
    assert Secret(value).get() == value


def test_redact_url_hides_the_password() -> None:
    assert redact_url("postgresql://u:hunter2@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_cli_stops_with_one_line_naming_the_variable() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PORT"} | {"PORT": "not-a-port"}
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("invalid configuration: PORT:")
    assert result.stdout == ""


PRODUCTION = {
    "ENVIRONMENT": "production",
    "CACHE_HMAC_KEYS": "k1:production-cache-key-0001",
    "CACHE_KEY_SALT": "production-key-salt-0001",
    "WEBHOOK_SECRET": "whsec-production-0001",
    "GOOGLE_ADS_WEBHOOK_KEY": "gads-production-0001",
}


def test_production_with_its_secrets_loads() -> None:
    settings = load_settings(PRODUCTION)
    assert settings.webhook_secret.get() == "whsec-production-0001"
    assert settings.google_ads_webhook_key.get() == "gads-production-0001"


@pytest.mark.parametrize("variable", ["WEBHOOK_SECRET", "GOOGLE_ADS_WEBHOOK_KEY"])
@pytest.mark.parametrize("value", [None, "", "  "])
def test_production_needs_both_webhook_secrets(variable: str, value: str | None) -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != variable}
    if value is not None:
        env[variable] = value
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert str(info.value).startswith(f"invalid configuration: {variable}: required in production")
    assert "\n" not in str(info.value)


def test_development_and_test_run_without_webhook_secrets() -> None:
    for environment in ("development", "test"):
        settings = load_settings({"ENVIRONMENT": environment})
        assert not settings.webhook_secret
        assert not settings.google_ads_webhook_key


@pytest.mark.parametrize("raw", ["short", "whsec-long-enough-0001,short", ",", " , "])
def test_webhook_secrets_must_be_long_enough(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"WEBHOOK_SECRET": raw})
    message = str(info.value)
    assert message.startswith("invalid configuration: WEBHOOK_SECRET:")
    assert "short" not in message  # no secret echoed
    assert "whsec-long-enough-0001" not in message


def test_webhook_secret_list_and_bounds_are_read() -> None:
    settings = load_settings(
        {
            "WEBHOOK_SECRET": "whsec-current-0001, whsec-previous-0002",
            "WEBHOOK_MAX_EVENTS": "10",
            "WEBHOOK_MAX_BODY_BYTES": "65536",
            "WEBHOOK_SIGNATURE_TOLERANCE_S": "60",
        }
    )
    assert settings.webhook_secret.get() == "whsec-current-0001, whsec-previous-0002"
    assert (
        settings.webhook_max_events,
        settings.webhook_max_body_bytes,
        settings.webhook_signature_tolerance_s,
    ) == (10, 65536, 60)
    defaults = load_settings({})
    assert (defaults.webhook_max_events, defaults.webhook_signature_tolerance_s) == (100, 300)
    assert defaults.webhook_max_body_bytes == 1024 * 1024


def test_production_start_up_without_webhook_secret_stops_with_one_line() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WEBHOOK_SECRET", "GOOGLE_ADS_WEBHOOK_KEY", "PORT")
    }
    env |= {k: v for k, v in PRODUCTION.items() if k != "WEBHOOK_SECRET"}
    # Own session: should it start serving instead of stopping, everything it spawned is killed.
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("serve started in production without WEBHOOK_SECRET")
    assert proc.returncode == 2
    assert stderr.strip().splitlines() == [
        "invalid configuration: WEBHOOK_SECRET: required in production "
        "(the C2S webhook must be authenticated)"
    ]
    assert stdout == ""
