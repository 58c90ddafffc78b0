"""Settings: read once from the environment; invalid values stop the process; secrets hidden."""

from __future__ import annotations

import os
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
