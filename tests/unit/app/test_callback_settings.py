"""The callback settings (app/config.py): defaults, parsing and bounds."""

from __future__ import annotations

import pytest

from app.config import ConfigError, load_settings


def test_defaults_give_10_s_attempts_and_a_10_s_first_backoff_cap() -> None:
    settings = load_settings({})
    assert settings.callback_timeout_s == 10.0
    assert settings.callback_retry_base_s == 10.0
    assert settings.callback_concurrency == 4
    assert settings.callback_poll_s == 1.0


def test_values_are_read_from_their_variables() -> None:
    settings = load_settings(
        {
            "CALLBACK_TIMEOUT_S": "2.5",
            "CALLBACK_RETRY_BASE_S": "0.05",
            "CALLBACK_CONCURRENCY": "8",
            "CALLBACK_POLL_S": "0.2",
        }
    )
    assert (
        settings.callback_timeout_s,
        settings.callback_retry_base_s,
        settings.callback_concurrency,
        settings.callback_poll_s,
    ) == (2.5, 0.05, 8, 0.2)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CALLBACK_TIMEOUT_S", "0"),
        ("CALLBACK_TIMEOUT_S", "61"),
        ("CALLBACK_RETRY_BASE_S", "0.001"),
        ("CALLBACK_CONCURRENCY", "0"),
        ("CALLBACK_POLL_S", "-1"),
    ],
)
def test_out_of_bounds_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings({variable: value})
