"""Sandbox lead ids stay unique across sandbox restarts (a database outlives the sandbox)."""

from __future__ import annotations

import re

from infra.sandbox.settings import SandboxSettings
from infra.sandbox.state import SandboxConfig, SandboxState

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def test_created_lead_ids_differ_between_two_runs_with_the_same_seed() -> None:
    settings = SandboxSettings(seed=5151, registry_size=10)
    first_run, second_run = SandboxState(settings), SandboxState(settings)
    first = [first_run.new_lead_id() for _ in range(3)]
    second = [second_run.new_lead_id() for _ in range(3)]
    assert all(HEX32.match(lead_id) for lead_id in first + second)
    assert len(set(first)) == 3
    assert not set(first) & set(second)


def test_reset_keeps_ids_unique_and_clears_the_update_webhook() -> None:
    state = SandboxState(SandboxSettings(seed=5151, registry_size=10))
    before = state.new_lead_id()
    state.config = SandboxConfig(update_webhook_url="http://127.0.0.1:1/hook")
    state.reset()
    assert state.config.update_webhook_url is None
    assert state.new_lead_id() != before
